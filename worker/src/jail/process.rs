//! A running jailed process: its pid, a pidfd to wait on without SIGCHLD races, and the
//! resources (cgroup, run directory) that go away with it.

use super::cgroup::Cgroup;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

/// How a jailed process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(i32),
}

impl std::fmt::Display for Exit {
    /// Formats like Go's `os.ProcessState`, which Lambda's error messages quote.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit status {c}"),
            Exit::Signal(s) => write!(f, "signal: {}", signal_name(*s)),
        }
    }
}

impl Exit {
    /// Undoes the jail reaper's `128 + signal` exit-code encoding.
    pub fn unreaped(self) -> Exit {
        match self {
            Exit::Code(c) if (129..=128 + 64).contains(&c) => Exit::Signal(c - 128),
            other => other,
        }
    }
}

fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGKILL => "killed".into(),
        libc::SIGSEGV => "segmentation fault".into(),
        libc::SIGABRT => "aborted".into(),
        libc::SIGTERM => "terminated".into(),
        libc::SIGBUS => "bus error".into(),
        libc::SIGILL => "illegal instruction".into(),
        libc::SIGFPE => "floating point exception".into(),
        other => format!("signal {other}"),
    }
}

/// A process started by [`super::spawn`].
#[derive(Debug)]
pub struct JailedProcess {
    pub(super) pid: i32,
    pub(super) pidfd: OwnedFd,
    pub(super) cgroup: Option<Cgroup>,
    pub(super) run_dir: PathBuf,
    pub(super) stdout: Option<OwnedFd>,
    pub(super) stderr: Option<OwnedFd>,
    pub(super) exit: Option<Exit>,
    /// The host uid range, given back only after everything else here is gone (fields
    /// drop after `Drop::drop` has killed and reaped the jail).
    pub(super) uid_lease: Option<super::UidLease>,
}

impl JailedProcess {
    /// Keeps the jail's host uid range leased until this process and all it left
    /// behind are gone.
    pub fn hold_uid_lease(&mut self, lease: super::UidLease) {
        self.uid_lease = Some(lease);
    }

    /// Host pid of the jail's init (pid 1 inside).
    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn cgroup(&self) -> Option<&Cgroup> {
        self.cgroup.as_ref()
    }

    /// True once the kernel's OOM killer has killed something in the sandbox's cgroup.
    pub fn oom_killed(&self) -> bool {
        self.cgroup().is_some_and(|c| c.oom_kills() > 0)
    }

    /// Takes the read end of the stdout pipe (when requested with `Stdio::Pipe`).
    pub fn take_stdout(&mut self) -> Option<OwnedFd> {
        self.stdout.take()
    }

    pub fn take_stderr(&mut self) -> Option<OwnedFd> {
        self.stderr.take()
    }

    /// Reaps the process if it has exited, without blocking.
    pub fn try_wait(&mut self) -> io::Result<Option<Exit>> {
        if self.exit.is_some() {
            return Ok(self.exit);
        }
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid out pointer.
        let r = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        match r {
            0 => Ok(None),
            r if r < 0 => Err(io::Error::last_os_error()),
            _ => {
                let exit = decode(status);
                self.exit = Some(exit);
                Ok(Some(exit))
            }
        }
    }

    /// Waits asynchronously (the pidfd becomes readable when the process exits).
    pub async fn wait(&mut self) -> io::Result<Exit> {
        if let Some(e) = self.try_wait()? {
            return Ok(e);
        }
        let fd = self.pidfd.try_clone()?;
        // SAFETY: `fd` is an OwnedFd moved into the AsyncFd, so it stays open and refers to
        // the same pidfd for the AsyncFd's whole life.
        let afd = unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        }
        .map_err(io::Error::from)?;
        loop {
            let mut guard = afd.readable().await?;
            if let Some(e) = self.try_wait()? {
                return Ok(e);
            }
            guard.clear_ready();
        }
    }

    /// Sends `sig` to the jail's init. From outside its PID namespace only signals the
    /// init handles, blocks or cannot refuse (SIGKILL) arrive.
    pub fn signal(&self, sig: i32) -> io::Result<()> {
        // SAFETY: pidfd_send_signal with our pidfd and no siginfo; it cannot hit a
        // recycled pid, which is why a pidfd is used.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Sends SIGKILL to the jail's init (the kernel then kills the whole PID namespace)
    /// and to everything left in its cgroup.
    pub fn kill(&self) {
        if self.exit.is_none() {
            let _ = self.signal(libc::SIGKILL);
        }
        if let Some(cg) = &self.cgroup {
            cg.kill_all();
        }
    }
}

impl Drop for JailedProcess {
    fn drop(&mut self) {
        self.kill();
        if self.exit.is_none() {
            let mut status = 0;
            // SAFETY: blocking waitpid on our own child, just sent SIGKILL, so it returns
            // promptly; reaping prevents a zombie.
            unsafe { libc::waitpid(self.pid, &mut status, 0) };
        }
        // Dropping the cgroup removes it; the run dir's mounts died with the namespace.
        self.cgroup.take();
        remove_run_dir(&self.run_dir);
    }
}

pub(super) fn remove_run_dir(dir: &std::path::Path) {
    for sub in ["root", "scratch"] {
        let _ = std::fs::remove_dir(dir.join(sub));
    }
    let _ = std::fs::remove_dir(dir);
}

pub(super) fn decode(status: i32) -> Exit {
    if libc::WIFSIGNALED(status) {
        Exit::Signal(libc::WTERMSIG(status))
    } else {
        Exit::Code(libc::WEXITSTATUS(status))
    }
}

/// Opens a pidfd for `pid`.
pub(super) fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes integers and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a freshly created descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_formats_like_lambda() {
        assert_eq!(Exit::Code(1).to_string(), "exit status 1");
        assert_eq!(Exit::Signal(libc::SIGKILL).to_string(), "signal: killed");
        assert_eq!(Exit::Code(137).unreaped(), Exit::Signal(libc::SIGKILL));
        assert_eq!(Exit::Code(2).unreaped(), Exit::Code(2));
    }
}
