//! The CA's record of what it issued (`issued.json`), kept for revocation.

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::files::{io_err, write_atomic, PUBLIC_MODE};
use super::{Role, TlsError};

/// File name of the record in the CA directory.
pub const ISSUED_FILE: &str = "issued.json";

/// One certificate the CA issued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedCert {
    /// Serial number, lower-case hex.
    pub serial: String,
    /// Role in the certificate's identity.
    pub role: Role,
    /// Id in the certificate's identity.
    pub id: String,
    /// End of validity, Unix seconds.
    pub not_after: i64,
    /// When it was revoked, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<i64>,
}

/// The whole record.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(crate) struct IssuedList {
    /// Number of the last CRL written (CRL numbers only grow).
    #[serde(default)]
    pub(crate) crl_number: u64,
    #[serde(default)]
    pub(crate) certs: Vec<IssuedCert>,
}

impl IssuedList {
    /// The record in `dir`; empty when there is none yet.
    pub(crate) fn load(dir: &Path) -> Result<Self, TlsError> {
        let path = dir.join(ISSUED_FILE);
        let bytes = match std::fs::read(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Self::default()),
            other => other.map_err(io_err(&path))?,
        };
        serde_json::from_slice(&bytes).map_err(|source| TlsError::Issued { path, source })
    }

    /// Replaces the record in `dir` atomically.
    pub(crate) fn save(&self, dir: &Path) -> Result<(), TlsError> {
        let path = dir.join(ISSUED_FILE);
        let mut bytes = serde_json::to_vec_pretty(self).map_err(|source| TlsError::Issued {
            path: path.clone(),
            source,
        })?;
        bytes.push(b'\n');
        write_atomic(&path, &bytes, PUBLIC_MODE)
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes of a hex string.
pub(crate) fn from_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| {
            hex.get(i..i + 2)
                .and_then(|b| u8::from_str_radix(b, 16).ok())
        })
        .collect()
}
