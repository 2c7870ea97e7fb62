//! A function version's code package, decrypted from the store and checked against
//! its CodeSha256. Blocking; call from a blocking task. (Workers get code by digest
//! through `invoke::CodeIndex`; this is the same read for one named version.)

use crate::codestore::{CodeAad, CodeStoreError};
use crate::registry::{RegistryError, LATEST};
use crate::Supervisor;

#[derive(Debug, thiserror::Error)]
pub enum PrepareError {
    #[error("Function not found: {0}")]
    NotFound(String),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Store(#[from] CodeStoreError),
}

impl Supervisor {
    /// The zip of `function` at `version` (default `$LATEST`).
    pub fn code_package(
        &self,
        function: &str,
        version: Option<&str>,
    ) -> Result<Vec<u8>, PrepareError> {
        let v = version.unwrap_or(LATEST);
        let record = self
            .registry()
            .get(function, v)?
            .ok_or_else(|| PrepareError::NotFound(format!("{function}:{v}")))?;
        let aad = CodeAad {
            function: &record.name,
            version: &record.version,
            code_sha256: &record.code_sha256,
        };
        Ok(self.store().read(&record.code_object, &aad)?)
    }
}
