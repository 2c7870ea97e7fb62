//! With a shared registry (`--etcd`): applies what other frontends change as soon as
//! etcd reports it, and tells this frontend's caches and sandboxes (a function deleted
//! through another frontend stops its sandboxes here too).

use std::sync::Arc;
use std::time::Duration;

use super::InvokeService;
use crate::registry::replica::RemoteChanges;

pub fn spawn(svc: Arc<InvokeService>) {
    let (Some(shared), Some(prefix)) = (svc.sup.shared(), svc.sup.registry().shared_log_prefix())
    else {
        return;
    };
    let mut changes = shared.watch(prefix);
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            let s = svc.clone();
            match tokio::task::spawn_blocking(move || s.sup.registry().catch_up()).await {
                Ok(Ok(remote)) => apply(&svc, remote),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot follow the shared registry; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    changes.mark_changed();
                }
                Err(e) => tracing::error!(error = %e, "registry follower task failed"),
            }
        }
    });
}

fn apply(svc: &InvokeService, remote: RemoteChanges) {
    for (function, version) in &remote.deleted {
        svc.sup.deleted(function, version.as_deref());
    }
    // Another frontend's delete or code update may have left chunks this one holds
    // unused: collect them after the same delay it waits.
    if remote.versions_changed {
        crate::chunk_gc::schedule(&svc.sup);
    }
    if remote.reserved_changed {
        match svc.sup.registry().all_reserved_concurrency() {
            Ok(all) => svc.specs.load_reserved(all),
            Err(e) => tracing::warn!(error = %e, "cannot reload reserved concurrency"),
        }
    }
}
