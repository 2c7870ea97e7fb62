//! The registry shared by several frontends through etcd (`--etcd`).
//!
//! Each frontend keeps the registry in an SQLite database in memory, rebuilt at start
//! from a log in etcd. Every committed change is one log entry: the changeset SQLite's
//! session extension recorded for its transaction. etcd orders the entries. Entry `n`
//! is written only if no entry `n` exists yet (a transaction comparing the key's create
//! revision with 0), so of two frontends changing the registry at once only one wins.
//! The other undoes its change, applies the winner's entry and runs its change again
//! on the new state, which may now refuse it (the function exists, the revision moved
//! on). The checks the registry makes therefore hold across frontends.
//!
//! etcd does the distributed part (consensus, durability, ordering, watches); this
//! module only turns registry transactions into entries and back.

use std::collections::BTreeSet;
use std::io::Read;

use etcd_client::{Compare, CompareOp, GetOptions, Txn, TxnOp};
use fallible_streaming_iterator::FallibleStreamingIterator as _;
use rusqlite::session::{ChangesetIter, ConflictAction, ConflictType, Session};
use rusqlite::types::ValueRef;
use rusqlite::Connection;

use super::RegistryError;
use crate::shared::etcd::{Etcd, EtcdError, MAX_VALUE_BYTES};

/// The first byte of every entry: the format of what follows (a changeset).
const ENTRY_FORMAT: u8 = 1;
/// Entries read per request while catching up.
const READ_BATCH: i64 = 512;

/// What changed in entries written by other frontends, for the caches and sandboxes of
/// this one: deleted functions (`None`) and versions, and whether any reserved
/// concurrency changed.
#[derive(Debug, Default)]
pub struct RemoteChanges {
    pub deleted: BTreeSet<(String, Option<String>)>,
    pub reserved_changed: bool,
    /// A version was deleted or updated (its code may have been replaced): image chunks
    /// may have lost their last user.
    pub versions_changed: bool,
    pub entries: u64,
}

impl RemoteChanges {
    fn absorb(&mut self, other: RemoteChanges) {
        self.deleted.extend(other.deleted);
        self.reserved_changed |= other.reserved_changed;
        self.versions_changed |= other.versions_changed;
        self.entries += other.entries;
    }
}

/// The ordered log of changesets the frontends share: etcd ([`Replica`]), or memory in
/// tests.
pub trait SharedLog: Send + Sync {
    /// Writes `changeset` as entry `index`; `Ok(false)` when that entry exists already.
    fn append(&self, index: u64, changeset: &[u8]) -> Result<bool, EtcdError>;
    /// The changesets of the entries after `applied`, in order (up to one batch).
    fn entries_after(&self, applied: u64) -> Result<Vec<(u64, Vec<u8>)>, EtcdError>;
    /// The key prefix to watch for new entries.
    fn watch_prefix(&self) -> Option<String>;
    /// Entries between snapshots; 0: none are taken.
    fn snapshot_every(&self) -> u64 {
        0
    }
    /// Stores `parts` as the snapshot of the registry at entry `index`, makes it the
    /// one to start from, and drops what it makes unneeded (older snapshots, entries
    /// more than [`Self::snapshot_every`] before it).
    fn save_snapshot(&self, _index: u64, _parts: &[Vec<u8>]) -> Result<(), EtcdError> {
        Ok(())
    }
    /// The latest snapshot.
    fn snapshot(&self) -> Result<Option<Snapshot>, EtcdError> {
        Ok(None)
    }
}

/// The registry as of log entry `index`, as changesets to apply to an empty registry.
#[derive(Clone)]
pub struct Snapshot {
    pub index: u64,
    pub parts: Vec<Vec<u8>>,
}

/// The log in etcd: entry `n` is the key `PREFIX/registry/log/n` (20 digits).
pub struct Replica {
    etcd: std::sync::Arc<Etcd>,
    snapshot_every: u64,
}

fn log_dir(etcd: &Etcd) -> String {
    etcd.key("registry/log/")
}

pub(super) fn log_key(etcd: &Etcd, index: u64) -> String {
    format!("{}{index:020}", log_dir(etcd))
}

impl Replica {
    pub fn new(etcd: std::sync::Arc<Etcd>, snapshot_every: u64) -> Self {
        Self {
            etcd,
            snapshot_every,
        }
    }

    pub(super) fn etcd(&self) -> &Etcd {
        &self.etcd
    }
}

