//! Event-loop subscriber that turns exit triggers into an [`ExitReason`]: the i8042 reset
//! eventfd, SIGTERM/SIGINT/SIGHUP (via a signalfd) and vCPU-thread notifications. It
//! also takes SIGUSR1, the request for a snapshot, which the run loop then takes.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use crate::exit::{ExitNotifier, ExitReason};

const TOKEN_EXIT: u32 = 0;
const TOKEN_RESET: u32 = 1;
const TOKEN_SIGNAL: u32 = 2;

pub const EXIT_SIGNALS: [i32; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];
/// Asks for a snapshot (`--snapshot-state`); blocked even without one, so a stray
/// SIGUSR1 is logged instead of killing the VM.
pub const SNAPSHOT_SIGNAL: i32 = libc::SIGUSR1;

fn sigset(signals: &[i32]) -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and modify the local set; the signal numbers
    // are valid constants.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in signals {
            libc::sigaddset(&mut set, *s);
        }
        set
    }
}

/// Blocks the exit signals in the calling thread (threads spawned later inherit the mask)
/// and returns a signalfd that reports them.
pub fn block_exit_signals() -> std::io::Result<OwnedFd> {
    let mut signals = EXIT_SIGNALS.to_vec();
    signals.push(SNAPSHOT_SIGNAL);
    let set = sigset(&signals);
    // SAFETY: `set` is a valid, initialised sigset; the old mask is not needed.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    // SAFETY: -1 asks for a new signalfd; `set` is valid for the duration of the call.
    let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by signalfd and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

pub struct ExitWatcher {
    exit: Arc<ExitNotifier>,
    reset_evt: EventFd,
    signal_fd: OwnedFd,
    /// Raised on SIGUSR1 when the VM may be snapshotted.
    snapshot_request: Option<Arc<AtomicBool>>,
}

impl ExitWatcher {
    pub fn new(
        exit: Arc<ExitNotifier>,
        reset_evt: EventFd,
        signal_fd: OwnedFd,
        snapshot_request: Option<Arc<AtomicBool>>,
    ) -> Self {
        Self {
            exit,
            reset_evt,
            signal_fd,
            snapshot_request,
        }
    }

    fn on_snapshot_signal(&self) {
        match &self.snapshot_request {
            Some(flag) => {
                log::info!("received SIGUSR1: taking a snapshot");
                flag.store(true, Ordering::Release);
            }
            None => log::warn!("received SIGUSR1 but no --snapshot-state was given: ignored"),
        }
    }

    fn read_signal(&self) -> Option<i32> {
        let mut info: libc::signalfd_siginfo =
            // SAFETY: signalfd_siginfo is plain old data; all-zero is a valid value.
            unsafe { std::mem::zeroed() };
        let size = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: reading at most `size` bytes into `info`, which is exactly that large.
        let n = unsafe {
            libc::read(
                self.signal_fd.as_raw_fd(),
                (&mut info as *mut libc::signalfd_siginfo).cast(),
                size,
            )
        };
        (n == size as isize).then_some(info.ssi_signo as i32)
    }
}

impl MutEventSubscriber for ExitWatcher {
    fn init(&mut self, ops: &mut EventOps) {
        let evs = [
            Events::with_data(self.exit.evt(), TOKEN_EXIT, EventSet::IN),
            Events::with_data(&self.reset_evt, TOKEN_RESET, EventSet::IN),
            Events::with_data(&self.signal_fd, TOKEN_SIGNAL, EventSet::IN),
        ];
        for ev in evs {
            if let Err(e) = ops.add(ev) {
                log::error!("cannot watch an exit event: {e}");
            }
        }
    }

    fn process(&mut self, events: Events, _ops: &mut EventOps) {
        match events.data() {
            TOKEN_EXIT => {
                let _ = self.exit.evt().read();
            }
            TOKEN_RESET => {
                let _ = self.reset_evt.read();
                self.exit.notify(ExitReason::Reset);
            }
            TOKEN_SIGNAL => match self.read_signal() {
                Some(SNAPSHOT_SIGNAL) => self.on_snapshot_signal(),
                Some(sig) => {
                    log::info!("received signal {sig}, shutting down");
                    self.exit.notify(ExitReason::Signal(sig));
                }
                None => {}
            },
            _ => {}
        }
    }
}
