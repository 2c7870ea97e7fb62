//! Reserved concurrency across frontends (`--etcd`): a function reserved at N has N
//! slot keys, `PREFIX/slots/FUNCTION/0..N`. An invoke runs only while it holds one: it
//! creates the key in a transaction that succeeds only if the key does not exist. The
//! key lives under this frontend's membership lease, so the slots of a frontend that
//! dies free up within the lease's TTL. Whichever frontend takes each invoke, at most N
//! run at once.

use std::sync::Arc;

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};

use super::etcd::{Etcd, EtcdError};

/// How many times a busy slot makes an invoke look again before it is throttled.
const ATTEMPTS: usize = 3;

pub struct Slots {
    etcd: Arc<Etcd>,
    holder: String,
}

/// A slot held; released (in the background) when dropped.
pub struct Slot {
    etcd: Arc<Etcd>,
    key: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let key = std::mem::take(&mut self.key);
        let etcd = self.etcd.clone();
        self.etcd.runtime().spawn(async move {
            let deleted = etcd
                .request(|mut c| {
                    let key = key.clone();
                    async move { Ok(c.delete(key, None).await.map(drop)?) }
                })
                .await;
            if let Err(e) = deleted {
                tracing::warn!(error = %e, "cannot free a concurrency slot; its lease will");
            }
        });
    }
}

impl Slots {
    pub fn new(etcd: Arc<Etcd>, holder: String) -> Self {
        Self { etcd, holder }
    }

    fn dir(&self, function: &str) -> String {
        self.etcd.key(&format!("slots/{function}/"))
    }

    /// One of `function`'s `reserved` slots, held under `lease`; `Ok(None)` when all are
    /// taken (the invoke is throttled).
    pub async fn acquire(
        &self,
        function: &str,
        reserved: u32,
        lease: i64,
    ) -> Result<Option<Slot>, EtcdError> {
        if reserved == 0 {
            return Ok(None);
        }
        let dir = self.dir(function);
        // First guess: a slot picked at random, free unless the function is busy.
        let mut candidate = Some(u32::from_le_bytes(crate::ids::random_bytes::<4>()) % reserved);
        for _ in 0..ATTEMPTS {
            let Some(k) = candidate else {
                return Ok(None);
            };
            let key = format!("{dir}{k}");
            if self.try_take(&key, lease).await? {
                return Ok(Some(Slot {
                    etcd: self.etcd.clone(),
                    key,
                }));
            }
            candidate = self.free_slot(&dir, reserved).await?;
        }
        Ok(None)
    }

    async fn try_take(&self, key: &str, lease: i64) -> Result<bool, EtcdError> {
        let holder = self.holder.clone();
        self.etcd
            .request(|mut c| {
                let txn = Txn::new()
                    .when([Compare::create_revision(key, CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(
                        key,
                        holder.clone(),
                        Some(PutOptions::new().with_lease(lease)),
                    )]);
                async move { Ok(c.txn(txn).await?.succeeded()) }
            })
            .await
    }

    /// A slot no key holds now, if any.
    async fn free_slot(&self, dir: &str, reserved: u32) -> Result<Option<u32>, EtcdError> {
        let taken = self
            .etcd
            .request(|mut c| {
                let dir = dir.to_owned();
                async move {
                    let resp = c
                        .get(
                            dir.clone(),
                            Some(GetOptions::new().with_prefix().with_keys_only()),
                        )
                        .await?;
                    Ok(resp
                        .kvs()
                        .iter()
                        .filter_map(|kv| {
                            std::str::from_utf8(&kv.key()[dir.len()..])
                                .ok()?
                                .parse()
                                .ok()
                        })
                        .collect::<std::collections::HashSet<u32>>())
                }
            })
            .await?;
        Ok((0..reserved).find(|k| !taken.contains(k)))
    }
}
