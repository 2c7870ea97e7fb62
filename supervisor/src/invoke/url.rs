//! Serving function URLs: `ANY /lambda-url/<id>/<path>` (hosts named
//! `<id>.lambda-url.*` are routed here too). Outside the API's SigV4 layer: an
//! `AWS_IAM` URL checks the signature itself, a `NONE` URL needs a resource policy
//! that lets anyone invoke it, as on Lambda. The request becomes a version 2.0 event
//! ([`super::url_event`]), the answer an HTTP response; CORS is applied here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use worker::{InvokeRequest, InvokeResult};

use super::url_event::{request_event, url_response, UrlRequest};
use super::{InvokeService, RunError};
use crate::auth::VerifyRequest;
use crate::control::names::FunctionRef;
use crate::control::url::URL_PATH_PREFIX;
use crate::http::body::read_limited;
use crate::http::peer::{PeerAddr, SentUri};
use crate::ids::uuid_v4;
use crate::registry::{Cors, UrlRecord};
use crate::Supervisor;

/// Lambda's limit on a function URL request (and event): 6 MB.
const MAX_URL_BODY: usize = 6 * 1024 * 1024;
const BODY_DEADLINE: Duration = Duration::from_secs(60);

/// A URL's configuration and whether its policy lets anyone invoke it (for `NONE`).
#[derive(Clone)]
struct Resolved {
    url: Arc<UrlRecord>,
    public: bool,
}

/// URL configurations by id, valid while the registry is unchanged.
#[derive(Default)]
pub struct UrlCache {
    by_id: Mutex<HashMap<String, (u64, Resolved)>>,
}

/// Whether `function`'s policy (for `qualifier`) lets anyone call its `NONE` URL.
fn allows_public(
    sup: &Supervisor,
    function: &str,
    qualifier: &str,
) -> Result<bool, crate::registry::RegistryError> {
    let Some(p) = sup.registry().policy(function, qualifier)? else {
        return Ok(false);
    };
    Ok(p.statements.iter().any(|s| {
        let action = s["Action"].as_str().unwrap_or_default();
        let auth = &s["Condition"]["StringEquals"]["lambda:FunctionUrlAuthType"];
        s["Effect"] == "Allow"
            && s["Principal"] == "*"
            && matches!(action, "lambda:InvokeFunctionUrl" | "lambda:*" | "*")
            && (auth.is_null() || auth == "NONE")
    }))
}

