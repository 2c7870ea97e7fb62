//! One invoke through the cluster: placement, the exchange with the chosen worker,
//! and what happens when a worker refuses (another worker is tried: nothing ran) or
//! vanishes mid-invoke (a clear error; never retried here, since it may have run).

use super::Frontend;
use crate::link::client::{LinkClient, LinkError};
use crate::link::status::version_key;
use crate::link::wire::{self, Failure, InvokeHead, Record, SpecHead};
use crate::link::INVOKE_PATH;
use crate::placement::{Choice, Request};
use bytes::Bytes;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use worker::spec::ChunkSink;
use worker::{FunctionVersionSpec, InvokeOutcome, InvokeRequest, ThrottleReason};

/// Why the cluster produced no outcome.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("TooManyRequestsException: {}", .0.as_str())]
    Throttled(ThrottleReason),
    /// The worker reported a failure (no sandbox, no code, invalid spec).
    #[error("worker {worker}: {failure:?}")]
    Worker { worker: String, failure: Failure },
    /// The worker vanished or the link broke while the invoke was there: it may have
    /// run, so it is not retried for a synchronous caller.
    #[error("the worker {worker} running this invocation was lost: {reason}")]
    Lost { worker: String, reason: String },
    /// No worker is reachable.
    #[error("no worker is available: {0}")]
    NoWorker(String),
    #[error("invalid invoke: {0}")]
    Invalid(String),
}

impl RemoteError {
    /// Whether another attempt (an asynchronous invoke's retry) may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Throttled(_) | Self::Lost { .. } | Self::NoWorker(_) => true,
            Self::Worker { failure, .. } => match failure {
                Failure::Throttled { .. } | Failure::Draining | Failure::Sandbox(_) => true,
                Failure::Code { transient, .. } => *transient,
                Failure::InvalidSpec(_) => false,
                Failure::SnapStart(f) => matches!(f, worker::SnapStartFailure::Timeout(_)),
            },
            Self::Invalid(_) => false,
        }
    }
}

enum Exchange {
    Outcome(InvokeOutcome),
    /// Refused before running: try another worker.
    Refused(Failure),
    Failed(Failure),
    Lost(String),
}

/// A reservation slot of a function with reserved concurrency, released on drop.
struct Reserved<'a> {
    fe: &'a Frontend,
    function: String,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        let mut r = self.fe.reserved.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = r.get_mut(&self.function) {
            *n = n.saturating_sub(1);
        }
    }
}

/// What this frontend needs to do its bookkeeping after an exchange.
struct Placed {
    index: usize,
    warm: bool,
}

/// Functions time out after at most this long past their own timeout on a worker that
/// starts draining; placement leaves that much lease.
const LEASE_SLACK: Duration = Duration::from_secs(1);

