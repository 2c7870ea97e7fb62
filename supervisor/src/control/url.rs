//! Function URL configurations (`/2021-10-31/functions/{name}/url[s]`): Create, Get,
//! Update, Delete and ListFunctionUrlConfigs. The URL is served by this supervisor at
//! `http://HOST/lambda-url/<id>/` (and for hosts named `<id>.lambda-url.*`), HOST
//! being the address the configuring client reached it at.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::alias::is_alias;
use super::handlers::{blocking, function_ref, max_items, parse_json, query_map};
use super::names::FunctionRef;
use crate::http::ApiError;
use crate::registry::{Cors, RegistryError, UrlRecord, LATEST};
use crate::timefmt::{lambda_timestamp, now};
use crate::Supervisor;

/// The path prefix function URLs are served under.
pub const URL_PATH_PREFIX: &str = "/lambda-url/";

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct UrlConfigRequest {
    auth_type: Option<String>,
    cors: Option<Cors>,
    invoke_mode: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct UrlConfig {
    function_url: String,
    function_arn: String,
    auth_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    cors: Option<Cors>,
    creation_time: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    last_modified_time: Option<String>,
    invoke_mode: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ListUrlsResponse {
    function_url_configs: Vec<UrlConfig>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_marker: Option<String>,
}

/// A URL id: 32 characters of `[a-z0-9]`, as Lambda's.
fn new_url_id() -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    crate::ids::random_bytes::<32>()
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(b % 32)]))
        .collect()
}

/// The qualifier a URL belongs to: "" for the function, or an alias.
fn url_qualifier(f: &FunctionRef) -> Result<String, ApiError> {
    match f.qualifier.as_deref() {
        None | Some(LATEST) => Ok(String::new()),
        Some(q) if is_alias(q) => Ok(q.to_owned()),
        Some(q) => Err(ApiError::invalid(format!(
            "1 validation error detected: Value '{q}' at 'qualifier' failed to satisfy constraint: Member must satisfy regular expression pattern: ((?!^\\d+$)^[0-9a-zA-Z-_]+$)"
        ))),
    }
}

fn check_choice(field: &str, value: &str, allowed: &[&str]) -> Result<(), ApiError> {
    if allowed.contains(&value) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
            allowed.join(", ")
        )))
    }
}

fn check_cors(c: &Cors) -> Result<(), ApiError> {
    if c.allow_origins.len() > 100 || c.allow_headers.len() > 100 || c.expose_headers.len() > 100 {
        return Err(ApiError::invalid("Cors lists hold at most 100 items"));
    }
    if c.allow_methods.len() > 6 {
        return Err(ApiError::invalid("Cors AllowMethods holds at most 6 items"));
    }
    if c.max_age.is_some_and(|a| a > 86_400) {
        return Err(ApiError::invalid("Cors MaxAge must be at most 86400"));
    }
    Ok(())
}

/// `http://HOST/lambda-url/<id>/` for the host the client used.
fn function_url(sup: &Supervisor, headers: &HeaderMap, id: &str) -> String {
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| sup.config().listen.to_string(), str::to_owned);
    format!("http://{host}{URL_PATH_PREFIX}{id}/")
}

fn view(sup: &Supervisor, headers: &HeaderMap, u: UrlRecord, with_modified: bool) -> UrlConfig {
    let q = (!u.qualifier.is_empty()).then_some(u.qualifier.as_str());
    UrlConfig {
        function_url: function_url(sup, headers, &u.url_id),
        function_arn: sup.function_arn(&u.function, q),
        auth_type: u.auth_type,
        cors: u.cors,
        creation_time: u.creation_time,
        last_modified_time: with_modified.then_some(u.last_modified_time),
        invoke_mode: u.invoke_mode,
    }
}

fn not_found(e: RegistryError, sup: &Supervisor, f: &FunctionRef) -> ApiError {
    match e {
        RegistryError::NotFound(_) => ApiError::not_found(format!(
            "Function not found: {}",
            sup.function_arn(&f.name, f.qualifier.as_deref())
        )),
        other => other.into(),
    }
}

