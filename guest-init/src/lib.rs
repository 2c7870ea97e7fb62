//! guest-init: PID 1 inside the microVM guest.
//!
//! As PID 1 it prepares the guest's filesystems, connects to the host over vsock, runs
//! the Lambda Runtime API and the function's runtime, and powers the VM off at the end.
//! Started as an ordinary process (not PID 1) it skips everything that would touch the
//! host system, so tests can run it on the host with `--host-uds PATH`.

pub mod agent;
pub mod bootstrap;
pub mod clock;
pub use pid1::cmdline;
pub mod config;
pub mod entropy;
pub mod environment;
pub mod exit_status;
pub mod host_reader;
pub mod link;
pub mod logs;
pub mod mounts;
pub mod net;
pub mod power;
pub mod runtime_proc;
pub mod transport;
pub mod uptime;