impl UrlCache {
    async fn get(&self, sup: &Arc<Supervisor>, id: &str) -> Result<Option<Resolved>, String> {
        let generation = sup.registry().generation();
        if let Some((g, r)) = self.by_id.lock().unwrap_or_else(|p| p.into_inner()).get(id) {
            if *g == generation {
                return Ok(Some(r.clone()));
            }
        }
        let (s, wanted) = (sup.clone(), id.to_owned());
        let found = tokio::task::spawn_blocking(move || {
            let Some(url) = s.registry().url_by_id(&wanted)? else {
                return Ok(None);
            };
            let public = allows_public(&s, &url.function, &url.qualifier)?;
            Ok::<_, crate::registry::RegistryError>(Some(Resolved {
                url: Arc::new(url),
                public,
            }))
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        let mut cache = self.by_id.lock().unwrap_or_else(|p| p.into_inner());
        cache.retain(|_, (g, _)| *g == generation);
        if let Some(r) = &found {
            cache.insert(id.to_owned(), (generation, r.clone()));
        }
        Ok(found)
    }
}

fn message(status: StatusCode, text: &str) -> Response {
    let body = serde_json::json!({ "Message": text }).to_string();
    (status, [("content-type", "application/json")], body).into_response()
}

/// `<id>` and the rest of the path (at least `/`) of a URL request.
fn split_path(path: &str) -> Option<(&str, &str)> {
    let rest = path.strip_prefix(URL_PATH_PREFIX)?;
    let (id, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let tail = if tail.is_empty() { "/" } else { tail };
    (!id.is_empty()).then_some((id, tail))
}

/// The CORS headers for a request from `origin`, if the configuration admits it.
fn cors_headers(cors: &Cors, origin: &str, preflight: bool) -> Vec<(String, String)> {
    let allowed = cors
        .allow_origins
        .iter()
        .any(|o| o == "*" || o.eq_ignore_ascii_case(origin));
    if !allowed {
        return Vec::new();
    }
    let mut h = vec![("access-control-allow-origin", origin.to_owned())];
    if cors.allow_credentials == Some(true) {
        h.push(("access-control-allow-credentials", "true".into()));
    }
    if preflight {
        if !cors.allow_methods.is_empty() {
            h.push(("access-control-allow-methods", cors.allow_methods.join(",")));
        }
        if !cors.allow_headers.is_empty() {
            h.push(("access-control-allow-headers", cors.allow_headers.join(",")));
        }
        if let Some(age) = cors.max_age {
            h.push(("access-control-max-age", age.to_string()));
        }
    } else if !cors.expose_headers.is_empty() {
        h.push((
            "access-control-expose-headers",
            cors.expose_headers.join(","),
        ));
    }
    h.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

fn add_headers(resp: &mut Response, pairs: impl IntoIterator<Item = (String, String)>) {
    for (k, v) in pairs {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            resp.headers_mut().append(k, v);
        }
    }
}

/// The function's answer as an HTTP response.
fn answer(out: Result<worker::InvokeOutcome, RunError>) -> Response {
    let payload = match out {
        Ok(o) => match o.result {
            InvokeResult::Success(p) => p,
            InvokeResult::FunctionError { .. } => {
                return message(StatusCode::BAD_GATEWAY, "Internal Server Error")
            }
        },
        Err(RunError::Throttled(_)) => {
            return message(StatusCode::TOO_MANY_REQUESTS, "Rate Exceeded.")
        }
        Err(RunError::Api(e)) if e.kind.status().is_client_error() => {
            return message(StatusCode::BAD_REQUEST, &e.message)
        }
        Err(e) => {
            tracing::warn!(error = ?e, "function URL invoke failed");
            return message(StatusCode::BAD_GATEWAY, "Internal Server Error");
        }
    };
    let Ok(r) = url_response(&payload) else {
        return message(StatusCode::BAD_GATEWAY, "Internal Server Error");
    };
    let mut resp = Response::new(Body::from(r.body));
    *resp.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
    add_headers(&mut resp, r.headers);
    add_headers(
        &mut resp,
        r.cookies.into_iter().map(|c| ("set-cookie".to_owned(), c)),
    );
    resp
}

/// Why a URL request is turned away before the function runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    Forbidden,
    TooLarge,
    TooSlow,
    /// Too many large bodies are being read at once.
    Busy,
}

impl Refusal {
    fn response(self) -> Response {
        match self {
            Self::Forbidden => message(StatusCode::FORBIDDEN, "Forbidden"),
            Self::TooLarge => too_large(),
            Self::TooSlow => message(StatusCode::REQUEST_TIMEOUT, "Request body too slow"),
            Self::Busy => message(StatusCode::TOO_MANY_REQUESTS, "Rate Exceeded."),
        }
    }
}

/// Checks the caller may invoke `url`; for `AWS_IAM`, returns the caller's access key.
fn authorize(
    sup: &Supervisor,
    r: &Resolved,
    parts: &axum::http::request::Parts,
    body: &[u8],
) -> Result<Option<String>, Refusal> {
    if r.url.auth_type == "NONE" {
        return if r.public {
            Ok(None)
        } else {
            Err(Refusal::Forbidden)
        };
    }
    // A host-routed request was signed for the URI it was sent to.
    let uri = parts
        .extensions
        .get::<SentUri>()
        .map_or(&parts.uri, |s| &s.0);
    let checked = sup.verifier().verify(
        &VerifyRequest {
            method: parts.method.as_str(),
            raw_path: uri.path(),
            raw_query: uri.query(),
            headers: &parts.headers,
            body,
        },
        crate::timefmt::now(),
    );
    match checked {
        Ok(key) => Ok(Some(key)),
        Err(e) => {
            tracing::info!(error = %e, "function URL request refused");
            Err(Refusal::Forbidden)
        }
    }
}

pub async fn serve_url(Extension(svc): Extension<Arc<InvokeService>>, req: Request) -> Response {
    let request_id = uuid_v4();
    let mut resp = handle(&svc, req, &request_id).await;
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert("x-amzn-requestid", v);
    }
    resp
}

/// Checks what can be checked from the head (a `NONE` URL's policy, an `AWS_IAM`
/// request's signature headers and clock), reads the body (bounded, and holding its
/// share of the large-body budget while it is read, as API requests do), then verifies
/// the signature; the caller's access key for `AWS_IAM`.
async fn admit(
    sup: &Supervisor,
    r: &Resolved,
    parts: &axum::http::request::Parts,
    body: Body,
) -> Result<(Bytes, Option<String>), Refusal> {
    let uri = parts
        .extensions
        .get::<SentUri>()
        .map_or(&parts.uri, |s| &s.0);
    match r.url.auth_type.as_str() {
        "NONE" if !r.public => return Err(Refusal::Forbidden),
        "NONE" => {}
        _ => sup
            .verifier()
            .precheck(&parts.headers, uri.query(), crate::timefmt::now())
            .map(drop)
            .map_err(|_| Refusal::Forbidden)?,
    }
    let length = parts
        .headers
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let permit = crate::http::body_permit(sup, length, MAX_URL_BODY)
        .await
        .map_err(|_| Refusal::Busy)?;
    let read = read_limited(body, MAX_URL_BODY, length);
    let body = match tokio::time::timeout(BODY_DEADLINE, read).await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => return Err(Refusal::TooLarge),
        Err(_) => return Err(Refusal::TooSlow),
    };
    drop(permit);
    let caller = authorize(sup, r, parts, &body)?;
    Ok((body, caller))
}

