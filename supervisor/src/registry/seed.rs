//! `supervisor migrate --to-etcd`: a single host's registry becomes the first entries
//! of an empty shared log, copied in batches of rows, each batch one entry.

use std::path::Path;

use rusqlite::Connection;

use super::replica::{capture, SharedLog};
use super::{Registry, RegistryError};
use crate::shared::etcd::EtcdError;

/// Every table, parents before the tables that refer to them.
pub(super) const TABLES: [&str; 9] = [
    "functions",
    "versions",
    "concurrency",
    "aliases",
    "tags",
    "policies",
    "urls",
    "layers",
    "layer_versions",
];
/// Rows per entry to start with; halved while an entry would be too large.
const FIRST_BATCH: i64 = 256;

/// Copies the registry file `source` into the shared log, which must be empty.
/// Returns (rows, entries) written.
pub fn seed(replica: &dyn SharedLog, source: &Path) -> Result<(u64, u64), RegistryError> {
    if !replica.entries_after(0)?.is_empty() {
        return Err(EtcdError::Settings(
            "the shared registry already holds entries; migrate into an empty prefix".into(),
        )
        .into());
    }
    let copy = Registry::with_connection(Connection::open_in_memory()?, None)?;
    let local = copy.lock();
    let conn = &local.conn;
    check_tables(conn)?;
    conn.execute("ATTACH DATABASE ?1 AS src", [source.to_string_lossy()])?;
    let (mut rows, mut index) = (0u64, 0u64);
    for table in TABLES {
        let mut after = i64::MIN;
        let mut batch = FIRST_BATCH;
        loop {
            let sql = format!(
                "INSERT INTO main.{table} SELECT * FROM src.{table} \
                 WHERE rowid > ?1 ORDER BY rowid LIMIT ?2"
            );
            let mut copy_batch = |c: &Connection| -> Result<(usize, i64), RegistryError> {
                let tx = super::immediate(c)?;
                let n = tx.execute(&sql, [after, batch])?;
                // The source's rowids: the copies get rowids of their own.
                let last: i64 = tx.query_row(
                    &format!(
                        "SELECT coalesce(max(rowid), ?1) FROM (SELECT rowid FROM src.{table} \
                         WHERE rowid > ?1 ORDER BY rowid LIMIT ?2)"
                    ),
                    [after, batch],
                    |r| r.get(0),
                )?;
                tx.commit()?;
                Ok((n, last))
            };
            let ((n, last), changeset) = capture(conn, &mut copy_batch)?;
            if n == 0 {
                break;
            }
            match replica.append(index + 1, &changeset) {
                Ok(true) => {}
                Ok(false) => {
                    return Err(EtcdError::Settings(
                        "another process wrote to the shared registry during the migration".into(),
                    )
                    .into())
                }
                Err(EtcdError::TooLarge(_)) if batch > 1 => {
                    super::replica::undo(conn, &changeset)?;
                    batch /= 2;
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            index += 1;
            rows += n as u64;
            after = last;
        }
    }
    Ok((rows, index))
}

/// Refuses to migrate a schema with a table this list does not know (it would be lost).
fn check_tables(conn: &Connection) -> Result<(), RegistryError> {
    let mut stmt = conn.prepare(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    )?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    match names.iter().find(|n| !TABLES.contains(&n.as_str())) {
        Some(unknown) => Err(EtcdError::Settings(format!(
            "the registry has a table migrate does not know: {unknown}"
        ))
        .into()),
        None => Ok(()),
    }
}
