//! Durable registry of functions and versions in SQLite (WAL,
//! `synchronous=FULL`): every acknowledged change has been fsynced, and each
//! change is one transaction, so a crash never leaves half a function. With `--etcd`
//! the registry is shared by several frontends instead (see `replica`).

mod alias;
mod concurrency;
mod layer;
mod meta;
mod record;
pub mod replica;
mod seed;
mod snapshot;
mod snapshot_etcd;
mod url;

use std::collections::HashSet;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use base64::Engine as _;
use rusqlite::{params, Connection, OptionalExtension as _, Transaction, TransactionBehavior};

pub use alias::{AliasPage, AliasRecord};
pub use concurrency::ReservationBound;
pub use layer::{LayerPage, LayerVersionRecord};
pub use meta::{PolicyRecord, Tags, MAX_TAGS};
pub use record::{FunctionRecord, ImageRecord, LayerRef, LATEST};
pub use snapshot::DEFAULT_SNAPSHOT_EVERY;
pub use url::{Cors, UrlPage, UrlRecord};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("registry database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("corrupt registry record: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("function already exist: {0}")]
    AlreadyExists(String),
    #[error("function not found: {0}")]
    NotFound(String),
    #[error("the function was modified concurrently; retry")]
    Conflict,
    #[error("invalid pagination marker")]
    BadMarker,
    #[error("alias already exists: {0}")]
    AliasExists(String),
    #[error("alias not found: {0}")]
    AliasNotFound(String),
    /// Lambda refuses to delete a version an alias routes to.
    #[error("version {version} is referenced by the aliases {aliases:?}")]
    VersionInUse {
        version: String,
        aliases: Vec<String>,
    },
    /// All reservations together would leave less than this unreserved.
    #[error("reservations would leave less than {unreserved_minimum} unreserved")]
    OverReserved { unreserved_minimum: u32 },
    #[error("a resource holds at most {} tags", meta::MAX_TAGS)]
    TooManyTags,
    #[error("statement {0} already exists")]
    StatementExists(String),
    #[error("statement {0} not found")]
    StatementNotFound(String),
    #[error("the function URL configuration already exists")]
    UrlExists,
    #[error("the function URL configuration does not exist")]
    UrlNotFound,
    /// The shared registry (`--etcd`) cannot be read or written now, or its settings
    /// cannot work; see [`crate::shared::etcd::EtcdError::is_transient`].
    #[error("shared registry: {0}")]
    Shared(#[from] crate::shared::etcd::EtcdError),
}

/// Turns on what the registry relies on and creates its tables.
fn init_schema(conn: &Connection) -> Result<(), RegistryError> {
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    conn.execute_batch(SCHEMA)?;
    conn.execute_batch(alias::SCHEMA)?;
    conn.execute_batch(meta::SCHEMA)?;
    conn.execute_batch(url::SCHEMA)?;
    conn.execute_batch(layer::SCHEMA)?;
    Ok(())
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS functions (
    name TEXT PRIMARY KEY NOT NULL,
    next_version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS versions (
    function TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
    seq INTEGER NOT NULL,
    version TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (function, seq)
);
CREATE TABLE IF NOT EXISTS concurrency (
    function TEXT PRIMARY KEY NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
    reserved INTEGER NOT NULL
);
";

pub struct Registry {
    local: Mutex<Local>,
    /// Bumped after every committed change, so readers can cache safely.
    generation: AtomicU64,
    /// `Some` when the registry is shared through etcd.
    replica: Option<Box<dyn replica::SharedLog>>,
}

/// This process's database and, when shared, how far into the shared log it is.
struct Local {
    conn: Connection,
    follower: replica::Follower,
}

/// Starts a write transaction on a connection the registry's lock guards.
fn immediate(conn: &Connection) -> Result<Transaction<'_>, RegistryError> {
    Ok(Transaction::new_unchecked(
        conn,
        TransactionBehavior::Immediate,
    )?)
}

/// One page of a listing.
pub struct Page {
    pub items: Vec<FunctionRecord>,
    pub next_marker: Option<String>,
}

/// The JSON record in the first column of the row `sql` selects, if there is one.
fn record<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    sql: &str,
    args: impl rusqlite::Params,
) -> Result<Option<T>, RegistryError> {
    let text: Option<String> = conn.query_row(sql, args, |r| r.get(0)).optional()?;
    Ok(text.map(|t| serde_json::from_str(&t)).transpose()?)
}

