//! A running microVM sandbox: its session with guest-init, its jailed vmm, and what
//! the vmm and the guest's console said.

use super::image_link::ImageLink;
use crate::jail::cpus::CpuLease;
use crate::jail::JailedProcess;
use crate::sandbox::dir_guard::DirGuard;
use crate::sandbox::session::Session;
use crate::sandbox::stderr_tail::StderrTail;
use crate::sandbox::{stop_jailed, BoxFuture, LogLine, Reply, Sandbox, SandboxError};
use crate::spec::{ChunkSink, InvokeRequest};
use std::time::Duration;

/// What the VMM and the guest said about their own start: the VMM's first KVM_RUN
/// (microseconds after its main) and guest-init's time since kernel start.
fn start_stages(vmm_stderr: &str, serial: &str) -> (Option<u64>, Option<f64>) {
    let first_run = vmm_stderr
        .split("first KVM_RUN: wall_since_main_us=")
        .nth(1)
        .and_then(|r| r.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok());
    let boot_to_init = serial
        .split("boot-to-init=")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok());
    (first_run, boot_to_init)
}

/// `VmHWM` of process `pid`: the peak of its resident set, in bytes.
fn peak_resident_bytes(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_vm_hwm(&status)
}

fn parse_vm_hwm(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib << 10)
}

/// How long a lost guest connection waits for the VMM's exit before explaining it.
const LOST_GUEST_EXIT_WAIT: Duration = Duration::from_secs(2);

impl VmSandbox {
    /// The guest connection ended mid-invoke without a word from guest-init: the
    /// worker's log says what the VMM and the guest's console said (a kernel panic, a
    /// VMM error or signal), so the cause is on record. The caller's error stays
    /// Lambda's.
    async fn explain_lost_guest(&mut self, res: &Result<Reply, SandboxError>) {
        let lost = matches!(res, Err(SandboxError::Exited { message, .. })
            if message == crate::sandbox::session::NO_REASON);
        let Some(proc) = self.proc.as_mut().filter(|_| lost) else {
            return;
        };
        let exit = match tokio::time::timeout(LOST_GUEST_EXIT_WAIT, proc.wait()).await {
            Ok(Ok(e)) => e.unreaped().to_string(),
            Ok(Err(e)) => format!("unknown ({e})"),
            Err(_) => format!("still running after {LOST_GUEST_EXIT_WAIT:?}"),
        };
        // Output the exit flushed may still be on its way through the tails' readers.
        tokio::time::sleep(Duration::from_millis(50)).await;
        eprintln!(
            "worker: microVM lost its guest connection mid-invoke; vmm: {exit}; vmm log: {}; \
             guest console ended with:\n{}",
            self.stderr.text(),
            self.serial.text(),
        );
    }
}

pub struct VmSandbox {
    pub(super) session: Session,
    pub(super) proc: Option<JailedProcess>,
    pub(super) memory_mib: u32,
    /// The code and layer images attached as drives (a snapshot keeps them).
    pub(super) images: (Option<std::path::PathBuf>, Option<std::path::PathBuf>),
    /// Where a VM booted to be snapshotted writes its snapshot (in the snapshot store).
    pub(super) snapshot_out: Option<DirGuard>,
    /// Socket dir and built code image.
    pub(super) _files: DirGuard,
    pub(super) serial: StderrTail,
    /// The VMM's own log (its start report).
    pub(super) stderr: StderrTail,
    /// Since the start began: jail and VMM spawned, guest-init connected.
    pub(super) timeline: (Duration, Duration),
    /// Returned to the placer when the sandbox goes.
    pub(super) _cpus: Option<CpuLease>,
    /// Serves a container image's chunks to the monitor while the sandbox lives.
    pub(super) _image_link: Option<ImageLink>,
}

impl Sandbox for VmSandbox {
    fn init(&mut self) -> BoxFuture<'_, Result<(), SandboxError>> {
        Box::pin(self.session.init())
    }

    fn invoke<'a>(
        &'a mut self,
        req: &'a InvokeRequest,
        deadline_ms: u64,
    ) -> BoxFuture<'a, Result<Reply, SandboxError>> {
        Box::pin(async move {
            let res = self.session.invoke(req, deadline_ms).await;
            self.explain_lost_guest(&res).await;
            res
        })
    }

    fn invoke_streaming<'a>(
        &'a mut self,
        req: &'a InvokeRequest,
        deadline_ms: u64,
        chunks: ChunkSink,
    ) -> BoxFuture<'a, Result<Reply, SandboxError>> {
        Box::pin(async move {
            let res = self
                .session
                .invoke_streaming(req, deadline_ms, chunks)
                .await;
            self.explain_lost_guest(&res).await;
            res
        })
    }

    fn set_log_sink(&mut self, sink: std::sync::Arc<dyn crate::sandbox::LogSink>) {
        self.session.set_log_sink(sink);
    }

    fn take_logs(&mut self) -> Vec<LogLine> {
        self.session.take_logs()
    }

    /// The monitor's cgroup peak, capped at the guest size (it includes the monitor).
    fn max_memory_bytes(&self) -> Option<u64> {
        let proc = self.proc.as_ref()?;
        let charged = proc.cgroup().and_then(|c| c.memory_peak());
        // A resumed guest's pages mapped from the snapshot were charged to whoever
        // wrote the file, not to this VM's cgroup: its vmm's peak resident set counts
        // them (shared pages in full, as the function sees its memory).
        let resident = self
            .session
            .is_restored()
            .then(|| peak_resident_bytes(proc.pid()))
            .flatten();
        let peak = charged.max(resident)?;
        Some(peak.min(u64::from(self.memory_mib) << 20))
    }

    fn oom_killed(&self) -> bool {
        self.proc.as_ref().is_some_and(JailedProcess::oom_killed)
    }

    fn console_tail(&self) -> Option<String> {
        Some(self.serial.text())
    }

    fn resume_took(&self) -> Option<Duration> {
        self.session.resume_took()
    }

    fn is_restored(&self) -> bool {
        self.session.is_restored()
    }

    fn start_details(&self) -> Option<String> {
        let (first_run, boot_to_init) = start_stages(&self.stderr.text(), &self.serial.text());
        let (spawned, connected) = self.timeline;
        let mut s = format!("jail+vmm spawned {} ms", spawned.as_millis());
        if let Some(us) = first_run {
            s.push_str(&format!(", first KVM_RUN {} ms after vmm start", us / 1000));
        }
        if let Some(secs) = boot_to_init {
            s.push_str(&format!(", guest kernel to init {:.0} ms", secs * 1000.0));
        }
        s.push_str(&format!(
            ", guest-init connected {} ms",
            connected.as_millis()
        ));
        Some(s)
    }

    fn destroy(mut self: Box<Self>, grace: Duration) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let proc = self.proc.take();
            stop_jailed(&mut self.session, proc, grace, Duration::from_secs(1)).await;
        })
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
