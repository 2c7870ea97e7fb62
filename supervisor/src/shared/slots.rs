//! Concurrency limits across frontends (`--etcd`): a function reserved at N has N
//! slot keys, `PREFIX/slots/FUNCTION/0..N`, and the functions without a reservation
//! share the account's unreserved slots, `PREFIX/slots/~account/0..U` (U: the account
//! limit less all reservations). An invoke runs only while it holds one: it creates
//! the key in a transaction that succeeds only if the key does not exist. The key lives
//! under this frontend's membership lease, so the slots of a frontend that dies free up
//! within the lease's TTL. Whichever frontend takes each invoke, at most N run at once.
//!
//! A slot an invoke gives back is kept by its frontend for [`IDLE_HOLD`] and handed to
//! the next invoke of the function there without asking etcd, then deleted. Under load
//! an invoke then costs no etcd request, and the slots a frontend still holds never
//! throttle its own next invokes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp};

use super::etcd::{Etcd, EtcdError};

/// The pool of the functions without a reservation (no function name holds a `~`).
pub const ACCOUNT_POOL: &str = "~account";
/// How many times a busy slot makes an invoke look again before it is throttled.
const ATTEMPTS: usize = 3;
/// How long a frontend keeps a slot no invoke uses, for the next one.
const IDLE_HOLD: Duration = Duration::from_millis(100);

/// A slot key this frontend holds: (function, slot number) and the lease it lives under.
#[derive(Clone)]
struct Held {
    function: String,
    slot: u32,
    key: String,
    lease: i64,
}

/// Slots held but unused, by function, with when they were given back.
type Idle = Arc<Mutex<HashMap<String, Vec<(Held, Instant)>>>>;

pub struct Slots {
    etcd: Arc<Etcd>,
    holder: String,
    idle: Idle,
}

/// A slot held by an invoke; given back to its frontend's idle slots when dropped.
pub struct Slot {
    etcd: Arc<Etcd>,
    idle: Idle,
    held: Option<Held>,
}

fn lock(idle: &Idle) -> std::sync::MutexGuard<'_, HashMap<String, Vec<(Held, Instant)>>> {
    idle.lock().unwrap_or_else(|p| p.into_inner())
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(held) = self.held.take() else {
            return;
        };
        lock(&self.idle)
            .entry(held.function.clone())
            .or_default()
            .push((held, Instant::now()));
        let (etcd, idle) = (self.etcd.clone(), self.idle.clone());
        self.etcd.runtime().spawn(async move {
            tokio::time::sleep(IDLE_HOLD).await;
            let stale: Vec<Held> = {
                let mut idle = lock(&idle);
                let mut out = Vec::new();
                for held in idle.values_mut() {
                    let (old, keep): (Vec<_>, Vec<_>) = held
                        .drain(..)
                        .partition(|(_, at)| at.elapsed() >= IDLE_HOLD);
                    *held = keep;
                    out.extend(old.into_iter().map(|(h, _)| h));
                }
                idle.retain(|_, v| !v.is_empty());
                out
            };
            for held in stale {
                delete(&etcd, held.key).await;
            }
        });
    }
}

async fn delete(etcd: &Etcd, key: String) {
    let deleted = etcd
        .request(|mut c| {
            let key = key.clone();
            async move { Ok(c.delete(key, None).await.map(drop)?) }
        })
        .await;
    if let Err(e) = deleted {
        tracing::warn!(error = %e, "cannot free a concurrency slot; its lease will");
    }
}

impl Slots {
    pub fn new(etcd: Arc<Etcd>, holder: String) -> Self {
        Self {
            etcd,
            holder,
            idle: Arc::default(),
        }
    }

    /// An idle slot of `function` this frontend still holds under `lease`, within the
    /// current reservation.
    fn reuse(&self, function: &str, reserved: u32, lease: i64) -> Option<Held> {
        let mut idle = lock(&self.idle);
        let list = idle.get_mut(function)?;
        let at = list
            .iter()
            .position(|(h, _)| h.slot < reserved && h.lease == lease)?;
        Some(list.swap_remove(at).0)
    }

    fn slot(&self, held: Held) -> Slot {
        Slot {
            etcd: self.etcd.clone(),
            idle: self.idle.clone(),
            held: Some(held),
        }
    }

    fn dir(&self, function: &str) -> String {
        self.etcd.key(&format!("slots/{function}/"))
    }

    /// One of pool `function`'s `reserved` slots (a function's, or [`ACCOUNT_POOL`]),
    /// held under `lease`; `Ok(None)` when all are taken (the invoke is throttled).
    pub async fn acquire(
        &self,
        function: &str,
        reserved: u32,
        lease: i64,
    ) -> Result<Option<Slot>, EtcdError> {
        if reserved == 0 {
            return Ok(None);
        }
        if let Some(held) = self.reuse(function, reserved, lease) {
            return Ok(Some(self.slot(held)));
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
                return Ok(Some(self.slot(Held {
                    function: function.to_owned(),
                    slot: k,
                    key,
                    lease,
                })));
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
