//! Aliases: a name pointing at one version of a function, optionally with part of the
//! traffic sent to a second version (`RoutingConfig.AdditionalVersionWeights`).
//! Stored with the function (deleted with it); each change is one transaction.

use std::collections::BTreeMap;

use rusqlite::{params, Connection, OptionalExtension as _};
use serde::{Deserialize, Serialize};

use super::{decode_marker, encode_marker, seq_of, Registry, RegistryError};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS aliases (
    function TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
    name TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (function, name)
);
";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AliasRecord {
    pub function: String,
    pub name: String,
    pub function_version: String,
    pub description: String,
    /// At most one other published version and the share of invokes it gets.
    pub additional_version_weights: BTreeMap<String, f64>,
    pub revision_id: String,
}

impl AliasRecord {
    /// Every version the alias can send an invoke to.
    pub fn versions(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.function_version.as_str())
            .chain(self.additional_version_weights.keys().map(String::as_str))
    }

    /// The version for one invoke, given `draw` uniform in [0, 1).
    pub fn pick(&self, draw: f64) -> &str {
        let mut below = 0.0;
        for (version, weight) in &self.additional_version_weights {
            below += weight;
            if draw < below {
                return version;
            }
        }
        &self.function_version
    }
}

/// One page of aliases.
pub struct AliasPage {
    pub items: Vec<AliasRecord>,
    pub next_marker: Option<String>,
}

pub(super) fn version_exists(
    conn: &Connection,
    function: &str,
    version: &str,
) -> Result<bool, RegistryError> {
    let Some(seq) = seq_of(version) else {
        return Ok(false);
    };
    Ok(conn
        .query_row(
            "SELECT 1 FROM versions WHERE function = ?1 AND seq = ?2",
            params![function, seq],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Every version `a` names exists.
fn check_versions(conn: &Connection, a: &AliasRecord) -> Result<(), RegistryError> {
    for v in a.versions() {
        if !version_exists(conn, &a.function, v)? {
            return Err(RegistryError::NotFound(format!("{}:{v}", a.function)));
        }
    }
    Ok(())
}

pub(super) fn read(
    conn: &Connection,
    function: &str,
    name: &str,
) -> Result<Option<AliasRecord>, RegistryError> {
    super::record(
        conn,
        "SELECT record FROM aliases WHERE function = ?1 AND name = ?2",
        params![function, name],
    )
}

impl Registry {
    pub fn create_alias(&self, a: &AliasRecord) -> Result<(), RegistryError> {
        self.write(|conn| {
            let tx = super::immediate(conn)?;
            if !version_exists(&tx, &a.function, super::LATEST)? {
                return Err(RegistryError::NotFound(a.function.clone()));
            }
            check_versions(&tx, a)?;
            if read(&tx, &a.function, &a.name)?.is_some() {
                return Err(RegistryError::AliasExists(a.name.clone()));
            }
            tx.execute(
                "INSERT INTO aliases (function, name, record) VALUES (?1, ?2, ?3)",
                params![a.function, a.name, serde_json::to_string(a)?],
            )?;
            tx.commit()?;
            self.bump();
            Ok(())
        })
    }

    pub fn get_alias(
        &self,
        function: &str,
        name: &str,
    ) -> Result<Option<AliasRecord>, RegistryError> {
        self.with(|conn| read(conn, function, name))
    }

    /// Replaces an alias if its revision is still `expected_revision` (when given).
    pub fn update_alias(
        &self,
        a: &AliasRecord,
        expected_revision: Option<&str>,
    ) -> Result<(), RegistryError> {
        self.write(|conn| {
            let tx = super::immediate(conn)?;
            let current = read(&tx, &a.function, &a.name)?
                .ok_or_else(|| RegistryError::AliasNotFound(a.name.clone()))?;
            if expected_revision.is_some_and(|r| r != current.revision_id) {
                return Err(RegistryError::Conflict);
            }
            check_versions(&tx, a)?;
            tx.execute(
                "UPDATE aliases SET record = ?3 WHERE function = ?1 AND name = ?2",
                params![a.function, a.name, serde_json::to_string(a)?],
            )?;
            tx.commit()?;
            self.bump();
            Ok(())
        })
    }

    pub fn delete_alias(&self, function: &str, name: &str) -> Result<(), RegistryError> {
        self.write(|conn| {
            let tx = super::immediate(conn)?;
            let n = tx.execute(
                "DELETE FROM aliases WHERE function = ?1 AND name = ?2",
                params![function, name],
            )?;
            if n == 0 {
                return Err(RegistryError::AliasNotFound(name.to_owned()));
            }
            super::meta::drop_policy(&tx, function, name)?;
            super::url::drop_url(&tx, function, name)?;
            tx.commit()?;
            self.bump();
            Ok(())
        })
    }

    /// Aliases of `function` in name order, only those routing to `version` if given.
    pub fn list_aliases(
        &self,
        function: &str,
        version: Option<&str>,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<AliasPage, RegistryError> {
        let limit = limit.max(1);
        let after = match marker {
            Some(m) => decode_marker(m)?.0,
            None => String::new(),
        };
        self.with(|conn| {
            let mut stmt = conn.prepare(
                "SELECT record FROM aliases WHERE function = ?1 AND name > ?2 ORDER BY name",
            )?;
            let rows = stmt.query_map(params![function, after], |r| r.get::<_, String>(0))?;
            let mut items = Vec::new();
            for row in rows {
                let a: AliasRecord = serde_json::from_str(&row?)?;
                if version.is_none_or(|v| a.versions().any(|x| x == v)) {
                    items.push(a);
                }
                if items.len() > limit {
                    break;
                }
            }
            let next_marker = (items.len() > limit).then(|| {
                items.truncate(limit);
                encode_marker(&items[limit - 1].name, 0)
            });
            Ok(AliasPage { items, next_marker })
        })
    }
}

/// Names of the aliases of `function` that route to version `seq` (Lambda refuses to
/// delete such a version).
pub(super) fn aliases_routing_to(
    tx: &rusqlite::Transaction<'_>,
    function: &str,
    version: &str,
) -> Result<Vec<String>, RegistryError> {
    let mut stmt = tx.prepare("SELECT record FROM aliases WHERE function = ?1 ORDER BY name")?;
    let rows = stmt.query_map([function], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for row in rows {
        let a: AliasRecord = serde_json::from_str(&row?)?;
        if a.versions().any(|v| v == version) {
            out.push(a.name);
        }
    }
    Ok(out)
}
