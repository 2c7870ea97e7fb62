//! Thin async handlers: parse path, query and JSON, run the blocking
//! operation, shape the response.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use percent_encoding::percent_decode_str;
use serde::Deserialize;

use super::model::{CodeLocation, GetFunctionResponse};
use super::names::{resolve, FunctionRef};
use super::ops;
use crate::http::{ApiError, ErrorKind};
use crate::Supervisor;

type Sup = State<Arc<Supervisor>>;

/// Lambda returns at most 50 items per page whatever MaxItems says.
const PAGE_CAP: usize = 50;

pub(crate) fn query_map(raw: Option<&str>) -> HashMap<String, String> {
    raw.unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let dec = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
            (dec(k), dec(v))
        })
        .collect()
}

pub(crate) fn parse_json<'de, T: Deserialize<'de> + Default>(
    body: &'de [u8],
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorKind::InvalidRequestContent,
            format!("Could not parse request body into json: {e}"),
        )
    })
}

pub(crate) async fn blocking<T: Send + 'static>(
    sup: Arc<Supervisor>,
    f: impl FnOnce(&Supervisor) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(move || {
        // A change acknowledged by another frontend is visible here from now on.
        sup.registry().sync()?;
        f(&sup)
    })
    .await
    .map_err(|e| ApiError::service(format!("internal task failed: {e}")))?
}

pub(crate) fn function_ref(
    sup: &Supervisor,
    raw_name: &str,
    query: &HashMap<String, String>,
) -> Result<FunctionRef, ApiError> {
    let cfg = sup.config();
    resolve(
        raw_name,
        query.get("Qualifier").map(String::as_str),
        &cfg.region,
        &cfg.account_id,
    )
}

pub(crate) fn max_items(query: &HashMap<String, String>) -> Result<usize, ApiError> {
    match query.get("MaxItems") {
        None => Ok(PAGE_CAP),
        Some(s) => {
            let n: i64 = s
                .parse()
                .map_err(|_| ApiError::invalid(format!("Invalid MaxItems '{s}'")))?;
            if !(1..=10_000).contains(&n) {
                return Err(ApiError::invalid(format!(
                    "1 validation error detected: Value '{n}' at 'maxItems' failed to satisfy constraint: Member must have value between 1 and 10000"
                )));
            }
            Ok(usize::try_from(n).unwrap_or(PAGE_CAP).min(PAGE_CAP))
        }
    }
}

pub async fn create_function(State(sup): Sup, body: Bytes) -> Result<Response, ApiError> {
    // Parsed on the blocking pool: the body can be 67 MB of JSON.
    let out = blocking(sup, move |s| ops::create_function(s, parse_json(&body)?)).await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

pub async fn list_functions(State(sup): Sup, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let query = query_map(q.as_deref());
    let max = max_items(&query)?;
    let all = match query.get("FunctionVersion").map(String::as_str) {
        None => false,
        Some("ALL") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "Invalid FunctionVersion '{other}'; only ALL is supported"
            )))
        }
    };
    let marker = query.get("Marker").cloned();
    let out = blocking(sup, move |s| {
        ops::list_functions(s, all, marker.as_deref(), max)
    })
    .await?;
    Ok(Json(out).into_response())
}

pub async fn get_function(
    State(sup): Sup,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let f = function_ref(&sup, &name, &query_map(q.as_deref()))?;
    let (configuration, tags, reserved) = blocking(sup, move |s| {
        let reserved = s.registry().reserved_concurrency(&f.name)?;
        Ok((
            ops::get(s, &f)?,
            super::tags::for_get_function(s, &f)?,
            reserved,
        ))
    })
    .await?;
    Ok(Json(GetFunctionResponse {
        code: CodeLocation::of(&configuration),
        configuration,
        tags,
        concurrency: reserved.map(|n| super::model::Concurrency {
            reserved_concurrent_executions: n,
        }),
    })
    .into_response())
}

pub async fn get_configuration(
    State(sup): Sup,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let f = function_ref(&sup, &name, &query_map(q.as_deref()))?;
    let out = blocking(sup, move |s| ops::get(s, &f)).await?;
    Ok(Json(out).into_response())
}

pub async fn update_code(
    State(sup): Sup,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let f = function_ref(&sup, &name, &HashMap::new())?;
    let out = blocking(sup.clone(), move |s| {
        ops::update_code(s, &f, parse_json(&body)?)
    })
    .await?;
    // The code it replaced may have been the last user of some image chunks.
    crate::chunk_gc::schedule(&sup);
    Ok(Json(out).into_response())
}

pub async fn update_configuration(
    State(sup): Sup,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let f = function_ref(&sup, &name, &HashMap::new())?;
    let req = parse_json(&body)?;
    let out = blocking(sup, move |s| ops::update_configuration(s, &f, req)).await?;
    Ok(Json(out).into_response())
}

pub async fn publish_version(
    State(sup): Sup,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let f = function_ref(&sup, &name, &HashMap::new())?;
    let req = parse_json(&body)?;
    let out = blocking(sup, move |s| ops::publish_version(s, &f, req)).await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

pub async fn list_versions(
    State(sup): Sup,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let query = query_map(q.as_deref());
    let f = function_ref(&sup, &name, &HashMap::new())?;
    let max = max_items(&query)?;
    let marker = query.get("Marker").cloned();
    let out = blocking(sup, move |s| {
        ops::list_versions(s, &f, marker.as_deref(), max)
    })
    .await?;
    Ok(Json(out).into_response())
}

pub async fn delete_function(
    State(sup): Sup,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let f = function_ref(&sup, &name, &query_map(q.as_deref()))?;
    blocking(sup.clone(), move |s| ops::delete(s, &f)).await?;
    crate::chunk_gc::schedule(&sup);
    Ok(StatusCode::NO_CONTENT.into_response())
}
