//! Turns a function reference into the worker's [`FunctionVersionSpec`]: registry
//! record, code by digest (remembered in the [`CodeIndex`] workers pull from),
//! reserved concurrency.
//! Specs are cached per version and rebuilt when the record's revision changes.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use worker::FunctionVersionSpec;

use super::remote::CodeIndex;
use crate::control::names::FunctionRef;
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
    reserved: RwLock<Reserved>,
}

/// Each function's reservation, and their sum (read by every unreserved invoke of a
/// frontend with `--etcd`, so kept rather than summed each time).
#[derive(Default)]
struct Reserved {
    by_function: HashMap<String, u32>,
    total: u64,
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
        let total = all.values().map(|v| u64::from(*v)).sum();
        *self.reserved.write().unwrap_or_else(|p| p.into_inner()) = Reserved {
            by_function: all,
            total,
        };
    }

    pub fn set_reserved(&self, function: &str, value: Option<u32>) {
        let mut r = self.reserved.write().unwrap_or_else(|p| p.into_inner());
        let old = match value {
            Some(v) => r.by_function.insert(function.to_owned(), v),
            None => r.by_function.remove(function),
        };
        r.total = r.total.saturating_sub(old.map_or(0, u64::from)) + value.map_or(0, u64::from);
    }

    /// All functions' reservations together.
    pub fn reserved_total(&self) -> u64 {
        self.reserved
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .total
    }

    pub fn reserved(&self, function: &str) -> Option<u32> {
        self.reserved
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_function
            .get(function)
            .copied()
    }

    /// The version's record, or Lambda's not-found error. Blocking.
    pub fn record(sup: &Supervisor, f: &FunctionRef) -> Result<FunctionRecord, ApiError> {
        let version = f.qualifier.as_deref().unwrap_or(LATEST);
        sup.registry()
            .find_or_sync(|r| r.get(&f.name, version))?
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

    /// Blocking: registry lookup.
    pub fn resolve(
        &self,
        sup: &Supervisor,
        f: &FunctionRef,
        code_source: &str,
        codes: &CodeIndex,
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
        codes.add(&record);
        let code = worker::code::CodeRef {
            sha256: record.code_sha256.clone(),
            source: code_source.to_owned(),
        };
        let spec = FunctionVersionSpec {
            name: record.name.clone(),
            version: record.version.clone(),
            code_dir: None,
            code_image: None,
            code: Some(code),
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
            layers: worker::spec::Layers {
                packages: record
                    .layers
                    .iter()
                    .map(|l| worker::code::CodeRef {
                        sha256: l.code_sha256.clone(),
                        source: code_source.to_owned(),
                    })
                    .collect(),
                dir: None,
            },
            image: record.image.as_ref().map(|i| worker::spec::ImageSpec {
                overrides: i.config.clone(),
                ready: None,
            }),
            snap_start: record.snap_start_applies(),
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

#[cfg(test)]
mod tests {
    use super::Specs;

    #[test]
    fn the_reserved_total_follows_loads_sets_replacements_and_removals() {
        let specs = Specs::default();
        assert_eq!(specs.reserved_total(), 0);
        specs.load_reserved([("a".to_owned(), 5), ("b".to_owned(), 7)].into());
        assert_eq!(specs.reserved_total(), 12);
        specs.set_reserved("c", Some(3));
        specs.set_reserved("a", Some(1));
        assert_eq!((specs.reserved_total(), specs.reserved("a")), (11, Some(1)));
        specs.set_reserved("b", None);
        specs.set_reserved("missing", None);
        assert_eq!((specs.reserved_total(), specs.reserved("b")), (4, None));
        specs.load_reserved([("z".to_owned(), 2)].into());
        assert_eq!(specs.reserved_total(), 2);
    }
}