impl Frontend {
    fn reserve(&self, spec: &FunctionVersionSpec) -> Result<Option<Reserved<'_>>, RemoteError> {
        let Some(limit) = spec.reserved_concurrency else {
            return Ok(None);
        };
        let mut r = self.reserved.lock().unwrap_or_else(|p| p.into_inner());
        let n = r.entry(spec.name.clone()).or_default();
        if *n >= limit {
            return Err(RemoteError::Throttled(
                ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded,
            ));
        }
        *n += 1;
        Ok(Some(Reserved {
            fe: self,
            function: spec.name.clone(),
        }))
    }

    /// Picks a worker (not one of `tried`) and books the invoke in its view.
    fn place(
        &self,
        spec: &FunctionVersionSpec,
        key: &str,
        tried: &[usize],
    ) -> Result<Placed, RemoteError> {
        let mut views = self.views();
        views.refresh_all(Instant::now());
        let any_up = views.info.iter().any(|v| v.up);
        let saved: Vec<(usize, bool)> = tried
            .iter()
            .map(|&i| (i, views.loads[i].available))
            .collect();
        for &i in tried {
            views.loads[i].available = false;
        }
        let req = Request {
            function: &spec.name,
            version_key: key,
            memory_mib: u64::from(spec.memory_mib),
            min_lease: spec.timeout + LEASE_SLACK,
        };
        let choice = self.policy.choose(&views.loads, &req);
        for (i, a) in saved {
            views.loads[i].available = a;
        }
        let (index, warm) = match choice {
            Choice::Warm(i) => (i, true),
            Choice::Cold(i) => (i, false),
            Choice::Full if !any_up => {
                let why = views
                    .info
                    .iter()
                    .filter(|v| v.listed)
                    .find_map(|v| v.down_reason.clone())
                    .unwrap_or_else(|| "no worker is listed".into());
                return Err(RemoteError::NoWorker(why));
            }
            Choice::Full => {
                return Err(RemoteError::Throttled(
                    ThrottleReason::ConcurrentInvocationLimitExceeded,
                ))
            }
        };
        if let Some(mut w) = views.at(index) {
            if warm {
                w.took_warm(key);
            } else {
                w.started_cold(&spec.name, req.memory_mib);
            }
        }
        Ok(Placed { index, warm })
    }

    fn finish(&self, p: &Placed, spec: &FunctionVersionSpec, key: &str, kept: bool) {
        let tick = self.tick();
        if let Some(mut w) = self.views().at(p.index) {
            let done = super::views::Finished {
                function: &spec.name,
                key,
                memory_mib: u64::from(spec.memory_mib),
                warm: p.warm,
                kept,
            };
            w.finished(&done, tick);
        }
    }

    /// Runs one invoke on some worker. With `chunks`, a streamed response's bytes go
    /// there as they arrive.
    pub async fn invoke(
        &self,
        spec: &FunctionVersionSpec,
        req: InvokeRequest,
        chunks: Option<ChunkSink>,
    ) -> Result<InvokeOutcome, RemoteError> {
        let code = spec
            .code
            .clone()
            .ok_or_else(|| RemoteError::Invalid("the spec names no code digest".into()))?;
        let _reserved = self.reserve(spec)?;
        let key = version_key(&spec.name, &spec.version, &spec.revision);
        self.memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key.clone(), u64::from(spec.memory_mib));
        let mut head = InvokeHead::new(SpecHead::from_spec(spec, code), &req, chunks.is_some());
        // The reservation holds across workers and is enforced here; a worker carving
        // it out of its own capacity would shrink every other function's share there.
        head.spec.reserved_concurrency = None;
        let body = Bytes::from(wire::encode_invoke(&head, &req.payload));
        drop(req);
        let mut tried = Vec::new();
        // A worker that ran nothing but failed transiently (no sandbox, no code): the
        // next worker is tried; this is reported if none succeeds.
        let mut last_failure: Option<RemoteError> = None;
        loop {
            let placed = match self.place(spec, &key, &tried) {
                Ok(p) => p,
                Err(e) => return Err(last_failure.unwrap_or(e)),
            };
            tried.push(placed.index);
            let Some(worker) = self.worker(placed.index) else {
                self.finish(&placed, spec, &key, placed.warm);
                continue;
            };
            let Some(send) = worker.sender() else {
                self.finish(&placed, spec, &key, placed.warm);
                continue;
            };
            worker.sent.fetch_add(1, Ordering::Relaxed);
            match exchange(send, body.clone(), chunks.as_ref()).await {
                Exchange::Outcome(o) => {
                    // A sandbox that ended abnormally is gone; any other is idle again.
                    self.finish(&placed, spec, &key, o.report.status.is_none());
                    return Ok(o);
                }
                Exchange::Refused(f) => {
                    tracing::debug!(worker = %worker.addr, ?f, "refused before running; trying another worker");
                    self.finish(&placed, spec, &key, placed.warm);
                }
                Exchange::Failed(failure) => {
                    self.finish(&placed, spec, &key, false);
                    let ran_nothing = matches!(
                        failure,
                        Failure::Sandbox(_)
                            | Failure::Code {
                                transient: true,
                                ..
                            }
                    );
                    let e = RemoteError::Worker {
                        worker: worker.addr.clone(),
                        failure,
                    };
                    if !ran_nothing {
                        return Err(e);
                    }
                    tracing::warn!(error = %e, "trying another worker");
                    last_failure = Some(e);
                }
                Exchange::Lost(reason) => {
                    self.lost.fetch_add(1, Ordering::Relaxed);
                    self.finish(&placed, spec, &key, false);
                    return Err(RemoteError::Lost {
                        worker: worker.addr.clone(),
                        reason,
                    });
                }
            }
        }
    }
}

/// Sends the invoke and reads its records until the outcome.
async fn exchange(send: LinkClient, body: Bytes, chunks: Option<&ChunkSink>) -> Exchange {
    // The worker reserves room for the body by its declared size before reading it.
    let Ok(req) = http::Request::post(format!("http://link{INVOKE_PATH}"))
        .header(http::header::CONTENT_LENGTH, body.len())
        .body(())
    else {
        return Exchange::Failed(Failure::InvalidSpec("unbuildable request".into()));
    };
    let resp = match send.send(req, Some(body)).await {
        Ok(r) => r,
        // The connection was closing, or the worker refused the stream: nothing ran.
        Err(LinkError::Unsent(_)) => return Exchange::Refused(Failure::Draining),
        Err(e) => return Exchange::Lost(e.to_string()),
    };
    if !resp.status().is_success() {
        return Exchange::Failed(Failure::InvalidSpec(format!(
            "worker answered {}",
            resp.status()
        )));
    }
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(data) = body.next().await {
        let data = match data {
            Ok(d) => d,
            Err(e) => return Exchange::Lost(e.to_string()),
        };
        // The usual answer is one whole record in one piece: decode it in place.
        let (pending, from_buf) = if buf.is_empty() {
            (&data[..], false)
        } else {
            buf.extend_from_slice(&data);
            (&buf[..], true)
        };
        let mut at = 0;
        loop {
            match wire::decode_record(&pending[at..]) {
                Ok(Some((rec, used))) => {
                    at += used;
                    match rec {
                        Record::Chunk(c) => {
                            if let Some(sink) = chunks {
                                // A caller that went away stops reading; the invoke runs on.
                                let _ = sink.send(c).await;
                            }
                        }
                        Record::Outcome(h, p) => return Exchange::Outcome(h.join(p)),
                        Record::Failure(
                            f @ (Failure::Draining | Failure::Throttled { reserved: false }),
                        ) => return Exchange::Refused(f),
                        Record::Failure(f) => return Exchange::Failed(f),
                    }
                }
                Ok(None) => break,
                Err(e) => return Exchange::Lost(format!("bad record from the worker: {e}")),
            }
        }
        if from_buf {
            buf.drain(..at);
        } else {
            buf.extend_from_slice(&data[at..]);
        }
    }
    Exchange::Lost("the worker ended the stream before the outcome".into())
}
