//! A version's new code as CreateFunction and UpdateFunctionCode receive it: a .zip
//! (checked, then sealed as is) or a container image (pulled, flattened and stored in
//! chunks by [`crate::images`], its package sealed instead).

use crate::codestore::code_sha256;
use crate::http::ApiError;
use crate::images::ImportError;
use crate::registry::ImageRecord;
use crate::Supervisor;

use super::model::ImageConfig;
use super::validate;

/// Lambda's bounds on `ImageConfig`.
const MAX_IMAGE_CONFIG_ITEMS: usize = 1500;
const MAX_WORKING_DIRECTORY: usize = 1000;

/// Code ready to be sealed.
pub struct NewCode {
    pub bytes: Vec<u8>,
    pub sha256: String,
    /// `CodeSize`: the zip's bytes; 0 for an image, as Lambda reports.
    pub size: u64,
    pub unzipped_size: u64,
    pub image: Option<ImageRecord>,
    /// An image's chunks, kept from collection until the version is registered.
    pub chunk_hold: Option<crate::images::ChunkHold>,
}

/// Whether `PackageType` asks for a container image.
pub fn is_image(package_type: Option<&str>) -> Result<bool, ApiError> {
    match package_type {
        None | Some("Zip") => Ok(false),
        Some("Image") => Ok(true),
        Some(other) => Err(ApiError::invalid(format!(
            "1 validation error detected: Value '{other}' at 'packageType' failed to satisfy \
             constraint: Member must satisfy enum value set: [Image, Zip]"
        ))),
    }
}

/// An image function brings its runtime: Lambda refuses the settings of a .zip one.
pub fn refuse_zip_settings(runtime: bool, handler: bool, layers: bool) -> Result<(), ApiError> {
    if runtime || handler || layers {
        return Err(ApiError::invalid(
            "Please don't provide Handler or Runtime or Layer when the intended function \
             PackageType is Image",
        ));
    }
    Ok(())
}

pub fn check_image_config(c: &ImageConfig) -> Result<(), ApiError> {
    let long =
        |v: &Option<Vec<String>>| v.as_ref().is_some_and(|v| v.len() > MAX_IMAGE_CONFIG_ITEMS);
    if long(&c.entry_point) || long(&c.command) {
        return Err(ApiError::invalid(format!(
            "ImageConfig EntryPoint and Command take at most {MAX_IMAGE_CONFIG_ITEMS} items"
        )));
    }
    if c.working_directory
        .as_ref()
        .is_some_and(|d| d.len() > MAX_WORKING_DIRECTORY)
    {
        return Err(ApiError::invalid(format!(
            "ImageConfig WorkingDirectory is longer than {MAX_WORKING_DIRECTORY} characters"
        )));
    }
    Ok(())
}

/// A base64 .zip, checked against the package limits.
pub fn from_zip(sup: &Supervisor, b64: &str) -> Result<NewCode, ApiError> {
    let zip = validate::decode_zip(b64)?;
    let unzipped_size = sup.store().validate(&zip)?.unzipped_size;
    Ok(NewCode {
        sha256: code_sha256(&zip),
        size: zip.len() as u64,
        unzipped_size,
        bytes: zip,
        image: None,
        chunk_hold: None,
    })
}

/// Pulls and stores the image `uri` names (blocking: runs the pull on the runtime from
/// a blocking-pool thread). Nothing is registered on failure; chunks already written
/// are collected by the next collection (`crate::chunk_gc`).
pub fn from_image(sup: &Supervisor, uri: &str, config: ImageConfig) -> Result<NewCode, ApiError> {
    check_image_config(&config)?;
    let imported = tokio::runtime::Handle::current()
        .block_on(sup.images().import(uri))
        .map_err(|e| import_error(uri, &e))?;
    tracing::info!(
        image = %imported.pinned_uri,
        bytes = imported.stats.bytes,
        chunks = imported.stats.chunks,
        new_chunks = imported.stats.new_chunks,
        "container image stored"
    );
    if let Some(shared) = sup.shared() {
        copy_chunks_to_peers(sup, &shared.peers, &imported.package)?;
    }
    Ok(NewCode {
        sha256: code_sha256(&imported.package),
        size: 0,
        unzipped_size: imported.stats.bytes,
        bytes: imported.package,
        image: Some(ImageRecord {
            uri: uri.to_owned(),
            resolved_uri: imported.pinned_uri,
            config,
        }),
        chunk_hold: Some(imported.hold),
    })
}

/// With `--etcd`: the image's chunks go to another frontend before the upload is
/// acknowledged, as its package does (`crate::shared::peer_chunks`).
fn copy_chunks_to_peers(
    sup: &Supervisor,
    peers: &crate::shared::peer_code::PeerCode,
    package: &[u8],
) -> Result<(), ApiError> {
    let package = worker::code::image::ImagePackage::decode(package)
        .map_err(|e| ApiError::service(format!("the image's own package: {e}")))?;
    let ids: Vec<chunkstore::ChunkId> = package.manifest.stored_ids().collect();
    peers
        .push_chunks(&sup.images().chunks(), &ids)
        .map(drop)
        .map_err(|e| ApiError::new(crate::http::ErrorKind::ServiceUnavailable, e.to_string()))
}

/// Lambda's shapes: the client's image is at fault (InvalidParameterValueException),
/// or this host is (ServiceException).
fn import_error(uri: &str, e: &ImportError) -> ApiError {
    use oci_image::PullError;
    match e {
        ImportError::Pull(PullError::NotFound(_)) => ApiError::invalid(format!(
            "Source image {uri} does not exist. Provide a valid source image."
        )),
        e if e.is_client_error() => ApiError::invalid(format!("Source image {uri}: {e}")),
        e => ApiError::service(format!("Source image {uri} could not be stored: {e}")),
    }
}
