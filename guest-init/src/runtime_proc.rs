//! The sandbox's processes: the runtime and the external extensions from
//! `/opt/extensions`. Starting them, reaping them, stopping them.

use crate::bootstrap::{self, BootstrapError};
use crate::exit_status;
use crate::logs;
use nix::errno::Errno;
use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use runtime_api::protocol::{GuestMessage, Log, LogStream};
use runtime_api::server::{Invocations, Sink, EXIT_ERROR, OUT_OF_MEMORY};
use std::collections::BTreeMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

use crate::config::RuntimeUser;

/// How long to wait for the last log lines after a process exits, so a message it
/// printed just before dying is still tagged with its request.
const LOG_DRAIN: Duration = Duration::from_millis(500);

/// One started process with its log forwarders.
pub struct Proc {
    pub name: String,
    pid: Pid,
    log_tasks: Vec<JoinHandle<()>>,
    exited: bool,
}

/// How to start a sandbox process.
pub struct Launch<'a> {
    pub args: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    pub cwd: &'a Path,
    pub user: Option<RuntimeUser>,
    pub inv: &'a Invocations,
    pub sink: &'a Sink,
}

impl Proc {
    /// Starts `path` with its output forwarded as Log frames (by tasks on the calling
    /// runtime).
    pub fn start(name: &str, path: &Path, launch: &Launch<'_>) -> Result<Self, BootstrapError> {
        let mut child = bootstrap::spawn(path, launch.args, launch.cwd, launch.env, launch.user)?;
        let pid = Pid::from_raw(child.id() as i32);
        let mut log_tasks = Vec::new();
        let pipes = [
            child
                .stdout
                .take()
                .map(|p| (OwnedFd::from(p), LogStream::Stdout)),
            child
                .stderr
                .take()
                .map(|p| (OwnedFd::from(p), LogStream::Stderr)),
        ];
        for (pipe, stream) in pipes.into_iter().flatten() {
            match logs::forward(pipe, stream, launch.inv.log_tag(), launch.sink.clone()) {
                Ok(h) => log_tasks.push(h),
                Err(e) => eprintln!("guest-init: log forwarder: {e}"),
            }
        }
        // The pid is reaped through waitpid(-1) in `reap`, not through `Child`.
        drop(child);
        Ok(Self {
            name: name.to_string(),
            pid,
            log_tasks,
            exited: false,
        })
    }

    pub fn exited(&self) -> bool {
        self.exited
    }

    async fn drain_logs(&mut self) {
        let deadline = Instant::now() + LOG_DRAIN;
        while self.log_tasks.iter().any(|h| !h.is_finished()) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        self.log_tasks.retain(|h| !h.is_finished());
    }

    fn signal_group(&self, sig: Signal) {
        if !self.exited {
            let _ = killpg(self.pid, sig);
        }
    }
}

/// Executable files in `<opt>/extensions`, in name order.
pub fn find_extensions(opt_dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(opt_dir.join("extensions")) else {
        return Vec::new();
    };
    let mut found: Vec<(String, PathBuf)> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| bootstrap::is_executable(p))
        .filter_map(|p| Some((p.file_name()?.to_string_lossy().into_owned(), p)))
        .collect();
    found.sort();
    found
}

/// Everything guest-init started for the function.
#[derive(Default)]
pub struct Processes {
    pub runtime: Option<Proc>,
    pub extensions: Vec<Proc>,
    /// The kernel's OOM-kill count when the runtime started, in a VM (where this
    /// kernel is the function's own): a higher count at its exit means
    /// `Runtime.OutOfMemory`.
    pub oom_kills_at_start: Option<u64>,
}

/// `oom_kill` from /proc/vmstat: how many processes the kernel's OOM killer ended.
pub fn oom_kills() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/vmstat").ok()?;
    parse_oom_kills(&text)
}

fn parse_oom_kills(vmstat: &str) -> Option<u64> {
    vmstat
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|v| v.trim().parse().ok())
}

impl Processes {
    fn all(&self) -> impl Iterator<Item = &Proc> {
        self.runtime.iter().chain(self.extensions.iter())
    }

    pub fn all_exited(&self) -> bool {
        self.all().all(Proc::exited)
    }

    /// Extensions still running that have not registered yet.
    pub fn unregistered(&self, registered: &[String]) -> usize {
        self.extensions
            .iter()
            .filter(|p| !p.exited && !registered.contains(&p.name))
            .count()
    }

    fn signal_all(&self, sig: Signal, is_pid1: bool) {
        for p in self.all() {
            p.signal_group(sig);
        }
        if is_pid1 {
            let _ = kill(Pid::from_raw(-1), sig);
        }
    }

    /// Reaps every exited child. A runtime exit is reported through `inv` (quietly
    /// during shutdown); an extension exit goes to the log stream.
    pub async fn reap(&mut self, inv: &Invocations, sink: &Sink, quiet: bool) {
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    eprintln!("guest-init: waitpid: {e}");
                    break;
                }
                Ok(status) => status,
            };
            let Some(desc) = exit_status::describe(&status) else {
                continue;
            };
            if let Some(rt) = self
                .runtime
                .as_mut()
                .filter(|r| Some(r.pid) == status.pid())
            {
                rt.exited = true;
                rt.drain_logs().await;
                let oom = self
                    .oom_kills_at_start
                    .zip(oom_kills())
                    .is_some_and(|(before, now)| now > before);
                let error_type = if oom { OUT_OF_MEMORY } else { EXIT_ERROR };
                inv.runtime_exited(error_type, &exit_status::runtime_exit_message(&desc), quiet);
            } else if let Some(ext) = self
                .extensions
                .iter_mut()
                .find(|e| Some(e.pid) == status.pid())
            {
                ext.exited = true;
                ext.drain_logs().await;
                if !quiet {
                    sink(GuestMessage::Log(Log {
                        stream: LogStream::System,
                        request_id: None,
                        line: format!("extension {} exited: {desc}", ext.name).into_bytes(),
                    }));
                }
            }
            // Anything else was an orphan reparented to PID 1: reaped, nothing to say.
        }
    }

    /// Shutdown: SIGTERM to the runtime (extensions got their SHUTDOWN event), wait up
    /// to `grace`, SIGKILL what is left, reap.
    pub async fn stop(&mut self, inv: &Invocations, sink: &Sink, grace: Duration, is_pid1: bool) {
        if let Some(rt) = &self.runtime {
            rt.signal_group(Signal::SIGTERM);
        }
        self.wait_all(inv, sink, grace).await;
        self.signal_all(Signal::SIGKILL, is_pid1);
        self.wait_all(inv, sink, Duration::from_secs(1)).await;
    }

    async fn wait_all(&mut self, inv: &Invocations, sink: &Sink, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            self.reap(inv, sink, true).await;
            if self.all_exited() || Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_oom_kill_counter() {
        assert_eq!(parse_oom_kills("pgfault 10\noom_kill 3\nx 1\n"), Some(3));
        assert_eq!(parse_oom_kills("pgfault 10\n"), None);
    }
}