fn seq_of(version: &str) -> Option<i64> {
    if version == LATEST {
        Some(0)
    } else {
        version.parse::<i64>().ok().filter(|n| *n > 0)
    }
}

fn encode_marker(name: &str, seq: i64) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{seq}:{name}"))
}

fn decode_marker(marker: &str) -> Result<(String, i64), RegistryError> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(marker)
        .map_err(|_| RegistryError::BadMarker)?;
    let text = String::from_utf8(raw).map_err(|_| RegistryError::BadMarker)?;
    let (seq, name) = text.split_once(':').ok_or(RegistryError::BadMarker)?;
    Ok((
        name.to_owned(),
        seq.parse().map_err(|_| RegistryError::BadMarker)?,
    ))
}

impl Registry {
    pub fn open(path: &Path) -> Result<Self, RegistryError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        Self::with_connection(conn, None)
    }

    fn with_connection(
        conn: Connection,
        replica: Option<Box<dyn replica::SharedLog>>,
    ) -> Result<Self, RegistryError> {
        init_schema(&conn)?;
        Ok(Self {
            local: Mutex::new(Local {
                conn,
                follower: replica::Follower::new(),
            }),
            generation: AtomicU64::new(0),
            replica,
        })
    }

    /// Changes committed so far by this process. A value read before a lookup that
    /// is still current later proves the looked-up data has not changed.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs a read.
    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        f(&self.lock().conn)
    }

    /// Runs a change: one transaction, which `f` commits. When the registry is shared,
    /// `f` may run again on a newer state (see `replica`).
    fn write<T>(
        &self,
        f: impl FnMut(&Connection) -> Result<T, RegistryError>,
    ) -> Result<T, RegistryError> {
        let mut local = self.lock();
        let Local { conn, follower } = &mut *local;
        match &self.replica {
            Some(replica) => follower.write(conn, replica.as_ref(), f),
            None => {
                let mut f = f;
                f(conn)
            }
        }
    }

    /// Inserts a new function's `$LATEST` (and optionally version 1) with its tags.
    pub fn create(
        &self,
        latest: &FunctionRecord,
        published: Option<&FunctionRecord>,
        tags: &Tags,
    ) -> Result<(), RegistryError> {
        self.write(|conn| {
            let tx = immediate(conn)?;
            let exists: bool = tx
                .query_row(
                    "SELECT 1 FROM functions WHERE name = ?1",
                    [&latest.name],
                    |_| Ok(true),
                )
                .optional()?
                .unwrap_or(false);
            if exists {
                return Err(RegistryError::AlreadyExists(latest.name.clone()));
            }
            let next = if published.is_some() { 2 } else { 1 };
            tx.execute(
                "INSERT INTO functions (name, next_version) VALUES (?1, ?2)",
                params![latest.name, next],
            )?;
            for r in std::iter::once(latest).chain(published) {
                insert_version(&tx, r)?;
            }
            meta::write_tags(&tx, &latest.name, tags)?;
            tx.commit()?;
            self.bump();
            Ok(())
        })
    }

    pub fn get(&self, name: &str, version: &str) -> Result<Option<FunctionRecord>, RegistryError> {
        let Some(seq) = seq_of(version) else {
            return Ok(None);
        };
        self.with(|conn| {
            record(
                conn,
                "SELECT record FROM versions WHERE function = ?1 AND seq = ?2",
                params![name, seq],
            )
        })
    }

    /// Newest published version of `name`, if any.
    pub fn latest_published(&self, name: &str) -> Result<Option<FunctionRecord>, RegistryError> {
        self.with(|conn| {
            record(
                conn,
                "SELECT record FROM versions WHERE function = ?1 AND seq > 0 ORDER BY seq DESC LIMIT 1",
                [name],
            )
        })
    }

    /// Lists `$LATEST` of every function (or every version with
    /// `all_versions`), ordered by name then version.
    pub fn list(
        &self,
        all_versions: bool,
        only: Option<&str>,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<Page, RegistryError> {
        let limit = limit.max(1);
        let (after_name, after_seq) = match marker {
            Some(m) => decode_marker(m)?,
            None => (String::new(), -1),
        };
        self.with(|conn| {
            let mut stmt = conn.prepare(
                "SELECT function, seq, record FROM versions
                 WHERE (?1 OR seq = 0) AND (?2 IS NULL OR function = ?2)
                   AND (function > ?3 OR (function = ?3 AND seq > ?4))
                 ORDER BY function, seq LIMIT ?5",
            )?;
            let fetch = i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX);
            let rows = stmt.query_map(
                params![all_versions, only, after_name, after_seq, fetch],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                    ))
                },
            )?;
            let mut items = Vec::new();
            let mut keys = Vec::new();
            for row in rows {
                let (name, seq, text) = row?;
                items.push(serde_json::from_str::<FunctionRecord>(&text)?);
                keys.push((name, seq));
            }
            let next_marker = if items.len() > limit {
                items.truncate(limit);
                keys.get(limit - 1).map(|(n, s)| encode_marker(n, *s))
            } else {
                None
            };
            Ok(Page { items, next_marker })
        })
    }

    /// Replaces `$LATEST` if its revision is still `expected_revision`.
    pub fn update_latest(
        &self,
        new: &FunctionRecord,
        expected_revision: &str,
    ) -> Result<(), RegistryError> {
        self.write(|conn| {
            let tx = immediate(conn)?;
            check_revision(&tx, &new.name, expected_revision)?;
            tx.execute(
                "UPDATE versions SET record = ?3 WHERE function = ?1 AND seq = ?2",
                params![new.name, 0, serde_json::to_string(new)?],
            )?;
            tx.commit()?;
            self.bump();
            Ok(())
        })
    }

    /// Next version number `publish` will assign.
    pub fn next_version(&self, name: &str) -> Result<i64, RegistryError> {
        self.with(|conn| {
            conn.query_row(
                "SELECT next_version FROM functions WHERE name = ?1",
                [name],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| RegistryError::NotFound(name.to_owned()))
        })
    }

    /// Records `version` (numbered `next_version`) if `$LATEST` is still at
    /// `latest_revision` and nobody published in between.
    pub fn publish(
        &self,
        version: &FunctionRecord,
        latest_revision: &str,
    ) -> Result<(), RegistryError> {
        let seq = seq_of(&version.version)
            .filter(|s| *s > 0)
            .ok_or(RegistryError::Conflict)?;
        self.write(|conn| {
            let tx = immediate(conn)?;
            check_revision(&tx, &version.name, latest_revision)?;
            let next: i64 = tx.query_row(
                "SELECT next_version FROM functions WHERE name = ?1",
                [&version.name],
                |r| r.get(0),
            )?;
            if next != seq {
                return Err(RegistryError::Conflict);
            }
            insert_version(&tx, version)?;
            tx.execute(
                "UPDATE functions SET next_version = ?2 WHERE name = ?1",
                params![version.name, seq + 1],
            )?;
            tx.commit()?;
            self.bump();
            Ok(())
        })
    }

    /// Deletes a whole function; returns the code objects it referenced.
    pub fn delete_function(&self, name: &str) -> Result<Vec<String>, RegistryError> {
        self.write(|conn| {
            let tx = immediate(conn)?;
            let objects = objects_of(&tx, name, None)?;
            let n = tx.execute("DELETE FROM functions WHERE name = ?1", [name])?;
            if n == 0 {
                return Err(RegistryError::NotFound(name.to_owned()));
            }
            tx.execute("DELETE FROM versions WHERE function = ?1", [name])?;
            tx.execute("DELETE FROM aliases WHERE function = ?1", [name])?;
            tx.execute("DELETE FROM tags WHERE function = ?1", [name])?;
            tx.execute("DELETE FROM policies WHERE function = ?1", [name])?;
            tx.execute("DELETE FROM urls WHERE function = ?1", [name])?;
            tx.commit()?;
            self.bump();
            Ok(objects)
        })
    }

    /// Deletes one published version; returns its code object.
    pub fn delete_version(&self, name: &str, version: &str) -> Result<Vec<String>, RegistryError> {
        let seq = seq_of(version)
            .filter(|s| *s > 0)
            .ok_or_else(|| RegistryError::NotFound(version.to_owned()))?;
        self.write(|conn| {
            let tx = immediate(conn)?;
            let aliases = alias::aliases_routing_to(&tx, name, version)?;
            if !aliases.is_empty() {
                return Err(RegistryError::VersionInUse {
                    version: version.to_owned(),
                    aliases,
                });
            }
            let objects = objects_of(&tx, name, Some(seq))?;
            meta::drop_policy(&tx, name, version)?;
            let n = tx.execute(
                "DELETE FROM versions WHERE function = ?1 AND seq = ?2",
                params![name, seq],
            )?;
            if n == 0 {
                return Err(RegistryError::NotFound(format!("{name}:{version}")));
            }
            tx.commit()?;
            self.bump();
            Ok(objects)
        })
    }

    /// Every CodeSha256 some version still references.
    pub fn code_shas(&self) -> Result<HashSet<String>, RegistryError> {
        self.with(|conn| {
            let mut stmt = conn.prepare("SELECT record FROM versions")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            let mut out = HashSet::new();
            for row in rows {
                out.insert(serde_json::from_str::<FunctionRecord>(&row?)?.code_sha256);
            }
            Ok(out)
        })
    }

    /// How many functions there are and the size of every version's package.
    pub fn usage(&self) -> Result<(u64, u64), RegistryError> {
        self.with(|conn| {
            let functions: i64 =
                conn.query_row("SELECT COUNT(*) FROM functions", [], |r| r.get(0))?;
            let mut stmt = conn.prepare("SELECT record FROM versions")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            let mut bytes = 0u64;
            for row in rows {
                bytes += serde_json::from_str::<FunctionRecord>(&row?)?.code_size;
            }
            Ok((u64::try_from(functions).unwrap_or(0), bytes))
        })
    }

    /// Every code object something still references: a function version's package
    /// or one of its layers', or a layer version's package.
    pub fn code_objects(&self) -> Result<HashSet<String>, RegistryError> {
        self.with(|conn| {
            let mut out = HashSet::new();
            for_each_version(conn, |f| {
                out.extend(f.layers.into_iter().map(|l| l.code_object));
                out.insert(f.code_object);
            })?;
            out.extend(layer::layer_objects(conn)?);
            Ok(out)
        })
    }

    /// Every container-image version (their packages name the chunks in use).
    pub fn image_versions(&self) -> Result<Vec<FunctionRecord>, RegistryError> {
        self.with(|conn| {
            let mut out = Vec::new();
            for_each_version(conn, |f| {
                if f.image.is_some() {
                    out.push(f);
                }
            })?;
            Ok(out)
        })
    }
}

