//! SnapStart on the microVM backend. The first cold start of a SnapStart version boots
//! a VM with Init marked `snap-start`, runs Init, has guest-init quiesce (Checkpoint),
//! and sends the vmm SIGUSR1: it writes the snapshot and stops. Every cold start,
//! that first one included, then resumes a new VM from the snapshot, and its session
//! sends Restore (a seed of its own for the guest's RNG) in place of Init. A snapshot
//! that cannot be taken or resumed is logged and the sandbox boots as usual instead.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::snapshots::{Snapshot, SnapshotKey, Taken};
use super::vm_sandbox::VmSandbox;
use super::{files_dir, start_err, Launch, MicroVmBackend, SandboxFiles};
use crate::jail::Exit;
use crate::sandbox::SandboxError;
use crate::spec::FunctionVersionSpec;

/// How long Init, the checkpoint and the vmm's writing of the snapshot may take.
const TAKE_TIMEOUT: Duration = Duration::from_secs(300);
/// The vmm's exit code once its snapshot is written (`vmm::exit::EXIT_SNAPSHOTTED`).
const EXIT_SNAPSHOTTED: i32 = 4;

/// A restored sandbox's folder: its sockets; its drives are the snapshot's.
pub(super) fn restore_files(
    run_root: &Path,
    id: &str,
    snap: &Snapshot,
) -> Result<SandboxFiles, SandboxError> {
    Ok(SandboxFiles {
        dir: files_dir(run_root, id)?,
        code_image: snap.code.clone(),
        opt_image: snap.opt.clone(),
    })
}

impl MicroVmBackend {
    /// A sandbox resumed from the version's snapshot (taken now if there is none), or
    /// `None` when that fails, so the caller boots one.
    pub(super) async fn start_from_snapshot(
        &self,
        spec: &FunctionVersionSpec,
        id: &str,
    ) -> Option<VmSandbox> {
        let key = SnapshotKey::of(spec);
        let snap = match self.snapshot_for(spec, id, &key).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!(
                    "worker: SnapStart: no snapshot of {}:{} ({e}); booting instead",
                    spec.name, spec.version
                );
                return None;
            }
        };
        match self.launch(spec, id, &Launch::Restore(&snap)).await {
            Ok(sb) => Some(sb),
            Err(e) => {
                eprintln!(
                    "worker: SnapStart: resuming {}:{} from its snapshot failed ({e}); \
                     dropping the snapshot and booting instead",
                    spec.name, spec.version
                );
                self.snapshots.forget(&key);
                None
            }
        }
    }

    /// The version's snapshot; one cold start at a time takes a missing one.
    async fn snapshot_for(
        &self,
        spec: &FunctionVersionSpec,
        id: &str,
        key: &SnapshotKey,
    ) -> Result<Arc<Snapshot>, SandboxError> {
        if let Some(s) = self.snapshots.get(key) {
            return Ok(s);
        }
        let _taking = self.snapshots.taking.lock().await;
        if let Some(s) = self.snapshots.get(key) {
            return Ok(s);
        }
        tokio::time::timeout(TAKE_TIMEOUT, self.take_snapshot(spec, id, key))
            .await
            .map_err(|_| start_err(format!("taking the snapshot took over {TAKE_TIMEOUT:?}")))?
    }

    async fn take_snapshot(
        &self,
        spec: &FunctionVersionSpec,
        id: &str,
        key: &SnapshotKey,
    ) -> Result<Arc<Snapshot>, SandboxError> {
        let started = std::time::Instant::now();
        let mut sb = self
            .launch(spec, &format!("{id}-snap"), &Launch::BootForSnapshot)
            .await?;
        let explain = |e: SandboxError, sb: &VmSandbox| {
            start_err(format!("{e}; guest console: {}", sb.serial.text()))
        };
        if let Err(e) = sb.session.init().await {
            return Err(explain(e, &sb));
        }
        if let Err(e) = sb.session.checkpoint().await {
            return Err(explain(e, &sb));
        }
        let proc = sb
            .proc
            .as_mut()
            .ok_or_else(|| start_err("the VM is gone"))?;
        proc.signal(libc::SIGUSR1)
            .map_err(|e| start_err(format!("signalling the vmm: {e}")))?;
        let exit = proc
            .wait()
            .await
            .map_err(|e| start_err(format!("waiting for the vmm: {e}")))?;
        if exit.unreaped() != Exit::Code(EXIT_SNAPSHOTTED) {
            return Err(start_err(format!(
                "the vmm did not write its snapshot ({}): {}",
                exit.unreaped(),
                sb.stderr.text()
            )));
        }
        let written = sb
            .snapshot_out
            .as_ref()
            .ok_or_else(|| start_err("the VM had no snapshot folder"))?;
        let taken = Taken {
            written: &written.0,
            code: sb.images.0.as_deref(),
            opt: sb.images.1.as_deref(),
        };
        let snap = self
            .snapshots
            .store(key.clone(), taken)
            .map_err(|e| start_err(format!("keeping the snapshot: {e}")))?;
        eprintln!(
            "worker: SnapStart: snapshot of {}:{} taken in {} ms (Init included)",
            spec.name,
            spec.version,
            started.elapsed().as_millis()
        );
        Ok(snap)
    }
}
