//! GetAccountSettings (`GET /2016-08-19/account-settings`): this installation's limits
//! and what its functions use, in Lambda's shape.

use std::sync::Arc;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

use super::handlers::blocking;
use crate::http::ApiError;
use crate::Supervisor;

/// Lambda's default storage quota for all code (75 GB).
const TOTAL_CODE_SIZE: u64 = 80_530_636_800;

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct AccountLimit {
    total_code_size: u64,
    code_size_unzipped: u64,
    code_size_zipped: u64,
    concurrent_executions: u32,
    unreserved_concurrent_executions: u32,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct AccountUsage {
    total_code_size: u64,
    function_count: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct AccountSettings {
    account_limit: AccountLimit,
    account_usage: AccountUsage,
}

pub async fn get_account_settings(
    State(sup): State<Arc<Supervisor>>,
) -> Result<Response, ApiError> {
    let out = blocking(sup, |s| {
        let limit = s.config().account_concurrency();
        let reserved: u64 = s
            .registry()
            .all_reserved_concurrency()?
            .values()
            .map(|v| u64::from(*v))
            .sum();
        let (function_count, total_code_size) = s.registry().usage()?;
        let zip = worker::code::package::ZipLimits::default();
        Ok(AccountSettings {
            account_limit: AccountLimit {
                total_code_size: TOTAL_CODE_SIZE,
                code_size_unzipped: zip.max_unzipped,
                code_size_zipped: zip.max_zipped,
                concurrent_executions: limit,
                unreserved_concurrent_executions: u32::try_from(
                    u64::from(limit).saturating_sub(reserved),
                )
                .unwrap_or(0),
            },
            account_usage: AccountUsage {
                total_code_size,
                function_count,
            },
        })
    })
    .await?;
    Ok(Json(out).into_response())
}
