//! A bound on the invoke request bytes a worker holds at once. Each invoke stream may
//! carry up to [`MAX_INVOKE_BYTES`], and a connection up to 1,024 streams: without a
//! shared bound, frontends could make a worker buffer gigabytes before any admission
//! check. An invoke takes its declared size (`content-length`, else the maximum) from
//! the budget before its body is read and gives it back when it ends; when the budget
//! is spent the invoke is refused as throttled, and the frontend places it elsewhere.
//!
//! [`MAX_INVOKE_BYTES`]: crate::link::wire::MAX_INVOKE_BYTES

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Request bytes all invokes on one worker may hold together (85 maximal payloads).
pub const BODY_BUDGET_BYTES: usize = 512 << 20;

/// Accounted in KiB: a permit per started KiB.
const UNIT: usize = 1024;

pub struct BodyBudget {
    permits: Arc<Semaphore>,
    refused: AtomicU64,
}

impl BodyBudget {
    pub fn new(bytes: usize) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(bytes.div_ceil(UNIT))),
            refused: AtomicU64::new(0),
        }
    }

    /// Room for a body of `len` bytes, held until the permit is dropped; `None` (and
    /// counted) when the budget cannot take it now.
    pub fn take(&self, len: usize) -> Option<OwnedSemaphorePermit> {
        let units = u32::try_from(len.div_ceil(UNIT).max(1)).ok()?;
        match self.permits.clone().try_acquire_many_owned(units) {
            Ok(p) => Some(p),
            Err(_) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Invokes refused for want of room.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// The body size a request declares, if it does so readably.
pub fn declared_length<B>(req: &http::Request<B>) -> Option<usize> {
    req.headers()
        .get(http::header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_share_the_budget_and_give_it_back() {
        let b = BodyBudget::new(10 * UNIT);
        let big = b.take(6 * UNIT).expect("fits");
        let small = b.take(1).expect("one KiB");
        assert!(b.take(4 * UNIT).is_none(), "6 + 1 + 4 KiB > 10 KiB");
        assert_eq!(b.refused(), 1);
        drop(big);
        assert!(b.take(9 * UNIT).is_some(), "given back");
        drop(small);
        assert!(b.take(0).is_some(), "an empty body still counts one unit");
    }

    #[test]
    fn the_declared_length_is_read_from_content_length() {
        let req = |v: &str| {
            http::Request::post("/")
                .header(http::header::CONTENT_LENGTH, v)
                .body(())
                .expect("request")
        };
        assert_eq!(declared_length(&req("1234")), Some(1234));
        assert_eq!(declared_length(&req("-1")), None);
        assert_eq!(declared_length(&http::Request::new(())), None);
    }
}
