//! SnapStart on the microVM backend. The first cold start of a SnapStart version boots
//! a VM with Init marked `snap-start`, runs Init, has guest-init quiesce (Checkpoint),
//! and sends the vmm SIGUSR1: it writes the snapshot and stops. Every cold start,
//! that first one included, then resumes a new VM from the snapshot, and its session
//! sends Restore (a seed of its own for the guest's RNG) in place of Init. A snapshot
//! that cannot be taken or resumed is logged and the sandbox boots as usual instead.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::snapshots::{base_fingerprint, Snapshot, SnapshotKey, Taken};
use super::vm_sandbox::VmSandbox;
use super::{files_dir, start_err, Launch, MicroVmBackend, SandboxFiles};
use crate::jail::Exit;
use crate::sandbox::{SandboxError, SnapshotInit};
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
        let key = match self.snapshot_key(spec) {
            Ok(k) => k,
            Err(e) => {
                eprintln!(
                    "worker: SnapStart: {e}; booting {}:{}",
                    spec.name, spec.version
                );
                return None;
            }
        };
        let (snap, init) = match self.snapshot_for(spec, id, &key).await {
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
            Ok(mut sb) => {
                sb.snapshot_init = init;
                Some(sb)
            }
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

    /// The key of the version's snapshot on this host: it names the vmm, kernel and
    /// rootfs image the VM starts from.
    fn snapshot_key(&self, spec: &FunctionVersionSpec) -> Result<SnapshotKey, SandboxError> {
        let rootfs = self.rootfs_for(spec, spec.image.is_some())?;
        let l = &self.cfg.launcher;
        let base = base_fingerprint(&[&l.vmm, &l.kernel, &rootfs], &self.snapshots.digests)
            .map_err(|e| start_err(format!("base images: {e}")))?;
        Ok(SnapshotKey::of(spec, base))
    }

    /// The version's snapshot: its open copy, else opened from the vault, else taken
    /// now (one cold start at a time opens or takes a missing one), with its Init when
    /// taken now.
    async fn snapshot_for(
        &self,
        spec: &FunctionVersionSpec,
        id: &str,
        key: &SnapshotKey,
    ) -> Result<(Arc<Snapshot>, Option<SnapshotInit>), SandboxError> {
        if let Some(s) = self.snapshots.get(key) {
            return Ok((s, None));
        }
        let gate = self.snapshots.gate(key);
        let _taking = gate.lock().await;
        if let Some(s) = self.snapshots.get(key) {
            return Ok((s, None));
        }
        match self.open_sealed(key).await {
            Ok(Some(s)) => return Ok((s, None)),
            Ok(None) => {}
            Err(e) => eprintln!(
                "worker: SnapStart: the sealed snapshot of {}:{} does not open ({e}); \
                 dropped, taking a new one",
                spec.name, spec.version
            ),
        }
        let (snap, init) = tokio::time::timeout(TAKE_TIMEOUT, self.take_snapshot(spec, id, key))
            .await
            .map_err(|_| start_err(format!("taking the snapshot took over {TAKE_TIMEOUT:?}")))??;
        self.seal_in_background(key.clone(), snap.clone());
        Ok((snap, Some(init)))
    }

    async fn open_sealed(&self, key: &SnapshotKey) -> Result<Option<Arc<Snapshot>>, String> {
        let store = self.snapshots.clone();
        let k = key.clone();
        let started = std::time::Instant::now();
        let opened = tokio::task::spawn_blocking(move || store.open_sealed(&k))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if opened.is_some() {
            eprintln!(
                "worker: SnapStart: snapshot of {}:{} opened from the vault in {} ms",
                key.name,
                key.version,
                started.elapsed().as_millis()
            );
        }
        Ok(opened)
    }

    /// Puts a new snapshot in the vault without holding up the cold start that took it.
    fn seal_in_background(&self, key: SnapshotKey, snap: Arc<Snapshot>) {
        if !self.snapshots.has_vault() {
            return;
        }
        let store = self.snapshots.clone();
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            match store.seal(&key, &snap) {
                Ok(()) => eprintln!(
                    "worker: SnapStart: snapshot of {}:{} sealed into the vault in {} ms",
                    key.name,
                    key.version,
                    started.elapsed().as_millis()
                ),
                Err(e) => eprintln!(
                    "worker: SnapStart: sealing the snapshot of {}:{} failed ({e}); it \
                     stays in memory only",
                    key.name, key.version
                ),
            }
        });
    }

    async fn take_snapshot(
        &self,
        spec: &FunctionVersionSpec,
        id: &str,
        key: &SnapshotKey,
    ) -> Result<(Arc<Snapshot>, SnapshotInit), SandboxError> {
        let started = std::time::Instant::now();
        let mut sb = self
            .launch(spec, &format!("{id}-snap"), &Launch::BootForSnapshot)
            .await?;
        let explain = |e: SandboxError, sb: &VmSandbox| {
            start_err(format!("{e}; guest console: {}", sb.serial.text()))
        };
        let init_started = std::time::Instant::now();
        if let Err(e) = sb.session.init().await {
            return Err(explain(e, &sb));
        }
        let init = SnapshotInit {
            took: init_started.elapsed(),
            logs: sb.session.take_logs(),
        };
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
        Ok((snap, init))
    }
}
