//! Shared helpers for the cross-crate integration tests: where the built guest images
//! are, and a launcher that boots them under QEMU TCG with a vhost-user vsock backend.

pub mod images;
pub mod runtime;
pub mod tcg;
