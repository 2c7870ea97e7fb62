//! The function API operations. Blocking (SQLite, fsync, AES over up to
//! 50 MB): handlers run them on the blocking pool. Mutations hold the
//! supervisor's write lock and follow one order for crash safety: seal and
//! fsync new code objects, commit the registry transaction, then delete
//! code objects that are no longer referenced. A crash in between leaves
//! only unreferenced objects, which startup removes.

use crate::codestore::CodeAad;
use crate::http::ApiError;
use crate::ids::uuid_v4;
use crate::registry::{FunctionRecord, RegistryError, LATEST};
use crate::timefmt::{lambda_timestamp, now};
use crate::Supervisor;

use super::model::{
    CreateFunctionRequest, FunctionConfiguration, ListFunctionsResponse, ListVersionsResponse,
    PublishVersionRequest, UpdateFunctionCodeRequest, UpdateFunctionConfigurationRequest,
};
use super::names::FunctionRef;
use super::validate;

/// What a version's sealed code object is bound to.
pub(crate) fn aad(r: &FunctionRecord) -> CodeAad<'_> {
    CodeAad {
        function: &r.name,
        version: &r.version,
        code_sha256: &r.code_sha256,
    }
}

/// Response shape of a record; `$LATEST` is unqualified unless asked for.
pub fn configuration(
    sup: &Supervisor,
    r: &FunctionRecord,
    qualified: bool,
) -> FunctionConfiguration {
    let q = (qualified || r.version != LATEST).then_some(r.version.as_str());
    FunctionConfiguration::from_record(r, sup.function_arn(&r.name, q))
}

fn not_found(sup: &Supervisor, name: &str, q: Option<&str>) -> ApiError {
    ApiError::not_found(format!("Function not found: {}", sup.function_arn(name, q)))
}

fn discard(sup: &Supervisor, objects: &[String]) {
    for o in objects {
        if let Err(e) = sup.store().remove(o) {
            // Unreferenced already; startup garbage collection retries.
            tracing::warn!(object = %o, error = %e, "could not remove code object");
        }
    }
}

fn check_revision(cur: &FunctionRecord, wanted: Option<&str>) -> Result<(), ApiError> {
    match wanted {
        Some(w) if w != cur.revision_id => Err(RegistryError::Conflict.into()),
        _ => Ok(()),
    }
}

/// An update of `$LATEST` that lost to another made at the same moment (through
/// another frontend): with the client's RevisionId, Lambda's PreconditionFailed; without
/// one, Lambda's answer to an update while another is in progress.
fn lost_update(
    sup: &Supervisor,
    f: &FunctionRef,
    client_revision: Option<&str>,
    e: RegistryError,
) -> ApiError {
    match (e, client_revision) {
        (RegistryError::Conflict, None) => ApiError::conflict(format!(
            "The operation cannot be performed at this time. An update is in progress for resource: {}",
            sup.function_arn(&f.name, None)
        )),
        (e, _) => e.into(),
    }
}

fn unqualified(sup: &Supervisor, f: &FunctionRef) -> Result<(), ApiError> {
    match f.qualifier.as_deref() {
        None | Some(LATEST) => Ok(()),
        Some(q) => Err(ApiError::invalid(format!(
            "Only $LATEST can be modified; '{}' is a published version",
            sup.function_arn(&f.name, Some(q))
        ))),
    }
}

/// A .zip function's runtime, checked with its handler.
fn zip_runtime(
    runtime: Option<String>,
    handler: Option<&str>,
    image_config: bool,
) -> Result<String, ApiError> {
    if image_config {
        return Err(ApiError::invalid(
            "ImageConfig is only supported when PackageType is Image",
        ));
    }
    let runtime = runtime
        .ok_or_else(|| ApiError::invalid("Runtime is required for .zip deployment packages"))?;
    validate::runtime(&runtime)?;
    if let Some(h) = handler {
        validate::handler(h)?;
    }
    validate::handler_for_runtime(&runtime, handler)?;
    Ok(runtime)
}

fn only_x86(arch: Option<&Vec<String>>) -> Result<(), ApiError> {
    match arch {
        Some(a) if a.iter().any(|x| x != "x86_64") => Err(ApiError::invalid(
            "Only the x86_64 architecture is supported",
        )),
        _ => Ok(()),
    }
}

