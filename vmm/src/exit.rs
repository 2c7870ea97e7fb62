//! Why the VMM stops, and the process exit code for each reason.
//!
//! | code | meaning |
//! |------|---------|
//! | 0    | guest reset/reboot through the i8042 (`reboot=k`) or a KVM system event |
//! | 1    | bad configuration or setup failure before the guest ran |
//! | 2    | a vCPU failed (KVM error, unexpected exit) |
//! | 3    | guest triple fault (KVM_EXIT_SHUTDOWN) |
//! | 4    | stopped after taking a snapshot (`--snapshot-exit`) |
//! | 128+N | terminated by signal N (SIGTERM: 143, SIGINT: 130) |

use std::sync::Mutex;

use vmm_sys_util::eventfd::EventFd;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    Reset,
    TripleFault {
        vcpu: u8,
    },
    VcpuError {
        vcpu: u8,
        error: String,
    },
    Signal(i32),
    /// A snapshot was written and `--snapshot-exit` asked to stop there.
    Snapshotted,
}

pub const EXIT_OK: i32 = 0;
pub const EXIT_CONFIG: i32 = 1;
pub const EXIT_VCPU_ERROR: i32 = 2;
pub const EXIT_TRIPLE_FAULT: i32 = 3;
pub const EXIT_SNAPSHOTTED: i32 = 4;

impl ExitReason {
    pub fn code(&self) -> i32 {
        match self {
            ExitReason::Reset => EXIT_OK,
            ExitReason::VcpuError { .. } => EXIT_VCPU_ERROR,
            ExitReason::TripleFault { .. } => EXIT_TRIPLE_FAULT,
            ExitReason::Signal(n) => 128 + n,
            ExitReason::Snapshotted => EXIT_SNAPSHOTTED,
        }
    }
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitReason::Reset => write!(f, "guest requested reset"),
            ExitReason::TripleFault { vcpu } => write!(f, "vCPU {vcpu}: guest triple fault"),
            ExitReason::VcpuError { vcpu, error } => write!(f, "vCPU {vcpu} failed: {error}"),
            ExitReason::Signal(n) => write!(f, "terminated by signal {n}"),
            ExitReason::Snapshotted => write!(f, "stopped after taking a snapshot"),
        }
    }
}

/// Shared by all threads; the first reported reason wins and wakes the event loop.
pub struct ExitNotifier {
    reason: Mutex<Option<ExitReason>>,
    evt: EventFd,
}

impl ExitNotifier {
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            reason: Mutex::new(None),
            evt: EventFd::new(libc::EFD_NONBLOCK)?,
        })
    }

    pub fn notify(&self, reason: ExitReason) {
        let mut r = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        if r.is_none() {
            *r = Some(reason);
        }
        drop(r);
        if let Err(e) = self.evt.write(1) {
            log::error!("cannot wake the event loop for exit: {e}");
        }
    }

    pub fn reason(&self) -> Option<ExitReason> {
        self.reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn evt(&self) -> &EventFd {
        &self.evt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reason_wins_and_codes() {
        let n = ExitNotifier::new().unwrap();
        n.notify(ExitReason::TripleFault { vcpu: 1 });
        n.notify(ExitReason::Reset);
        assert_eq!(n.reason(), Some(ExitReason::TripleFault { vcpu: 1 }));
        assert_eq!(n.evt().read().unwrap(), 2);
        assert_eq!(ExitReason::Signal(15).code(), 143);
        assert_eq!(ExitReason::Reset.code(), 0);
    }
}
