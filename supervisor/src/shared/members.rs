//! Membership in etcd: each frontend and each worker registers under an etcd lease it
//! keeps alive while it runs, so a member that dies, freezes or loses etcd leaves the
//! list within the lease's TTL. Frontends read the frontend list to find peers for
//! code copies, and watch the worker list to know where to place invokes.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::PutOptions;
use serde::{Deserialize, Serialize};

use super::etcd::{Etcd, EtcdError};

/// Seconds a member stays listed after its last keepalive.
pub const DEFAULT_TTL_SECS: i64 = 10;

/// What a frontend says of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: String,
    /// Where other frontends reach it (`http://HOST:PORT`, its API listener).
    pub url: String,
    pub started_unix: u64,
}

/// What a worker says of itself. Its lifetime (the worker lease, 14 hours by default)
/// is a value here, not the etcd lease's TTL: the TTL only says it is alive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerMember {
    /// The identity in its certificate; frontends check it at each handshake.
    pub id: String,
    /// Its link address (`HOST:PORT`).
    pub link: String,
    pub incarnation: String,
    /// When this incarnation's lease ends (Unix seconds).
    pub lease_end_unix: u64,
}

/// Which list a member is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Frontend,
    Worker,
}

/// The directory (key prefix) of `role`'s members.
pub fn dir(etcd: &Etcd, role: Role) -> String {
    etcd.key(match role {
        Role::Frontend => "members/frontend/",
        Role::Worker => "members/worker/",
    })
}

/// Registers `value` as member `id` and keeps the registration alive on the etcd
/// runtime until the returned guard is dropped. A lapsed lease (etcd down longer than
/// the TTL, or this process frozen) is replaced by a new registration once etcd answers
/// again.
pub fn join(
    etcd: &Arc<Etcd>,
    role: Role,
    id: &str,
    value: &impl Serialize,
    ttl_secs: i64,
) -> Result<Registration, EtcdError> {
    let key = format!("{}{id}", dir(etcd, role));
    let value = encode(value)?;
    let lease = etcd.call({
        let (key, value) = (key.clone(), value.clone());
        move |c| register(c, key.clone(), value.clone(), ttl_secs)
    })?;
    let held = Arc::new(Held {
        key,
        value: Mutex::new(value),
        lease: AtomicI64::new(lease),
        lost: tokio::sync::Notify::new(),
    });
    let task = etcd
        .runtime()
        .spawn(keep_alive(etcd.clients(), held.clone(), ttl_secs));
    Ok(Registration {
        etcd: etcd.clone(),
        task,
        held,
    })
}

fn encode(value: &impl Serialize) -> Result<Vec<u8>, EtcdError> {
    serde_json::to_vec(value).map_err(|e| EtcdError::Settings(e.to_string()))
}

async fn register(
    mut c: etcd_client::Client,
    key: String,
    value: Vec<u8>,
    ttl_secs: i64,
) -> Result<i64, EtcdError> {
    let lease = c.lease_grant(ttl_secs, None).await?.id();
    c.put(key, value, Some(PutOptions::new().with_lease(lease)))
        .await?;
    Ok(lease)
}

/// A registration's key, its latest value, and the lease that holds it now.
pub(crate) struct Held {
    key: String,
    value: Mutex<Vec<u8>>,
    lease: AtomicI64,
    /// Told when a request found the lease gone: the keepalive task checks the lease at
    /// once, and registers anew if it is gone, instead of at its next round.
    lost: tokio::sync::Notify,
}

impl Held {
    fn value(&self) -> Vec<u8> {
        self.value.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

async fn keep_alive(clients: Vec<etcd_client::Client>, held: Arc<Held>, ttl_secs: i64) {
    let period = Duration::from_millis((ttl_secs.max(1) as u64) * 1000 / 3);
    // Each failure moves on to the next member.
    for mut c in clients.iter().cloned().cycle() {
        if let Ok((mut keeper, mut stream)) =
            c.lease_keep_alive(held.lease.load(Ordering::Relaxed)).await
        {
            loop {
                // Told the lease is gone: check now rather than at the next round.
                tokio::select! {
                    _ = tokio::time::sleep(period) => {}
                    _ = held.lost.notified() => {}
                }
                if keeper.keep_alive().await.is_err() {
                    break;
                }
                // A TTL of 0 means the lease is gone (it lapsed while etcd was away).
                match stream.message().await {
                    Ok(Some(r)) if r.ttl() > 0 => {}
                    _ => break,
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = held.lost.notified() => {}
        }
        match register(c.clone(), held.key.clone(), held.value(), ttl_secs).await {
            Ok(l) => {
                tracing::info!("etcd: registered {} again under a new lease", held.key);
                held.lease.store(l, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!("etcd: cannot renew {}: {e}", held.key),
        }
    }
}

/// Keeps the registration alive; dropping it stops the keepalives (the lease then
/// lapses within its TTL).
pub struct Registration {
    etcd: Arc<Etcd>,
    task: tokio::task::JoinHandle<()>,
    held: Arc<Held>,
}

impl Registration {
    /// The lease this registration, and the keys held while it lives (a frontend's
    /// concurrency slots and Event claims), are attached to.
    pub fn lease(&self) -> i64 {
        self.held.lease.load(Ordering::Relaxed)
    }

    /// What the keepalive task holds, for [`renewed`] (which must not keep the
    /// registration's owner locked while it waits).
    pub(crate) fn held(&self) -> Arc<Held> {
        self.held.clone()
    }

    /// Replaces the registered value (kept across lease renewals).
    pub async fn update(&self, value: &impl Serialize) -> Result<(), EtcdError> {
        let value = encode(value)?;
        *self.held.value.lock().unwrap_or_else(|p| p.into_inner()) = value.clone();
        let (key, lease) = (self.held.key.clone(), self.lease());
        self.etcd
            .request(move |mut c| {
                let (key, value) = (key.clone(), value.clone());
                async move {
                    c.put(key, value, Some(PutOptions::new().with_lease(lease)))
                        .await?;
                    Ok(())
                }
            })
            .await
    }

    /// Leaves the list at once: revokes the lease (and so deletes the key) instead of
    /// letting it lapse.
    pub async fn leave(&self) -> Result<(), EtcdError> {
        self.task.abort();
        let lease = self.lease();
        self.etcd
            .request(move |mut c| async move {
                c.lease_revoke(lease).await?;
                Ok(())
            })
            .await
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A lease other than `lost` once the keepalive task has registered anew (told to at
/// once), or `None` if it has not within `wait` (etcd still away).
pub(crate) async fn renewed(held: Arc<Held>, lost: i64, wait: Duration) -> Option<i64> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let now = held.lease.load(Ordering::Relaxed);
        if now != lost {
            return Some(now);
        }
        if tokio::time::Instant::now() >= deadline {
            return None;
        }
        held.lost.notify_one();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The frontends registered now.
pub fn members(etcd: &Etcd) -> Result<Vec<Member>, EtcdError> {
    listed(etcd, Role::Frontend)
}

/// The members of `role` registered now (values that do not parse are skipped).
pub fn listed<T: serde::de::DeserializeOwned>(
    etcd: &Etcd,
    role: Role,
) -> Result<Vec<T>, EtcdError> {
    Ok(etcd
        .get_prefix(&dir(etcd, role))?
        .iter()
        .filter_map(|(_, v)| serde_json::from_slice(v).ok())
        .collect())
}