/// Calls `f` with every function version's record.
fn for_each_version(
    conn: &rusqlite::Connection,
    mut f: impl FnMut(FunctionRecord),
) -> Result<(), RegistryError> {
    let mut stmt = conn.prepare("SELECT record FROM versions")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    for row in rows {
        f(serde_json::from_str::<FunctionRecord>(&row?)?);
    }
    Ok(())
}

fn insert_version(tx: &rusqlite::Transaction<'_>, r: &FunctionRecord) -> Result<(), RegistryError> {
    let seq = seq_of(&r.version).ok_or(RegistryError::Conflict)?;
    tx.execute(
        "INSERT INTO versions (function, seq, version, record) VALUES (?1, ?2, ?3, ?4)",
        params![r.name, seq, r.version, serde_json::to_string(r)?],
    )?;
    Ok(())
}

fn check_revision(
    tx: &rusqlite::Transaction<'_>,
    name: &str,
    expected: &str,
) -> Result<(), RegistryError> {
    let current: FunctionRecord = record(
        tx,
        "SELECT record FROM versions WHERE function = ?1 AND seq = 0",
        [name],
    )?
    .ok_or_else(|| RegistryError::NotFound(name.to_owned()))?;
    if current.revision_id == expected {
        Ok(())
    } else {
        Err(RegistryError::Conflict)
    }
}

fn objects_of(
    tx: &rusqlite::Transaction<'_>,
    name: &str,
    seq: Option<i64>,
) -> Result<Vec<String>, RegistryError> {
    let mut stmt =
        tx.prepare("SELECT record FROM versions WHERE function = ?1 AND (?2 IS NULL OR seq = ?2)")?;
    let rows = stmt.query_map(params![name, seq], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for row in rows {
        out.push(serde_json::from_str::<FunctionRecord>(&row?)?.code_object);
    }
    Ok(out)
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "replica_tests.rs"]
mod replica_tests;
