//! The Event queue shared by the frontends (`--etcd`), so an Event accepted by a
//! frontend that then dies still runs, on another one.
//!
//! Each event is two keys written in one transaction before the 202:
//! `PREFIX/events/q/ID` (what the runner needs to schedule it, as JSON) and
//! `PREFIX/events/p/ID` (its payload). A frontend runs an event only while it holds
//! `PREFIX/events/c/ID`, created in a transaction that succeeds only if no other
//! frontend holds it, under the frontend's membership lease. A finished event's keys
//! go in one transaction; a retry rewrites its schedule and drops the claim. The claims
//! of a frontend that dies lapse with its lease and another frontend runs the event
//! again, with the same request id: delivery is at least once, as on Lambda. Schedules
//! and payloads are sealed (`super::sealing`).

use std::sync::Arc;

use etcd_client::{Compare, CompareOp, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse};
use serde::{Deserialize, Serialize};

use super::etcd::{Etcd, EtcdError, MAX_VALUE_BYTES};
use crate::invoke::events::store::{Event, EventBackend, EventStoreError};

/// The scheduling part of an event (the payload is a key of its own).
#[derive(Serialize, Deserialize)]
struct Meta {
    id: String,
    function: String,
    qualifier: Option<String>,
    client_context: Option<String>,
    attempts: u32,
    system_retries: u32,
    next_at_ms: i64,
    created_ms: i64,
}

pub struct SharedEvents {
    etcd: Arc<Etcd>,
    holder: String,
    /// This frontend's membership lease, once it has joined.
    lease: Arc<dyn Fn() -> Option<i64> + Send + Sync>,
}

impl SharedEvents {
    pub fn new(
        etcd: Arc<Etcd>,
        holder: String,
        lease: Arc<dyn Fn() -> Option<i64> + Send + Sync>,
    ) -> Self {
        Self {
            etcd,
            holder,
            lease,
        }
    }

    fn key(&self, kind: &str, id: &str) -> String {
        self.etcd.key(&format!("events/{kind}/{id}"))
    }

    /// Every stored event's schedule (one that does not open or parse is skipped, and
    /// said so).
    fn metas(&self) -> Result<Vec<Meta>, EtcdError> {
        let mut metas = Vec::new();
        for (key, sealed) in self.etcd.get_prefix(&self.key("q", ""))? {
            let opened = self.etcd.sealer()?.open(&key, &sealed);
            match opened.map(|v| serde_json::from_slice::<Meta>(&v)) {
                Ok(Ok(meta)) => metas.push(meta),
                Ok(Err(e)) => {
                    tracing::warn!(key, error = %e, "skipping an event that does not parse")
                }
                Err(e) => tracing::warn!(key, error = %e, "skipping an event"),
            }
        }
        Ok(metas)
    }

    /// Which frontend holds a claim on which event id.
    fn claims(&self) -> Result<std::collections::HashMap<String, String>, EtcdError> {
        let dir = self.key("c", "");
        Ok(self
            .etcd
            .get_prefix(&dir)?
            .into_iter()
            .filter_map(|(key, holder)| {
                let id = key.strip_prefix(&dir)?.to_owned();
                Some((id, String::from_utf8_lossy(&holder).into_owned()))
            })
            .collect())
    }

    /// The payload of an event this frontend claimed already (its run was cut short
    /// before its claim could be dropped, e.g. while etcd was unavailable).
    fn payload(&self, id: &str) -> Result<Option<Vec<u8>>, EtcdError> {
        self.etcd.get_sealed(&self.key("p", id))
    }

    /// Claims `meta`'s event for this frontend and reads its payload; `None` if another
    /// frontend claimed it first (or it is gone).
    fn claim(&self, meta: Meta, lease: i64) -> Result<Option<Event>, EtcdError> {
        let (claim, payload) = (self.key("c", &meta.id), self.key("p", &meta.id));
        let holder = self.holder.clone();
        let got = self.etcd.call(|mut c| {
            let txn = Txn::new()
                .when([Compare::create_revision(claim.clone(), CompareOp::Equal, 0)])
                .and_then([
                    TxnOp::put(
                        claim.clone(),
                        holder.clone(),
                        Some(PutOptions::new().with_lease(lease)),
                    ),
                    TxnOp::get(payload.clone(), None),
                ]);
            async move {
                let resp = c.txn(txn).await?;
                if !resp.succeeded() {
                    return Ok(None);
                }
                Ok(resp.op_responses().into_iter().find_map(|r| match r {
                    TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.value().to_vec()),
                    _ => None,
                }))
            }
        })?;
        match got {
            Some(sealed) => Ok(Some(with_payload(
                meta,
                self.etcd.sealer()?.open(&payload, &sealed)?,
            ))),
            None => Ok(None),
        }
    }
}

