//! SnapStart on the guest-init protocol: Checkpoint once Init is done (the VM is then
//! snapshotted), and Restore, with a seed of its own, for each copy resumed from it.

use super::{epoch_ms, wire_err, Session};
use crate::sandbox::wire::WireConn;
use crate::sandbox::SandboxError;
use runtime_api::protocol::{GuestMessage, HostMessage, Init, Restore};

/// Bytes of seed each restored copy mixes into its kernel RNG.
const SEED_BYTES: usize = 32;

impl Session {
    /// A session with a guest resumed from a snapshot: `init` restores it.
    pub fn restored(conn: WireConn, init: Init, arn: String) -> Self {
        Self {
            restored: true,
            ..Self::new(conn, init, arn)
        }
    }

    pub fn is_restored(&self) -> bool {
        self.restored
    }

    /// For a guest resumed from a snapshot, how long it took from Restore to ready.
    pub fn resume_took(&self) -> Option<std::time::Duration> {
        self.resume_took
    }

    /// After Init: asks guest-init to quiesce for the snapshot; returns once it has.
    pub async fn checkpoint(&mut self) -> Result<(), SandboxError> {
        self.conn
            .send(&HostMessage::Checkpoint)
            .await
            .map_err(wire_err)?;
        self.await_phase("checkpoint", |m| match m {
            GuestMessage::CheckpointReady => Ok(Ok(())),
            other => Err(other),
        })
        .await
    }

    /// Sends Restore with a fresh seed and waits until the runtime is ready again (its
    /// after-restore hooks ran) or says why not.
    pub(super) async fn resume(&mut self) -> Result<(), SandboxError> {
        let mut seed = vec![0u8; SEED_BYTES];
        getrandom::getrandom(&mut seed)
            .map_err(|e| SandboxError::Start(format!("no seed for the restored guest: {e}")))?;
        let msg = HostMessage::Restore(Restore {
            seed,
            host_now_ms: epoch_ms(),
        });
        let sent = std::time::Instant::now();
        self.conn.send(&msg).await.map_err(wire_err)?;
        self.await_phase("restore", |m| match m {
            GuestMessage::RestoreDone => Ok(Ok(())),
            GuestMessage::RestoreError(e) => Ok(Err(SandboxError::Restore {
                error_type: e.error_type,
                body: e.body,
            })),
            other => Err(other),
        })
        .await
        .map_err(|e| match e {
            SandboxError::Exited {
                error_type,
                message,
            } => SandboxError::Restore {
                error_type,
                body: message.into_bytes(),
            },
            other => other,
        })?;
        self.resume_took = Some(sent.elapsed());
        Ok(())
    }
}
