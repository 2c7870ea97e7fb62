//! Layers: named, numbered versions of a zip package that functions name in order
//! (extracted into /opt). Deleting a layer version deletes its record; its sealed
//! package stays while a function version still references it (function records hold
//! their layers' objects), as on Lambda.

use rusqlite::{params, Connection, OptionalExtension as _};
use serde::{Deserialize, Serialize};

use super::{decode_marker, encode_marker, FunctionRecord, Registry, RegistryError};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS layers (
    name TEXT PRIMARY KEY NOT NULL,
    next_version INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS layer_versions (
    layer TEXT NOT NULL,
    version INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (layer, version)
);
";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerVersionRecord {
    pub layer: String,
    pub version: i64,
    pub description: String,
    pub code_sha256: String,
    pub code_size: u64,
    pub unzipped_size: u64,
    pub code_object: String,
    pub created_date: String,
    pub compatible_runtimes: Vec<String>,
    pub compatible_architectures: Vec<String>,
    pub license_info: Option<String>,
}

/// One page of layer versions.
pub struct LayerPage {
    pub items: Vec<LayerVersionRecord>,
    pub next_marker: Option<String>,
}

fn read(
    conn: &Connection,
    layer: &str,
    version: i64,
) -> Result<Option<LayerVersionRecord>, RegistryError> {
    super::record(
        conn,
        "SELECT record FROM layer_versions WHERE layer = ?1 AND version = ?2",
        params![layer, version],
    )
}

/// Whether some function version still runs with the package `object`.
fn object_in_use(conn: &Connection, object: &str) -> Result<bool, RegistryError> {
    let mut stmt = conn.prepare("SELECT record FROM versions")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    for row in rows {
        let f: FunctionRecord = serde_json::from_str(&row?)?;
        if f.layers.iter().any(|l| l.code_object == object) {
            return Ok(true);
        }
    }
    Ok(false)
}

fn page(
    conn: &Connection,
    sql: &str,
    args: &[&dyn rusqlite::ToSql],
    limit: usize,
    key: impl Fn(&LayerVersionRecord) -> String,
) -> Result<LayerPage, RegistryError> {
    let mut stmt = conn.prepare(sql)?;
    let rows = stmt.query_map(args, |r| r.get::<_, String>(0))?;
    let mut items = Vec::new();
    for row in rows {
        items.push(serde_json::from_str::<LayerVersionRecord>(&row?)?);
        if items.len() > limit {
            break;
        }
    }
    let next_marker = (items.len() > limit).then(|| {
        items.truncate(limit);
        encode_marker(&key(&items[limit - 1]), 0)
    });
    Ok(LayerPage { items, next_marker })
}

impl Registry {
    /// The number the next version of `layer` gets (1 for a new layer).
    pub fn next_layer_version(&self, layer: &str) -> Result<i64, RegistryError> {
        self.with(|conn| {
            Ok(conn
                .query_row(
                    "SELECT next_version FROM layers WHERE name = ?1",
                    [layer],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(1))
        })
    }

    /// Records `r` as its layer's next version; `Conflict` if that number was taken
    /// meanwhile.
    pub fn publish_layer_version(&self, r: &LayerVersionRecord) -> Result<(), RegistryError> {
        self.write(|conn| {
            let tx = super::immediate(conn)?;
            let next: i64 = tx
                .query_row(
                    "SELECT next_version FROM layers WHERE name = ?1",
                    [&r.layer],
                    |x| x.get(0),
                )
                .optional()?
                .unwrap_or(1);
            if next != r.version {
                return Err(RegistryError::Conflict);
            }
            tx.execute(
                "INSERT INTO layers (name, next_version) VALUES (?1, ?2)
                 ON CONFLICT(name) DO UPDATE SET next_version = ?2",
                params![r.layer, r.version + 1],
            )?;
            tx.execute(
                "INSERT INTO layer_versions (layer, version, record) VALUES (?1, ?2, ?3)",
                params![r.layer, r.version, serde_json::to_string(r)?],
            )?;
            tx.commit()?;
            self.bump();
            Ok(())
        })
    }

    pub fn layer_version(
        &self,
        layer: &str,
        version: i64,
    ) -> Result<Option<LayerVersionRecord>, RegistryError> {
        self.with(|conn| read(conn, layer, version))
    }

    /// Versions of `layer`, newest first.
    pub fn list_layer_versions(
        &self,
        layer: &str,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<LayerPage, RegistryError> {
        let before = match marker {
            Some(m) => decode_marker(m)?
                .0
                .parse::<i64>()
                .map_err(|_| RegistryError::BadMarker)?,
            None => i64::MAX,
        };
        let limit = limit.max(1);
        self.with(|conn| {
            page(
                conn,
                "SELECT record FROM layer_versions WHERE layer = ?1 AND version < ?2
                 ORDER BY version DESC",
                &[&layer, &before],
                limit,
                |r| r.version.to_string(),
            )
        })
    }

    /// The newest version of every layer, by layer name.
    pub fn list_layers(
        &self,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<LayerPage, RegistryError> {
        let after = match marker {
            Some(m) => decode_marker(m)?.0,
            None => String::new(),
        };
        let limit = limit.max(1);
        self.with(|conn| {
            page(
                conn,
                "SELECT v.record FROM layer_versions v
                 WHERE v.layer > ?1 AND v.version =
                   (SELECT MAX(version) FROM layer_versions WHERE layer = v.layer)
                 ORDER BY v.layer",
                &[&after],
                limit,
                |r| r.layer.clone(),
            )
        })
    }

    /// Deletes a layer version's record; returns its package's object when no function
    /// version uses it any more (the caller removes it), `None` otherwise or when there
    /// was no such version.
    pub fn delete_layer_version(
        &self,
        layer: &str,
        version: i64,
    ) -> Result<Option<String>, RegistryError> {
        self.write(|conn| {
            let tx = super::immediate(conn)?;
            let Some(r) = read(&tx, layer, version)? else {
                return Ok(None);
            };
            tx.execute(
                "DELETE FROM layer_versions WHERE layer = ?1 AND version = ?2",
                params![layer, version],
            )?;
            let in_use = object_in_use(&tx, &r.code_object)?;
            tx.commit()?;
            self.bump();
            Ok((!in_use).then_some(r.code_object))
        })
    }
}

/// Every package object the layer versions hold.
pub(super) fn layer_objects(conn: &Connection) -> Result<Vec<String>, RegistryError> {
    let mut stmt = conn.prepare("SELECT record FROM layer_versions")?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for row in rows {
        out.push(serde_json::from_str::<LayerVersionRecord>(&row?)?.code_object);
    }
    Ok(out)
}
