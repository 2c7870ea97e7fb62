//! What the registry keeps about a function besides its versions: tags (per function)
//! and resource-based policies (per function, version or alias). Both go with the
//! function; a version's or alias's policy goes with it.

use std::collections::BTreeMap;

use rusqlite::{params, Connection, OptionalExtension as _};
use serde::{Deserialize, Serialize};

use super::{Registry, RegistryError};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tags (
    function TEXT PRIMARY KEY NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
    record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS policies (
    function TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
    qualifier TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (function, qualifier)
);
";

pub type Tags = BTreeMap<String, String>;

/// Lambda's limit of tags on one resource.
pub const MAX_TAGS: usize = 50;

/// A resource policy: its statements as Lambda shapes them, and its revision.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyRecord {
    pub revision_id: String,
    pub statements: Vec<serde_json::Value>,
}

impl PolicyRecord {
    fn position(&self, sid: &str) -> Option<usize> {
        self.statements
            .iter()
            .position(|s| s.get("Sid").and_then(|v| v.as_str()) == Some(sid))
    }
}

fn function_exists(conn: &Connection, name: &str) -> Result<bool, RegistryError> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM functions WHERE name = ?1",
            [name],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

fn read_tags(conn: &Connection, function: &str) -> Result<Tags, RegistryError> {
    let tags = super::record(
        conn,
        "SELECT record FROM tags WHERE function = ?1",
        [function],
    )?;
    Ok(tags.unwrap_or_default())
}

/// Stores `function`'s tags in `tx` (none: no row).
pub(super) fn write_tags(
    tx: &rusqlite::Transaction<'_>,
    function: &str,
    tags: &Tags,
) -> Result<(), RegistryError> {
    if tags.len() > MAX_TAGS {
        return Err(RegistryError::TooManyTags);
    }
    tx.execute("DELETE FROM tags WHERE function = ?1", [function])?;
    if !tags.is_empty() {
        tx.execute(
            "INSERT INTO tags (function, record) VALUES (?1, ?2)",
            params![function, serde_json::to_string(tags)?],
        )?;
    }
    Ok(())
}

fn read_policy(
    conn: &Connection,
    function: &str,
    qualifier: &str,
) -> Result<Option<PolicyRecord>, RegistryError> {
    super::record(
        conn,
        "SELECT record FROM policies WHERE function = ?1 AND qualifier = ?2",
        params![function, qualifier],
    )
}

/// Removes the policy of a version or alias that is being deleted.
pub(super) fn drop_policy(
    tx: &rusqlite::Transaction<'_>,
    function: &str,
    qualifier: &str,
) -> Result<(), RegistryError> {
    tx.execute(
        "DELETE FROM policies WHERE function = ?1 AND qualifier = ?2",
        params![function, qualifier],
    )?;
    Ok(())
}

/// Whether `qualifier` ("" for none) names a version or alias of `function`.
fn qualifier_exists(
    conn: &Connection,
    function: &str,
    qualifier: &str,
) -> Result<bool, RegistryError> {
    if qualifier.is_empty() {
        return Ok(true);
    }
    if super::seq_of(qualifier).is_some() {
        return super::alias::version_exists(conn, function, qualifier);
    }
    Ok(super::alias::read(conn, function, qualifier)?.is_some())
}

impl Registry {
    /// The function's tags, or `None` when there is no such function.
    pub fn tags(&self, function: &str) -> Result<Option<Tags>, RegistryError> {
        self.with(|conn| {
            if !function_exists(conn, function)? {
                return Ok(None);
            }
            read_tags(conn, function).map(Some)
        })
    }

    /// Adds (or overwrites) `add` and removes `remove` in one transaction.
    pub fn retag(
        &self,
        function: &str,
        add: &Tags,
        remove: &[String],
    ) -> Result<(), RegistryError> {
        self.write(|conn| {
            let tx = super::immediate(conn)?;
            if !function_exists(&tx, function)? {
                return Err(RegistryError::NotFound(function.to_owned()));
            }
            let mut tags = read_tags(&tx, function)?;
            tags.extend(add.iter().map(|(k, v)| (k.clone(), v.clone())));
            for k in remove {
                tags.remove(k);
            }
            write_tags(&tx, function, &tags)?;
            tx.commit()?;
            self.bump();
            Ok(())
        })
    }

    /// The policy of `function` (`qualifier` "" for the unqualified function).
    pub fn policy(
        &self,
        function: &str,
        qualifier: &str,
    ) -> Result<Option<PolicyRecord>, RegistryError> {
        self.with(|conn| read_policy(conn, function, qualifier))
    }

    /// Adds `statement` to the policy of `target` (function, qualifier or "") if its
    /// revision is still `revisions.0` (when given); the policy's new revision is
    /// `revisions.1`.
    pub fn add_statement(
        &self,
        target: (&str, &str),
        statement: serde_json::Value,
        revisions: (Option<&str>, String),
    ) -> Result<(), RegistryError> {
        let (function, qualifier) = target;
        let sid = statement
            .get("Sid")
            .and_then(|v| v.as_str())
            .unwrap_or_default()
            .to_owned();
        self.write(|conn| {
            let tx = super::immediate(conn)?;
            if !function_exists(&tx, function)? {
                return Err(RegistryError::NotFound(function.to_owned()));
            }
            if !qualifier_exists(&tx, function, qualifier)? {
                return Err(RegistryError::NotFound(format!("{function}:{qualifier}")));
            }
            let mut p = read_policy(&tx, function, qualifier)?.unwrap_or_default();
            if revisions.0.is_some_and(|r| r != p.revision_id) {
                return Err(RegistryError::Conflict);
            }
            if p.position(&sid).is_some() {
                return Err(RegistryError::StatementExists(sid.clone()));
            }
            p.statements.push(statement.clone());
            p.revision_id = revisions.1.clone();
            tx.execute(
                "INSERT OR REPLACE INTO policies (function, qualifier, record) VALUES (?1, ?2, ?3)",
                params![function, qualifier, serde_json::to_string(&p)?],
            )?;
            tx.commit()?;
            self.bump();
            Ok(())
        })
    }

    /// Removes statement `sid`; the policy goes when its last statement does.
    pub fn remove_statement(
        &self,
        target: (&str, &str),
        sid: &str,
        revisions: (Option<&str>, String),
    ) -> Result<(), RegistryError> {
        let (function, qualifier) = target;
        self.write(|conn| {
            let tx = super::immediate(conn)?;
            let mut p = read_policy(&tx, function, qualifier)?
                .ok_or_else(|| RegistryError::StatementNotFound(sid.to_owned()))?;
            if revisions.0.is_some_and(|r| r != p.revision_id) {
                return Err(RegistryError::Conflict);
            }
            let at = p
                .position(sid)
                .ok_or_else(|| RegistryError::StatementNotFound(sid.to_owned()))?;
            p.statements.remove(at);
            p.revision_id = revisions.1.clone();
            if p.statements.is_empty() {
                drop_policy(&tx, function, qualifier)?;
            } else {
                tx.execute(
                    "UPDATE policies SET record = ?3 WHERE function = ?1 AND qualifier = ?2",
                    params![function, qualifier, serde_json::to_string(&p)?],
                )?;
            }
            tx.commit()?;
            self.bump();
            Ok(())
        })
    }
}
