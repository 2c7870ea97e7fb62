//! Put/Get/DeleteFunctionConcurrency: reserved concurrency per function, stored in
//! the registry and mirrored in the invoke path's cache.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::Path;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::{Deserialize, Serialize};

use super::InvokeService;
use crate::control::handlers::blocking;
use crate::control::names::{resolve, FunctionRef};
use crate::http::{ApiError, ErrorKind};
use crate::Supervisor;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct PutBody {
    reserved_concurrent_executions: Option<i64>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Reserved {
    #[serde(skip_serializing_if = "Option::is_none")]
    reserved_concurrent_executions: Option<u32>,
}

/// Lambda keeps at least this much of the account limit unreserved (100 of 1000).
fn unreserved_minimum(account_limit: u32) -> u32 {
    (account_limit / 10).min(100)
}

fn function(svc: &InvokeService, raw: &str) -> Result<FunctionRef, ApiError> {
    let cfg = svc.sup.config();
    let f = resolve(raw, None, &cfg.region, &cfg.account_id)?;
    if f.qualifier.is_some() {
        return Err(ApiError::invalid(
            "Reserved concurrency applies to a function, not a version: pass the unqualified name or ARN",
        ));
    }
    Ok(f)
}

fn not_found(sup: &Supervisor, name: &str) -> ApiError {
    ApiError::not_found(format!(
        "Function not found: {}",
        sup.function_arn(name, None)
    ))
}

pub async fn put(
    Extension(svc): Extension<Arc<InvokeService>>,
    Path(name): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let f = function(&svc, &name)?;
    let req: PutBody = if body.iter().all(u8::is_ascii_whitespace) {
        PutBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                ErrorKind::InvalidRequestContent,
                format!("Could not parse request body into json: {e}"),
            )
        })?
    };
    let n = req.reserved_concurrent_executions.ok_or_else(|| {
        ApiError::invalid("1 validation error detected: Value null at 'reservedConcurrentExecutions' failed to satisfy constraint: Member must not be null")
    })?;
    let n = u32::try_from(n).map_err(|_| {
        ApiError::invalid(format!("1 validation error detected: Value '{n}' at 'reservedConcurrentExecutions' failed to satisfy constraint: Member must have value greater than or equal to 0"))
    })?;
    let account = svc.sup.config().account_concurrency();
    let min = unreserved_minimum(account);
    let bound = crate::registry::ReservationBound {
        max_total: account.saturating_sub(min),
        unreserved_minimum: min,
    };
    let name = f.name.clone();
    blocking(svc.sup.clone(), move |s| {
        let _guard = s.write_guard();
        s.registry()
            .set_reserved_concurrency(&name, n, bound)
            .map_err(|e| match e {
                crate::registry::RegistryError::NotFound(_) => not_found(s, &name),
                other => other.into(),
            })
    })
    .await?;
    svc.specs.set_reserved(&f.name, Some(n));
    Ok(Json(Reserved {
        reserved_concurrent_executions: Some(n),
    })
    .into_response())
}

pub async fn get(
    Extension(svc): Extension<Arc<InvokeService>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let f = function(&svc, &name)?;
    let value = blocking(svc.sup.clone(), move |s| {
        if s.registry()
            .get(&f.name, crate::registry::LATEST)?
            .is_none()
        {
            return Err(not_found(s, &f.name));
        }
        Ok(s.registry().reserved_concurrency(&f.name)?)
    })
    .await?;
    Ok(Json(Reserved {
        reserved_concurrent_executions: value,
    })
    .into_response())
}

pub async fn delete(
    Extension(svc): Extension<Arc<InvokeService>>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let f = function(&svc, &name)?;
    let n = f.name.clone();
    blocking(svc.sup.clone(), move |s| {
        let _guard = s.write_guard();
        s.registry()
            .delete_reserved_concurrency(&n)
            .map_err(|e| match e {
                crate::registry::RegistryError::NotFound(_) => not_found(s, &n),
                other => other.into(),
            })
    })
    .await?;
    svc.specs.set_reserved(&f.name, None);
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::unreserved_minimum;

    #[test]
    fn keeps_lambdas_unreserved_minimum() {
        assert_eq!(unreserved_minimum(1000), 100);
        assert_eq!(unreserved_minimum(50), 5);
    }
}
