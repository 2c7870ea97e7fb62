//! Reserved concurrency per function (PutFunctionConcurrency), stored beside the
//! function so DeleteFunction drops it in the same transaction (ON DELETE CASCADE).

use std::collections::HashMap;

use rusqlite::{params, OptionalExtension as _};

use super::{Registry, RegistryError};

/// How much of the account's concurrency all reservations together may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReservationBound {
    /// The account limit less what stays unreserved.
    pub max_total: u32,
    /// What stays unreserved (for the error message).
    pub unreserved_minimum: u32,
}

impl ReservationBound {
    pub const NONE: Self = Self {
        max_total: u32::MAX,
        unreserved_minimum: 0,
    };
}

impl Registry {
    /// Sets `name`'s reserved concurrency; the function must exist, and all
    /// reservations together stay within `bound`. The check runs in the write's own
    /// transaction: in a shared registry, a write that lost the race to another
    /// frontend's runs again on the newer state, check included.
    pub fn set_reserved_concurrency(
        &self,
        name: &str,
        reserved: u32,
        bound: ReservationBound,
    ) -> Result<(), RegistryError> {
        self.write(|conn| {
            let tx = super::immediate(conn)?;
            let exists = tx
                .query_row(
                    "SELECT 1 FROM functions WHERE name = ?1",
                    [name],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if !exists {
                return Err(RegistryError::NotFound(name.to_owned()));
            }
            let others: i64 = tx.query_row(
                "SELECT COALESCE(SUM(reserved), 0) FROM concurrency WHERE function != ?1",
                [name],
                |r| r.get(0),
            )?;
            if others.saturating_add(i64::from(reserved)) > i64::from(bound.max_total) {
                return Err(RegistryError::OverReserved {
                    unreserved_minimum: bound.unreserved_minimum,
                });
            }
            tx.execute(
                "INSERT INTO concurrency (function, reserved) VALUES (?1, ?2)
                 ON CONFLICT(function) DO UPDATE SET reserved = excluded.reserved",
                params![name, reserved],
            )?;
            tx.commit()?;
            self.bump();
            Ok(())
        })
    }

    /// Removes the reservation; the function must exist.
    pub fn delete_reserved_concurrency(&self, name: &str) -> Result<(), RegistryError> {
        self.write(|conn| {
            let tx = super::immediate(conn)?;
            let exists = tx
                .query_row(
                    "SELECT 1 FROM functions WHERE name = ?1",
                    [name],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            if !exists {
                return Err(RegistryError::NotFound(name.to_owned()));
            }
            tx.execute("DELETE FROM concurrency WHERE function = ?1", [name])?;
            tx.commit()?;
            self.bump();
            Ok(())
        })
    }

    /// `None` when the function has no reservation.
    pub fn reserved_concurrency(&self, name: &str) -> Result<Option<u32>, RegistryError> {
        self.with(|conn| {
            Ok(conn
                .query_row(
                    "SELECT reserved FROM concurrency WHERE function = ?1",
                    [name],
                    |r| r.get::<_, u32>(0),
                )
                .optional()?)
        })
    }

    /// Every reservation (loaded once at start into the invoke path's cache).
    pub fn all_reserved_concurrency(&self) -> Result<HashMap<String, u32>, RegistryError> {
        self.with(|conn| {
            let mut stmt = conn.prepare("SELECT function, reserved FROM concurrency")?;
            let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?)))?;
            let mut out = HashMap::new();
            for row in rows {
                let (f, n) = row?;
                out.insert(f, n);
            }
            Ok(out)
        })
    }
}
