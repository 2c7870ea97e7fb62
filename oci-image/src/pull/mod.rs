//! Resolving an image URI on a configured registry to one linux/amd64 image manifest
//! (by digest, so a later push to the tag changes nothing), and pulling its layers,
//! each checked against its digest and bounded in size, into a flattened root.

mod config;
mod limited;
mod registry;

use std::path::Path;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{OciDescriptor, OciImageManifest, OciManifest};
use oci_client::{Client, Reference};

pub use config::{ConfigError, ImageConfig};
pub use registry::{Credentials, Registry};

use crate::flatten::{FlattenError, FlattenLimits, FlattenStats, Flattener};
use crate::layer::{Compression, LayerError};
use limited::Limited;

/// The largest config blob read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, Copy)]
pub struct PullLimits {
    /// Compressed bytes of all layers together.
    pub max_download_bytes: u64,
    pub flatten: FlattenLimits,
}

impl Default for PullLimits {
    fn default() -> Self {
        Self {
            max_download_bytes: 10 << 30,
            flatten: FlattenLimits::default(),
        }
    }
}

/// One layer to fetch: its blob digest, media type and compressed size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    pub digest: String,
    pub media_type: String,
    pub size: u64,
}

/// An image URI pinned to the manifest it named when it was resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedImage {
    /// `registry/repository@sha256:...`: the URI to pull from from now on.
    pub pinned_uri: String,
    /// The manifest's digest (`sha256:...`).
    pub digest: String,
    pub config: ImageConfig,
    pub layers: Vec<LayerRef>,
}

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("image URI {0:?} is not registry/repository:tag or registry/repository@sha256:digest")]
    Uri(String),
    #[error("registry {0} is not one this host pulls from")]
    UnknownRegistry(String),
    #[error("image {0} was not found")]
    NotFound(String),
    #[error("registry {0} refused the configured credentials")]
    Unauthorized(String),
    #[error("registry {host} could not be reached: {detail}")]
    Unreachable { host: String, detail: String },
    #[error("image {uri} has no linux/amd64 image (it has {found})")]
    NoAmd64 { uri: String, found: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("layer {digest}: {source}")]
    Layer { digest: String, source: LayerError },
    #[error("the image's layers are over {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("blob {digest} does not match its digest")]
    Digest { digest: String },
    #[error("registry {host}: {detail}")]
    Registry { host: String, detail: String },
    #[error(transparent)]
    Flatten(#[from] FlattenError),
    #[error("staging a layer: {0}")]
    Io(#[from] std::io::Error),
    /// The HTTP client could not be set up (e.g. a host without CA certificates).
    #[error("registry client: {0}")]
    Client(#[source] OciDistributionError),
}

impl PullError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Unreachable { .. } | Self::Io(_))
    }
}

pub struct Puller {
    client: Client,
    registries: Vec<Registry>,
    limits: PullLimits,
}

