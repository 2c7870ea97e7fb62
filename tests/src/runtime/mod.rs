//! Helpers for the Runtime API tests: guest-init run as a host process over a Unix
//! socket, a test host speaking the wire protocol, the test functions, and a raw
//! HTTP/1.1 client for poking the Runtime API directly.

pub mod bench;
pub mod binaries;
pub mod functions;
pub mod guest;
pub mod http;
pub mod tcg_guest;

pub use guest::{GuestProcess, InvokeOutcome, Sandbox};
