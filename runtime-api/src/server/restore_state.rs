//! SnapStart in the invocation state machine. With a snapshot expected, the runtime's
//! `GET /runtime/restore/next` ends Init (as `/invocation/next` does) and waits until
//! the sandbox was restored; the runtime's first `/invocation/next` after the restore,
//! or its `POST /runtime/restore/error`, ends the restore phase. A runtime that knows
//! nothing of SnapStart simply sits in `/invocation/next` across the snapshot.

use super::{Invocations, State};
use crate::protocol::{GuestMessage, InitError};
use crate::server::errors::ApiError;
use tokio::sync::oneshot;

#[derive(Default)]
pub(super) struct RestoreGate {
    /// A snapshot will be taken after Init (`initialization_type` `snap-start`).
    expected: bool,
    /// The sandbox was restored: `/restore/next` answers at once from now on.
    restored: bool,
    /// Restored, and the runtime has not yet said it is ready again.
    resuming: bool,
    waiters: Vec<oneshot::Sender<()>>,
}

impl Invocations {
    /// Init said a snapshot will be taken after it.
    pub fn expect_snapshot(&self) {
        self.lock().restore.expected = true;
    }

    /// `GET /runtime/restore/next`: `None` answers at once (no snapshot expected, or
    /// already restored); otherwise Init is over and the receiver fires on restore.
    pub fn restore_next(&self) -> Result<Option<oneshot::Receiver<()>>, ApiError> {
        let mut st = self.lock();
        if st.exited {
            return Err(ApiError::RuntimeExited);
        }
        if !st.restore.expected || st.restore.restored {
            return Ok(None);
        }
        st.runtime_ready = true;
        self.dispatch(&mut st);
        let (tx, rx) = oneshot::channel();
        st.restore.waiters.push(tx);
        Ok(Some(rx))
    }

    /// The sandbox resumed from its snapshot (guest-init reseeded and set the clock):
    /// release `/restore/next`. A runtime already waiting in `/invocation/next` is ready
    /// now; one released from `/restore/next` is ready at its next `/invocation/next`.
    pub fn restored(&self) {
        let mut st = self.lock();
        st.restore.restored = true;
        st.restore.resuming = true;
        let mut released = 0;
        for w in st.restore.waiters.drain(..) {
            released += usize::from(w.send(()).is_ok());
        }
        if released == 0 && st.waiter.as_ref().is_some_and(|w| !w.is_closed()) {
            self.ready_after_restore(&mut st);
        }
    }

    /// Called from `/invocation/next`: the first one after a restore ends it.
    pub(super) fn ready_after_restore(&self, st: &mut State) {
        if std::mem::take(&mut st.restore.resuming) {
            (self.sink)(GuestMessage::RestoreDone);
        }
    }

    /// `POST /runtime/restore/error`: the after-restore hooks failed. The host hears
    /// it, and invocations that reach this sandbox fail with it.
    pub fn restore_error(&self, error_type: String, body: Vec<u8>) -> Result<(), ApiError> {
        let mut st = self.lock();
        if !std::mem::take(&mut st.restore.resuming) {
            return Err(ApiError::InvalidStateTransition {
                from: if st.restore.restored { "Ready" } else { "Init" },
                to: "RestoreError",
            });
        }
        let err = InitError { error_type, body };
        st.init_error = Some(err.clone());
        (self.sink)(GuestMessage::RestoreError(err));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn recording() -> (Arc<Invocations>, Arc<Mutex<Vec<GuestMessage>>>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = Arc::clone(&log);
        (
            Invocations::new(Arc::new(move |m| l.lock().unwrap().push(m))),
            log,
        )
    }

    #[test]
    fn without_a_snapshot_restore_next_answers_at_once() {
        let (inv, log) = recording();
        assert!(inv.restore_next().unwrap().is_none());
        assert!(log.lock().unwrap().is_empty(), "no InitDone from it either");
        assert!(inv.restore_error("X".into(), vec![]).is_err());
    }

    #[test]
    fn restore_next_ends_init_and_waits_for_the_restore() {
        let (inv, log) = recording();
        inv.expect_snapshot();
        let mut rx = inv.restore_next().unwrap().expect("waits");
        assert_eq!(log.lock().unwrap().as_slice(), &[GuestMessage::InitDone]);
        assert!(rx.try_recv().is_err(), "not before the restore");
        inv.restored();
        assert!(rx.try_recv().is_ok());
        // Ready again at the first /invocation/next after it, once.
        let _next = inv.next().unwrap();
        assert_eq!(log.lock().unwrap().last(), Some(&GuestMessage::RestoreDone));
        assert!(inv.restore_next().unwrap().is_none(), "already restored");
        let n = log.lock().unwrap().len();
        inv.restored();
        assert_eq!(
            log.lock().unwrap().len(),
            n + 1,
            "a runtime in /next is ready at once"
        );
    }

    #[test]
    fn a_runtime_waiting_in_invocation_next_is_ready_at_the_restore() {
        let (inv, log) = recording();
        inv.expect_snapshot();
        let _next = inv.next().unwrap();
        assert_eq!(log.lock().unwrap().as_slice(), &[GuestMessage::InitDone]);
        inv.restored();
        assert_eq!(log.lock().unwrap().last(), Some(&GuestMessage::RestoreDone));
    }

    #[test]
    fn a_failed_after_restore_hook_is_reported_and_fails_later_invokes() {
        let (inv, log) = recording();
        inv.expect_snapshot();
        let _rx = inv.restore_next().unwrap().unwrap();
        assert!(
            inv.restore_error("X".into(), vec![]).is_err(),
            "not restored yet"
        );
        inv.restored();
        inv.restore_error("Runtime.AfterRestore".into(), b"{}".to_vec())
            .unwrap();
        assert!(matches!(
            log.lock().unwrap().last(),
            Some(GuestMessage::RestoreError(e)) if e.error_type == "Runtime.AfterRestore"
        ));
        inv.push_invoke(crate::protocol::Invoke {
            request_id: "r1".into(),
            ..Default::default()
        });
        assert!(matches!(
            log.lock().unwrap().last(),
            Some(GuestMessage::InvokeError(e)) if e.error_type == "Runtime.AfterRestore"
        ));
    }
}
