//! Container images as function code: an image's layers (tar archives, plain, gzip or
//! zstd) applied in order into one directory tree, with OCI whiteouts and opaque
//! directories, as a container runtime would see the image's root.
//!
//! - [`layer`]: which compression a layer's media type means, and its decoder.
//! - [`path`]: entry paths made relative and refused when they climb out; symlinks
//!   resolved inside the root, never out of it.
//! - [`flatten`]: applying layers to a root, bounded in bytes and entries.
//! - [`ext4`]: a flattened root as a reproducible ext4 image.
//! - [`pull`]: an image URI on a configured registry resolved to a pinned linux/amd64
//!   manifest, its layers fetched (digest-checked, bounded) and flattened.

pub mod ext4;
mod extensions;
pub mod flatten;
pub mod layer;
mod metadata;
pub mod path;
pub mod pull;

pub use extensions::ExtensionError;
pub use flatten::{FlattenError, FlattenLimits, FlattenStats, Flattener};
pub use layer::{Compression, LayerError};
pub use path::PathError;
pub use pull::{ImageConfig, PullError, Puller, Registry, ResolvedImage};
