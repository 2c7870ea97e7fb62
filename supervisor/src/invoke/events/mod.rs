//! Asynchronous (`Event`) invocations: stored durably before the 202, run in the
//! background through the same path as synchronous ones, retried per [`policy`],
//! and picked up again after a restart.

pub mod policy;
pub mod store;

use std::collections::HashSet;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Notify, Semaphore};
use worker::{InvokeRequest, InvokeResult};

use super::{InvokeService, RunError};
use crate::control::names::FunctionRef;
use crate::http::ErrorKind;
use policy::{Next, RunOutcome};
use store::{Event, EventBackend, EventStore, EventStoreError};

/// Events running at once (each also takes a concurrency slot in the worker).
const MAX_PARALLEL: usize = 32;
/// Upper bound on how long the runner sleeps without looking at the store.
const POLL: Duration = Duration::from_secs(1);

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub struct EventQueue {
    store: Arc<dyn EventBackend>,
    wake: Notify,
    runs: Mutex<Runs>,
    retry_base: Duration,
}

/// Which events run now, and which finished since the runner last read the store: a
/// read can return an event that finishes (removed, or rescheduled for later) before
/// the runner gets to it, and that event must not run again from the stale read.
#[derive(Default)]
struct Runs {
    running: HashSet<String>,
    finished: HashSet<String>,
}

impl Runs {
    fn claim(&mut self, id: &str) -> bool {
        !self.finished.contains(id) && self.running.insert(id.to_owned())
    }

    fn finish(&mut self, id: &str) {
        self.running.remove(id);
        self.finished.insert(id.to_owned());
    }
}

impl EventQueue {
    pub fn open(path: &Path, retry_base: Duration) -> Result<Self, EventStoreError> {
        Ok(Self::with_backend(
            Arc::new(EventStore::open(path)?),
            retry_base,
        ))
    }

    /// A queue in `store` (etcd when frontends share their events).
    pub fn with_backend(store: Arc<dyn EventBackend>, retry_base: Duration) -> Self {
        Self {
            store,
            wake: Notify::new(),
            runs: Mutex::new(Runs::default()),
            retry_base,
        }
    }

    /// Stores an event durably (blocking pool) and wakes the runner.
    pub async fn enqueue(&self, ev: Event) -> Result<(), EventStoreError> {
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || store.insert(&ev))
            .await
            .map_err(|e| EventStoreError::Task(e.to_string()))??;
        self.wake.notify_one();
        Ok(())
    }

    pub fn depth(&self) -> Option<u64> {
        self.store.count().ok()
    }

    fn runs(&self) -> std::sync::MutexGuard<'_, Runs> {
        self.runs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs stored events until the process ends.
pub fn spawn_runner(svc: Arc<InvokeService>) {
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(MAX_PARALLEL));
        loop {
            let q = &svc.events;
            // Running events are still stored (until they finish) and come back from
            // the query: ask for enough rows to see past them.
            let limit = {
                let mut runs = q.runs();
                // Finished before this read: the read cannot return them as they were.
                runs.finished.clear();
                MAX_PARALLEL + runs.running.len()
            };
            let due = {
                let store = q.store.clone();
                tokio::task::spawn_blocking(move || store.due(now_ms(), limit))
                    .await
                    .ok()
                    .and_then(|r| {
                        r.map_err(|e| tracing::error!(error = %e, "reading events"))
                            .ok()
                    })
                    .unwrap_or_default()
            };
            for ev in due {
                if !q.runs().claim(&ev.id) {
                    continue;
                }
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let svc2 = svc.clone();
                tokio::spawn(async move {
                    let id = ev.id.clone();
                    run_one(&svc2, ev).await;
                    svc2.events.runs().finish(&id);
                    drop(permit);
                    svc2.events.wake.notify_one();
                });
            }
            // Due events are running now (each wakes us when done) or were just
            // started; otherwise sleep until the next retry is due.
            let now = now_ms();
            let wait = match q.store.next_due_ms() {
                Ok(Some(at)) if at > now => {
                    Duration::from_millis(u64::try_from(at - now).unwrap_or(0)).min(POLL)
                }
                _ => POLL,
            };
            let _ = tokio::time::timeout(wait, q.wake.notified()).await;
        }
    });
}

async fn run_one(svc: &InvokeService, ev: Event) {
    let f = FunctionRef {
        name: ev.function.clone(),
        qualifier: ev.qualifier.clone(),
    };
    let req = InvokeRequest {
        request_id: ev.id.clone(),
        payload: ev.payload.clone(),
        client_context: ev.client_context.clone(),
        ..Default::default()
    };
    let outcome = match svc.run(&f, req).await {
        Ok(out) => match out.result {
            InvokeResult::Success(_) => RunOutcome::Success,
            InvokeResult::FunctionError { error_type, .. } => {
                svc.metrics.function_error(&error_type);
                RunOutcome::FunctionError
            }
        },
        Err(RunError::Throttled(r)) => {
            svc.metrics.throttle(r.as_str());
            RunOutcome::Throttled
        }
        Err(RunError::Api(e)) if e.kind == ErrorKind::ResourceNotFound => RunOutcome::Gone,
        Err(e) => {
            let transient = e.is_transient();
            tracing::warn!(event = %ev.id, error = %e, transient, "event invocation failed");
            if transient {
                RunOutcome::SystemError
            } else {
                RunOutcome::Permanent
            }
        }
    };
    let now = now_ms();
    let next = policy::decide(&ev, outcome, svc.events.retry_base, now);
    let store = svc.events.store.clone();
    let id = ev.id.clone();
    let res = match next {
        Next::Done(label) => {
            svc.metrics.event(label);
            if label == "dropped" {
                tracing::warn!(event = %id, function = %ev.function, ?outcome, "event dropped");
            }
            tokio::task::spawn_blocking(move || store.remove(&id)).await
        }
        Next::Retry {
            attempts,
            system_retries,
            delay,
        } => {
            svc.metrics.event("retried");
            let at = now.saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
            tokio::task::spawn_blocking(move || store.reschedule(&id, attempts, system_retries, at))
                .await
        }
    };
    match res {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::error!(event = %ev.id, error = %e, "updating event"),
        Err(e) => tracing::error!(event = %ev.id, error = %e, "updating event"),
    }
}

#[cfg(test)]
mod tests {
    use super::Runs;

    #[test]
    fn an_event_finished_after_the_read_is_not_claimed_again_from_it() {
        let mut runs = Runs::default();
        assert!(runs.claim("a"));
        assert!(!runs.claim("a"), "running");
        runs.finish("a");
        assert!(!runs.claim("a"), "finished since the read");
        runs.finished.clear(); // the next read
        assert!(runs.claim("a"), "due again (a retry) after a fresh read");
    }
}
