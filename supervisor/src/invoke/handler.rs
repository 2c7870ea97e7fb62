//! `POST /2015-03-31/functions/{name}/invocations` and `GET /metrics`
//! (InvokeWithResponseStream is in `stream`).

use std::sync::Arc;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use worker::{InvokeRequest, InvokeResult};

use super::events::{now_ms, store::Event};
use super::headers::{self, InvocationType};
use super::{response, InvokeService, RunError};
use crate::control::handlers::query_map;
use crate::control::names::{resolve, FunctionRef};
use crate::http::ApiError;
use crate::ids::uuid_v4;

type Svc = Extension<Arc<InvokeService>>;

fn kind_label(k: InvocationType) -> &'static str {
    match k {
        InvocationType::RequestResponse => "RequestResponse",
        InvocationType::Event => "Event",
        InvocationType::DryRun => "DryRun",
    }
}

pub async fn invoke(
    Extension(svc): Svc,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let request_id = uuid_v4();
    let kind = headers::parse(&headers)
        .map(|h| h.invocation_type)
        .unwrap_or(InvocationType::RequestResponse);
    let resp = handle(&svc, &name, q.as_deref(), &headers, body, &request_id)
        .await
        .unwrap_or_else(|e| error_response(e, &request_id));
    svc.metrics
        .request(kind_label(kind), resp.status().as_u16(), started.elapsed());
    resp
}

/// An API error answered with the invoke's request id, as Lambda does.
pub(super) fn error_response(e: ApiError, request_id: &str) -> Response {
    let mut r = e.into_response();
    if let Ok(v) = request_id.parse() {
        r.headers_mut().insert("x-amzn-requestid", v);
    }
    r
}

/// The function (name, ARN or partial ARN plus `Qualifier`) and the parsed invoke headers.
pub(super) fn target(
    svc: &InvokeService,
    raw_name: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Result<(FunctionRef, headers::InvokeHeaders), ApiError> {
    let cfg = svc.sup.config();
    let query = query_map(query);
    let f = resolve(
        raw_name,
        query.get("Qualifier").map(String::as_str),
        &cfg.region,
        &cfg.account_id,
    )?;
    Ok((f, headers::parse(headers)?))
}

async fn handle(
    svc: &InvokeService,
    raw_name: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Bytes,
    request_id: &str,
) -> Result<Response, ApiError> {
    let (f, h) = target(svc, raw_name, query, headers)?;
    let payload = headers::check_payload(h.invocation_type, &body)?;
    drop(body);
    match h.invocation_type {
        InvocationType::DryRun => {
            svc.exists(&f).await?;
            Ok(response::dry_run(request_id))
        }
        InvocationType::Event => {
            svc.exists(&f).await?;
            let now = now_ms();
            let ev = Event {
                id: request_id.to_owned(),
                function: f.name.clone(),
                qualifier: f.qualifier.clone(),
                payload,
                client_context: h.client_context,
                attempts: 0,
                system_retries: 0,
                next_at_ms: now,
                created_ms: now,
            };
            svc.events
                .enqueue(ev)
                .await
                .map_err(|e| ApiError::service(e.to_string()))?;
            svc.metrics.event("queued");
            Ok(response::accepted(request_id))
        }
        InvocationType::RequestResponse => {
            let req = InvokeRequest {
                request_id: request_id.to_owned(),
                payload,
                client_context: h.client_context,
                cognito_identity: None,
                trace_id: h.trace_id,
            };
            sync(svc, &f, req, h.tail_logs).await
        }
    }
}

async fn sync(
    svc: &InvokeService,
    f: &FunctionRef,
    req: InvokeRequest,
    tail_logs: bool,
) -> Result<Response, ApiError> {
    let request_id = req.request_id.clone();
    match svc.run(f, req).await {
        Ok(mut out) => {
            out.result = response::enforce_response_limit(out.result);
            if let InvokeResult::FunctionError { error_type, .. } = &out.result {
                svc.metrics.function_error(error_type);
            }
            Ok(response::outcome(out, tail_logs))
        }
        Err(RunError::Throttled(reason)) => {
            svc.metrics.throttle(reason.as_str());
            Ok(response::throttled(reason, &request_id))
        }
        Err(RunError::Api(e)) => Err(e),
        Err(RunError::Worker(e)) => Err(super::worker_error(&e)),
        Err(RunError::Remote(e)) => Err(super::remote::remote_error(&e)),
    }
}

pub async fn metrics(Extension(svc): Svc) -> Response {
    (
        StatusCode::OK,
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        svc.metrics_text(),
    )
        .into_response()
}

/// `GET /cluster/status`: this node's role and, for a frontend, its workers.
pub async fn cluster_status(Extension(svc): Svc) -> Response {
    let body = match svc.remote() {
        Some(fe) => serde_json::json!({
            "role": "frontend",
            "id": fe.id,
            "workers": fe.summary(),
        }),
        None => serde_json::json!({ "role": "embedded", "workers": [] }),
    };
    axum::Json(body).into_response()
}
