//! Frontend membership in etcd: each frontend registers under an etcd lease it keeps
//! alive while it runs, so a frontend that dies or freezes leaves the list within the
//! lease's TTL. Other frontends read the list to find peers for code copies.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
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

fn dir(etcd: &Etcd) -> String {
    etcd.key("members/frontend/")
}

/// Registers `me` and keeps the registration alive on the etcd runtime until the
/// returned guard is dropped. A lapsed lease (etcd down longer than the TTL, or this
/// process frozen) is replaced by a new registration once etcd answers again.
pub fn join(etcd: &Arc<Etcd>, me: Member, ttl_secs: i64) -> Result<Registration, EtcdError> {
    let key = format!("{}{}", dir(etcd), me.id);
    let value = serde_json::to_vec(&me).map_err(|e| EtcdError::Settings(e.to_string()))?;
    let lease = Arc::new(AtomicI64::new(
        etcd.call(|c| register(c, key.clone(), value.clone(), ttl_secs))?,
    ));
    let task = etcd.runtime().spawn(keep_alive(
        etcd.clients(),
        key,
        value,
        ttl_secs,
        lease.clone(),
    ));
    Ok(Registration { task, lease })
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

async fn keep_alive(
    clients: Vec<etcd_client::Client>,
    key: String,
    value: Vec<u8>,
    ttl_secs: i64,
    lease: Arc<AtomicI64>,
) {
    let period = Duration::from_millis((ttl_secs.max(1) as u64) * 1000 / 3);
    // Each failure moves on to the next member.
    for mut c in clients.iter().cloned().cycle() {
        if let Ok((mut keeper, mut stream)) =
            c.lease_keep_alive(lease.load(Ordering::Relaxed)).await
        {
            loop {
                tokio::time::sleep(period).await;
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
        tokio::time::sleep(period).await;
        match register(c.clone(), key.clone(), value.clone(), ttl_secs).await {
            Ok(l) => {
                tracing::info!("etcd: registered {key} again under a new lease");
                lease.store(l, Ordering::Relaxed);
            }
            Err(e) => tracing::warn!("etcd: cannot renew {key}: {e}"),
        }
    }
}

/// Keeps the registration alive; dropping it stops the keepalives (the lease then
/// lapses within its TTL).
pub struct Registration {
    task: tokio::task::JoinHandle<()>,
    /// The lease now kept alive (replaced when it lapsed).
    lease: Arc<AtomicI64>,
}

impl Registration {
    /// The lease this frontend's registration, and the keys it holds while alive
    /// (concurrency slots), are attached to.
    pub fn lease(&self) -> i64 {
        self.lease.load(Ordering::Relaxed)
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The frontends registered now.
pub fn members(etcd: &Etcd) -> Result<Vec<Member>, EtcdError> {
    Ok(etcd
        .get_prefix(&dir(etcd))?
        .iter()
        .filter_map(|(_, v)| serde_json::from_slice(v).ok())
        .collect())
}
