//! SnapStart on the microVM backend. Before the first cold start of a SnapStart
//! version (outside its Init bound, as Lambda runs the Init when a version is
//! published), [`Backend::prepare`](crate::sandbox::Backend::prepare) boots a VM with
//! Init marked `snap-start`, runs Init, has guest-init quiesce (Checkpoint), and sends
//! the vmm SIGUSR1: it writes the snapshot and stops. Every cold start then resumes a
//! new VM from the snapshot, and its session sends Restore (a seed of its own for the
//! guest's RNG) in place of Init. A snapshot that cannot be taken or resumed is logged
//! and the sandbox boots as usual instead.

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
    /// Takes the version's snapshot for the cold start to come unless there is one,
    /// open or in the vault (one cold start per version takes it; the others wait).
    /// Returns the Init run when it was taken now.
    pub(super) async fn prepare_snapshot(
        &self,
        spec: &FunctionVersionSpec,
    ) -> Option<SnapshotInit> {
        let key = self.snapshot_key(spec).await?;
        let held =
            |key: &SnapshotKey| self.snapshots.get(key).is_some() || self.snapshots.sealed(key);
        if held(&key) {
            return None;
        }
        let gate = self.snapshots.gate(&key);
        let _taking = gate.lock().await;
        if held(&key) {
            return None;
        }
        let took = tokio::time::timeout(TAKE_TIMEOUT, self.take_snapshot(spec, &key)).await;
        match took {
            Ok(Ok((snap, init))) => {
                self.seal_in_background(key, snap);
                Some(init)
            }
            Ok(Err(e)) => {
                eprintln!(
                    "worker: SnapStart: no snapshot of {}:{} ({e}); booting instead",
                    spec.name, spec.version
                );
                None
            }
            Err(_) => {
                eprintln!(
                    "worker: SnapStart: taking the snapshot of {}:{} took over \
                     {TAKE_TIMEOUT:?}; booting instead",
                    spec.name, spec.version
                );
                None
            }
        }
    }

    /// A sandbox resumed from the version's snapshot, or `None` (logged) when there is
    /// none or resuming fails, so the caller boots one.
    pub(super) async fn start_from_snapshot(
        &self,
        spec: &FunctionVersionSpec,
        id: &str,
    ) -> Option<VmSandbox> {
        let key = self.snapshot_key(spec).await?;
        let snap = match self.snapshots.get(&key) {
            Some(s) => s,
            None => {
                // One cold start opens it from the vault (part of its Restore Duration,
                // as on Lambda); the others of the version wait for that copy.
                let gate = self.snapshots.gate(&key);
                let _opening = gate.lock().await;
                match self.snapshots.get(&key) {
                    Some(s) => s,
                    None => self.open_sealed(&key).await?,
                }
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
                let store = self.snapshots.clone();
                drop(tokio::task::spawn_blocking(move || store.forget(&key)));
                None
            }
        }
    }

    /// The key of the version's snapshot on this host: it names the vmm, kernel and
    /// rootfs image the VM starts from (digests, computed off the async threads).
    async fn snapshot_key(&self, spec: &FunctionVersionSpec) -> Option<SnapshotKey> {
        let base = match self.rootfs_for(spec, spec.image.is_some()) {
            Ok(rootfs) => {
                let l = &self.cfg.launcher;
                let files = [l.vmm.clone(), l.kernel.clone(), rootfs];
                let store = self.snapshots.clone();
                tokio::task::spawn_blocking(move || {
                    base_fingerprint(&files, &store.digests).map_err(|e| e.to_string())
                })
                .await
                .unwrap_or_else(|e| Err(e.to_string()))
            }
            Err(e) => Err(e.to_string()),
        };
        match base {
            Ok(base) => Some(SnapshotKey::of(spec, base)),
            Err(e) => {
                eprintln!(
                    "worker: SnapStart: base images of {}:{}: {e}; booting",
                    spec.name, spec.version
                );
                None
            }
        }
    }

    /// The vault's snapshot of `key` opened into a plaintext copy, if it has one that
    /// opens (one that does not is dropped; logged).
    async fn open_sealed(&self, key: &SnapshotKey) -> Option<Arc<Snapshot>> {
        let store = self.snapshots.clone();
        let k = key.clone();
        let started = std::time::Instant::now();
        let opened = tokio::task::spawn_blocking(move || store.open_sealed(&k)).await;
        match opened {
            Ok(Ok(Some(s))) => {
                eprintln!(
                    "worker: SnapStart: snapshot of {}:{} opened from the vault in {} ms",
                    key.name,
                    key.version,
                    started.elapsed().as_millis()
                );
                Some(s)
            }
            Ok(Ok(None)) => None,
            Ok(Err(e)) => {
                eprintln!(
                    "worker: SnapStart: the sealed snapshot of {}:{} does not open: {e}",
                    key.name, key.version
                );
                None
            }
            Err(e) => {
                eprintln!("worker: SnapStart: opening a sealed snapshot: {e}");
                None
            }
        }
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
        key: &SnapshotKey,
    ) -> Result<(Arc<Snapshot>, SnapshotInit), SandboxError> {
        let started = std::time::Instant::now();
        let id = self.snapshots.take_id();
        let mut sb = self.launch(spec, &id, &Launch::BootForSnapshot).await?;
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