pub fn create_function(
    sup: &Supervisor,
    req: CreateFunctionRequest,
) -> Result<FunctionConfiguration, ApiError> {
    let raw_name = req
        .function_name
        .as_deref()
        .ok_or_else(|| ApiError::invalid("FunctionName is required"))?;
    let cfg = sup.config();
    let f = super::names::resolve(raw_name, None, &cfg.region, &cfg.account_id)?;
    if f.qualifier.is_some() {
        return Err(ApiError::invalid(
            "FunctionName must not carry a qualifier on CreateFunction",
        ));
    }
    let image = super::code::is_image(req.package_type.as_deref())?;
    only_x86(req.architectures.as_ref())?;
    let runtime = if image {
        let layers = req.layers.as_ref().is_some_and(|l| !l.is_empty());
        super::code::refuse_zip_settings(req.runtime.is_some(), req.handler.is_some(), layers)?;
        String::new()
    } else {
        zip_runtime(
            req.runtime,
            req.handler.as_deref(),
            req.image_config.is_some(),
        )?
    };
    let role = req
        .role
        .ok_or_else(|| ApiError::invalid("Role is required"))?;
    validate::role(&role)?;
    let description = req.description.unwrap_or_default();
    validate::description(&description)?;
    let timeout = validate::timeout(req.timeout.unwrap_or(3))?;
    let memory_size = validate::memory_size(req.memory_size.unwrap_or(128))?;
    let ephemeral_storage = validate::ephemeral(req.ephemeral_storage.map_or(512, |e| e.size))?;
    let environment = req
        .environment
        .and_then(|e| e.variables)
        .unwrap_or_default();
    validate::environment(&environment)?;
    let tags = req.tags.unwrap_or_default();
    super::tags::validate(&tags)?;
    let snap_start = req
        .snap_start
        .as_ref()
        .map_or(Ok(false), validate::snap_start)?;
    let code = req
        .code
        .ok_or_else(|| ApiError::invalid("Code is required"))?;
    let new_code = if image {
        let uri = code.image_uri.ok_or_else(|| {
            ApiError::invalid("Code.ImageUri is required when PackageType is Image")
        })?;
        super::code::from_image(sup, &uri, req.image_config.unwrap_or_default())?
    } else {
        let b64 = code.zip_file.ok_or_else(|| {
            ApiError::invalid(
                "Only Code.ZipFile is supported for .zip functions (S3 locations are not)",
            )
        })?;
        super::code::from_zip(sup, &b64)?
    };
    let _guard = sup.write_guard();
    let layers =
        super::layer::resolve_layers(sup, &req.layers.unwrap_or_default(), new_code.unzipped_size)?;
    if sup.registry().get(&f.name, LATEST)?.is_some() {
        return Err(ApiError::conflict(format!(
            "Function already exist: {}",
            f.name
        )));
    }
    let mut latest = FunctionRecord {
        name: f.name.clone(),
        version: LATEST.to_owned(),
        runtime,
        role,
        handler: req.handler,
        description,
        timeout,
        memory_size,
        environment,
        ephemeral_storage,
        code_sha256: new_code.sha256,
        code_size: new_code.size,
        code_object: String::new(),
        last_modified: lambda_timestamp(now()),
        revision_id: uuid_v4(),
        unzipped_size: new_code.unzipped_size,
        layers,
        image: new_code.image,
        snap_start,
    };
    let zip = new_code.bytes;
    // put() encrypts in place, so Publish needs its own plaintext copy.
    let zip_for_v1 = req.publish.unwrap_or(false).then(|| zip.clone());
    latest.code_object = sup.store().put(&aad(&latest), zip)?;
    let mut objects = vec![latest.code_object.clone()];
    let published = if let Some(zip) = zip_for_v1 {
        let mut v1 = latest.clone();
        v1.version = "1".to_owned();
        v1.revision_id = uuid_v4();
        match sup.store().put(&aad(&v1), zip) {
            Ok(o) => v1.code_object = o,
            Err(e) => {
                discard(sup, &objects);
                return Err(e.into());
            }
        }
        objects.push(v1.code_object.clone());
        Some(v1)
    } else {
        None
    };
    if let Err(e) = sup.registry().create(&latest, published.as_ref(), &tags) {
        discard(sup, &objects);
        return Err(e.into());
    }
    Ok(configuration(
        sup,
        published.as_ref().unwrap_or(&latest),
        false,
    ))
}

/// A version's configuration; through an alias, the alias's primary version's, under
/// the alias's ARN (as Lambda answers).
pub fn get(sup: &Supervisor, f: &FunctionRef) -> Result<FunctionConfiguration, ApiError> {
    let v = super::alias::version_of(sup, f)?;
    let r = sup
        .registry()
        .get(&f.name, &v)?
        .ok_or_else(|| not_found(sup, &f.name, f.qualifier.as_deref()))?;
    let mut c = configuration(sup, &r, f.qualifier.is_some());
    if let Some(q) = f.qualifier.as_deref() {
        c.function_arn = sup.function_arn(&f.name, Some(q));
    }
    Ok(c)
}

