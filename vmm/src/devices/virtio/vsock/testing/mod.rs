//! Test support: a guest driver emulated on `virtio-queue`'s mock queues, the device
//! run by a real `event-manager` loop, and a tiny guest vsock stack on top.
//!
//! Available to unit tests, and to other crates (integration tests, benches) with the
//! `vsock-test-utils` feature.

mod driver;
mod harness;
mod peer;
mod stack;

pub use driver::{GuestDriver, Seg, TestInterrupt, RX_SLOT_SIZE};
pub use harness::VsockHarness;
pub use peer::{pattern, run_emulated_peer, EmulatedPeer};
pub use stack::{GConnState, GuestStack, SockKey};
