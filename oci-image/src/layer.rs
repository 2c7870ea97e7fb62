//! Layer media types (Docker's and OCI's) and their decoders.

use std::io::{BufReader, Read};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error(
        "layer media type {0:?} is not a tar layer this system reads (tar, tar+gzip or tar+zstd)"
    )]
    MediaType(String),
    #[error("the layer's zstd frame header is invalid: {0}")]
    Zstd(String),
}

impl Compression {
    /// The compression a layer media type names; foreign (non-distributable) layers are
    /// read like any other, since the registry serves them here.
    pub fn from_media_type(media_type: &str) -> Result<Self, LayerError> {
        let t = media_type.trim();
        let known = |suffix: &str| {
            [
                "application/vnd.oci.image.layer.v1.tar",
                "application/vnd.oci.image.layer.nondistributable.v1.tar",
            ]
            .iter()
            .any(|base| t == format!("{base}{suffix}"))
        };
        match t {
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Ok(Self::Gzip),
            "application/vnd.docker.image.rootfs.diff.tar" => Ok(Self::None),
            _ if known("") => Ok(Self::None),
            _ if known("+gzip") => Ok(Self::Gzip),
            _ if known("+zstd") => Ok(Self::Zstd),
            _ => Err(LayerError::MediaType(media_type.to_string())),
        }
    }

    /// The layer's tar stream.
    pub fn decoder<'a>(self, blob: impl Read + 'a) -> Result<Box<dyn Read + 'a>, LayerError> {
        Ok(match self {
            Self::None => Box::new(blob),
            Self::Gzip => Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(blob))),
            Self::Zstd => Box::new(
                ruzstd::decoding::StreamingDecoder::new(BufReader::new(blob))
                    .map_err(|e| LayerError::Zstd(e.to_string()))?,
            ),
        })
    }
}