impl SharedLog for Replica {
    fn watch_prefix(&self) -> Option<String> {
        Some(log_dir(&self.etcd))
    }

    fn snapshot_every(&self) -> u64 {
        self.snapshot_every
    }

    fn save_snapshot(&self, index: u64, parts: &[Vec<u8>]) -> Result<(), EtcdError> {
        super::snapshot_etcd::save(self, index, parts)
    }

    fn snapshot(&self) -> Result<Option<Snapshot>, EtcdError> {
        super::snapshot_etcd::latest(self)
    }

    fn append(&self, index: u64, changeset: &[u8]) -> Result<bool, EtcdError> {
        let size = changeset.len() + 1 + crate::shared::sealing::OVERHEAD;
        if size > MAX_VALUE_BYTES {
            return Err(EtcdError::TooLarge(size));
        }
        let key = log_key(&self.etcd, index);
        let mut value = Vec::with_capacity(size);
        value.push(ENTRY_FORMAT);
        value.extend_from_slice(&self.etcd.sealer()?.seal(&key, changeset)?);
        self.etcd.call(|mut c| {
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(key.clone(), value.clone(), None)]);
            async move { Ok(c.txn(txn).await?.succeeded()) }
        })
    }

    fn entries_after(&self, applied: u64) -> Result<Vec<(u64, Vec<u8>)>, EtcdError> {
        let from = log_key(&self.etcd, applied + 1);
        let dir = log_dir(&self.etcd);
        let end = prefix_end(&dir);
        let kvs = self.etcd.call(|mut c| {
            let opts = GetOptions::new()
                .with_range(end.clone())
                .with_limit(READ_BATCH);
            let from = from.clone();
            async move {
                let resp = c.get(from, Some(opts)).await?;
                Ok(resp
                    .kvs()
                    .iter()
                    .map(|kv| (kv.key().to_vec(), kv.value().to_vec()))
                    .collect::<Vec<_>>())
            }
        })?;
        let mut out = Vec::with_capacity(kvs.len());
        for (key, value) in kvs {
            let index = std::str::from_utf8(&key[dir.len()..])
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| corrupt(format!("log key {:?}", String::from_utf8_lossy(&key))))?;
            let key = String::from_utf8_lossy(&key);
            match value.split_first() {
                Some((&ENTRY_FORMAT, sealed)) => {
                    out.push((index, self.etcd.sealer()?.open(&key, sealed)?))
                }
                _ => return Err(corrupt(format!("entry {index} has an unknown format"))),
            }
        }
        Ok(out)
    }
}

pub(super) fn corrupt(what: String) -> EtcdError {
    EtcdError::Settings(format!("the shared registry log is corrupt: {what}"))
}

/// The first key after every key starting with `prefix`.
pub fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// Runs `f` and returns its result with the changeset of what it committed.
pub(super) fn capture<T>(
    conn: &Connection,
    f: &mut impl FnMut(&Connection) -> Result<T, RegistryError>,
) -> Result<(T, Vec<u8>), RegistryError> {
    let mut session = Session::new(conn)?;
    session.attach(None)?;
    let out = f(conn)?;
    let mut changeset = Vec::new();
    session.changeset_strm(&mut changeset)?;
    Ok((out, changeset))
}

/// Undoes a committed change whose entry lost the race for its index.
pub(super) fn undo(conn: &Connection, changeset: &[u8]) -> Result<(), RegistryError> {
    let mut inverse = Vec::new();
    rusqlite::session::invert_strm(&mut &changeset[..], &mut inverse)?;
    apply_changeset(conn, &inverse)
}

/// Applies one changeset. Rows a cascade already deleted are skipped; a row that is
/// there already is replaced (the log is the truth).
pub(super) fn apply_changeset(conn: &Connection, changeset: &[u8]) -> Result<(), RegistryError> {
    conn.apply_strm(
        &mut &changeset[..],
        None::<fn(&str) -> bool>,
        |kind, _item| match kind {
            ConflictType::SQLITE_CHANGESET_NOTFOUND => ConflictAction::SQLITE_CHANGESET_OMIT,
            ConflictType::SQLITE_CHANGESET_DATA | ConflictType::SQLITE_CHANGESET_CONFLICT => {
                ConflictAction::SQLITE_CHANGESET_REPLACE
            }
            _ => ConflictAction::SQLITE_CHANGESET_ABORT,
        },
    )?;
    Ok(())
}

