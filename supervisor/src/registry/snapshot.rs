//! Compaction of the shared registry's log. Every `snapshot_every` entries, the frontend
//! whose entry reached that index saves the whole registry as a snapshot: its rows as
//! changesets that insert them into an empty registry, in parts under etcd's value
//! bound. The log then keeps only the last `snapshot_every` entries before it. A
//! frontend that starts, or one that fell further behind than that, loads the snapshot
//! and goes on with the entries after it.

use std::collections::BTreeSet;

use rusqlite::types::Value;
use rusqlite::Connection;

use super::replica::{apply_changeset, capture, undo, RemoteChanges};
use super::seed::TABLES;
use super::RegistryError;
use crate::shared::etcd::EtcdError;

/// Entries between snapshots, when the settings give none.
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 1000;
/// A part's changeset stays under this, leaving room for its sealing under etcd's bound.
const PART_BYTES: usize = 768 << 10;
/// Rows per part to start with; halved while a part would be too large.
const FIRST_BATCH: usize = 512;

/// The registry in `conn` as parts: changesets that, applied in order to an empty
/// registry, insert every row (parents before the rows that refer to them).
pub(super) fn parts(conn: &Connection) -> Result<Vec<Vec<u8>>, RegistryError> {
    let copy = Connection::open_in_memory()?;
    super::init_schema(&copy)?;
    let mut out = Vec::new();
    for table in TABLES {
        let (mut after, mut batch) = (i64::MIN, FIRST_BATCH);
        loop {
            let rows = read_rows(conn, table, after, batch)?;
            let Some(&(last, _)) = rows.last() else {
                break;
            };
            let (_, changeset) = capture(&copy, &mut |c| insert_rows(c, table, &rows))?;
            if changeset.len() > PART_BYTES {
                undo(&copy, &changeset)?;
                if batch == 1 {
                    return Err(EtcdError::TooLarge(changeset.len()).into());
                }
                batch /= 2;
                continue;
            }
            out.push(changeset);
            after = last;
        }
    }
    Ok(out)
}

type Row = (i64, Vec<Value>);

fn read_rows(
    conn: &Connection,
    table: &str,
    after: i64,
    limit: usize,
) -> Result<Vec<Row>, RegistryError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT rowid, * FROM {table} WHERE rowid > ?1 ORDER BY rowid LIMIT ?2"
    ))?;
    let columns = stmt.column_count();
    let rows = stmt.query_map(rusqlite::params![after, limit as i64], |r| {
        let values = (1..columns)
            .map(|i| r.get::<_, Value>(i))
            .collect::<Result<_, _>>()?;
        Ok((r.get::<_, i64>(0)?, values))
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

fn insert_rows(conn: &Connection, table: &str, rows: &[Row]) -> Result<(), RegistryError> {
    let Some((_, first)) = rows.first() else {
        return Ok(());
    };
    let marks = vec!["?"; first.len()].join(", ");
    let tx = super::immediate(conn)?;
    {
        let mut stmt = tx.prepare(&format!("INSERT INTO {table} VALUES ({marks})"))?;
        for (_, values) in rows {
            stmt.execute(rusqlite::params_from_iter(values))?;
        }
    }
    tx.commit()?;
    Ok(())
}

/// Replaces everything in `conn` with the snapshot `parts`; says which functions and
/// versions that removed, and that reservations may have changed.
pub(super) fn load(conn: &Connection, parts: &[Vec<u8>]) -> Result<RemoteChanges, RegistryError> {
    let before = names(conn)?;
    let tx = super::immediate(conn)?;
    for table in TABLES.iter().rev() {
        tx.execute(&format!("DELETE FROM {table}"), [])?;
    }
    for part in parts {
        apply_changeset(&tx, part)?;
    }
    tx.commit()?;
    let after = names(conn)?;
    Ok(RemoteChanges {
        deleted: before.difference(&after).cloned().collect(),
        reserved_changed: true,
        versions_changed: true,
        entries: 0,
    })
}

/// Every function (`None`) and version by name.
fn names(conn: &Connection) -> Result<BTreeSet<(String, Option<String>)>, RegistryError> {
    let mut out = BTreeSet::new();
    let mut functions = conn.prepare("SELECT name FROM functions")?;
    for name in functions.query_map([], |r| r.get::<_, String>(0))? {
        out.insert((name?, None));
    }
    let mut versions = conn.prepare("SELECT function, version FROM versions")?;
    for row in versions.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (f, v) = row?;
        out.insert((f, Some(v)));
    }
    Ok(out)
}
