//! Worker membership through etcd: a worker daemon started with `--etcd` registers
//! under a lease it keeps alive ([`register`]); a frontend started with `--etcd` and
//! `--role frontend` follows that list ([`follow`]) and places invokes only on the
//! workers on it. A worker that freezes, dies or loses etcd leaves the list within the
//! TTL; it is placed invokes again once it registers anew.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cluster::daemon::{Daemon, Incarnation};
use cluster::frontend::{Frontend, ListedWorker};

use super::etcd::{Etcd, EtcdError};
use super::members::{self, Registration, Role, WorkerMember};

/// Registers the worker `daemon`, reachable at `link`, and keeps its entry up to date
/// as it starts new incarnations. Dropping the registration stops the keepalives;
/// [`Registration::leave`] removes the entry at once.
pub async fn register(
    etcd: Arc<Etcd>,
    daemon: &Daemon,
    link: String,
    ttl_secs: i64,
) -> Result<Arc<Registration>, EtcdError> {
    let mut incarnations = daemon.incarnations();
    let me = member(&daemon.id, &link, &incarnations.borrow_and_update());
    let reg = tokio::task::spawn_blocking(move || {
        members::join(&etcd, Role::Worker, &me.id, &me, ttl_secs)
    })
    .await
    .map_err(|e| EtcdError::Unavailable(format!("registering: {e}")))??;
    let reg = Arc::new(reg);
    let (id, weak) = (daemon.id.clone(), Arc::downgrade(&reg));
    tokio::spawn(async move {
        while incarnations.changed().await.is_ok() {
            let Some(reg) = weak.upgrade() else { return };
            let me = member(&id, &link, &incarnations.borrow_and_update());
            if let Err(e) = reg.update(&me).await {
                tracing::warn!(error = %e, "cannot record the new incarnation in etcd");
            }
        }
    });
    Ok(reg)
}

fn member(id: &str, link: &str, inc: &Incarnation) -> WorkerMember {
    let left = inc
        .lease_end
        .saturating_duration_since(std::time::Instant::now());
    WorkerMember {
        id: id.to_owned(),
        link: link.to_owned(),
        incarnation: inc.id.clone(),
        lease_end_unix: unix(SystemTime::now() + left),
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Keeps `fe`'s list of workers equal to the workers registered in etcd, until `fe`
/// is dropped. While etcd cannot be read the last list stays.
pub fn follow(etcd: Arc<Etcd>, fe: &Arc<Frontend>) {
    let mut changes = super::watch(&etcd, members::dir(&etcd, Role::Worker));
    let fe = Arc::downgrade(fe);
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            let e = etcd.clone();
            let listed = tokio::task::spawn_blocking(move || {
                members::listed::<WorkerMember>(&e, Role::Worker)
            })
            .await;
            let Some(fe) = fe.upgrade() else { return };
            match listed {
                Ok(Ok(members)) => fe.set_discovered(&current(members)),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "cannot read the worker list; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    changes.mark_changed();
                }
                Err(e) => tracing::error!(error = %e, "worker list task failed"),
            }
        }
    });
}

/// The members whose worker lease has not ended (a stale entry's lease may outlive a
/// worker stuck past its lifetime; placement would skip it anyway).
fn current(members: Vec<WorkerMember>) -> Vec<ListedWorker> {
    let now = unix(SystemTime::now());
    members
        .into_iter()
        .filter(|m| m.lease_end_unix > now)
        .map(|m| ListedWorker {
            id: m.id,
            link: m.link,
        })
        .collect()
}
