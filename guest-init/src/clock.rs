//! The guest's wall clock against the host's. A guest's clock (kvm-clock) may start
//! off by up to a second and drift under load; deadlines are host times. guest-init
//! steps its clock to the host's at Init (PID 1 only), and gives the runtime every
//! deadline re-based on its own clock, so the time a function sees left is never more
//! than the host allows.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch on this machine's clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The host's deadline on the guest's clock: the same time left as when the host sent
/// it. Hosts that send no clock (`host_now_ms == 0`) keep their deadline.
pub fn rebase_deadline(deadline_ms: u64, host_now_ms: u64, guest_now_ms: u64) -> u64 {
    if host_now_ms == 0 {
        return deadline_ms;
    }
    guest_now_ms.saturating_add(deadline_ms.saturating_sub(host_now_ms))
}

/// Steps CLOCK_REALTIME to the host's time when the two differ by more than `tolerance`.
/// Returns the step taken in milliseconds (positive: the guest was behind).
pub fn sync_to_host(host_now_ms: u64, tolerance: Duration) -> std::io::Result<i64> {
    let guest = now_ms();
    let step = host_now_ms as i64 - guest as i64;
    if host_now_ms == 0 || step.unsigned_abs() <= tolerance.as_millis() as u64 {
        return Ok(0);
    }
    // `as _`: the field types differ between libcs (and musl's time_t is changing).
    let ts = libc::timespec {
        tv_sec: (host_now_ms / 1000) as _,
        tv_nsec: ((host_now_ms % 1000) * 1_000_000) as _,
    };
    // SAFETY: clock_settime only reads the timespec passed by reference.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(step)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadlines_keep_the_time_left() {
        // Guest 1.5 s behind the host: the deadline moves back with it.
        assert_eq!(rebase_deadline(10_000, 7_000, 5_500), 8_500);
        // Guest ahead: forward.
        assert_eq!(rebase_deadline(10_000, 7_000, 9_000), 12_000);
        // Already past on the host: no time left, never wraps.
        assert_eq!(rebase_deadline(5_000, 7_000, 9_000), 9_000);
        assert_eq!(rebase_deadline(10_000, 0, 123), 10_000);
    }

    #[test]
    fn small_differences_are_left_alone() {
        assert_eq!(
            sync_to_host(now_ms() + 3, Duration::from_millis(50)).unwrap(),
            0
        );
        assert_eq!(sync_to_host(0, Duration::from_millis(50)).unwrap(), 0);
    }
}
