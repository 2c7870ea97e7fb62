//! vmm: a microVM monitor on KVM built from rust-vmm crates.
//!
//! Threads: the main thread builds the VM and then runs the `event-manager` loop for
//! devices (virtio backends, serial input, exit events); each vCPU runs on its own thread
//! and emulates PIO/MMIO accesses. Each thread kind has its own seccomp filter.

pub mod arch;
pub mod boot;
pub mod builder;
pub mod config;
pub mod devices;
pub mod exit;
pub mod exit_watcher;
pub mod logger;
pub mod metrics;
pub mod probe;
pub mod pvm;
pub mod runner;
pub mod seccomp;
pub mod snapshot;
#[doc(hidden)]
pub mod testing;
pub mod vstate;