fn with_payload(meta: Meta, payload: Vec<u8>) -> Event {
    Event {
        id: meta.id,
        function: meta.function,
        qualifier: meta.qualifier,
        payload,
        client_context: meta.client_context,
        attempts: meta.attempts,
        system_retries: meta.system_retries,
        next_at_ms: meta.next_at_ms,
        created_ms: meta.created_ms,
    }
}

impl EventBackend for SharedEvents {
    fn insert(&self, e: &Event) -> Result<(), EventStoreError> {
        // The Event route's own bound (1 MiB) keeps this far from etcd's request cap.
        if e.payload.len() > MAX_VALUE_BYTES {
            return Err(EtcdError::TooLarge(e.payload.len()).into());
        }
        let meta = serde_json::to_vec(&Meta {
            id: e.id.clone(),
            function: e.function.clone(),
            qualifier: e.qualifier.clone(),
            client_context: e.client_context.clone(),
            attempts: e.attempts,
            system_retries: e.system_retries,
            next_at_ms: e.next_at_ms,
            created_ms: e.created_ms,
        })?;
        let (q, p) = (self.key("q", &e.id), self.key("p", &e.id));
        let payload = self.etcd.sealer()?.seal(&p, &e.payload)?;
        let meta = self.etcd.sealer()?.seal(&q, &meta)?;
        Ok(self.etcd.call(|mut c| {
            let txn = Txn::new().and_then([
                TxnOp::put(p.clone(), payload.clone(), None),
                TxnOp::put(q.clone(), meta.clone(), None),
            ]);
            async move { Ok(c.txn(txn).await.map(drop)?) }
        })?)
    }

    /// Due events no frontend runs now, claimed for this one.
    fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<Event>, EventStoreError> {
        let Some(lease) = (self.lease)() else {
            return Ok(Vec::new());
        };
        let claims = self.claims()?;
        let mut due: Vec<Meta> = self
            .metas()?
            .into_iter()
            .filter(|m| m.next_at_ms <= now_ms)
            .filter(|m| claims.get(&m.id).is_none_or(|h| *h == self.holder))
            .collect();
        due.sort_by_key(|m| (m.next_at_ms, m.created_ms));
        let mut out = Vec::new();
        for meta in due.into_iter().take(limit) {
            // This frontend's own claims come back too: the runner knows which of them
            // run now.
            let ev = if claims.contains_key(&meta.id) {
                let id = meta.id.clone();
                self.payload(&id)?.map(|p| with_payload(meta, p))
            } else {
                self.claim(meta, lease)?
            };
            out.extend(ev);
        }
        Ok(out)
    }

    fn next_due_ms(&self) -> Result<Option<i64>, EventStoreError> {
        Ok(self.metas()?.iter().map(|m| m.next_at_ms).min())
    }

    fn reschedule(
        &self,
        id: &str,
        attempts: u32,
        system_retries: u32,
        next_at_ms: i64,
    ) -> Result<(), EventStoreError> {
        let q = self.key("q", id);
        let Some(stored) = self.etcd.get_sealed(&q)? else {
            return Ok(());
        };
        let mut meta: Meta = serde_json::from_slice(&stored)?;
        meta.attempts = attempts;
        meta.system_retries = system_retries;
        meta.next_at_ms = next_at_ms;
        let meta = self.etcd.sealer()?.seal(&q, &serde_json::to_vec(&meta)?)?;
        let claim = self.key("c", id);
        Ok(self.etcd.call(|mut c| {
            let txn = Txn::new().and_then([
                TxnOp::put(q.clone(), meta.clone(), None),
                TxnOp::delete(claim.clone(), None),
            ]);
            async move { Ok(c.txn(txn).await.map(drop)?) }
        })?)
    }

    fn remove(&self, id: &str) -> Result<(), EventStoreError> {
        let keys = ["q", "p", "c"].map(|k| self.key(k, id));
        Ok(self.etcd.call(|mut c| {
            let txn = Txn::new().and_then(keys.clone().map(|k| TxnOp::delete(k, None)));
            async move { Ok(c.txn(txn).await.map(drop)?) }
        })?)
    }

    fn count(&self) -> Result<u64, EventStoreError> {
        let dir = self.key("q", "");
        Ok(self.etcd.call(|mut c| {
            let dir = dir.clone();
            async move {
                let opts = GetOptions::new().with_prefix().with_count_only();
                Ok(c.get(dir, Some(opts)).await?.count().max(0) as u64)
            }
        })?)
    }
}
