//! The frontend's data-plane settings (`supervisor serve` flags and config file); the
//! host itself is started by [`worker::host::Host::start`].

pub mod args;
pub mod config;

pub use args::{DataPlaneArgs, DataPlaneFile};
pub use config::{DataPlaneConfig, Prewarm};
pub use worker::host::{Host, HostError};
