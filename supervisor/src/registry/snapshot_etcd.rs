//! Snapshots of the shared registry in etcd: part `p` of the snapshot at entry `n` is
//! `PREFIX/registry/snapshot/n/p` (sealed, bound to its key), and
//! `PREFIX/registry/snapshot-latest` names the newest complete one (`n/parts`). A
//! snapshot is written whole before that key points at it, and that key only moves
//! forward, so a reader never sees half a snapshot.

use etcd_client::{Compare, CompareOp, Txn, TxnOp};

use super::replica::{corrupt, log_key, Replica, Snapshot};
use crate::shared::etcd::{Etcd, EtcdError};

/// The first byte of every part: the format of what follows (a changeset).
const PART_FORMAT: u8 = 1;
/// More parts than this (48 GiB of registry) is a corrupt pointer, not a snapshot.
const MAX_PARTS: usize = 1 << 16;

fn dir(etcd: &Etcd) -> String {
    etcd.key("registry/snapshot/")
}

fn part_key(etcd: &Etcd, index: u64, part: usize) -> String {
    format!("{}{index:020}/{part:06}", dir(etcd))
}

fn latest_key(etcd: &Etcd) -> String {
    etcd.key("registry/snapshot-latest")
}

/// See [`super::replica::SharedLog::save_snapshot`].
pub(super) fn save(replica: &Replica, index: u64, parts: &[Vec<u8>]) -> Result<(), EtcdError> {
    let etcd = replica.etcd();
    for (p, part) in parts.iter().enumerate() {
        let key = part_key(etcd, index, p);
        let mut value = vec![PART_FORMAT];
        value.extend_from_slice(&etcd.sealer()?.seal(&key, part)?);
        etcd.call(|mut c| {
            let (key, value) = (key.clone(), value.clone());
            async move { Ok(c.put(key, value, None).await.map(drop)?) }
        })?;
    }
    let pointer = format!("{index:020}/{:06}", parts.len());
    let latest = latest_key(etcd);
    // Only forward: a slow frontend saving an older snapshot must not win.
    let moved = etcd.call(|mut c| {
        let (latest, pointer) = (latest.clone(), pointer.clone());
        async move {
            let create = Txn::new()
                .when([Compare::version(latest.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(latest.clone(), pointer.clone(), None)]);
            if c.txn(create).await?.succeeded() {
                return Ok(true);
            }
            let advance = Txn::new()
                .when([Compare::value(
                    latest.clone(),
                    CompareOp::Less,
                    pointer.clone(),
                )])
                .and_then([TxnOp::put(latest, pointer, None)]);
            Ok(c.txn(advance).await?.succeeded())
        }
    })?;
    if !moved {
        return Ok(());
    }
    // Followers further behind than one interval load the snapshot instead.
    let keep = first_kept(replica, index);
    let (log_from, log_to) = (log_key(etcd, 0), log_key(etcd, keep));
    let (snap_from, snap_to) = (dir(etcd), format!("{}{index:020}/", dir(etcd)));
    etcd.call(|mut c| {
        let (a, b, x, y) = (
            log_from.clone(),
            log_to.clone(),
            snap_from.clone(),
            snap_to.clone(),
        );
        async move {
            c.delete(a, Some(etcd_client::DeleteOptions::new().with_range(b)))
                .await?;
            c.delete(x, Some(etcd_client::DeleteOptions::new().with_range(y)))
                .await?;
            Ok(())
        }
    })
}

/// The first log entry kept behind a snapshot at `index`.
fn first_kept(replica: &Replica, index: u64) -> u64 {
    use super::replica::SharedLog as _;
    index.saturating_sub(replica.snapshot_every()) + 1
}

/// See [`super::replica::SharedLog::snapshot`].
pub(super) fn latest(replica: &Replica) -> Result<Option<Snapshot>, EtcdError> {
    let etcd = replica.etcd();
    let Some(pointer) = etcd.get(&latest_key(etcd))? else {
        return Ok(None);
    };
    let pointer = String::from_utf8_lossy(&pointer).into_owned();
    let (index, count) = pointer
        .split_once('/')
        .and_then(|(i, n)| Some((i.parse::<u64>().ok()?, n.parse::<usize>().ok()?)))
        .filter(|(_, n)| *n <= MAX_PARTS)
        .ok_or_else(|| corrupt(format!("snapshot pointer {pointer:?}")))?;
    // One part per request: a range of them could pass the client's message bound.
    let mut parts = Vec::new();
    for p in 0..count {
        let key = part_key(etcd, index, p);
        let value = etcd.get(&key)?;
        match value.as_deref().and_then(<[u8]>::split_first) {
            Some((&PART_FORMAT, sealed)) => parts.push(etcd.sealer()?.open(&key, sealed)?),
            Some(_) => {
                return Err(corrupt(format!(
                    "snapshot {index} part {p} has an unknown format"
                )))
            }
            None => {
                return Err(corrupt(format!(
                    "snapshot {index} lacks part {p} of {count}"
                )))
            }
        }
    }
    Ok(Some(Snapshot { index, parts }))
}
