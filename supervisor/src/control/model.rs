//! Request and response bodies, field for field as the AWS SDKs send and
//! expect them (PascalCase JSON).

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::registry::FunctionRecord;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FunctionCode<'a> {
    /// Borrowed from the request body when it has no JSON escapes (the
    /// usual case), saving a copy of up to 67 MB.
    #[serde(borrow)]
    pub zip_file: Option<Cow<'a, str>>,
    #[serde(rename = "S3Bucket")]
    pub s3_bucket: Option<String>,
    #[serde(rename = "S3Key")]
    pub s3_key: Option<String>,
    pub image_uri: Option<String>,
}

/// `ImageConfig`: what a container-image function runs instead of the image's own
/// ENTRYPOINT, CMD and WORKDIR (the worker's type, which applies it).
pub use worker::code::image::ImageOverrides as ImageConfig;

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ImageConfigResponse {
    pub image_config: ImageConfig,
}

#[derive(Debug, Default, Deserialize, Serialize, Clone)]
#[serde(rename_all = "PascalCase")]
pub struct Environment {
    pub variables: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize, Serialize, Clone, Copy)]
#[serde(rename_all = "PascalCase")]
pub struct EphemeralStorage {
    pub size: i64,
}

/// `SnapStart` in a request: `ApplyOn` is `PublishedVersions` or `None`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SnapStart {
    pub apply_on: Option<String>,
}

/// `SnapStart` in a configuration: whether it is asked for, and whether this version
/// starts from a snapshot (`On` for published versions that asked).
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct SnapStartResponse {
    pub apply_on: &'static str,
    pub optimization_status: &'static str,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreateFunctionRequest<'a> {
    pub function_name: Option<String>,
    pub runtime: Option<String>,
    pub role: Option<String>,
    pub handler: Option<String>,
    #[serde(borrow)]
    pub code: Option<FunctionCode<'a>>,
    pub description: Option<String>,
    pub timeout: Option<i64>,
    pub memory_size: Option<i64>,
    pub environment: Option<Environment>,
    pub ephemeral_storage: Option<EphemeralStorage>,
    pub publish: Option<bool>,
    pub package_type: Option<String>,
    pub architectures: Option<Vec<String>>,
    pub layers: Option<Vec<String>>,
    pub tags: Option<crate::registry::Tags>,
    pub image_config: Option<ImageConfig>,
    pub snap_start: Option<SnapStart>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateFunctionCodeRequest<'a> {
    #[serde(borrow)]
    pub zip_file: Option<Cow<'a, str>>,
    #[serde(rename = "S3Bucket")]
    pub s3_bucket: Option<String>,
    pub image_uri: Option<String>,
    pub publish: Option<bool>,
    pub dry_run: Option<bool>,
    pub revision_id: Option<String>,
    pub architectures: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UpdateFunctionConfigurationRequest {
    pub role: Option<String>,
    pub handler: Option<String>,
    pub description: Option<String>,
    pub timeout: Option<i64>,
    pub memory_size: Option<i64>,
    pub environment: Option<Environment>,
    pub runtime: Option<String>,
    pub ephemeral_storage: Option<EphemeralStorage>,
    pub revision_id: Option<String>,
    pub layers: Option<Vec<String>>,
    pub image_config: Option<ImageConfig>,
    pub snap_start: Option<SnapStart>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PublishVersionRequest {
    pub code_sha256: Option<String>,
    pub description: Option<String>,
    pub revision_id: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TracingConfig {
    pub mode: &'static str,
}

/// `FunctionConfiguration` as returned by every read and write.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct FunctionConfiguration {
    pub function_name: String,
    pub function_arn: String,
    /// Absent for container images, which bring their own runtime.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    pub role: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub handler: Option<String>,
    pub code_size: u64,
    pub description: String,
    pub timeout: u32,
    pub memory_size: u32,
    pub last_modified: String,
    pub code_sha256: String,
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
    pub tracing_config: TracingConfig,
    pub revision_id: String,
    pub state: &'static str,
    pub last_update_status: &'static str,
    pub package_type: &'static str,
    pub architectures: [&'static str; 1],
    pub ephemeral_storage: EphemeralStorage,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<LayerView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_config_response: Option<ImageConfigResponse>,
    pub snap_start: SnapStartResponse,
    /// A container image's URI as given and pinned, for GetFunction's `Code`.
    #[serde(skip)]
    pub image_uris: Option<(String, String)>,
}

/// A layer in a function's configuration.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LayerView {
    pub arn: String,
    pub code_size: u64,
}

impl FunctionConfiguration {
    pub fn from_record(r: &FunctionRecord, arn: String) -> Self {
        Self {
            function_name: r.name.clone(),
            function_arn: arn,
            runtime: r.image.is_none().then(|| r.runtime.clone()),
            role: r.role.clone(),
            handler: r.handler.clone(),
            code_size: r.code_size,
            description: r.description.clone(),
            timeout: r.timeout,
            memory_size: r.memory_size,
            last_modified: r.last_modified.clone(),
            code_sha256: r.reported_code_sha256().to_owned(),
            version: r.version.clone(),
            environment: (!r.environment.is_empty()).then(|| Environment {
                variables: Some(r.environment.clone()),
            }),
            tracing_config: TracingConfig {
                mode: "PassThrough",
            },
            revision_id: r.revision_id.clone(),
            state: "Active",
            last_update_status: "Successful",
            package_type: if r.image.is_some() { "Image" } else { "Zip" },
            architectures: ["x86_64"],
            ephemeral_storage: EphemeralStorage {
                size: i64::from(r.ephemeral_storage),
            },
            layers: r
                .layers
                .iter()
                .map(|l| LayerView {
                    arn: l.arn.clone(),
                    code_size: l.code_size,
                })
                .collect(),
            image_config_response: r
                .image
                .as_ref()
                .filter(|i| i.config != ImageConfig::default())
                .map(|i| ImageConfigResponse {
                    image_config: i.config.clone(),
                }),
            image_uris: r
                .image
                .as_ref()
                .map(|i| (i.uri.clone(), i.resolved_uri.clone())),
            snap_start: SnapStartResponse {
                apply_on: if r.snap_start {
                    "PublishedVersions"
                } else {
                    "None"
                },
                optimization_status: if r.snap_start_applies() { "On" } else { "Off" },
            },
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CodeLocation {
    pub repository_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_uri: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resolved_image_uri: Option<String>,
}

impl CodeLocation {
    /// Where a version's code lives, as GetFunction reports it.
    pub fn of(configuration: &FunctionConfiguration) -> Self {
        match &configuration.image_uris {
            Some((uri, resolved)) => Self {
                repository_type: "ECR",
                image_uri: Some(uri.clone()),
                resolved_image_uri: Some(resolved.clone()),
            },
            None => Self {
                repository_type: "S3",
                image_uri: None,
                resolved_image_uri: None,
            },
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetFunctionResponse {
    pub configuration: FunctionConfiguration,
    pub code: CodeLocation,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tags: Option<crate::registry::Tags>,
    /// The function's reserved concurrency, when it has one (as Lambda shows it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Concurrency {
    pub reserved_concurrent_executions: u32,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListFunctionsResponse {
    pub functions: Vec<FunctionConfiguration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListVersionsResponse {
    pub versions: Vec<FunctionConfiguration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}
