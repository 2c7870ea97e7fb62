//! The invoke path in the frontend role: specs name code by digest (workers fetch it
//! from this frontend's code server), and invokes go through [`cluster::frontend`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cluster::frontend::{CodeLookup, Frontend, RemoteError};
use worker::spec::ChunkSink;
use worker::{FunctionVersionSpec, InvokeOutcome, InvokeRequest};

use super::{InvokeService, RunError};
use crate::codestore::CodeAad;
use crate::Supervisor;

/// The code this frontend has dispatched, by digest, for workers' fetches.
pub struct CodeIndex {
    sup: std::sync::Weak<Supervisor>,
    /// Hex digest -> (object id, function, version, CodeSha256).
    known: Mutex<HashMap<String, (String, String, String, String)>>,
}

impl CodeIndex {
    pub fn new(sup: &Arc<Supervisor>) -> Arc<Self> {
        Arc::new(Self {
            sup: Arc::downgrade(sup),
            known: Mutex::new(HashMap::new()),
        })
    }

    /// Remembers a version's code so workers may fetch it.
    pub fn add(&self, record: &crate::registry::FunctionRecord) {
        let Ok(hex) = worker::code::digest_hex(&record.code_sha256) else {
            return;
        };
        self.known.lock().unwrap_or_else(|p| p.into_inner()).insert(
            hex,
            (
                record.code_object.clone(),
                record.name.clone(),
                record.version.clone(),
                record.code_sha256.clone(),
            ),
        );
    }
}

impl CodeLookup for CodeIndex {
    fn package(&self, digest_hex: &str) -> Option<Vec<u8>> {
        let (object, function, version, sha) = self
            .known
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(digest_hex)
            .cloned()?;
        let sup = self.sup.upgrade()?;
        let aad = CodeAad {
            function: &function,
            version: &version,
            code_sha256: &sha,
        };
        match sup.store().read(&object, &aad) {
            Ok(zip) => Some(zip),
            Err(e) => {
                tracing::warn!(error = %e, "serving code to a worker");
                None
            }
        }
    }
}

impl From<RemoteError> for RunError {
    fn from(e: RemoteError) -> Self {
        match e {
            RemoteError::Throttled(r) => Self::Throttled(r),
            other => Self::Remote(other),
        }
    }
}

/// A remote failure as the caller sees it: Lambda's `ServiceException`.
pub(crate) fn remote_error(e: &RemoteError) -> crate::http::ApiError {
    crate::http::ApiError::service(e.to_string())
}

impl InvokeService {
    /// One invocation on a worker host.
    pub(super) async fn run_remote(
        &self,
        fe: &Frontend,
        spec: &FunctionVersionSpec,
        req: InvokeRequest,
        chunks: Option<ChunkSink>,
    ) -> Result<InvokeOutcome, RunError> {
        Ok(fe.invoke(spec, req, chunks).await?)
    }
}