/// What an entry deletes and whether it touches reserved concurrency.
fn summarize(changeset: &[u8]) -> Result<RemoteChanges, RegistryError> {
    let mut out = RemoteChanges {
        entries: 1,
        ..RemoteChanges::default()
    };
    let mut reader = changeset;
    let input: &mut dyn Read = &mut reader;
    let mut items = ChangesetIter::start_strm(&input)?;
    while let Some(item) = items.next()? {
        let op = item.op()?;
        let table = op.table_name().to_owned();
        let deleted = matches!(op.code(), rusqlite::hooks::Action::SQLITE_DELETE);
        let text = |col| -> Result<String, RegistryError> {
            match item.old_value(col)? {
                ValueRef::Text(t) => Ok(String::from_utf8_lossy(t).into_owned()),
                _ => Ok(String::new()),
            }
        };
        match table.as_str() {
            "functions" if deleted => {
                out.versions_changed = true;
                out.deleted.insert((text(0)?, None));
            }
            "versions" if deleted => {
                out.versions_changed = true;
                out.deleted.insert((text(0)?, Some(text(2)?)));
            }
            "versions" if matches!(op.code(), rusqlite::hooks::Action::SQLITE_UPDATE) => {
                out.versions_changed = true;
            }
            "concurrency" => out.reserved_changed = true,
            _ => {}
        }
    }
    Ok(out)
}

/// This frontend's local copy and how far into the log it is.
pub(super) struct Follower {
    pub applied: u64,
    /// Changes by other frontends not yet handed to [`super::Registry::catch_up`]'s caller.
    pub pending: RemoteChanges,
}

impl Follower {
    pub fn new() -> Self {
        Self {
            applied: 0,
            pending: RemoteChanges::default(),
        }
    }

    /// Applies every entry written after the ones this copy has; true if there were any.
    pub fn apply_new(
        &mut self,
        conn: &Connection,
        replica: &dyn SharedLog,
    ) -> Result<bool, RegistryError> {
        let mut any = false;
        loop {
            let batch = replica.entries_after(self.applied)?;
            if batch.is_empty() {
                return Ok(any);
            }
            any |= self.apply(conn, replica, batch)?;
        }
    }

    /// Applies the entries of `batch` this copy lacks (read from the log while the
    /// registry was not locked, so a writer may have applied some meanwhile).
    pub fn apply(
        &mut self,
        conn: &Connection,
        replica: &dyn SharedLog,
        batch: Vec<(u64, Vec<u8>)>,
    ) -> Result<bool, RegistryError> {
        let mut any = false;
        let seen = self.applied;
        let mut batch: Vec<_> = batch.into_iter().filter(|(i, _)| *i > seen).collect();
        if batch.first().is_some_and(|(i, _)| *i != seen + 1) {
            // The entries this copy lacks were compacted away: start from the snapshot.
            self.load_snapshot(conn, replica)?;
            let now = self.applied;
            batch.retain(|(i, _)| *i > now);
            any = true;
        }
        for (index, changeset) in batch {
            if index != self.applied + 1 {
                return Err(corrupt(format!("entry {index} follows {}", self.applied)).into());
            }
            let summary = summarize(&changeset)?;
            apply_changeset(conn, &changeset)?;
            self.pending.absorb(summary);
            self.applied = index;
            any = true;
        }
        Ok(any)
    }

    /// Commits `f`'s change to the shared log, retrying on the newer state while other
    /// frontends win the race for the next index.
    pub fn write<T>(
        &mut self,
        conn: &Connection,
        replica: &dyn SharedLog,
        mut f: impl FnMut(&Connection) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        loop {
            let (out, changeset) = capture(conn, &mut f)?;
            if changeset.is_empty() {
                return Ok(out);
            }
            match replica.append(self.applied + 1, &changeset) {
                Ok(true) => {
                    self.applied += 1;
                    self.snapshot_if_due(conn, replica);
                    return Ok(out);
                }
                Ok(false) => {
                    undo(conn, &changeset)?;
                    self.apply_new(conn, replica)?;
                }
                Err(e) => {
                    undo(conn, &changeset)?;
                    return Err(e.into());
                }
            }
        }
    }
}

