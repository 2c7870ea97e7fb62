//! vmm: a microVM monitor on KVM built from rust-vmm crates.

pub mod devices;
