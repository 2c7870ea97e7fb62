//! The API the sandbox side uses to get a function version's code in
//! plaintext: a directory (process sandboxes) or a read-only ext4 image
//! (micro-VMs), cached by CodeSha256. Blocking; call from a blocking task.

use std::collections::HashSet;
use std::path::PathBuf;

use crate::codestore::{CodeAad, CodeStoreError};
use crate::registry::{FunctionRecord, RegistryError, LATEST};
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

/// Plaintext code ready for a sandbox.
#[derive(Debug, Clone)]
pub struct PreparedCode {
    pub path: PathBuf,
    pub code_sha256: String,
    /// The version's configuration (handler, runtime, memory, env, ...).
    pub record: FunctionRecord,
}

impl Supervisor {
    fn record_for(
        &self,
        function: &str,
        version: Option<&str>,
    ) -> Result<FunctionRecord, PrepareError> {
        let v = version.unwrap_or(LATEST);
        self.registry()
            .get(function, v)?
            .ok_or_else(|| PrepareError::NotFound(format!("{function}:{v}")))
    }

    /// Extracted code directory for `function` at `version` (default `$LATEST`).
    pub fn prepare_code(
        &self,
        function: &str,
        version: Option<&str>,
    ) -> Result<PreparedCode, PrepareError> {
        let record = self.record_for(function, version)?;
        let aad = CodeAad {
            function: &record.name,
            version: &record.version,
            code_sha256: &record.code_sha256,
        };
        let path = self.store().materialize_dir(&record.code_object, &aad)?;
        Ok(PreparedCode {
            path,
            code_sha256: record.code_sha256.clone(),
            record,
        })
    }

    /// Read-only ext4 image of the code for `function` at `version`.
    pub fn prepare_code_image(
        &self,
        function: &str,
        version: Option<&str>,
    ) -> Result<PreparedCode, PrepareError> {
        let record = self.record_for(function, version)?;
        let aad = CodeAad {
            function: &record.name,
            version: &record.version,
            code_sha256: &record.code_sha256,
        };
        let path = self.store().materialize_image(&record.code_object, &aad)?;
        Ok(PreparedCode {
            path,
            code_sha256: record.code_sha256.clone(),
            record,
        })
    }
}

impl Supervisor {
    /// Deletes cached plaintext code that no function version references any
    /// more, except digests in `in_use` (CodeSha256 of code that running
    /// sandboxes still have mapped). Returns the number of entries removed.
    pub fn prune_code_cache(&self, in_use: &HashSet<String>) -> Result<usize, PrepareError> {
        let mut keep = HashSet::new();
        for sha in self.registry().code_shas()?.iter().chain(in_use) {
            if let Ok(hex) = crate::codestore::sha_dir_name(sha) {
                keep.insert(hex);
            }
        }
        Ok(self.store().prune_cache(&keep)?)
    }
}

impl From<PrepareError> for crate::http::ApiError {
    /// For the invoke path: a package that cannot be unpacked is Lambda's
    /// InvalidZipFileException; a missing version is ResourceNotFound.
    fn from(e: PrepareError) -> Self {
        use crate::http::{ApiError, ErrorKind};
        match e {
            PrepareError::NotFound(what) => {
                ApiError::not_found(format!("Function not found: {what}"))
            }
            PrepareError::Store(CodeStoreError::Zip(z)) => {
                ApiError::new(ErrorKind::InvalidZipFile, z.to_string())
            }
            PrepareError::Store(CodeStoreError::Extract(ref x)) if x.is_host_failure() => {
                ApiError::service(format!(
                    "cannot prepare the function's code on this host: {e}"
                ))
            }
            PrepareError::Store(s @ CodeStoreError::Extract(_)) => {
                ApiError::new(ErrorKind::InvalidZipFile, s.to_string())
            }
            other => ApiError::service(other.to_string()),
        }
    }
}
