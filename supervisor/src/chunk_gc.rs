//! Collecting the chunks no image version references while the API serves: asked for
//! after a function, version or code is deleted or replaced, and run once the
//! configured delay has passed since the latest request (invokes still running on the
//! old code keep reading its chunks until they end). One collection at a time, each
//! waiting for imports in flight (their chunks are referenced by no version until it is
//! registered) and keeping new ones waiting while it runs.

use std::sync::Arc;
use std::sync::Mutex;

use tokio::time::Instant;

use crate::supervisor::{collect_chunks, Supervisor};

#[derive(Default)]
pub struct ChunkGc {
    /// When the pending collection may run; `None` when none is pending.
    due: Mutex<Option<Instant>>,
    running: tokio::sync::Mutex<()>,
}

impl ChunkGc {
    fn due(&self) -> std::sync::MutexGuard<'_, Option<Instant>> {
        self.due.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Asks for a collection once the configured delay has passed. Requests made before
/// it starts share it (and push it back); one made while it runs gets another.
pub fn schedule(sup: &Arc<Supervisor>) {
    let due = Instant::now() + sup.config().chunk_gc_delay;
    let first = sup.chunk_gc().due().replace(due).is_none();
    if !first {
        return;
    }
    let sup = sup.clone();
    tokio::spawn(async move {
        loop {
            let due = {
                let mut pending = sup.chunk_gc().due();
                match *pending {
                    Some(due) if due > Instant::now() => due,
                    _ => {
                        *pending = None;
                        break;
                    }
                }
            };
            tokio::time::sleep_until(due).await;
        }
        collect(&sup).await;
    });
}

async fn collect(sup: &Arc<Supervisor>) {
    let _one_at_a_time = sup.chunk_gc().running.lock().await;
    let _no_import = sup.images().exclusive().await;
    let s = sup.clone();
    let collected = tokio::task::spawn_blocking(move || {
        let delay = s.config().chunk_gc_delay;
        collect_chunks(s.registry(), s.store(), s.images(), delay)
    })
    .await;
    match collected {
        Ok(Ok(0)) => {}
        Ok(Ok(n)) => eprintln!("supervisor: removed {n} image chunks no version uses"),
        Ok(Err(e)) => eprintln!("supervisor: image chunk collection: {e}"),
        Err(e) => eprintln!("supervisor: image chunk collection task: {e}"),
    }
}
