//! The worker's lease: at its end the daemon drains (no new invokes, in-flight ones
//! finish, sandboxes stop), then leaves or starts a new incarnation.

use super::{new_incarnation, Daemon};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Frontends stop placing invokes this long before the lease ends (they see the
/// remaining lease in the status); the worker refuses new ones from then on too.
pub fn drain_margin(lease: Duration) -> Duration {
    (lease / 10).clamp(Duration::from_secs(1), Duration::from_secs(900))
}

/// Waits out leases; returns when the daemon should leave.
pub(super) async fn run(d: Arc<Daemon>, rejoin: bool) {
    loop {
        let end = d.incarnation().lease_end;
        let margin = drain_margin(d.lease);
        tokio::time::sleep_until((end.checked_sub(margin).unwrap_or(end)).into()).await;
        d.draining.store(true, Ordering::SeqCst);
        eprintln!("worker {}: lease ending, draining", d.id);
        // In-flight invokes may run to their own timeout (at most 15 minutes).
        drain(&d, Duration::from_secs(900)).await;
        if !rejoin {
            eprintln!("worker {}: lease ended, leaving", d.id);
            return;
        }
        let inc = new_incarnation(d.lease);
        eprintln!("worker {}: rejoining as incarnation {}", d.id, inc.id);
        d.incarnation.send_replace(inc);
        d.draining.store(false, Ordering::SeqCst);
    }
}

/// Waits (up to `limit`) for in-flight invokes, then stops every sandbox.
pub(super) async fn drain(d: &Daemon, limit: Duration) {
    let until = Instant::now() + limit;
    while d.in_flight.load(Ordering::SeqCst) > 0 && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    d.host.worker.shutdown_idle();
    // Sandboxes stop in the background; give them their grace period.
    tokio::time::sleep(Duration::from_millis(700)).await;
}
