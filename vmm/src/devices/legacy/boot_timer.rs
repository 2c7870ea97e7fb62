//! Boot timer at [`BOOT_TIMER_ADDR`](crate::arch::x86_64::layout::BOOT_TIMER_ADDR)
//! (0xd000_0000): a guest writing the byte 123 to offset 0 makes the VMM log the time since
//! it started, e.g. from guest-init right before it is ready.

use std::time::Instant;

use crate::arch::x86_64::layout::BOOT_TIMER_MAGIC;
use crate::devices::bus::BusDevice;

pub struct BootTimer {
    start: Instant,
    /// Last boot time reported, in microseconds.
    pub last_us: Option<u128>,
}

impl BootTimer {
    pub fn new(start: Instant) -> Self {
        Self {
            start,
            last_us: None,
        }
    }
}

/// CPU time consumed by the whole VMM process so far, in microseconds.
pub fn process_cpu_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes into it.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000
}

impl BusDevice for BootTimer {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset == 0 && data.first() == Some(&BOOT_TIMER_MAGIC) {
            let us = self.start.elapsed().as_micros();
            self.last_us = Some(us);
            crate::rl_log!(
                info,
                "Guest-boot-time = {us:>8} us {:>4} ms, {:>8} CPU us {:>4} CPU ms",
                us / 1000,
                process_cpu_us(),
                process_cpu_us() / 1000
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_magic_at_offset_zero_counts() {
        let mut t = BootTimer::new(Instant::now());
        t.write(1, &[BOOT_TIMER_MAGIC]);
        t.write(0, &[1]);
        assert!(t.last_us.is_none());
        t.write(0, &[BOOT_TIMER_MAGIC]);
        assert!(t.last_us.is_some());
        let mut b = [0xffu8; 4];
        t.read(0, &mut b);
        assert_eq!(b, [0; 4]);
    }
}