pub fn list_functions(
    sup: &Supervisor,
    all: bool,
    marker: Option<&str>,
    max: usize,
) -> Result<ListFunctionsResponse, ApiError> {
    let page = sup.registry().list(all, None, marker, max)?;
    Ok(ListFunctionsResponse {
        functions: page
            .items
            .iter()
            .map(|r| configuration(sup, r, false))
            .collect(),
        next_marker: page.next_marker,
    })
}

pub fn list_versions(
    sup: &Supervisor,
    f: &FunctionRef,
    marker: Option<&str>,
    max: usize,
) -> Result<ListVersionsResponse, ApiError> {
    if sup.registry().get(&f.name, LATEST)?.is_none() {
        return Err(not_found(sup, &f.name, None));
    }
    let page = sup.registry().list(true, Some(&f.name), marker, max)?;
    Ok(ListVersionsResponse {
        versions: page
            .items
            .iter()
            .map(|r| configuration(sup, r, true))
            .collect(),
        next_marker: page.next_marker,
    })
}

pub fn update_code(
    sup: &Supervisor,
    f: &FunctionRef,
    req: UpdateFunctionCodeRequest<'_>,
) -> Result<FunctionConfiguration, ApiError> {
    unqualified(sup, f)?;
    only_x86(req.architectures.as_ref())?;
    let current_image = sup
        .registry()
        .get(&f.name, LATEST)?
        .ok_or_else(|| not_found(sup, &f.name, None))?
        .image;
    let new_code = match (current_image, req.image_uri, req.zip_file) {
        (Some(cur), Some(uri), _) => super::code::from_image(sup, &uri, cur.config)?,
        (Some(_), None, _) => {
            return Err(ApiError::invalid(
                "Please provide ImageUri when updating a function with packageType Image.",
            ))
        }
        (None, _, Some(b64)) => super::code::from_zip(sup, &b64)?,
        (None, _, None) => {
            return Err(ApiError::invalid(
                "Please provide ZipFile when updating a function with packageType Zip \
                 (S3 locations are not supported).",
            ))
        }
    };

    let _guard = sup.write_guard();
    let cur = sup
        .registry()
        .get(&f.name, LATEST)?
        .ok_or_else(|| not_found(sup, &f.name, None))?;
    check_revision(&cur, req.revision_id.as_deref())?;
    if cur.image.is_some() != new_code.image.is_some() {
        return Err(RegistryError::Conflict.into());
    }
    let mut new = cur.clone();
    new.code_sha256 = new_code.sha256;
    new.code_size = new_code.size;
    new.unzipped_size = new_code.unzipped_size;
    new.image = new_code.image;
    let zip = new_code.bytes;
    super::layer::check_total(&new)?;
    new.last_modified = lambda_timestamp(now());
    new.revision_id = uuid_v4();
    if req.dry_run.unwrap_or(false) {
        new.revision_id = cur.revision_id.clone();
        return Ok(configuration(sup, &new, false));
    }
    new.code_object = sup.store().put(&aad(&new), zip)?;
    if let Err(e) = sup.registry().update_latest(&new, &cur.revision_id) {
        discard(sup, &[new.code_object]);
        return Err(lost_update(sup, f, req.revision_id.as_deref(), e));
    }
    discard(sup, &[cur.code_object]);
    if req.publish.unwrap_or(false) {
        let v = publish_locked(sup, &new, None)?;
        return Ok(configuration(sup, &v, true));
    }
    Ok(configuration(sup, &new, false))
}

