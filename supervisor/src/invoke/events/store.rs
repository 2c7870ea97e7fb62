//! Durable queue of asynchronous invocations: `DATA_DIR/events.sqlite3` (WAL,
//! `synchronous=FULL`), so an event acknowledged with 202 survives a crash. An event
//! stays stored until it has run (or been dropped), so delivery is at least once.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension as _};

#[derive(Debug, thiserror::Error)]
pub enum EventStoreError {
    #[error("event store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("event store task failed: {0}")]
    Task(String),
    /// The queue shared through etcd (`--etcd`).
    #[error("shared event queue: {0}")]
    Shared(#[from] crate::shared::etcd::EtcdError),
    #[error("shared event queue: a stored event does not parse: {0}")]
    Corrupt(#[from] serde_json::Error),
}

/// Where events wait: this host's SQLite file ([`EventStore`]), or etcd when frontends
/// share them (`crate::shared::events`).
pub trait EventBackend: Send + Sync {
    /// Stores (durably) a new event.
    fn insert(&self, e: &Event) -> Result<(), EventStoreError>;
    /// Events due at `now_ms`, oldest first.
    fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<Event>, EventStoreError>;
    /// When the next event becomes due, if any is stored.
    fn next_due_ms(&self) -> Result<Option<i64>, EventStoreError>;
    /// Records a failed run and when to try again.
    fn reschedule(
        &self,
        id: &str,
        attempts: u32,
        system_retries: u32,
        next_at_ms: i64,
    ) -> Result<(), EventStoreError>;
    fn remove(&self, id: &str) -> Result<(), EventStoreError>;
    fn count(&self) -> Result<u64, EventStoreError>;
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY NOT NULL,
    function TEXT NOT NULL,
    qualifier TEXT,
    payload BLOB NOT NULL,
    client_context TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    system_retries INTEGER NOT NULL DEFAULT 0,
    next_at_ms INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_due ON events (next_at_ms);
";

/// One stored asynchronous invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Also the invocation's request id.
    pub id: String,
    pub function: String,
    pub qualifier: Option<String>,
    pub payload: Vec<u8>,
    pub client_context: Option<String>,
    /// Runs that ended in a function error.
    pub attempts: u32,
    /// Throttles and sandbox failures (retried without using up `attempts`).
    pub system_retries: u32,
    pub next_at_ms: i64,
    pub created_ms: i64,
}

pub struct EventStore {
    conn: Mutex<Connection>,
}

impl EventStore {
    pub fn open(path: &Path) -> Result<Self, EventStoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, EventStoreError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        Ok(f(&conn)?)
    }
}

impl EventBackend for EventStore {
    /// Stores (and fsyncs) a new event.
    fn insert(&self, e: &Event) -> Result<(), EventStoreError> {
        self.with(|c| {
            c.execute(
                "INSERT INTO events (id, function, qualifier, payload, client_context, attempts,
                 system_retries, next_at_ms, created_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    e.id,
                    e.function,
                    e.qualifier,
                    e.payload,
                    e.client_context,
                    e.attempts,
                    e.system_retries,
                    e.next_at_ms,
                    e.created_ms
                ],
            )
            .map(drop)
        })
    }

    /// Events due at `now_ms`, oldest first.
    fn due(&self, now_ms: i64, limit: usize) -> Result<Vec<Event>, EventStoreError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT id, function, qualifier, payload, client_context, attempts, system_retries,
                 next_at_ms, created_ms FROM events WHERE next_at_ms <= ?1
                 ORDER BY next_at_ms, created_ms LIMIT ?2",
            )?;
            let rows = stmt.query_map(params![now_ms, limit as i64], |r| {
                Ok(Event {
                    id: r.get(0)?,
                    function: r.get(1)?,
                    qualifier: r.get(2)?,
                    payload: r.get(3)?,
                    client_context: r.get(4)?,
                    attempts: r.get(5)?,
                    system_retries: r.get(6)?,
                    next_at_ms: r.get(7)?,
                    created_ms: r.get(8)?,
                })
            })?;
            rows.collect()
        })
    }

    /// When the next event becomes due, if any is stored.
    fn next_due_ms(&self) -> Result<Option<i64>, EventStoreError> {
        self.with(|c| {
            c.query_row("SELECT MIN(next_at_ms) FROM events", [], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .optional()
            .map(Option::flatten)
        })
    }

    /// Records a failed run and when to try again.
    fn reschedule(
        &self,
        id: &str,
        attempts: u32,
        system_retries: u32,
        next_at_ms: i64,
    ) -> Result<(), EventStoreError> {
        self.with(|c| {
            c.execute(
                "UPDATE events SET attempts = ?2, system_retries = ?3, next_at_ms = ?4 WHERE id = ?1",
                params![id, attempts, system_retries, next_at_ms],
            )
            .map(drop)
        })
    }

    fn remove(&self, id: &str) -> Result<(), EventStoreError> {
        self.with(|c| {
            c.execute("DELETE FROM events WHERE id = ?1", [id])
                .map(drop)
        })
    }

    fn count(&self) -> Result<u64, EventStoreError> {
        self.with(|c| c.query_row("SELECT COUNT(*) FROM events", [], |r| r.get::<_, u64>(0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: &str, at: i64) -> Event {
        Event {
            id: id.into(),
            function: "f".into(),
            qualifier: None,
            payload: b"{}".to_vec(),
            client_context: None,
            attempts: 0,
            system_retries: 0,
            next_at_ms: at,
            created_ms: at,
        }
    }

    #[test]
    fn events_survive_reopen_and_come_due_in_order() {
        let d = tempfile::tempdir().expect("tempdir");
        let path = d.path().join("events.sqlite3");
        {
            let s = EventStore::open(&path).expect("open");
            s.insert(&ev("b", 20)).expect("insert");
            s.insert(&ev("a", 10)).expect("insert");
            s.insert(&ev("c", 99)).expect("insert");
            assert!(s.insert(&ev("a", 1)).is_err(), "ids are unique");
        }
        let s = EventStore::open(&path).expect("reopen");
        assert_eq!(s.count().expect("count"), 3);
        let due: Vec<String> = s
            .due(50, 10)
            .expect("due")
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(due, ["a", "b"]);
        s.reschedule("a", 1, 0, 200).expect("reschedule");
        assert_eq!(s.next_due_ms().expect("next"), Some(20));
        s.remove("b").expect("remove");
        s.remove("c").expect("remove");
        assert_eq!(s.next_due_ms().expect("next"), Some(200));
        assert_eq!(s.due(300, 10).expect("due")[0].attempts, 1);
    }
}