fn too_large() -> Response {
    message(
        StatusCode::PAYLOAD_TOO_LARGE,
        "Request must be smaller than 6291456 bytes",
    )
}

async fn handle(svc: &Arc<InvokeService>, req: Request, request_id: &str) -> Response {
    let (parts, body) = req.into_parts();
    let Some((id, path)) = split_path(parts.uri.path()) else {
        return message(StatusCode::NOT_FOUND, "Not Found");
    };
    let resolved = match svc.urls.get(&svc.sup, id).await {
        Ok(Some(r)) => r,
        Ok(None) => return message(StatusCode::NOT_FOUND, "Not Found"),
        Err(e) => {
            // Not for an unauthenticated caller's eyes.
            tracing::error!(error = %e, "function URL lookup failed");
            return message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
        }
    };
    let origin = parts.headers.get("origin").and_then(|v| v.to_str().ok());
    let cors = resolved.url.cors.as_ref().zip(origin);
    let preflight = parts.method == Method::OPTIONS
        && parts.headers.contains_key("access-control-request-method");
    if let (true, Some((c, o))) = (preflight, cors) {
        let mut resp = StatusCode::OK.into_response();
        add_headers(&mut resp, cors_headers(c, o, true));
        return resp;
    }
    let (body, caller) = match admit(&svc.sup, &resolved, &parts, body).await {
        Ok(x) => x,
        Err(r) => return r.response(),
    };
    let cfg = svc.sup.config();
    let peer = parts
        .extensions
        .get::<PeerAddr>()
        .map(|p| p.0.ip().to_string());
    let event = request_event(&UrlRequest {
        url_id: &resolved.url.url_id,
        region: &cfg.region,
        method: parts.method.as_str(),
        path,
        query: parts.uri.query(),
        headers: &parts.headers,
        body: &body,
        source_ip: peer.as_deref().unwrap_or("127.0.0.1"),
        request_id,
        now: crate::timefmt::now(),
        caller: caller.as_deref().map(|k| (k, cfg.account_id.as_str())),
    });
    drop(body);
    let mut resp = invoke(
        svc,
        &resolved.url,
        event.to_string().into_bytes(),
        request_id,
    )
    .await;
    if let Some((c, o)) = cors {
        add_headers(&mut resp, cors_headers(c, o, false));
    }
    resp
}

async fn invoke(
    svc: &Arc<InvokeService>,
    url: &UrlRecord,
    payload: Vec<u8>,
    request_id: &str,
) -> Response {
    if payload.len() > MAX_URL_BODY {
        return too_large();
    }
    let f = FunctionRef {
        name: url.function.clone(),
        qualifier: (!url.qualifier.is_empty()).then(|| url.qualifier.clone()),
    };
    let req = InvokeRequest {
        request_id: request_id.to_owned(),
        payload,
        ..Default::default()
    };
    if url.invoke_mode == "RESPONSE_STREAM" {
        return super::url_stream::stream(svc, &f, req).await;
    }
    answer(svc.run(&f, req).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_paths_split_into_id_and_raw_path() {
        assert_eq!(split_path("/lambda-url/abc"), Some(("abc", "/")));
        assert_eq!(split_path("/lambda-url/abc/"), Some(("abc", "/")));
        assert_eq!(
            split_path("/lambda-url/abc/x/y%20z"),
            Some(("abc", "/x/y%20z"))
        );
        assert_eq!(split_path("/lambda-url/"), None);
        assert_eq!(split_path("/other"), None);
    }

    #[test]
    fn cors_admits_configured_origins_only() {
        let c = Cors {
            allow_origins: vec!["https://a.example".into()],
            allow_methods: vec!["GET".into(), "POST".into()],
            expose_headers: vec!["x-out".into()],
            max_age: Some(60),
            allow_credentials: Some(true),
            ..Default::default()
        };
        assert!(cors_headers(&c, "https://b.example", false).is_empty());
        let pre = cors_headers(&c, "https://a.example", true);
        let has = |h: &[(String, String)], k: &str, v: &str| h.contains(&(k.into(), v.into()));
        assert!(has(&pre, "access-control-allow-methods", "GET,POST"));
        assert!(has(&pre, "access-control-max-age", "60"));
        let normal = cors_headers(&c, "https://a.example", false);
        assert!(has(&normal, "access-control-expose-headers", "x-out"));
        assert!(has(&normal, "access-control-allow-credentials", "true"));
    }
}