impl Puller {
    /// Fails where the HTTP client cannot be built: reqwest refuses a host without CA
    /// certificates, even when every registry is plain HTTP.
    pub fn new(registries: Vec<Registry>, limits: PullLimits) -> Result<Self, PullError> {
        let plain: Vec<String> = registries
            .iter()
            .filter(|r| r.plain_http)
            .map(|r| r.host.clone())
            .collect();
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(plain),
            // Indexes are resolved here, so the platform choice is explicit.
            platform_resolver: None,
            connect_timeout: Some(std::time::Duration::from_secs(10)),
            read_timeout: Some(std::time::Duration::from_secs(60)),
            ..ClientConfig::default()
        };
        Ok(Self {
            client: Client::try_from(config).map_err(PullError::Client)?,
            registries,
            limits,
        })
    }

    fn registry_for(&self, reference: &Reference) -> Result<&Registry, PullError> {
        self.registries
            .iter()
            .find(|r| r.host == reference.registry())
            .ok_or_else(|| PullError::UnknownRegistry(reference.registry().to_string()))
    }

    /// Resolves `uri` to a pinned linux/amd64 image, its run config and its layers.
    pub async fn resolve(&self, uri: &str) -> Result<ResolvedImage, PullError> {
        let reference = parse_uri(uri)?;
        let registry = self.registry_for(&reference)?;
        let auth = registry.auth();
        let host = registry.host.as_str();
        let (manifest, digest) = self
            .client
            .pull_manifest(&reference, &auth)
            .await
            .map_err(|e| classify(host, uri, e))?;
        let (manifest, digest) = match manifest {
            OciManifest::Image(m) => (m, digest),
            OciManifest::ImageIndex(index) => {
                let chosen = oci_client::client::linux_amd64_resolver(&index.manifests);
                let Some(chosen) = chosen else {
                    return Err(PullError::NoAmd64 {
                        uri: uri.to_string(),
                        found: platforms(&index.manifests),
                    });
                };
                let pinned = reference.clone_with_digest(chosen);
                match self.client.pull_manifest(&pinned, &auth).await {
                    Ok((OciManifest::Image(m), d)) => (m, d),
                    Ok(_) => return Err(nested_index(host)),
                    Err(e) => return Err(classify(host, uri, e)),
                }
            }
        };
        let pinned = reference.clone_with_digest(digest.clone());
        let config = self.config(&pinned, host, uri, &manifest.config).await?;
        let layers = self.layers(&manifest)?;
        Ok(ResolvedImage {
            pinned_uri: format!(
                "{}/{}@{digest}",
                reference.registry(),
                reference.repository()
            ),
            digest,
            config,
            layers,
        })
    }

    async fn config(
        &self,
        pinned: &Reference,
        host: &str,
        uri: &str,
        descriptor: &OciDescriptor,
    ) -> Result<ImageConfig, PullError> {
        let mut blob = Vec::new();
        let mut out = Limited::new(&mut blob, MAX_CONFIG_BYTES);
        let pulled = self.client.pull_blob(pinned, descriptor, &mut out).await;
        let over = out.exceeded();
        pulled.map_err(|e| match over {
            true => PullError::TooLarge {
                limit: MAX_CONFIG_BYTES,
            },
            false => classify(host, uri, e),
        })?;
        Ok(config::parse(&blob)?)
    }

    fn layers(&self, manifest: &OciImageManifest) -> Result<Vec<LayerRef>, PullError> {
        let mut total = 0u64;
        let mut out = Vec::with_capacity(manifest.layers.len());
        for l in &manifest.layers {
            // The digest names a staging file: only the digest forms there are.
            if !is_digest(&l.digest) {
                return Err(PullError::Registry {
                    host: String::new(),
                    detail: format!("layer digest {:?} is not sha256:<64 hex digits>", l.digest),
                });
            }
            Compression::from_media_type(&l.media_type).map_err(|source| PullError::Layer {
                digest: l.digest.clone(),
                source,
            })?;
            let size = u64::try_from(l.size).unwrap_or(u64::MAX);
            total = total.saturating_add(size);
            if total > self.limits.max_download_bytes {
                return Err(PullError::TooLarge {
                    limit: self.limits.max_download_bytes,
                });
            }
            out.push(LayerRef {
                digest: l.digest.clone(),
                media_type: l.media_type.clone(),
                size,
            });
        }
        Ok(out)
    }

    /// Downloads the image's layers into `staging` (each checked against its digest and
    /// its declared size) and flattens them into `root`, bottom layer first.
    pub async fn pull_into(
        &self,
        image: &ResolvedImage,
        staging: &Path,
        root: &Path,
    ) -> Result<FlattenStats, PullError> {
        let reference = parse_uri(&image.pinned_uri)?;
        let registry = self.registry_for(&reference)?;
        let host = registry.host.clone();
        // Blob pulls reuse the login a manifest pull stores; this pull may have none.
        self.client
            .store_auth_if_needed(reference.resolve_registry(), &registry.auth())
            .await;
        tokio::fs::create_dir_all(staging).await?;
        let mut blobs = Vec::with_capacity(image.layers.len());
        for layer in &image.layers {
            let path = staging.join(layer.digest.replace(':', "-"));
            let file = tokio::fs::File::create(&path).await?;
            let mut out = Limited::new(file, layer.size);
            let descriptor = OciDescriptor {
                digest: layer.digest.clone(),
                media_type: layer.media_type.clone(),
                size: layer.size as i64,
                ..OciDescriptor::default()
            };
            let pulled = self
                .client
                .pull_blob(&reference, &descriptor, &mut out)
                .await;
            if out.exceeded() {
                return Err(PullError::Digest {
                    digest: layer.digest.clone(),
                });
            }
            pulled.map_err(|e| classify(&host, &image.pinned_uri, e))?;
            blobs.push((path, layer.clone()));
        }
        let root = root.to_path_buf();
        let limits = self.limits.flatten;
        tokio::task::spawn_blocking(move || flatten_blobs(&root, limits, &blobs))
            .await
            .map_err(|e| PullError::Io(std::io::Error::other(e)))?
    }
}