fn create(sup: &Supervisor, f: &FunctionRef, req: UrlConfigRequest) -> Result<UrlRecord, ApiError> {
    let auth_type = req
        .auth_type
        .ok_or_else(|| ApiError::invalid("AuthType is required"))?;
    check_choice("authType", &auth_type, &["NONE", "AWS_IAM"])?;
    let invoke_mode = req.invoke_mode.unwrap_or_else(|| "BUFFERED".into());
    check_choice("invokeMode", &invoke_mode, &["BUFFERED", "RESPONSE_STREAM"])?;
    if let Some(c) = &req.cors {
        check_cors(c)?;
    }
    let stamp = lambda_timestamp(now());
    let u = UrlRecord {
        function: f.name.clone(),
        qualifier: url_qualifier(f)?,
        url_id: new_url_id(),
        auth_type,
        cors: req.cors,
        invoke_mode,
        creation_time: stamp.clone(),
        last_modified_time: stamp,
    };
    let _guard = sup.write_guard();
    sup.registry()
        .create_url(&u)
        .map_err(|e| not_found(e, sup, f))?;
    Ok(u)
}

fn update(sup: &Supervisor, f: &FunctionRef, req: UrlConfigRequest) -> Result<UrlRecord, ApiError> {
    let _guard = sup.write_guard();
    let mut u = sup
        .registry()
        .get_url(&f.name, &url_qualifier(f)?)?
        .ok_or(RegistryError::UrlNotFound)?;
    if let Some(a) = req.auth_type {
        check_choice("authType", &a, &["NONE", "AWS_IAM"])?;
        u.auth_type = a;
    }
    if let Some(m) = req.invoke_mode {
        check_choice("invokeMode", &m, &["BUFFERED", "RESPONSE_STREAM"])?;
        u.invoke_mode = m;
    }
    if let Some(c) = req.cors {
        check_cors(&c)?;
        u.cors = Some(c);
    }
    u.last_modified_time = lambda_timestamp(now());
    sup.registry().update_url(&u)?;
    Ok(u)
}

type Sup = State<Arc<Supervisor>>;

pub async fn create_url(
    State(sup): Sup,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let f = function_ref(&sup, &name, &query_map(q.as_deref()))?;
    let req = parse_json(&body)?;
    let u = blocking(sup.clone(), move |s| create(s, &f, req)).await?;
    let out = view(&sup, &headers, u, false);
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

pub async fn get_url(
    State(sup): Sup,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let f = function_ref(&sup, &name, &query_map(q.as_deref()))?;
    let u = blocking(sup.clone(), move |s| {
        Ok(s.registry()
            .get_url(&f.name, &url_qualifier(&f)?)?
            .ok_or(RegistryError::UrlNotFound)?)
    })
    .await?;
    Ok(Json(view(&sup, &headers, u, true)).into_response())
}

pub async fn update_url(
    State(sup): Sup,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let f = function_ref(&sup, &name, &query_map(q.as_deref()))?;
    let req = parse_json(&body)?;
    let u = blocking(sup.clone(), move |s| update(s, &f, req)).await?;
    Ok(Json(view(&sup, &headers, u, true)).into_response())
}

pub async fn delete_url(
    State(sup): Sup,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let f = function_ref(&sup, &name, &query_map(q.as_deref()))?;
    blocking(sup, move |s| {
        let _guard = s.write_guard();
        Ok(s.registry().delete_url(&f.name, &url_qualifier(&f)?)?)
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn list_urls(
    State(sup): Sup,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let f = function_ref(&sup, &name, &HashMap::new())?;
    let query = query_map(q.as_deref());
    let max = max_items(&query)?;
    let page = blocking(sup.clone(), move |s| {
        if s.registry().get(&f.name, LATEST)?.is_none() {
            return Err(not_found(RegistryError::NotFound(f.name.clone()), s, &f));
        }
        Ok(s.registry()
            .list_urls(&f.name, query.get("Marker").map(String::as_str), max)?)
    })
    .await?;
    Ok(Json(ListUrlsResponse {
        function_url_configs: page
            .items
            .into_iter()
            .map(|u| view(&sup, &headers, u, true))
            .collect(),
        next_marker: page.next_marker,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_ids_look_like_lambdas() {
        let a = new_url_id();
        assert_eq!(a.len(), 32);
        assert!(a
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
        assert_ne!(a, new_url_id());
    }

    #[test]
    fn urls_belong_to_the_function_or_an_alias() {
        let f = |q: Option<&str>| FunctionRef {
            name: "f".into(),
            qualifier: q.map(str::to_owned),
        };
        assert_eq!(url_qualifier(&f(None)).expect("none"), "");
        assert_eq!(url_qualifier(&f(Some(LATEST))).expect("latest"), "");
        assert_eq!(url_qualifier(&f(Some("prod"))).expect("alias"), "prod");
        assert!(url_qualifier(&f(Some("3"))).is_err());
    }
}
