//! The alias API (`/2015-03-31/functions/{name}/aliases[/{alias}]`): Create, Get,
//! List, Update, DeleteAlias, with `RoutingConfig.AdditionalVersionWeights`, as
//! Lambda shapes them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::handlers::{blocking, function_ref, max_items, parse_json, query_map};
use super::names::FunctionRef;
use crate::http::ApiError;
use crate::ids::uuid_v4;
use crate::registry::{AliasRecord, LATEST};
use crate::Supervisor;

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct RoutingConfig {
    #[serde(default)]
    pub additional_version_weights: BTreeMap<String, f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateAliasRequest {
    pub name: Option<String>,
    pub function_version: Option<String>,
    pub description: Option<String>,
    pub routing_config: Option<RoutingConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateAliasRequest {
    pub function_version: Option<String>,
    pub description: Option<String>,
    pub routing_config: Option<RoutingConfig>,
    pub revision_id: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AliasConfiguration {
    pub alias_arn: String,
    pub name: String,
    pub function_version: String,
    pub description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing_config: Option<RoutingConfig>,
    pub revision_id: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListAliasesResponse {
    pub aliases: Vec<AliasConfiguration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

/// Whether `q` names an alias rather than `$LATEST` or a version number.
pub fn is_alias(q: &str) -> bool {
    q != LATEST && !q.bytes().all(|b| b.is_ascii_digit())
}

fn validate_name(name: &str) -> Result<(), ApiError> {
    let ok = (1..=128).contains(&name.len())
        && is_alias(name)
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "1 validation error detected: Value '{name}' at 'name' failed to satisfy constraint: Member must satisfy regular expression pattern: (?!^[0-9]+$)([a-zA-Z0-9-_]+)"
        )))
    }
}

fn validate_version(v: &str) -> Result<(), ApiError> {
    if v == LATEST || (!v.is_empty() && v.len() <= 1024 && v.bytes().all(|b| b.is_ascii_digit())) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "1 validation error detected: Value '{v}' at 'functionVersion' failed to satisfy constraint: Member must satisfy regular expression pattern: (\\$LATEST|[0-9]+)"
        )))
    }
}

fn validate_routing(primary: &str, weights: &BTreeMap<String, f64>) -> Result<(), ApiError> {
    if weights.len() > 1 {
        return Err(ApiError::invalid(
            "Number of items in AdditionalVersionWeights cannot be greater than 1",
        ));
    }
    for (v, w) in weights {
        if !(0.0..=1.0).contains(w) {
            return Err(ApiError::invalid(format!(
                "1 validation error detected: Value '{w}' at 'routingConfig.additionalVersionWeights' failed to satisfy constraint: Map value must satisfy constraint: [Member must have value less than or equal to 1.0, Member must have value greater than or equal to 0.0]"
            )));
        }
        if v == LATEST || primary == LATEST {
            return Err(ApiError::invalid(
                "$LATEST is not supported for an alias pointing to more than 1 version",
            ));
        }
        validate_version(v)?;
        if v == primary {
            return Err(ApiError::invalid(format!(
                "Alias's primary version {primary} cannot also be an additional version"
            )));
        }
    }
    Ok(())
}

fn view(sup: &Supervisor, a: AliasRecord) -> AliasConfiguration {
    AliasConfiguration {
        alias_arn: sup.function_arn(&a.function, Some(&a.name)),
        routing_config: (!a.additional_version_weights.is_empty()).then_some(RoutingConfig {
            additional_version_weights: a.additional_version_weights,
        }),
        name: a.name,
        function_version: a.function_version,
        description: a.description,
        revision_id: a.revision_id,
    }
}

fn alias_not_found(sup: &Supervisor, function: &str, alias: &str) -> ApiError {
    ApiError::not_found(format!(
        "Alias not found: {}",
        sup.function_arn(function, Some(alias))
    ))
}

/// The version a qualifier names for reads: `$LATEST` when none, an alias's primary
/// version, or the qualifier itself.
pub fn version_of(sup: &Supervisor, f: &FunctionRef) -> Result<String, ApiError> {
    match f.qualifier.as_deref() {
        None => Ok(LATEST.to_owned()),
        Some(q) if is_alias(q) => sup
            .registry()
            .get_alias(&f.name, q)?
            .map(|a| a.function_version)
            .ok_or_else(|| {
                ApiError::not_found(format!(
                    "Function not found: {}",
                    sup.function_arn(&f.name, Some(q))
                ))
            }),
        Some(q) => Ok(q.to_owned()),
    }
}

/// Lambda's error for a version an alias names that does not exist.
fn map_missing(sup: &Supervisor, e: crate::registry::RegistryError) -> ApiError {
    match e {
        crate::registry::RegistryError::NotFound(what) => {
            let (name, q) = match what.split_once(':') {
                Some((n, q)) => (n, Some(q)),
                None => (what.as_str(), None),
            };
            ApiError::not_found(format!("Function not found: {}", sup.function_arn(name, q)))
        }
        other => other.into(),
    }
}

