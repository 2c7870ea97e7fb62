//! The worker daemon's routes: invokes (buffered and streamed), status, forget,
//! metrics. Every body from the link is bounded where it is read.

use super::{budget, Daemon, InFlight};
use crate::link::body::{read_limited, LinkBody};
use crate::link::status::{CodeCacheStatus, PoolStatus, WorkerStatus};
use crate::link::transport::{respond, LinkRequest, LinkResponse};
use crate::link::wire::{self, Failure, OutcomeHead, Record};
use crate::link::{FORGET_PATH, INVOKE_PATH, METRICS_PATH, STATUS_PATH};
use bytes::Bytes;
use http::{Method, StatusCode};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use worker::{FunctionVersionSpec, InvokeOutcome, InvokeRequest, WorkerError};

/// Records queued towards the frontend before a streaming function's writes wait.
const STREAM_DEPTH: usize = 16;

pub(super) async fn handle(d: Arc<Daemon>, req: LinkRequest) -> LinkResponse {
    match (req.method(), req.uri().path()) {
        (&Method::POST, INVOKE_PATH) => invoke(d, req).await,
        (&Method::GET, STATUS_PATH) => {
            let body = serde_json::to_vec(&status(&d)).unwrap_or_default();
            respond(StatusCode::OK, body)
        }
        (&Method::POST, FORGET_PATH) => forget(&d, req).await,
        (&Method::GET, METRICS_PATH) => respond(StatusCode::OK, metrics(&d)),
        _ => respond(StatusCode::NOT_FOUND, "no such link route"),
    }
}

fn record(r: &Record) -> LinkResponse {
    respond(StatusCode::OK, wire::encode_record(r))
}

async fn invoke(d: Arc<Daemon>, req: LinkRequest) -> LinkResponse {
    let busy = InFlight::new(&d);
    if d.draining.load(Ordering::SeqCst) {
        return record(&Record::Failure(Failure::Draining));
    }
    let limit = match budget::declared_length(&req) {
        Some(n) if n > wire::MAX_INVOKE_BYTES => {
            return respond(StatusCode::PAYLOAD_TOO_LARGE, "invoke body too large")
        }
        Some(n) => n,
        None => wire::MAX_INVOKE_BYTES,
    };
    // Held until the invoke ends: its payload lives that long.
    let Some(room) = d.bodies.take(limit) else {
        return record(&Record::Failure(Failure::Throttled { reserved: false }));
    };
    let body = match read_limited(req.into_body(), limit).await {
        Ok(b) => b,
        Err(e) => return respond(StatusCode::PAYLOAD_TOO_LARGE, e.to_string()),
    };
    let (head, payload) = match wire::decode_invoke(&body) {
        Ok(x) => x,
        Err(e) => return respond(StatusCode::BAD_REQUEST, e.to_string()),
    };
    drop(body);
    let (spec, req, streaming) = head.into_parts(payload);
    if !streaming {
        let out = d.host.worker.invoke(&spec, req).await;
        drop((busy, room));
        return record(&outcome_record(out));
    }
    let (tx, body) = LinkBody::channel(STREAM_DEPTH);
    tokio::spawn(stream_invoke(d, (busy, room), spec, req, tx));
    http::Response::new(body)
}

fn outcome_record(out: Result<InvokeOutcome, WorkerError>) -> Record {
    match out {
        Ok(o) => {
            let (h, p) = OutcomeHead::split(o);
            Record::Outcome(h, p)
        }
        Err(e) => Record::Failure(Failure::from_worker(&e)),
    }
}

/// Runs a streamed invoke, forwarding each chunk as a record, then the outcome.
async fn stream_invoke(
    d: Arc<Daemon>,
    _held: (InFlight, tokio::sync::OwnedSemaphorePermit),
    spec: FunctionVersionSpec,
    req: InvokeRequest,
    tx: tokio::sync::mpsc::Sender<Bytes>,
) {
    let (chunk_tx, mut chunk_rx) = tokio::sync::mpsc::channel::<Vec<u8>>(STREAM_DEPTH);
    let forward = {
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(c) = chunk_rx.recv().await {
                let r = wire::encode_record(&Record::Chunk(c));
                if tx.send(Bytes::from(r)).await.is_err() {
                    return;
                }
            }
        })
    };
    let out = d.host.worker.invoke_streaming(&spec, req, chunk_tx).await;
    // Every chunk precedes the outcome.
    let _ = forward.await;
    let _ = tx
        .send(Bytes::from(wire::encode_record(&outcome_record(out))))
        .await;
}

#[derive(serde::Deserialize)]
struct Forget {
    function: String,
    version: Option<String>,
    /// With `version`: the current revision; older ones' idle sandboxes stop.
    current_revision: Option<String>,
}

async fn forget(d: &Daemon, req: LinkRequest) -> LinkResponse {
    let Ok(body) = read_limited(req.into_body(), 4096).await else {
        return respond(StatusCode::PAYLOAD_TOO_LARGE, "forget body too large");
    };
    let Ok(f) = serde_json::from_slice::<Forget>(&body) else {
        return respond(StatusCode::BAD_REQUEST, "bad forget body");
    };
    match (f.version, f.current_revision) {
        (Some(v), Some(rev)) => {
            d.host.worker.retire_stale(&f.function, &v, &rev);
        }
        (v, _) => d.host.worker.forget(&f.function, v.as_deref()),
    }
    respond(StatusCode::NO_CONTENT, Bytes::new())
}

pub(super) fn status(d: &Daemon) -> WorkerStatus {
    let inc = d.incarnation();
    let lease_remaining_ms = inc
        .lease_end
        .saturating_duration_since(std::time::Instant::now())
        .as_millis() as u64;
    let pools = d
        .host
        .worker
        .pools()
        .into_iter()
        .map(|p| PoolStatus {
            function: p.key.name,
            version: p.key.version,
            revision: p.key.revision,
            idle: p.idle,
            busy: p.busy,
            idle_for_ms: p.idle_for.map(|t| t.as_millis() as u64),
            memory_mib: p.memory_mib,
        })
        .collect();
    let (hits, fetches, bytes) = d.code_cache_counts();
    WorkerStatus {
        id: d.id.clone(),
        incarnation: inc.id.clone(),
        lease_remaining_ms,
        draining: d.draining.load(Ordering::SeqCst),
        capacity_mib: d.capacity_mib,
        cpus: d.cpus,
        in_flight: d.in_flight.load(Ordering::SeqCst),
        pools,
        code_cache: CodeCacheStatus {
            hits,
            fetches,
            bytes,
        },
    }
}

pub(super) fn metrics(d: &Daemon) -> String {
    let mut text = d.host.worker.metrics();
    text.push_str(&d.stats.render("worker"));
    let (hits, fetches, bytes) = d.code_cache_counts();
    text.push_str(&format!(
        "# TYPE worker_code_cache_hits_total counter\nworker_code_cache_hits_total {hits}\n\
         # TYPE worker_code_fetches_total counter\nworker_code_fetches_total {fetches}\n\
         # TYPE worker_code_cache_bytes gauge\nworker_code_cache_bytes {bytes}\n\
         # TYPE worker_lease_remaining_seconds gauge\nworker_lease_remaining_seconds {}\n\
         # TYPE worker_invokes_refused_body_budget_total counter\n\
         worker_invokes_refused_body_budget_total {}\n",
        status(d).lease_remaining_ms as f64 / 1000.0,
        d.bodies.refused()
    ));
    text
}
