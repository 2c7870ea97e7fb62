//! HTTP front end: routing, authentication layer, AWS error shapes.

mod body;
pub mod error;
mod server;

pub use error::{ApiError, ErrorKind};
pub use server::{build_router, serve, LARGE_BODY_PERMITS, MAX_REQUEST_BYTES};
