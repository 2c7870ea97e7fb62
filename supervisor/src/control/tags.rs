//! Tags on functions (`/2017-03-31/tags/{ARN}`): TagResource, UntagResource, ListTags,
//! and `Tags` in CreateFunction and GetFunction, as Lambda shapes them.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use percent_encoding::percent_decode_str;
use serde::{Deserialize, Serialize};

use super::handlers::{blocking, parse_json};
use super::names::FunctionRef;
use crate::http::ApiError;
use crate::registry::{RegistryError, Tags, MAX_TAGS};
use crate::Supervisor;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct TagRequest {
    tags: Option<Tags>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ListTagsResponse {
    tags: Tags,
}

/// Lambda's limits: at most 50 tags; keys 1–128 characters and not under `aws:`;
/// values at most 256.
pub fn validate(tags: &Tags) -> Result<(), ApiError> {
    if tags.len() > MAX_TAGS {
        return Err(ApiError::invalid(format!(
            "A resource can have at most {MAX_TAGS} tags"
        )));
    }
    for (k, v) in tags {
        if k.is_empty() || k.chars().count() > 128 {
            return Err(ApiError::invalid(format!(
                "1 validation error detected: Value '{k}' at 'tags' failed to satisfy constraint: Map keys must satisfy constraint: [Member must have length less than or equal to 128, Member must have length greater than or equal to 1]"
            )));
        }
        if k.to_ascii_lowercase().starts_with("aws:") {
            return Err(ApiError::invalid(format!(
                "Tag keys beginning with 'aws:' are reserved: {k}"
            )));
        }
        if v.chars().count() > 256 {
            return Err(ApiError::invalid(format!(
                "1 validation error detected: Value for tag '{k}' failed to satisfy constraint: Member must have length less than or equal to 256"
            )));
        }
    }
    Ok(())
}

/// The function a tagging call names: a function ARN, not qualified.
fn resource(sup: &Supervisor, arn: &str) -> Result<FunctionRef, ApiError> {
    if !arn.starts_with("arn:") {
        return Err(ApiError::invalid(format!(
            "1 validation error detected: Value '{arn}' at 'resource' failed to satisfy constraint: Member must satisfy regular expression pattern: arn:(aws[a-zA-Z-]*)?:lambda:[a-z]{{2}}((-gov)|(-iso([a-z]?)))?-[a-z]+-\\d{{1}}:\\d{{12}}:function:[a-zA-Z0-9-_]+"
        )));
    }
    let cfg = sup.config();
    let f = super::names::resolve(arn, None, &cfg.region, &cfg.account_id)?;
    if f.qualifier.is_some() {
        return Err(ApiError::invalid(
            "Tags are not supported on function versions or aliases; tag the unqualified function ARN",
        ));
    }
    Ok(f)
}

fn not_found(sup: &Supervisor, f: &FunctionRef) -> ApiError {
    ApiError::not_found(format!(
        "Function not found: {}",
        sup.function_arn(&f.name, None)
    ))
}

fn retag(sup: &Supervisor, f: &FunctionRef, add: &Tags, remove: &[String]) -> Result<(), ApiError> {
    let _guard = sup.write_guard();
    match sup.registry().retag(&f.name, add, remove) {
        Ok(()) => Ok(()),
        Err(RegistryError::NotFound(_)) => Err(not_found(sup, f)),
        Err(RegistryError::TooManyTags) => Err(ApiError::invalid(format!(
            "A resource can have at most {MAX_TAGS} tags"
        ))),
        Err(e) => Err(e.into()),
    }
}

type Sup = State<Arc<Supervisor>>;

pub async fn tag_resource(
    State(sup): Sup,
    Path(arn): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let f = resource(&sup, &arn)?;
    let req: TagRequest = parse_json(&body)?;
    let add = req
        .tags
        .ok_or_else(|| ApiError::invalid("Tags is required"))?;
    validate(&add)?;
    blocking(sup, move |s| retag(s, &f, &add, &[])).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Every `tagKeys` value of the query string (the parameter repeats).
fn tag_keys(raw: Option<&str>) -> Vec<String> {
    raw.unwrap_or_default()
        .split('&')
        .filter_map(|p| p.split_once('='))
        .filter(|(k, _)| *k == "tagKeys")
        .map(|(_, v)| percent_decode_str(v).decode_utf8_lossy().into_owned())
        .collect()
}

pub async fn untag_resource(
    State(sup): Sup,
    Path(arn): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let f = resource(&sup, &arn)?;
    let keys = tag_keys(q.as_deref());
    if keys.is_empty() {
        return Err(ApiError::invalid("TagKeys is required"));
    }
    blocking(sup, move |s| retag(s, &f, &Tags::new(), &keys)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn list_tags(State(sup): Sup, Path(arn): Path<String>) -> Result<Response, ApiError> {
    let f = resource(&sup, &arn)?;
    let tags = blocking(sup, move |s| {
        s.registry().tags(&f.name)?.ok_or_else(|| not_found(s, &f))
    })
    .await?;
    Ok(Json(ListTagsResponse { tags }).into_response())
}

/// `Tags` for GetFunction: Lambda includes them only for the unqualified function.
pub fn for_get_function(sup: &Supervisor, f: &FunctionRef) -> Result<Option<Tags>, ApiError> {
    if f.qualifier.is_some() {
        return Ok(None);
    }
    Ok(sup.registry().tags(&f.name)?.filter(|t| !t.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_limits_are_lambdas() {
        let one = |k: &str, v: &str| Tags::from([(k.to_owned(), v.to_owned())]);
        assert!(validate(&one("team", "core")).is_ok());
        assert!(validate(&one("", "x")).is_err());
        assert!(validate(&one("aws:owner", "x")).is_err());
        assert!(validate(&one(&"k".repeat(129), "x")).is_err());
        assert!(validate(&one("k", &"v".repeat(257))).is_err());
        let many: Tags = (0..51).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(validate(&many).is_err());
    }

    #[test]
    fn repeated_tag_keys_are_all_read() {
        let got = tag_keys(Some("tagKeys=a&other=1&tagKeys=b%20c"));
        assert_eq!(got, ["a", "b c"]);
        assert!(tag_keys(None).is_empty());
    }
}
