//! Function URL payloads: an HTTP request as the version 2.0 event Lambda's function
//! URLs send, and the function's answer back as an HTTP response (a `statusCode`
//! object, or any other JSON as a 200 `application/json` body).

use std::collections::BTreeMap;

use axum::http::HeaderMap;
use base64::Engine as _;
use percent_encoding::percent_decode_str;
use serde_json::{json, Map, Value};
use time::OffsetDateTime;

/// What the event is built from.
pub struct UrlRequest<'a> {
    pub url_id: &'a str,
    pub region: &'a str,
    pub method: &'a str,
    /// The path after the URL's prefix, starting with `/`.
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub source_ip: &'a str,
    pub request_id: &'a str,
    pub now: OffsetDateTime,
    /// For `AWS_IAM` URLs: the caller's access key and account.
    pub caller: Option<(&'a str, &'a str)>,
}

/// Whether a body of this content type goes into the event as text.
fn is_text(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return true;
    };
    let ct = ct.to_ascii_lowercase();
    let essence = ct.split(';').next().unwrap_or_default().trim();
    essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence,
            "application/json"
                | "application/javascript"
                | "application/xml"
                | "application/x-www-form-urlencoded"
        )
}

/// Header names lower-cased, repeated values joined with commas; cookies apart.
fn headers_and_cookies(h: &HeaderMap, source_ip: &str) -> (Map<String, Value>, Vec<String>) {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let mut cookies = Vec::new();
    for (name, value) in h {
        let v = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if name.as_str() == "cookie" {
            cookies.extend(
                v.split(';')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned),
            );
            continue;
        }
        out.entry(name.as_str().to_owned())
            .and_modify(|e| {
                e.push(',');
                e.push_str(&v);
            })
            .or_insert(v);
    }
    out.entry("x-forwarded-for".into())
        .or_insert_with(|| source_ip.to_owned());
    out.entry("x-forwarded-proto".into())
        .or_insert_with(|| "http".to_owned());
    (
        out.into_iter()
            .map(|(k, v)| (k, Value::String(v)))
            .collect(),
        cookies,
    )
}

/// `queryStringParameters`: decoded, repeated keys joined with commas.
fn query_parameters(raw: &str) -> Map<String, Value> {
    let mut out: BTreeMap<String, String> = BTreeMap::new();
    let dec = |s: &str| {
        percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        out.entry(dec(k))
            .and_modify(|e| {
                e.push(',');
                e.push_str(&dec(v));
            })
            .or_insert_with(|| dec(v));
    }
    out.into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect()
}

fn request_time(now: OffsetDateTime) -> String {
    let f = time::macros::format_description!(
        "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] +0000"
    );
    now.to_offset(time::UtcOffset::UTC)
        .format(&f)
        .unwrap_or_default()
}

/// The version 2.0 event for `r`.
pub fn request_event(r: &UrlRequest<'_>) -> Value {
    let (headers, cookies) = headers_and_cookies(r.headers, r.source_ip);
    let user_agent = r
        .headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let domain = format!("{}.lambda-url.{}.on.aws", r.url_id, r.region);
    let mut context = json!({
        "accountId": r.caller.map_or("anonymous", |c| c.1),
        "apiId": r.url_id,
        "domainName": domain,
        "domainPrefix": r.url_id,
        "http": {
            "method": r.method,
            "path": r.path,
            "protocol": "HTTP/1.1",
            "sourceIp": r.source_ip,
            "userAgent": user_agent,
        },
        "requestId": r.request_id,
        "routeKey": "$default",
        "stage": "$default",
        "time": request_time(r.now),
        "timeEpoch": (r.now.unix_timestamp_nanos() / 1_000_000) as i64,
    });
    if let Some((key, account)) = r.caller {
        context["authorizer"] = json!({ "iam": {
            "accessKey": key,
            "accountId": account,
            "callerId": account,
            "userArn": format!("arn:aws:iam::{account}:root"),
            "userId": account,
        }});
    }
    let mut ev = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": r.path,
        "rawQueryString": r.query.unwrap_or_default(),
        "headers": headers,
        "requestContext": context,
        "isBase64Encoded": false,
    });
    if !cookies.is_empty() {
        ev["cookies"] = json!(cookies);
    }
    if let Some(q) = r.query.filter(|q| !q.is_empty()) {
        ev["queryStringParameters"] = Value::Object(query_parameters(q));
    }
    if !r.body.is_empty() {
        let ct = r.headers.get("content-type").and_then(|v| v.to_str().ok());
        match std::str::from_utf8(r.body) {
            Ok(text) if is_text(ct) => ev["body"] = json!(text),
            _ => {
                ev["body"] = json!(base64::engine::general_purpose::STANDARD.encode(r.body));
                ev["isBase64Encoded"] = json!(true);
            }
        }
    }
    ev
}

/// An HTTP response from a function's answer.
#[derive(Debug, PartialEq, Eq)]
pub struct UrlResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub cookies: Vec<String>,
    pub body: Vec<u8>,
}

/// Why a function's answer is not a valid response.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResponseError {
    #[error("statusCode must be an integer between 100 and 599")]
    Status,
    #[error("body is not valid base64")]
    Base64,
}

/// The HTTP response a function's answer stands for.
pub fn url_response(payload: &[u8]) -> Result<UrlResponse, ResponseError> {
    let json_body = || UrlResponse {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        cookies: Vec::new(),
        body: payload.to_vec(),
    };
    let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(payload) else {
        return Ok(json_body());
    };
    let Some(status) = o.get("statusCode") else {
        return Ok(json_body());
    };
    let status = status
        .as_u64()
        .filter(|s| (100..=599).contains(s))
        .ok_or(ResponseError::Status)? as u16;
    let headers = o
        .get("headers")
        .and_then(Value::as_object)
        .map(|h| {
            h.iter()
                .map(|(k, v)| {
                    let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                    (k.to_ascii_lowercase(), v)
                })
                .collect()
        })
        .unwrap_or_default();
    let cookies = o
        .get("cookies")
        .and_then(Value::as_array)
        .map(|c| {
            c.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let text = match o.get("body") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let body = if o.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) {
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map_err(|_| ResponseError::Base64)?
    } else {
        text.into_bytes()
    };
    Ok(UrlResponse {
        status,
        headers,
        cookies,
        body,
    })
}

#[cfg(test)]
#[path = "url_event_tests.rs"]
mod tests;
