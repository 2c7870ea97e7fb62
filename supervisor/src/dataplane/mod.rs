//! The supervisor's side of the worker interface: settings and construction of the
//! [`worker::Worker`] that runs sandboxes on this host.

pub mod args;
mod build;
pub mod config;
pub mod sweep;

pub use args::{DataPlaneArgs, DataPlaneFile};
pub use build::{build, BuildContext, CodeForm, DataPlane, DataPlaneError};
pub use config::{DataPlaneConfig, Prewarm};
