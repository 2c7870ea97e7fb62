//! HTTP front end: routing, authentication layer, body limits, AWS error shapes, the
//! connection cap.

pub(crate) mod body;
pub mod error;
pub mod fdlimit;
pub mod peer;
mod server;

pub use error::{ApiError, ErrorKind};
pub(crate) use server::body_permit;
pub use server::{build_router, serve, LARGE_BODY_PERMITS, MAX_REQUEST_BYTES};
