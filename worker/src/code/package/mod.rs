//! The deployment package format (a zip): validation before anything is unpacked, and
//! extraction of a validated package. Shared by the frontend (checks uploads) and the
//! worker (unpacks code for a sandbox).

pub mod central_dir;
pub mod extract;
pub mod zipcheck;

pub use extract::{extract, ExtractError};
pub use zipcheck::{validate, ZipError, ZipLimits, ZipPlan};
