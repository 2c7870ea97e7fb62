//! Function URL configurations: one per function or alias, found by the URL's id when
//! a request arrives. They go with the function, or the alias they belong to.

use rusqlite::{params, Connection};
use serde::{Deserialize, Serialize};

use super::{decode_marker, encode_marker, Registry, RegistryError};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS urls (
    function TEXT NOT NULL REFERENCES functions(name) ON DELETE CASCADE,
    qualifier TEXT NOT NULL,
    url_id TEXT NOT NULL UNIQUE,
    record TEXT NOT NULL,
    PRIMARY KEY (function, qualifier)
);
";

/// Lambda's `Cors` object.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Cors {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_origins: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_age: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UrlRecord {
    pub function: String,
    /// An alias, or "" for the unqualified function ($LATEST).
    pub qualifier: String,
    pub url_id: String,
    /// `NONE` or `AWS_IAM`.
    pub auth_type: String,
    pub cors: Option<Cors>,
    /// `BUFFERED` or `RESPONSE_STREAM`.
    pub invoke_mode: String,
    pub creation_time: String,
    pub last_modified_time: String,
}

/// One page of URL configurations.
pub struct UrlPage {
    pub items: Vec<UrlRecord>,
    pub next_marker: Option<String>,
}

fn read(
    conn: &Connection,
    function: &str,
    qualifier: &str,
) -> Result<Option<UrlRecord>, RegistryError> {
    super::record(
        conn,
        "SELECT record FROM urls WHERE function = ?1 AND qualifier = ?2",
        params![function, qualifier],
    )
}

/// Removes the URL of an alias that is being deleted.
pub(super) fn drop_url(
    tx: &rusqlite::Transaction<'_>,
    function: &str,
    qualifier: &str,
) -> Result<(), RegistryError> {
    tx.execute(
        "DELETE FROM urls WHERE function = ?1 AND qualifier = ?2",
        params![function, qualifier],
    )?;
    Ok(())
}

impl Registry {
    /// Stores a new URL configuration; the function (and alias, if any) must exist.
    pub fn create_url(&self, u: &UrlRecord) -> Result<(), RegistryError> {
        self.write(|conn| {
            let tx = super::immediate(conn)?;
            if !super::alias::version_exists(&tx, &u.function, super::LATEST)? {
                return Err(RegistryError::NotFound(u.function.clone()));
            }
            if !u.qualifier.is_empty()
                && super::alias::read(&tx, &u.function, &u.qualifier)?.is_none()
            {
                return Err(RegistryError::NotFound(format!(
                    "{}:{}",
                    u.function, u.qualifier
                )));
            }
            if read(&tx, &u.function, &u.qualifier)?.is_some() {
                return Err(RegistryError::UrlExists);
            }
            tx.execute(
                "INSERT INTO urls (function, qualifier, url_id, record) VALUES (?1, ?2, ?3, ?4)",
                params![u.function, u.qualifier, u.url_id, serde_json::to_string(u)?],
            )?;
            tx.commit()?;
            self.bump();
            Ok(())
        })
    }

    pub fn get_url(
        &self,
        function: &str,
        qualifier: &str,
    ) -> Result<Option<UrlRecord>, RegistryError> {
        self.with(|conn| read(conn, function, qualifier))
    }

    /// The configuration a request's URL id names.
    pub fn url_by_id(&self, url_id: &str) -> Result<Option<UrlRecord>, RegistryError> {
        self.with(|conn| super::record(conn, "SELECT record FROM urls WHERE url_id = ?1", [url_id]))
    }

    pub fn update_url(&self, u: &UrlRecord) -> Result<(), RegistryError> {
        self.write(|conn| {
            let n = conn.execute(
                "UPDATE urls SET record = ?3 WHERE function = ?1 AND qualifier = ?2",
                params![u.function, u.qualifier, serde_json::to_string(u)?],
            )?;
            if n == 0 {
                return Err(RegistryError::UrlNotFound);
            }
            self.bump();
            Ok(())
        })
    }

    pub fn delete_url(&self, function: &str, qualifier: &str) -> Result<(), RegistryError> {
        self.write(|conn| {
            let n = conn.execute(
                "DELETE FROM urls WHERE function = ?1 AND qualifier = ?2",
                params![function, qualifier],
            )?;
            if n == 0 {
                return Err(RegistryError::UrlNotFound);
            }
            self.bump();
            Ok(())
        })
    }

    /// The URL configurations of `function` (unqualified first, then by alias).
    pub fn list_urls(
        &self,
        function: &str,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<UrlPage, RegistryError> {
        let limit = limit.max(1);
        let (after, seen) = match marker {
            Some(m) => (decode_marker(m)?.0, true),
            None => (String::new(), false),
        };
        self.with(|conn| {
            let mut stmt = conn.prepare(
                "SELECT record FROM urls WHERE function = ?1 AND (NOT ?2 OR qualifier > ?3)
                 ORDER BY qualifier LIMIT ?4",
            )?;
            let fetch = i64::try_from(limit + 1).unwrap_or(i64::MAX);
            let rows = stmt.query_map(params![function, seen, after, fetch], |r| {
                r.get::<_, String>(0)
            })?;
            let mut items = Vec::new();
            for row in rows {
                items.push(serde_json::from_str::<UrlRecord>(&row?)?);
            }
            let next_marker = (items.len() > limit).then(|| {
                items.truncate(limit);
                encode_marker(&items[limit - 1].qualifier, 0)
            });
            Ok(UrlPage { items, next_marker })
        })
    }
}
