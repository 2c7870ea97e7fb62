//! Layers (`/2018-10-31/layers...`): PublishLayerVersion, GetLayerVersion,
//! GetLayerVersionByArn, ListLayerVersions, ListLayers, DeleteLayerVersion, and the
//! `Layers` functions name (checked and resolved here), as Lambda shapes them. A layer
//! package is sealed in the code store like function code.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::handlers::{blocking, max_items, parse_json, query_map};
use crate::codestore::{code_sha256, CodeAad};
use crate::http::ApiError;
use crate::registry::{LayerRef, LayerVersionRecord};
use crate::timefmt::{lambda_timestamp, now};
use crate::Supervisor;

/// Lambda's limit of layers per function.
pub const MAX_LAYERS: usize = 5;
/// Function code and its layers, unzipped (Lambda's 250 MB).
pub const MAX_UNZIPPED_TOTAL: u64 = 262_144_000;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LayerContent {
    zip_file: Option<String>,
    #[serde(rename = "S3Bucket")]
    s3_bucket: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PublishRequest {
    content: Option<LayerContent>,
    description: Option<String>,
    compatible_runtimes: Option<Vec<String>>,
    compatible_architectures: Option<Vec<String>>,
    license_info: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ContentView {
    location: String,
    code_sha256: String,
    code_size: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct LayerVersionView {
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<ContentView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    layer_arn: Option<String>,
    layer_version_arn: String,
    description: String,
    created_date: String,
    version: i64,
    compatible_runtimes: Vec<String>,
    compatible_architectures: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    license_info: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct LayerListItem {
    layer_name: String,
    layer_arn: String,
    latest_matching_version: LayerVersionView,
}

fn layer_arn(sup: &Supervisor, layer: &str) -> String {
    let c = sup.config();
    format!("arn:aws:lambda:{}:{}:layer:{layer}", c.region, c.account_id)
}

/// What a layer package's sealing binds it to in place of a function name, so no
/// function's package can stand in for it.
pub fn layer_binding(layer: &str) -> String {
    format!("layer:{layer}")
}

/// A listing's JSON: `items` under `key`, and `NextMarker` when there is more.
fn listing<T: Serialize>(key: &str, items: Vec<T>, next: Option<String>) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert(key.to_owned(), serde_json::json!(items));
    if let Some(n) = next {
        m.insert("NextMarker".to_owned(), serde_json::json!(n));
    }
    serde_json::Value::Object(m)
}

fn view(sup: &Supervisor, r: LayerVersionRecord, whole: bool) -> LayerVersionView {
    let arn = layer_arn(sup, &r.layer);
    LayerVersionView {
        content: whole.then(|| ContentView {
            location: String::new(),
            code_sha256: r.code_sha256.clone(),
            code_size: r.code_size,
        }),
        layer_version_arn: format!("{arn}:{}", r.version),
        layer_arn: whole.then_some(arn),
        description: r.description,
        created_date: r.created_date,
        version: r.version,
        compatible_runtimes: r.compatible_runtimes,
        compatible_architectures: r.compatible_architectures,
        license_info: r.license_info,
    }
}

/// A layer name from a path, which may also be the layer's ARN.
fn layer_name(sup: &Supervisor, raw: &str) -> Result<String, ApiError> {
    let name = raw.strip_prefix(&layer_arn(sup, "")).unwrap_or(raw);
    let ok = (1..=140).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(name.to_owned())
    } else {
        Err(ApiError::invalid(format!(
            "1 validation error detected: Value '{raw}' at 'layerName' failed to satisfy constraint: Member must satisfy regular expression pattern: (arn:[a-zA-Z0-9-]+:lambda:[a-zA-Z0-9-]+:\\d{{12}}:layer:[a-zA-Z0-9-_]+)|[a-zA-Z0-9-_]+"
        )))
    }
}

fn version_number(raw: &str) -> Result<i64, ApiError> {
    raw.parse::<i64>()
        .ok()
        .filter(|v| *v > 0)
        .ok_or_else(|| ApiError::invalid(format!("Invalid layer version number '{raw}'")))
}

fn layer_not_found(arn: &str) -> ApiError {
    ApiError::not_found(format!("Layer version {arn} does not exist."))
}

/// `(layer, version)` of a layer version ARN in this account and region.
fn parse_version_arn(sup: &Supervisor, arn: &str) -> Result<(String, i64), ApiError> {
    let prefix = layer_arn(sup, "");
    let rest = arn
        .strip_prefix(&prefix)
        .ok_or_else(|| layer_not_found(arn))?;
    let (name, version) = rest.rsplit_once(':').ok_or_else(|| layer_not_found(arn))?;
    Ok((layer_name(sup, name)?, version_number(version)?))
}

fn publish(
    sup: &Supervisor,
    layer: &str,
    req: PublishRequest,
) -> Result<LayerVersionRecord, ApiError> {
    let content = req
        .content
        .ok_or_else(|| ApiError::invalid("Content is required"))?;
    if content.s3_bucket.is_some() {
        return Err(ApiError::invalid(
            "Only Content.ZipFile is supported (S3 locations are not)",
        ));
    }
    let zip = super::validate::decode_zip(
        content
            .zip_file
            .as_deref()
            .ok_or_else(|| ApiError::invalid("Content.ZipFile is required"))?,
    )?;
    let plan = sup.store().validate(&zip)?;
    let description = req.description.unwrap_or_default();
    super::validate::description(&description)?;
    let runtimes = req.compatible_runtimes.unwrap_or_default();
    for r in &runtimes {
        super::validate::runtime(r)?;
    }
    let sha = code_sha256(&zip);
    let size = zip.len() as u64;
    let _guard = sup.write_guard();
    let version = sup.registry().next_layer_version(layer)?;
    let v = version.to_string();
    let function = layer_binding(layer);
    let aad = CodeAad {
        function: &function,
        version: &v,
        code_sha256: &sha,
    };
    let object = sup.store().put(&aad, zip)?;
    let r = LayerVersionRecord {
        layer: layer.to_owned(),
        version,
        description,
        code_sha256: sha.clone(),
        code_size: size,
        unzipped_size: plan.unzipped_size,
        code_object: object.clone(),
        created_date: lambda_timestamp(now()),
        compatible_runtimes: runtimes,
        compatible_architectures: req.compatible_architectures.unwrap_or_default(),
        license_info: req.license_info,
    };
    if let Err(e) = sup.registry().publish_layer_version(&r) {
        let _ = sup.store().remove(&object);
        return Err(e.into());
    }
    Ok(r)
}

/// Resolves the `Layers` of a function: at most five existing versions, and with the
/// function's own unzipped size within Lambda's 250 MB. A bad reference is a bad
/// parameter of the function call.
pub fn resolve_layers(
    sup: &Supervisor,
    arns: &[String],
    code_unzipped: u64,
) -> Result<Vec<LayerRef>, ApiError> {
    resolve(sup, arns, code_unzipped).map_err(|e| match e.kind {
        crate::http::ErrorKind::ResourceNotFound => ApiError::invalid(e.message),
        _ => e,
    })
}

fn resolve(
    sup: &Supervisor,
    arns: &[String],
    code_unzipped: u64,
) -> Result<Vec<LayerRef>, ApiError> {
    if arns.len() > MAX_LAYERS {
        return Err(ApiError::invalid(format!(
            "Cannot reference more than {MAX_LAYERS} layers."
        )));
    }
    let mut total = code_unzipped;
    let mut out = Vec::new();
    for arn in arns {
        let (layer, version) = parse_version_arn(sup, arn)?;
        let r = sup
            .registry()
            .layer_version(&layer, version)?
            .ok_or_else(|| layer_not_found(arn))?;
        total += r.unzipped_size;
        out.push(LayerRef {
            arn: arn.clone(),
            layer,
            version,
            code_sha256: r.code_sha256,
            code_size: r.code_size,
            unzipped_size: r.unzipped_size,
            code_object: r.code_object,
        });
    }
    too_big(total)?;
    Ok(out)
}

fn too_big(total: u64) -> Result<(), ApiError> {
    if total > MAX_UNZIPPED_TOTAL {
        return Err(ApiError::invalid(format!(
            "Function code combined with layers exceeds the maximum allowed size of {MAX_UNZIPPED_TOTAL} bytes. The actual size is {total} bytes."
        )));
    }
    Ok(())
}

/// New code with the function's current layers stays within Lambda's 250 MB.
pub fn check_total(r: &crate::registry::FunctionRecord) -> Result<(), ApiError> {
    too_big(r.unzipped_total())
}

type Sup = State<Arc<Supervisor>>;

pub async fn publish_layer_version(
    State(sup): Sup,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let layer = layer_name(&sup, &name)?;
    let out = blocking(sup, move |s| {
        let r = publish(s, &layer, parse_json(&body)?)?;
        Ok(view(s, r, true))
    })
    .await?;
    Ok((StatusCode::CREATED, Json(out)).into_response())
}

pub async fn get_layer_version(
    State(sup): Sup,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (layer, version) = (layer_name(&sup, &name)?, version_number(&version)?);
    let out = blocking(sup, move |s| {
        let arn = format!("{}:{version}", layer_arn(s, &layer));
        let r = s
            .registry()
            .layer_version(&layer, version)?
            .ok_or_else(|| layer_not_found(&arn))?;
        Ok(view(s, r, true))
    })
    .await?;
    Ok(Json(out).into_response())
}

pub async fn list_layer_versions(
    State(sup): Sup,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
) -> Result<Response, ApiError> {
    let layer = layer_name(&sup, &name)?;
    let query = query_map(q.as_deref());
    let max = max_items(&query)?;
    let out = blocking(sup, move |s| {
        let marker = query.get("Marker").map(String::as_str);
        let page = s.registry().list_layer_versions(&layer, marker, max)?;
        let versions: Vec<_> = page.items.into_iter().map(|r| view(s, r, false)).collect();
        Ok(listing("LayerVersions", versions, page.next_marker))
    })
    .await?;
    Ok(Json(out).into_response())
}

/// `GET /2018-10-31/layers`: ListLayers, or GetLayerVersionByArn with
/// `find=LayerVersion&Arn=...`.
pub async fn list_layers(State(sup): Sup, RawQuery(q): RawQuery) -> Result<Response, ApiError> {
    let query = query_map(q.as_deref());
    if query.get("find").map(String::as_str) == Some("LayerVersion") {
        let arn = query.get("Arn").cloned().unwrap_or_default();
        let (layer, version) = parse_version_arn(&sup, &arn)?;
        let out = blocking(sup, move |s| {
            let r = s
                .registry()
                .layer_version(&layer, version)?
                .ok_or_else(|| layer_not_found(&arn))?;
            Ok(view(s, r, true))
        })
        .await?;
        return Ok(Json(out).into_response());
    }
    let max = max_items(&query)?;
    let out = blocking(sup, move |s| {
        let page = s
            .registry()
            .list_layers(query.get("Marker").map(String::as_str), max)?;
        let layers: Vec<_> = page
            .items
            .into_iter()
            .map(|r| LayerListItem {
                layer_name: r.layer.clone(),
                layer_arn: layer_arn(s, &r.layer),
                latest_matching_version: view(s, r, false),
            })
            .collect();
        Ok(listing("Layers", layers, page.next_marker))
    })
    .await?;
    Ok(Json(out).into_response())
}

pub async fn delete_layer_version(
    State(sup): Sup,
    Path((name, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let (layer, version) = (layer_name(&sup, &name)?, version_number(&version)?);
    blocking(sup, move |s| {
        let _guard = s.write_guard();
        if let Some(object) = s.registry().delete_layer_version(&layer, version)? {
            if let Err(e) = s.store().remove(&object) {
                // Unreferenced already; startup garbage collection retries.
                tracing::warn!(%object, error = %e, "could not remove a layer package");
            }
        }
        Ok(())
    })
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
