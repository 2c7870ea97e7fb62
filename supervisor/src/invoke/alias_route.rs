//! Invokes through an alias: the alias's record (cached while the registry is
//! unchanged) picks the version each invoke runs, by its routing weights. Warm pools,
//! reserved concurrency and `X-Amz-Executed-Version` then follow that version.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::control::alias::is_alias;
use crate::control::names::FunctionRef;
use crate::http::ApiError;
use crate::registry::AliasRecord;
use crate::Supervisor;

/// An alias's record and the registry generation read before it.
type Cached = (u64, Arc<AliasRecord>);

#[derive(Default)]
pub struct AliasRoutes {
    /// By (function, alias).
    cache: Mutex<HashMap<(String, String), Cached>>,
}

impl AliasRoutes {
    /// For an alias, the reference to the version this invoke runs; `None` for any
    /// other reference (used as it is, without a copy on the warm path). Blocking only
    /// when the alias is not cached.
    pub async fn route(
        &self,
        sup: &Arc<Supervisor>,
        f: &FunctionRef,
    ) -> Result<Option<FunctionRef>, ApiError> {
        let Some(alias) = f.qualifier.as_deref().filter(|q| is_alias(q)) else {
            return Ok(None);
        };
        let key = (f.name.clone(), alias.to_owned());
        let generation = sup.registry().generation();
        let cached = {
            let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache
                .get(&key)
                .filter(|(g, _)| *g == generation)
                .map(|(_, a)| a.clone())
        };
        let record = match cached {
            Some(a) => a,
            None => {
                let (s, name, wanted) = (sup.clone(), f.name.clone(), alias.to_owned());
                let found = tokio::task::spawn_blocking(move || {
                    s.registry().find_or_sync(|r| r.get_alias(&name, &wanted))
                })
                .await
                .map_err(|e| ApiError::service(format!("internal task failed: {e}")))??;
                let a = Arc::new(found.ok_or_else(|| {
                    ApiError::not_found(format!(
                        "Function not found: {}",
                        sup.function_arn(&f.name, Some(alias))
                    ))
                })?);
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                // Records of deleted aliases and old generations go with the next change.
                cache.retain(|_, (g, _)| *g == generation);
                cache.insert(key, (generation, a.clone()));
                a
            }
        };
        Ok(Some(FunctionRef {
            name: f.name.clone(),
            qualifier: Some(record.pick(crate::ids::unit_draw()).to_owned()),
        }))
    }
}
