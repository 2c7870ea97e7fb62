//! `POST /2021-11-15/functions/{name}/response-streaming-invocations`: the function's
//! bytes reach the caller as `PayloadChunk` events as the worker hands them over, then
//! one `InvokeComplete` with the error (if any) and the log tail.

use std::convert::Infallible;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{Path, RawQuery};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Extension;
use http_body::Frame;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use worker::spec::ChunkSink;
use worker::{FunctionVersionSpec, InvokeOutcome, InvokeRequest, InvokeResult};

use super::eventstream::event;
use super::handler::{error_response, target};
use super::headers::{self, InvocationType};
use super::{response, worker_error, InvokeService, RunError};
use crate::http::ApiError;
use crate::ids::uuid_v4;

/// Chunks queued between the worker and the HTTP body; beyond it the function's writes
/// wait for the caller to read.
const CHUNK_QUEUE: usize = 4;
/// Largest `PayloadChunk` payload; bigger chunks are cut.
const MAX_EVENT_PAYLOAD: usize = 64 * 1024;

type Run = JoinHandle<Result<InvokeOutcome, RunError>>;

pub async fn invoke_stream(
    Extension(svc): Extension<Arc<InvokeService>>,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let request_id = uuid_v4();
    let resp = handle(&svc, &name, q.as_deref(), &headers, body, &request_id)
        .await
        .unwrap_or_else(|e| error_response(e, &request_id));
    // For a stream: the time to its first byte.
    svc.metrics
        .request("ResponseStream", resp.status().as_u16(), started.elapsed());
    resp
}

async fn handle(
    svc: &Arc<InvokeService>,
    raw_name: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Bytes,
    request_id: &str,
) -> Result<Response, ApiError> {
    let (f, h) = target(svc, raw_name, query, headers)?;
    if h.invocation_type == InvocationType::Event {
        return Err(ApiError::invalid(
            "InvokeWithResponseStream supports the RequestResponse and DryRun invocation types",
        ));
    }
    let payload = headers::check_payload(h.invocation_type, &body)?;
    drop(body);
    if h.invocation_type == InvocationType::DryRun {
        svc.exists(&f).await?;
        return Ok(response::dry_run(request_id));
    }
    let spec = svc.resolve(&f).await?;
    let executed_version = spec.version.clone();
    let req = InvokeRequest {
        request_id: request_id.to_owned(),
        payload,
        client_context: h.client_context,
        cognito_identity: None,
        trace_id: h.trace_id,
    };
    let (chunks, mut rx) = mpsc::channel(CHUNK_QUEUE);
    let task_svc = Arc::clone(svc);
    // A task of its own: the invoke finishes (and its sandbox goes back to the pool)
    // even when the caller hangs up and the body is dropped.
    let mut run: Run = tokio::spawn(async move { task_svc.run_streaming(spec, req, chunks).await });
    // The headers go out with the first chunk, or at the end when the function wrote
    // none, so a throttle or a failed sandbox start is still an HTTP error.
    let (first, completion) = tokio::select! {
        Some(chunk) = rx.recv() => (Bytes::from(chunk), Completion::Running(run)),
        done = &mut run => match done {
            Ok(Ok(out)) => (Bytes::new(), Completion::Ready(Box::new(Ok(out)))),
            Ok(Err(RunError::Throttled(reason))) => {
                svc.metrics.throttle(reason.as_str());
                return Ok(response::throttled(reason, request_id));
            }
            Ok(Err(e)) => return Err(run_error(e)),
            Err(e) => return Err(ApiError::service(format!("internal task failed: {e}"))),
        },
    };
    let body = EventStreamBody {
        pending: first,
        chunks: rx,
        completion,
        tail_logs: h.tail_logs,
    };
    Ok(response::event_stream(
        Body::new(body),
        request_id,
        &executed_version,
    ))
}

fn run_error(e: RunError) -> ApiError {
    match e {
        RunError::Api(e) => e,
        RunError::Worker(e) => worker_error(&e),
        RunError::Remote(e) => super::remote::remote_error(&e),
        RunError::Throttled(r) => ApiError::service(r.as_str()),
    }
}

impl InvokeService {
    /// One streamed invocation of a resolved `spec` through the worker.
    pub(super) async fn run_streaming(
        &self,
        spec: FunctionVersionSpec,
        req: InvokeRequest,
        chunks: ChunkSink,
    ) -> Result<InvokeOutcome, RunError> {
        let _slot = self.cluster_slot(&spec).await?;
        if let Some(fe) = &self.remote {
            let out = self.run_remote(fe, &spec, req, Some(chunks)).await?;
            if let InvokeResult::FunctionError { error_type, .. } = &out.result {
                self.metrics.function_error(error_type);
            }
            return Ok(out);
        }
        let plane = self
            .plane
            .as_ref()
            .map_err(|why| ApiError::service(format!("the data plane is not running: {why}")))?;
        let out = plane.worker.invoke_streaming(&spec, req, chunks).await;
        self.retire_if_superseded(plane, &spec);
        let out = out?;
        if let InvokeResult::FunctionError { error_type, .. } = &out.result {
            self.metrics.function_error(error_type);
        }
        Ok(out)
    }
}

/// How the invocation behind a stream ended, as far as the body knows.
enum Completion {
    Running(Run),
    /// The outcome, or why there is none.
    Ready(Box<Result<InvokeOutcome, String>>),
    Sent,
}

/// The eventstream body: `PayloadChunk` events as the worker's chunks arrive, then
/// `InvokeComplete` once the channel closed and the outcome is known.
struct EventStreamBody {
    /// Bytes received and not yet framed.
    pending: Bytes,
    chunks: mpsc::Receiver<Vec<u8>>,
    completion: Completion,
    tail_logs: bool,
}

impl HttpBody for EventStreamBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        loop {
            if !this.pending.is_empty() {
                let piece = this
                    .pending
                    .split_to(this.pending.len().min(MAX_EVENT_PAYLOAD));
                let framed = event("PayloadChunk", "application/octet-stream", &piece);
                return Poll::Ready(Some(Ok(Frame::data(Bytes::from(framed)))));
            }
            match this.chunks.poll_recv(cx) {
                Poll::Ready(Some(chunk)) => this.pending = Bytes::from(chunk),
                Poll::Ready(None) => break,
                Poll::Pending => return Poll::Pending,
            }
        }
        let done = match std::mem::replace(&mut this.completion, Completion::Sent) {
            Completion::Sent => return Poll::Ready(None),
            Completion::Ready(done) => *done,
            Completion::Running(mut run) => match Pin::new(&mut run).poll(cx) {
                Poll::Pending => {
                    this.completion = Completion::Running(run);
                    return Poll::Pending;
                }
                Poll::Ready(Ok(Ok(out))) => Ok(out),
                // The worker refuses or fails an invoke before any chunk, so these
                // cannot follow one; still, the stream must end with a verdict.
                Poll::Ready(Ok(Err(e))) => Err(run_error(e).message),
                Poll::Ready(Err(e)) => Err(format!("internal task failed: {e}")),
            },
        };
        let json = response::invoke_complete(done.as_ref().map_err(String::as_str), this.tail_logs);
        let framed = event("InvokeComplete", "application/json", &json);
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(framed)))))
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.completion, Completion::Sent)
    }
}
