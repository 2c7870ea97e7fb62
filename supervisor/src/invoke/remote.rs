//! The invoke path in the frontend role: specs name code by digest (workers fetch it
//! from this frontend's code server), and invokes go through [`cluster::frontend`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cluster::frontend::{CodeLookup, Frontend, LookupError, RemoteError};
use worker::spec::ChunkSink;
use worker::{FunctionVersionSpec, InvokeOutcome, InvokeRequest};

use super::{InvokeService, RunError};
use crate::codestore::{CodeAad, CodeStoreError};
use crate::Supervisor;

/// One stored object holding a package: its id and what its encryption is bound to.
#[derive(Clone, PartialEq, Eq)]
struct Stored {
    object: String,
    function: String,
    version: String,
    sha256: String,
}

/// The code this frontend has dispatched, by digest, for workers' fetches. Several
/// versions (and functions) may share a digest, each with its own object: any one that
/// still opens will do.
pub struct CodeIndex {
    sup: std::sync::Weak<Supervisor>,
    known: Mutex<HashMap<String, Vec<Stored>>>,
}

impl CodeIndex {
    pub fn new(sup: &Arc<Supervisor>) -> Arc<Self> {
        Arc::new(Self {
            sup: Arc::downgrade(sup),
            known: Mutex::new(HashMap::new()),
        })
    }

    fn known(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Stored>>> {
        self.known.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Remembers a version's code and its layers' so workers may fetch them.
    pub fn add(&self, record: &crate::registry::FunctionRecord) {
        self.remember(Stored {
            object: record.code_object.clone(),
            function: record.name.clone(),
            version: record.version.clone(),
            sha256: record.code_sha256.clone(),
        });
        for l in &record.layers {
            self.remember(Stored {
                object: l.code_object.clone(),
                function: crate::control::layer::layer_binding(&l.layer),
                version: l.version.to_string(),
                sha256: l.code_sha256.clone(),
            });
        }
    }

    fn remember(&self, s: Stored) {
        let Ok(hex) = worker::code::digest_hex(&s.sha256) else {
            return;
        };
        let mut known = self.known();
        let list = known.entry(hex).or_default();
        if !list.contains(&s) {
            list.push(s);
        }
    }
}

impl CodeLookup for CodeIndex {
    /// Any stored chunk: it is sealed, and opens only with the key in an image package,
    /// which workers get only for versions this frontend dispatched to them.
    fn chunk(&self, id_hex: &str) -> Result<Option<Vec<u8>>, LookupError> {
        let Some(id) = chunkstore::ChunkId::from_hex(id_hex) else {
            return Ok(None);
        };
        let sup = self
            .sup
            .upgrade()
            .ok_or("the supervisor is shutting down")?;
        let chunks = sup.images().chunks();
        match chunks.get(&id) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(chunkstore::StoreError::Missing(_)) => {
                // With `--etcd`, another frontend may hold it (this one lost its copy).
                let Some(shared) = sup.shared() else {
                    return Ok(None);
                };
                let Some(bytes) = shared.peers.fetch_chunk(&id)? else {
                    return Ok(None);
                };
                chunks.put_copy(&id, &bytes)?;
                Ok(Some(bytes))
            }
            Err(e) => Err(Box::new(e)),
        }
    }

    fn package(&self, digest_hex: &str) -> Result<Option<Vec<u8>>, LookupError> {
        let candidates = self.known().get(digest_hex).cloned().unwrap_or_default();
        let sup = self
            .sup
            .upgrade()
            .ok_or("the supervisor is shutting down")?;
        let mut failure: Option<LookupError> = None;
        for s in candidates {
            let aad = CodeAad {
                function: &s.function,
                version: &s.version,
                code_sha256: &s.sha256,
            };
            match sup.store().read(&s.object, &aad) {
                Ok(zip) => return Ok(Some(zip)),
                // Deleted or replaced since: forget it, try the next one.
                Err(CodeStoreError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    if let Some(list) = self.known().get_mut(digest_hex) {
                        list.retain(|x| *x != s);
                    }
                }
                Err(e) => failure = Some(Box::new(e)),
            }
        }
        failure.map_or(Ok(None), Err)
    }
}

/// The embedded worker's code source: this process's own encrypted store, through the
/// same index the code server uses.
pub struct LocalCode(pub Arc<CodeIndex>);

impl worker::code::CodeSource for LocalCode {
    fn fetch<'a>(
        &'a self,
        code: &'a worker::code::CodeRef,
    ) -> worker::sandbox::BoxFuture<'a, Result<Vec<u8>, worker::code::CodeError>> {
        use worker::code::CodeError;
        Box::pin(async move {
            let hex = worker::code::digest_hex(&code.sha256)?;
            let index = self.0.clone();
            // Decrypting a package is blocking work.
            match tokio::task::spawn_blocking(move || index.package(&hex)).await {
                Ok(Ok(Some(zip))) => Ok(zip),
                Ok(Ok(None)) => Err(CodeError::NotFound(code.sha256.clone())),
                Ok(Err(e)) => Err(CodeError::Unreachable(format!("code store: {e}"))),
                Err(e) => Err(CodeError::Unreachable(format!("code store task: {e}"))),
            }
        })
    }
}

/// A worker's code supply pulling from this process's store, unpacking under
/// `run_dir` (for workers built outside [`worker::host::Host::start`]: tests, embedding).
pub fn local_code_supply(
    sup: &Supervisor,
    codes: &Arc<CodeIndex>,
    run_dir: &std::path::Path,
) -> worker::CodeSupply {
    worker::CodeSupply {
        source: Arc::new(LocalCode(codes.clone())),
        cache: None,
        chunks: Some(sup.images().chunks()),
        chunk_fetch: None,
        unpacker: worker::code::unpack::Unpacker::new(
            run_dir.join("sandbox-code"),
            worker::jail::mirror_group(),
            worker::code::package::ZipLimits::default(),
        ),
    }
}

impl From<RemoteError> for RunError {
    fn from(e: RemoteError) -> Self {
        use cluster::link::wire::Failure;
        match e {
            RemoteError::Throttled(r) => Self::Throttled(r),
            RemoteError::Worker {
                failure: Failure::Throttled { reserved },
                ..
            } => Self::Throttled(if reserved {
                worker::ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded
            } else {
                worker::ThrottleReason::ConcurrentInvocationLimitExceeded
            }),
            RemoteError::Worker {
                failure: Failure::SnapStart(f),
                ..
            } => Self::Api(super::snapstart_error(&f)),
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