pub fn update_configuration(
    sup: &Supervisor,
    f: &FunctionRef,
    req: UpdateFunctionConfigurationRequest,
) -> Result<FunctionConfiguration, ApiError> {
    unqualified(sup, f)?;
    let _guard = sup.write_guard();
    let cur = sup
        .registry()
        .get(&f.name, LATEST)?
        .ok_or_else(|| not_found(sup, &f.name, None))?;
    check_revision(&cur, req.revision_id.as_deref())?;
    let mut new = cur.clone();
    if let Some(r) = req.role {
        validate::role(&r)?;
        new.role = r;
    }
    if let Some(h) = req.handler {
        validate::handler(&h)?;
        new.handler = Some(h);
    }
    if let Some(d) = req.description {
        validate::description(&d)?;
        new.description = d;
    }
    if let Some(t) = req.timeout {
        new.timeout = validate::timeout(t)?;
    }
    if let Some(m) = req.memory_size {
        new.memory_size = validate::memory_size(m)?;
    }
    if let Some(env) = req.environment {
        let vars = env.variables.unwrap_or_default();
        validate::environment(&vars)?;
        new.environment = vars;
    }
    if let Some(r) = req.runtime {
        validate::runtime(&r)?;
        new.runtime = r;
    }
    if let Some(e) = req.ephemeral_storage {
        new.ephemeral_storage = validate::ephemeral(e.size)?;
    }
    if let Some(arns) = req.layers {
        new.layers = super::layer::resolve_layers(sup, &arns, new.unzipped_size)?;
    }
    if let Some(s) = &req.snap_start {
        new.snap_start = validate::snap_start(s)?;
    }
    match (&mut new.image, req.image_config) {
        (Some(image), config) => {
            let changed = new.runtime != cur.runtime || new.handler != cur.handler;
            super::code::refuse_zip_settings(changed, false, !new.layers.is_empty())?;
            if let Some(c) = config {
                super::code::check_image_config(&c)?;
                image.config = c;
            }
        }
        (None, Some(_)) => {
            return Err(ApiError::invalid(
                "ImageConfig is only supported when PackageType is Image",
            ))
        }
        (None, None) => validate::handler_for_runtime(&new.runtime, new.handler.as_deref())?,
    }
    new.last_modified = lambda_timestamp(now());
    new.revision_id = uuid_v4();
    let client_revision = req.revision_id.as_deref();
    sup.registry()
        .update_latest(&new, &cur.revision_id)
        .map_err(|e| lost_update(sup, f, client_revision, e))?;
    Ok(configuration(sup, &new, false))
}

pub fn publish_version(
    sup: &Supervisor,
    f: &FunctionRef,
    req: PublishVersionRequest,
) -> Result<FunctionConfiguration, ApiError> {
    unqualified(sup, f)?;
    if let Some(d) = &req.description {
        validate::description(d)?;
    }
    let _guard = sup.write_guard();
    let cur = sup
        .registry()
        .get(&f.name, LATEST)?
        .ok_or_else(|| not_found(sup, &f.name, None))?;
    check_revision(&cur, req.revision_id.as_deref())?;
    let current = cur.reported_code_sha256();
    if let Some(sha) = req.code_sha256.as_deref().filter(|s| *s != current) {
        return Err(ApiError::invalid(format!(
            "CodeSHA256 ({sha}) is different from current CodeSHA256 in $LATEST ({current}). Please try again"
        )));
    }
    let v = publish_locked(sup, &cur, req.description)?;
    Ok(configuration(sup, &v, true))
}

/// Publishes `latest` as the next version (caller holds the write lock).
/// Publishing unchanged code and configuration returns the existing version.
fn publish_locked(
    sup: &Supervisor,
    latest: &FunctionRecord,
    description: Option<String>,
) -> Result<FunctionRecord, ApiError> {
    if let Some(p) = sup.registry().latest_published(&latest.name)? {
        if latest.same_content_as(&p) {
            return Ok(p);
        }
    }
    let n = sup.registry().next_version(&latest.name)?;
    let mut v = latest.clone();
    v.version = n.to_string();
    v.description = description.unwrap_or_else(|| latest.description.clone());
    v.last_modified = lambda_timestamp(now());
    v.revision_id = uuid_v4();
    v.code_object = sup
        .store()
        .copy(&latest.code_object, &aad(latest), &aad(&v))?;
    if let Err(e) = sup.registry().publish(&v, &latest.revision_id) {
        discard(sup, &[v.code_object]);
        return Err(e.into());
    }
    Ok(v)
}

pub fn delete(sup: &Supervisor, f: &FunctionRef) -> Result<(), ApiError> {
    let _guard = sup.write_guard();
    let result = match f.qualifier.as_deref() {
        None => sup.registry().delete_function(&f.name),
        Some(LATEST) => {
            return Err(ApiError::invalid(
                "$LATEST version cannot be deleted without deleting the function.",
            ))
        }
        Some(q) if super::alias::is_alias(q) => {
            return Err(ApiError::invalid(
                "Deletion of aliases is not supported through DeleteFunction; use DeleteAlias",
            ))
        }
        Some(v) => sup.registry().delete_version(&f.name, v),
    };
    match result {
        Ok(objects) => {
            discard(sup, &objects);
            sup.deleted(&f.name, f.qualifier.as_deref());
            Ok(())
        }
        Err(RegistryError::NotFound(_)) => Err(not_found(sup, &f.name, f.qualifier.as_deref())),
        Err(e) => Err(e.into()),
    }
}