fn create(
    sup: &Supervisor,
    f: &FunctionRef,
    req: CreateAliasRequest,
) -> Result<AliasConfiguration, ApiError> {
    let name = req
        .name
        .ok_or_else(|| ApiError::invalid("Name is required"))?;
    validate_name(&name)?;
    let version = req
        .function_version
        .ok_or_else(|| ApiError::invalid("FunctionVersion is required"))?;
    validate_version(&version)?;
    let description = req.description.unwrap_or_default();
    super::validate::description(&description)?;
    let weights = req
        .routing_config
        .unwrap_or_default()
        .additional_version_weights;
    validate_routing(&version, &weights)?;
    let a = AliasRecord {
        function: f.name.clone(),
        name,
        function_version: version,
        description,
        additional_version_weights: weights,
        revision_id: uuid_v4(),
    };
    let _guard = sup.write_guard();
    sup.registry()
        .create_alias(&a)
        .map_err(|e| map_missing(sup, e))?;
    Ok(view(sup, a))
}

fn update(
    sup: &Supervisor,
    f: &FunctionRef,
    alias: &str,
    req: UpdateAliasRequest,
) -> Result<AliasConfiguration, ApiError> {
    let _guard = sup.write_guard();
    let mut a = sup
        .registry()
        .get_alias(&f.name, alias)?
        .ok_or_else(|| alias_not_found(sup, &f.name, alias))?;
    if let Some(v) = req.function_version {
        validate_version(&v)?;
        a.function_version = v;
    }
    if let Some(d) = req.description {
        super::validate::description(&d)?;
        a.description = d;
    }
    if let Some(r) = req.routing_config {
        a.additional_version_weights = r.additional_version_weights;
    }
    validate_routing(&a.function_version, &a.additional_version_weights)?;
    a.revision_id = uuid_v4();
    sup.registry()
        .update_alias(&a, req.revision_id.as_deref())
        .map_err(|e| map_missing(sup, e))?;
    Ok(view(sup, a))
}

fn list(
    sup: &Supervisor,
    f: &FunctionRef,
    query: &HashMap<String, String>,
) -> Result<ListAliasesResponse, ApiError> {
    let max = max_items(query)?;
    let version = query.get("FunctionVersion").map(String::as_str);
    if let Some(v) = version {
        validate_version(v)?;
    }
    if sup.registry().get(&f.name, LATEST)?.is_none() {
        return Err(ApiError::not_found(format!(
            "Function not found: {}",
            sup.function_arn(&f.name, None)
        )));
    }
    let page = sup.registry().list_aliases(
        &f.name,
        version,
        query.get("Marker").map(String::as_str),
        max,
    )?;
    Ok(ListAliasesResponse {
        aliases: page.items.into_iter().map(|a| view(sup, a)).collect(),
        next_marker: page.next_marker,
    })
}

type Sup = State<Arc<Supervisor>>;

pub async fn create_alias(
    State(sup): Sup,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let f = function_ref(&sup, &name, &HashMap::new())?;
    let req = parse_json(&body)?;
    let out = blocking(sup, move |s| create(s, &f, req)).await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

pub async fn list_aliases(
    State(sup): Sup,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let f = function_ref(&sup, &name, &HashMap::new())?;
    let query = query_map(q.as_deref());
    let out = blocking(sup, move |s| list(s, &f, &query)).await?;
    Ok(Json(out).into_response())
}

pub async fn get_alias(
    State(sup): Sup,
    Path((name, alias)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let f = function_ref(&sup, &name, &HashMap::new())?;
    let out = blocking(sup, move |s| {
        let a = s
            .registry()
            .get_alias(&f.name, &alias)?
            .ok_or_else(|| alias_not_found(s, &f.name, &alias))?;
        Ok(view(s, a))
    })
    .await?;
    Ok(Json(out).into_response())
}

pub async fn update_alias(
    State(sup): Sup,
    Path((name, alias)): Path<(String, String)>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let f = function_ref(&sup, &name, &HashMap::new())?;
    let req = parse_json(&body)?;
    let out = blocking(sup, move |s| update(s, &f, &alias, req)).await?;
    Ok(Json(out).into_response())
}

pub async fn delete_alias(
    State(sup): Sup,
    Path((name, alias)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let f = function_ref(&sup, &name, &HashMap::new())?;
    blocking(sup, move |s| {
        let _guard = s.write_guard();
        match s.registry().delete_alias(&f.name, &alias) {
            // Lambda answers 204 for an alias that is already gone.
            Ok(()) | Err(crate::registry::RegistryError::AliasNotFound(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_routing_are_checked_as_lambda_does() {
        assert!(validate_name("prod").is_ok());
        assert!(validate_name("blue-green_2").is_ok());
        for bad in ["", "12", "$LATEST", "a:b", &"x".repeat(129)] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
        let w = |v: &str, x: f64| BTreeMap::from([(v.to_owned(), x)]);
        assert!(validate_routing("1", &w("2", 0.3)).is_ok());
        assert!(validate_routing("1", &BTreeMap::new()).is_ok());
        assert!(validate_routing("1", &w("2", 1.5)).is_err());
        assert!(validate_routing("1", &w("1", 0.5)).is_err());
        assert!(validate_routing(LATEST, &w("2", 0.5)).is_err());
        assert!(validate_routing("1", &w(LATEST, 0.5)).is_err());
        let two = BTreeMap::from([("2".to_owned(), 0.1), ("3".to_owned(), 0.1)]);
        assert!(validate_routing("1", &two).is_err());
    }
}