impl Follower {
    /// Replaces this copy with the latest snapshot (the entries after it follow).
    fn load_snapshot(
        &mut self,
        conn: &Connection,
        replica: &dyn SharedLog,
    ) -> Result<(), RegistryError> {
        let Some(Snapshot { index, parts }) = replica.snapshot()? else {
            return Err(corrupt(format!(
                "entries after {} are missing and no snapshot covers them",
                self.applied
            ))
            .into());
        };
        if index <= self.applied {
            return Err(corrupt(format!(
                "entries after {} are missing; the latest snapshot is at {index}",
                self.applied
            ))
            .into());
        }
        let changed = super::snapshot::load(conn, &parts)?;
        self.pending.absorb(changed);
        self.applied = index;
        Ok(())
    }

    /// After this frontend wrote entry `applied`: when it is a snapshot's turn, saves
    /// one. A failure costs nothing but a longer log (the next turn tries again).
    fn snapshot_if_due(&self, conn: &Connection, replica: &dyn SharedLog) {
        let every = replica.snapshot_every();
        if every == 0 || self.applied % every != 0 {
            return;
        }
        let saved = super::snapshot::parts(conn)
            .and_then(|parts| Ok(replica.save_snapshot(self.applied, &parts)?));
        match saved {
            Ok(()) => tracing::info!(
                index = self.applied,
                "shared registry: snapshot saved, log compacted"
            ),
            Err(e) => tracing::warn!(error = %e, "shared registry: no snapshot this time"),
        }
    }
}

/// The registry's side of sharing.
impl super::Registry {
    /// A registry shared through etcd: an in-memory copy rebuilt from the shared log.
    pub fn open_shared(
        etcd: std::sync::Arc<crate::shared::etcd::Etcd>,
        snapshot_every: u64,
    ) -> Result<Self, RegistryError> {
        Self::open_on_log(Box::new(Replica::new(etcd, snapshot_every)))
    }

    /// An in-memory copy of the registry `log` holds.
    pub(super) fn open_on_log(log: Box<dyn SharedLog>) -> Result<Self, RegistryError> {
        let registry = Self::with_connection(Connection::open_in_memory()?, Some(log))?;
        registry.sync()?;
        Ok(registry)
    }

    /// `supervisor migrate --to-etcd`: copies the registry file at `source` into the
    /// empty shared log of `etcd`; returns (rows, entries).
    pub fn migrate_to_shared(
        source: &std::path::Path,
        etcd: std::sync::Arc<crate::shared::etcd::Etcd>,
    ) -> Result<(u64, u64), RegistryError> {
        super::seed::seed(&Replica::new(etcd, 0), source)
    }

    /// The shared log's key prefix, when the registry is shared (for a watch).
    pub fn shared_log_prefix(&self) -> Option<String> {
        self.replica.as_ref().and_then(|r| r.watch_prefix())
    }

    /// Applies what other frontends wrote to the shared registry since the last call
    /// (no-op when not shared). Control-plane requests call it first, so a client sees
    /// a change made through another frontend as soon as that change was acknowledged.
    pub fn sync(&self) -> Result<(), RegistryError> {
        let Some(replica) = &self.replica else {
            return Ok(());
        };
        // Read without the lock: a slow etcd does not hold up this frontend's readers.
        let applied = self.lock().follower.applied;
        let batch = replica.entries_after(applied)?;
        let full = batch.len() as i64 >= READ_BATCH;
        let mut local = self.lock();
        let super::Local { conn, follower } = &mut *local;
        let mut any = follower.apply(conn, replica.as_ref(), batch)?;
        if full {
            // More than one batch behind (a frontend starting): the rest under the lock.
            any |= follower.apply_new(conn, replica.as_ref())?;
        }
        if any {
            self.bump();
        }
        Ok(())
    }

    /// `read`, and if it finds nothing in a shared registry, `read` again after a
    /// [`Self::sync`]: the invoke path follows other frontends' changes by watching, so
    /// a function created through another frontend a moment ago may not be here yet.
    pub fn find_or_sync<T>(
        &self,
        read: impl Fn(&Self) -> Result<Option<T>, RegistryError>,
    ) -> Result<Option<T>, RegistryError> {
        match read(self)? {
            None if self.replica.is_some() => {
                self.sync()?;
                read(self)
            }
            found => Ok(found),
        }
    }

    /// [`Self::sync`], then what other frontends changed since the last call, for this
    /// frontend's caches and sandboxes.
    pub fn catch_up(&self) -> Result<RemoteChanges, RegistryError> {
        self.sync()?;
        Ok(std::mem::take(&mut self.lock().follower.pending))
    }
}
