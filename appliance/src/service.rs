//! The processes PID 1 keeps running: the supervisor, DHCP clients, a debug shell.
//! PID 1 reaps every process (orphans included) in one place, so services are tracked
//! by pid and never waited for through `std::process::Child`.

use std::process::Command;
use std::time::{Duration, Instant};

use crate::console::log;

/// Children start with no signal blocked. PID 1 blocks the signals it reads through
/// its signalfd, and a blocked mask is inherited across exec: without this the
/// supervisor would never see the SIGTERM that asks it to stop.
pub fn with_clean_signals(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt as _;
    // SAFETY: runs in the forked child before exec and only calls sigemptyset and
    // sigprocmask, which are async-signal-safe and touch only the stack-local set.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            if libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// How to (re)start one service.
pub struct Service {
    pub name: String,
    make: Box<dyn Fn() -> std::io::Result<Command>>,
    pid: Option<i32>,
    started: Instant,
    /// Earliest time of the next start after a failure.
    next_start: Option<Instant>,
    backoff: Duration,
}

const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// A run this long resets the backoff.
const HEALTHY_RUN: Duration = Duration::from_secs(60);

impl Service {
    pub fn new(name: &str, make: impl Fn() -> std::io::Result<Command> + 'static) -> Self {
        Self {
            name: name.to_owned(),
            make: Box::new(make),
            pid: None,
            started: Instant::now(),
            next_start: Some(Instant::now()),
            backoff: MIN_BACKOFF,
        }
    }

    pub fn pid(&self) -> Option<i32> {
        self.pid
    }

    /// Starts the service if it is due; logs (and backs off) when it cannot start.
    pub fn start_if_due(&mut self, now: Instant) {
        if self.pid.is_some() || self.next_start.is_none_or(|t| t > now) {
            return;
        }
        let spawned = (self.make)().and_then(|mut c| with_clean_signals(&mut c).spawn());
        match spawned {
            Ok(child) => {
                self.pid = Some(child.id() as i32);
                self.started = now;
                self.next_start = None;
                // Dropping a Child neither kills nor waits for it: PID 1 reaps it.
                drop(child);
            }
            Err(e) => {
                log(format!("{}: cannot start: {e}", self.name));
                self.schedule_restart(now);
            }
        }
    }

    fn schedule_restart(&mut self, now: Instant) {
        if now.duration_since(self.started) >= HEALTHY_RUN {
            self.backoff = MIN_BACKOFF;
        }
        self.next_start = Some(now + self.backoff);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// Called with every reaped pid; true if it was this service's.
    pub fn reaped(&mut self, pid: i32, status: &str, now: Instant, respawn: bool) -> bool {
        if self.pid != Some(pid) {
            return false;
        }
        self.pid = None;
        if respawn {
            self.schedule_restart(now);
            log(format!(
                "{} exited ({status}); restarting in {:?}",
                self.name, self.backoff
            ));
        } else {
            self.next_start = None;
            log(format!("{} exited ({status})", self.name));
        }
        true
    }

    /// When the next start is due, for the main loop's poll timeout.
    pub fn due(&self) -> Option<Instant> {
        self.next_start.filter(|_| self.pid.is_none())
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Some(pid) = self.pid {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        }
    }
}

/// Reaps every exited child without blocking: (pid, description of its status).
pub fn reap_all() -> Vec<(i32, String)> {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let mut out = Vec::new();
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => {
                out.push((pid.as_raw(), format!("exit status {code}")))
            }
            Ok(WaitStatus::Signaled(pid, sig, _)) => {
                out.push((pid.as_raw(), format!("signal {sig}")))
            }
            Ok(WaitStatus::StillAlive) | Err(_) => return out,
            Ok(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn children_start_with_no_signal_blocked() {
        use nix::sys::signal::{SigSet, SigmaskHow, Signal};
        let mut blocked = SigSet::empty();
        blocked.add(Signal::SIGTERM);
        let mut old = SigSet::empty();
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&blocked), Some(&mut old))
            .unwrap();
        let mut cmd = Command::new("/bin/sh");
        cmd.args(["-c", "grep SigBlk /proc/self/status"]);
        let out = with_clean_signals(&mut cmd).output().unwrap();
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None).unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(text.trim(), "SigBlk:\t0000000000000000", "{text}");
    }

    #[test]
    fn backs_off_after_failures_and_resets_after_a_healthy_run() {
        let mut s = Service::new("t", || Ok(Command::new("/bin/true")));
        let t0 = Instant::now();
        s.pid = Some(42);
        s.started = t0;
        assert!(s.reaped(42, "exit status 1", t0, true));
        assert_eq!(s.due(), Some(t0 + MIN_BACKOFF));
        s.pid = Some(43);
        assert!(!s.reaped(44, "x", t0, true));
        assert!(s.reaped(43, "exit status 1", t0, true));
        assert_eq!(s.due(), Some(t0 + MIN_BACKOFF * 2));
        s.pid = Some(45);
        s.started = t0;
        let later = t0 + HEALTHY_RUN;
        assert!(s.reaped(45, "exit status 1", later, true));
        assert_eq!(s.due(), Some(later + MIN_BACKOFF));
        s.pid = Some(46);
        assert!(s.reaped(46, "signal SIGKILL", later, false));
        assert_eq!(s.due(), None, "stopped for good");
    }
}
