//! Pausing the vCPUs for a snapshot. The main thread raises a flag and kicks each vCPU
//! thread out of KVM_RUN with a signal; each vCPU completes its pending I/O exit, saves
//! its own state on its own thread, hands it over and parks until resumed.

use std::os::unix::thread::RawPthread;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::vcpu_state::{VcpuState, VcpuStateError};

/// The signal that kicks a vCPU thread out of KVM_RUN. Its handler does nothing: the
/// point is the EINTR.
pub fn kick_signal() -> i32 {
    libc::SIGRTMIN()
}

extern "C" fn on_kick(_signal: libc::c_int) {}

/// std's thread id as libc's type: the same value, `u64` on glibc and a pointer-sized
/// handle on musl.
#[allow(clippy::unnecessary_cast)]
fn as_libc(t: RawPthread) -> libc::pthread_t {
    t as libc::pthread_t
}

/// Installs the kick handler, without SA_RESTART so KVM_RUN returns EINTR.
pub fn install_kick_handler() -> std::io::Result<()> {
    // SAFETY: a zeroed sigaction is valid; the handler is an `extern "C"` function that
    // touches nothing (async-signal-safe); the mask is initialised before use.
    let rc = unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_kick as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut act.sa_mask);
        libc::sigaction(kick_signal(), &act, std::ptr::null_mut())
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum PauseError {
    #[error("only {parked} of {total} vCPUs paused within {waited:?}")]
    Timeout {
        parked: usize,
        total: usize,
        waited: Duration,
    },
    #[error(transparent)]
    Save(#[from] VcpuStateError),
}

#[derive(Default)]
struct Parked {
    /// Bumped by every resume; a parked vCPU waits for it to change.
    generation: u64,
    states: Vec<(u8, Result<VcpuState, VcpuStateError>)>,
}

#[derive(Default)]
pub struct PauseControl {
    requested: AtomicBool,
    parked: Mutex<Parked>,
    changed: Condvar,
}

impl PauseControl {
    fn lock(&self) -> MutexGuard<'_, Parked> {
        self.parked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Checked by each vCPU before every KVM_RUN.
    pub fn requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// vCPU side: hands over the saved state and blocks until [`Self::resume`].
    pub fn park(&self, id: u8, state: Result<VcpuState, VcpuStateError>) {
        let mut g = self.lock();
        let generation = g.generation;
        g.states.push((id, state));
        self.changed.notify_all();
        while g.generation == generation {
            g = self.changed.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Main side: pauses every vCPU thread in `threads` and returns their states by id.
    /// On a timeout or a failed save the vCPUs that did park are resumed again.
    pub fn pause(
        &self,
        threads: &[RawPthread],
        timeout: Duration,
    ) -> Result<Vec<VcpuState>, PauseError> {
        self.requested.store(true, Ordering::Release);
        let start = Instant::now();
        let mut g = self.lock();
        while g.states.len() < threads.len() {
            if start.elapsed() > timeout {
                let parked = g.states.len();
                drop(g);
                self.resume();
                return Err(PauseError::Timeout {
                    parked,
                    total: threads.len(),
                    waited: start.elapsed(),
                });
            }
            // Kicked again every round: a signal that arrives just before a vCPU enters
            // KVM_RUN is lost, and the retry is cheaper than an immediate_exit handshake.
            for (id, t) in threads.iter().enumerate() {
                if !g
                    .states
                    .iter()
                    .any(|(parked, _)| usize::from(*parked) == id)
                {
                    // SAFETY: `t` is a vCPU thread of this process that is never joined
                    // or detached, so its id stays valid; an exited thread gives ESRCH.
                    unsafe { libc::pthread_kill(as_libc(*t), kick_signal()) };
                }
            }
            g = self
                .changed
                .wait_timeout(g, Duration::from_millis(2))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let mut states = Vec::with_capacity(threads.len());
        let mut failure = None;
        for (_, s) in g.states.drain(..) {
            match s {
                Ok(s) => states.push(s),
                Err(e) => failure = failure.or(Some(e)),
            }
        }
        drop(g);
        if let Some(e) = failure {
            self.resume();
            return Err(e.into());
        }
        states.sort_by_key(|s| s.id);
        Ok(states)
    }

    /// Lets every parked vCPU run again.
    pub fn resume(&self) {
        self.requested.store(false, Ordering::Release);
        let mut g = self.lock();
        g.generation += 1;
        g.states.clear();
        self.changed.notify_all();
    }
}