fn flatten_blobs(
    root: &Path,
    limits: FlattenLimits,
    blobs: &[(std::path::PathBuf, LayerRef)],
) -> Result<FlattenStats, PullError> {
    let mut flattener = Flattener::new(root, limits)?;
    for (path, layer) in blobs {
        let layer_err = |source| PullError::Layer {
            digest: layer.digest.clone(),
            source,
        };
        let compression = Compression::from_media_type(&layer.media_type).map_err(layer_err)?;
        let file = std::fs::File::open(path)?;
        flattener.apply_layer(compression.decoder(file).map_err(layer_err)?)?;
        std::fs::remove_file(path)?;
    }
    Ok(flattener.finish()?)
}

/// Lambda's image URIs name a tag or a digest; a bare repository is refused rather
/// than read as `:latest`.
fn parse_uri(uri: &str) -> Result<Reference, PullError> {
    let bad = || PullError::Uri(uri.to_string());
    let last = uri.rsplit('/').next().unwrap_or("");
    let (has_host, has_version) = (uri.contains('/'), uri.contains('@') || last.contains(':'));
    if !has_host || !has_version {
        return Err(bad());
    }
    uri.parse().map_err(|_| bad())
}

/// `sha256:` and 64 lowercase hex digits.
fn is_digest(d: &str) -> bool {
    d.strip_prefix("sha256:").is_some_and(|hex| {
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    })
}

fn platforms(entries: &[oci_client::manifest::ImageIndexEntry]) -> String {
    let list: Vec<String> = entries
        .iter()
        .filter_map(|e| e.platform.as_ref())
        .map(|p| format!("{}/{}", p.os, p.architecture))
        .collect();
    if list.is_empty() {
        "no platform".into()
    } else {
        list.join(", ")
    }
}

fn nested_index(host: &str) -> PullError {
    PullError::Registry {
        host: host.to_string(),
        detail: "an image index entry is itself an index".into(),
    }
}

/// Registry failures as the function's author needs to read them.
fn classify(host: &str, uri: &str, e: OciDistributionError) -> PullError {
    use OciDistributionError as E;
    match e {
        E::ImageManifestNotFoundError(_) => PullError::NotFound(uri.to_string()),
        E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => {
            PullError::Unauthorized(host.to_string())
        }
        E::DigestError(_) => PullError::Digest {
            digest: uri.to_string(),
        },
        E::RequestError(r) if r.is_connect() || r.is_timeout() => PullError::Unreachable {
            host: host.to_string(),
            detail: r.to_string(),
        },
        E::ServerError { code: 404, .. } => PullError::NotFound(uri.to_string()),
        E::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    oci_client::errors::OciErrorCode::ManifestUnknown
                        | oci_client::errors::OciErrorCode::NameUnknown
                        | oci_client::errors::OciErrorCode::BlobUnknown
                )
            }) =>
        {
            PullError::NotFound(uri.to_string())
        }
        other => PullError::Registry {
            host: host.to_string(),
            detail: other.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_sha256_digests_name_staging_files() {
        assert!(is_digest(&format!("sha256:{}", "ab".repeat(32))));
        for bad in [
            "sha256:../../etc/passwd",
            "sha256:AB",
            "md5:00",
            &format!("sha256:{}", "AB".repeat(32)),
        ] {
            assert!(!is_digest(bad), "{bad}");
        }
    }

    #[test]
    fn image_uris_need_a_registry_and_a_tag_or_digest() {
        assert!(parse_uri("127.0.0.1:5000/fn/app:v1").is_ok());
        assert!(parse_uri(&format!("r.example/app@sha256:{}", "0".repeat(64))).is_ok());
        for bad in ["app:v1", "r.example/app", "r.example:5000/app", ""] {
            assert!(matches!(parse_uri(bad), Err(PullError::Uri(_))), "{bad}");
        }
    }
}
