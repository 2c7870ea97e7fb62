//! Turns a function reference into the worker's [`FunctionVersionSpec`]: registry
//! record, plaintext code in the form the backend wants, reserved concurrency.
//! Specs are cached per version and rebuilt when the record's revision changes.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use worker::FunctionVersionSpec;

use crate::control::names::FunctionRef;
use crate::dataplane::CodeForm;
use crate::http::ApiError;
use crate::registry::{FunctionRecord, LATEST};
use crate::Supervisor;

struct Cached {
    revision_id: String,
    /// Registry generation read before the record was.
    generation: u64,
    spec: FunctionVersionSpec,
}

/// Per-version spec cache plus the reserved-concurrency view of the registry.
#[derive(Default)]
pub struct Specs {
    /// Keyed by (function, qualifier as requested or `$LATEST`).
    cache: Mutex<HashMap<(String, String), Cached>>,
    reserved: RwLock<HashMap<String, u32>>,
}

/// How the worker gets a version's code.
pub enum CodeWay {
    /// Plaintext prepared here, mirrored under `exposed_root` for the local worker.
    Local {
        form: CodeForm,
        exposed_root: std::path::PathBuf,
        group: Option<u32>,
    },
    /// By digest: a worker host fetches it from `source` (this frontend), which serves
    /// what `index` holds.
    ByDigest {
        source: String,
        index: std::sync::Arc<super::remote::CodeIndex>,
    },
}

type CodeParts = (
    Option<std::path::PathBuf>,
    Option<std::path::PathBuf>,
    Option<worker::code::CodeRef>,
);

/// The spec's code fields for `record`. Blocking (may decrypt and unpack).
fn code_for(
    sup: &Supervisor,
    record: &FunctionRecord,
    way: &CodeWay,
) -> Result<CodeParts, ApiError> {
    let version = Some(record.version.as_str());
    match way {
        CodeWay::Local {
            form,
            exposed_root,
            group,
        } => {
            let exposed = |p: &std::path::Path| {
                super::expose::expose(p, exposed_root, *group)
                    .map_err(|e| ApiError::service(e.to_string()))
            };
            Ok(match form {
                CodeForm::Directory => {
                    let p = sup.prepare_code(&record.name, version)?.path;
                    (Some(exposed(&p)?), None, None)
                }
                CodeForm::Image => {
                    let p = sup.prepare_code_image(&record.name, version)?.path;
                    (None, Some(exposed(&p)?), None)
                }
            })
        }
        CodeWay::ByDigest { source, index } => {
            index.add(record);
            let code = worker::code::CodeRef {
                sha256: record.code_sha256.clone(),
                source: source.clone(),
            };
            Ok((None, None, Some(code)))
        }
    }
}

/// What [`Specs::resolve`] found.
pub struct Resolved {
    pub spec: FunctionVersionSpec,
    /// The version's configuration changed since sandboxes were last started for it.
    pub revised: bool,
}

fn not_found(sup: &Supervisor, f: &FunctionRef) -> ApiError {
    ApiError::not_found(format!(
        "Function not found: {}",
        sup.function_arn(&f.name, f.qualifier.as_deref())
    ))
}

impl Specs {
    pub fn load_reserved(&self, all: HashMap<String, u32>) {
        *self.reserved.write().unwrap_or_else(|p| p.into_inner()) = all;
    }

    pub fn set_reserved(&self, function: &str, value: Option<u32>) {
        let mut r = self.reserved.write().unwrap_or_else(|p| p.into_inner());
        match value {
            Some(v) => r.insert(function.to_owned(), v),
            None => r.remove(function),
        };
    }

    pub fn reserved(&self, function: &str) -> Option<u32> {
        self.reserved
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(function)
            .copied()
    }

    /// The version's record, or Lambda's not-found error. Blocking.
    pub fn record(sup: &Supervisor, f: &FunctionRef) -> Result<FunctionRecord, ApiError> {
        let version = f.qualifier.as_deref().unwrap_or(LATEST);
        sup.registry()
            .get(&f.name, version)?
            .ok_or_else(|| not_found(sup, f))
    }

    fn key(f: &FunctionRef) -> (String, String) {
        (
            f.name.clone(),
            f.qualifier.clone().unwrap_or_else(|| LATEST.to_owned()),
        )
    }

    /// The cached spec when nothing in the registry changed since it was read: the
    /// warm path without a registry lookup.
    pub fn current(&self, sup: &Supervisor, f: &FunctionRef) -> Option<FunctionVersionSpec> {
        let generation = sup.registry().generation();
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        let c = cache
            .get(&Self::key(f))
            .filter(|c| c.generation == generation)?;
        let mut spec = c.spec.clone();
        spec.reserved_concurrency = self.reserved(&spec.name);
        Some(spec)
    }

    /// The revision cached for `f`: differs from the one an invoke used once a newer
    /// revision was resolved while that invoke ran.
    pub fn current_revision(&self, f: &FunctionRef) -> Option<String> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(&Self::key(f)).map(|c| c.revision_id.clone())
    }

    /// Blocking: registry lookup and, for a new revision, code preparation.
    pub fn resolve(
        &self,
        sup: &Supervisor,
        f: &FunctionRef,
        way: &CodeWay,
    ) -> Result<Resolved, ApiError> {
        let generation = sup.registry().generation();
        let record = Self::record(sup, f)?;
        let key = Self::key(f);
        let reserved = self.reserved(&record.name);
        let mut revised = false;
        {
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = cache.get_mut(&key) {
                if c.revision_id == record.revision_id {
                    c.generation = generation;
                    let mut spec = c.spec.clone();
                    spec.reserved_concurrency = reserved;
                    return Ok(Resolved {
                        spec,
                        revised: false,
                    });
                }
                revised = true;
            }
        }
        // New revision (or first use): re-read the reservation, which a deleted and
        // recreated function must not inherit from the cache.
        let reserved = sup.registry().reserved_concurrency(&record.name)?;
        self.set_reserved(&record.name, reserved);
        let (code_dir, code_image, code) = code_for(sup, &record, way)?;
        let spec = FunctionVersionSpec {
            name: record.name.clone(),
            version: record.version.clone(),
            code_dir,
            code_image,
            code,
            runtime: record.runtime.clone(),
            handler: record.handler.clone().unwrap_or_default(),
            memory_mib: record.memory_size,
            timeout: Duration::from_secs(u64::from(record.timeout)),
            env: record
                .environment
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            reserved_concurrency: reserved,
            revision: record.revision_id.clone(),
        };
        self.cache.lock().unwrap_or_else(|p| p.into_inner()).insert(
            key,
            Cached {
                revision_id: record.revision_id,
                generation,
                spec: spec.clone(),
            },
        );
        Ok(Resolved { spec, revised })
    }
}
