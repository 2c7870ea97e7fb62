//! One synchronous invocation (buffered or streamed): admission, warm pick or cold
//! start, the bounded invoke, error mapping, logs and release.

use super::cold::{self, ColdStartError};
use super::{IdleEntry, Inner, Slot, Worker};
use crate::report;
use crate::sandbox::{LogLine, Reply, Sandbox, SandboxError};
use crate::spec::{
    ChunkSink, FunctionVersionSpec, InvokeOutcome, InvokeRequest, InvokeResult, Report, WorkerError,
};
use std::fmt::Write;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A granted concurrency slot, returned on drop.
struct Permit {
    inner: Arc<Inner>,
    function: String,
    slot: Slot,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.inner
            .lock()
            .concurrency
            .release(&self.function, self.slot);
    }
}

/// Counts a sandbox as busy while it exists.
struct Busy<'a>(&'a Inner);

impl<'a> Busy<'a> {
    fn new(inner: &'a Inner) -> Self {
        inner.lock().busy += 1;
        Self(inner)
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.busy = st.busy.saturating_sub(1);
    }
}

/// A sandbox checked out for this invoke.
struct CheckedOut {
    sandbox: Box<dyn Sandbox>,
    id: String,
    created: Instant,
    init_duration: Option<Duration>,
    init_logs: Vec<LogLine>,
}

/// How the invoke ended, before logs are assembled.
struct Ending {
    result: InvokeResult,
    keep: bool,
    status: Option<&'static str>,
    extra_log: Option<String>,
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn function_error(error_type: &str, message: String) -> InvokeResult {
    InvokeResult::FunctionError {
        error_type: error_type.to_string(),
        body: report::error_body(error_type, &message),
    }
}

/// Maps an exited runtime to `Runtime.OutOfMemory` or `Runtime.ExitError`.
fn exit_result(request_id: &str, error_type: &str, message: &str, oom: bool) -> InvokeResult {
    let t = if oom || error_type == "Runtime.OutOfMemory" {
        "Runtime.OutOfMemory"
    } else {
        "Runtime.ExitError"
    };
    function_error(t, report::exit_message(request_id, message))
}

fn push_lines(out: &mut String, lines: &[LogLine]) {
    for l in lines {
        out.push_str(&l.text);
        out.push('\n');
    }
}

impl Worker {
    /// Runs one synchronous invocation of `spec`.
    pub async fn invoke(
        &self,
        spec: &FunctionVersionSpec,
        req: InvokeRequest,
    ) -> Result<InvokeOutcome, WorkerError> {
        self.run(spec, req, None).await
    }

    /// Runs one invocation whose response bytes go to `chunks` as the function writes
    /// them (InvokeWithResponseStream); a buffered response goes there whole. The
    /// outcome follows, as from [`Worker::invoke`], with an empty `Success` payload;
    /// `chunks` is closed before it returns.
    pub async fn invoke_streaming(
        &self,
        spec: &FunctionVersionSpec,
        req: InvokeRequest,
        chunks: ChunkSink,
    ) -> Result<InvokeOutcome, WorkerError> {
        self.run(spec, req, Some(chunks)).await
    }

    async fn run(
        &self,
        spec: &FunctionVersionSpec,
        req: InvokeRequest,
        chunks: Option<ChunkSink>,
    ) -> Result<InvokeOutcome, WorkerError> {
        spec.validate().map_err(WorkerError::InvalidSpec)?;
        let permit = self.admit(spec)?;
        let inner = &self.inner;
        let checked = match self.check_out(spec).await {
            Ok(c) => c,
            Err(ColdStartError::Start(e)) => return Err(WorkerError::Sandbox(e.to_string())),
            Err(ColdStartError::Init {
                error,
                logs,
                duration,
            }) => return Ok(self.init_failure(spec, &req, error, logs, Some(duration))),
            Err(ColdStartError::InitTimeout(limit, logs)) => {
                let err = SandboxError::Init {
                    error_type: "Sandbox.Timedout".into(),
                    body: report::error_body(
                        "Sandbox.Timedout",
                        &report::timeout_message(&req.request_id, limit),
                    ),
                };
                return Ok(self.init_failure(spec, &req, err, logs, Some(limit)));
            }
        };
        let busy = Busy::new(inner);
        let mut sb = checked.sandbox;
        let deadline = epoch_ms() + spec.timeout.as_millis() as u64;
        let start = Instant::now();
        let call = match &chunks {
            None => sb.invoke(&req, deadline),
            Some(c) => sb.invoke_streaming(&req, deadline, c.clone()),
        };
        let res = tokio::time::timeout(spec.timeout, call).await;
        let duration = start.elapsed();
        let rid = &req.request_id;
        let ending = match res {
            Ok(Ok(Reply::Response(p))) => Ending {
                result: InvokeResult::Success(p),
                keep: true,
                status: None,
                extra_log: None,
            },
            Ok(Ok(Reply::Streamed)) => Ending {
                result: InvokeResult::Success(Vec::new()),
                keep: true,
                status: None,
                extra_log: None,
            },
            Ok(Ok(Reply::Error { error_type, body })) => Ending {
                result: InvokeResult::FunctionError { error_type, body },
                keep: true,
                status: None,
                extra_log: None,
            },
            Ok(Err(SandboxError::Exited {
                error_type,
                message,
            })) => Ending {
                result: exit_result(rid, &error_type, &message, sb.oom_killed()),
                keep: false,
                status: Some("error"),
                extra_log: None,
            },
            Ok(Err(other)) => Ending {
                result: exit_result(
                    rid,
                    "Runtime.ExitError",
                    &other.to_string(),
                    sb.oom_killed(),
                ),
                keep: false,
                status: Some("error"),
                extra_log: None,
            },
            Err(_) => Ending {
                result: function_error(
                    "Sandbox.Timedout",
                    report::timeout_message(rid, spec.timeout),
                ),
                keep: false,
                status: Some("timeout"),
                extra_log: Some(report::timeout_log_line(rid, spec.timeout)),
            },
        };
        // A process of the sandbox was OOM-killed even if the runtime survived (cgroup v1
        // kills one task): like v2's memory.oom.group, the sandbox is done for.
        let mut ending = if ending.keep && sb.oom_killed() {
            Ending {
                result: exit_result(rid, "Runtime.OutOfMemory", "signal: killed", true),
                keep: false,
                status: Some("error"),
                extra_log: None,
            }
        } else {
            ending
        };
        let fn_logs = sb.take_logs();
        let max_mem = sb.max_memory_bytes().unwrap_or(0);
        if ending.keep {
            let mut st = inner.lock();
            st.idle.entry(spec.key()).or_default().push(IdleEntry {
                sandbox: sb,
                id: checked.id,
                created: checked.created,
                last_used: Instant::now(),
            });
        } else {
            inner.destroy_all(vec![sb]);
        }
        drop(busy);
        drop(permit);
        if let (Some(c), InvokeResult::Success(p)) = (chunks, &mut ending.result) {
            // A buffered response (the runtime did not stream) goes as one chunk, after
            // the sandbox is released, so a slow reader holds nothing back.
            if !p.is_empty() {
                let _ = c.send(std::mem::take(p)).await;
            }
        }

        let rep = Report {
            duration,
            billed_ms: report::billed_ms(duration),
            memory_size_mb: spec.memory_mib,
            max_memory_used_mb: max_mem.div_ceil(1 << 20),
            init_duration: checked.init_duration,
            status: ending.status,
        };
        let mut logs = String::new();
        push_lines(&mut logs, &checked.init_logs);
        logs.push_str(&report::start_line(rid, &spec.version));
        push_lines(&mut logs, &fn_logs);
        if let Some(extra) = &ending.extra_log {
            logs.push_str(extra);
        }
        logs.push_str(&report::end_line(rid));
        logs.push_str(&report::report_line(rid, &rep));
        self.finish(spec, &ending.result, duration, &logs);
        Ok(InvokeOutcome {
            request_id: req.request_id,
            executed_version: spec.version.clone(),
            result: ending.result,
            logs,
            report: rep,
        })
    }

    fn admit(&self, spec: &FunctionVersionSpec) -> Result<Permit, WorkerError> {
        let slot = self
            .inner
            .lock()
            .concurrency
            .try_acquire(&spec.name, spec.reserved_concurrency);
        match slot {
            Ok(slot) => Ok(Permit {
                inner: self.inner.clone(),
                function: spec.name.clone(),
                slot,
            }),
            Err(reason) => {
                self.inner.metrics.throttle(reason.as_str());
                Err(WorkerError::Throttled(reason))
            }
        }
    }

    /// The most recently used idle sandbox of this version, or a cold start.
    async fn check_out(&self, spec: &FunctionVersionSpec) -> Result<CheckedOut, ColdStartError> {
        let inner = &self.inner;
        let (warm, expired) = {
            let mut st = inner.lock();
            match st.idle.get_mut(&spec.key()) {
                Some(stack) => stack.pop_mru(Instant::now(), inner.cfg.lease),
                None => (None, Vec::new()),
            }
        };
        for _ in &expired {
            inner.metrics.reaped("lease");
        }
        inner.destroy_all(expired.into_iter().map(|e| e.sandbox).collect());
        if let Some(e) = warm {
            return Ok(CheckedOut {
                sandbox: e.sandbox,
                id: e.id,
                created: e.created,
                init_duration: None,
                init_logs: Vec::new(),
            });
        }
        let started = cold::start(inner, spec).await?;
        Ok(CheckedOut {
            sandbox: started.sandbox,
            id: started.id,
            created: Instant::now(),
            init_duration: Some(started.init_duration),
            init_logs: started.logs,
        })
    }

    /// Outcome of a failed init: Lambda returns the init error as a function error.
    fn init_failure(
        &self,
        spec: &FunctionVersionSpec,
        req: &InvokeRequest,
        error: SandboxError,
        init_logs: Vec<LogLine>,
        init_duration: Option<Duration>,
    ) -> InvokeOutcome {
        let rid = &req.request_id;
        let result = match error {
            SandboxError::Init { error_type, body } => {
                InvokeResult::FunctionError { error_type, body }
            }
            SandboxError::Exited {
                error_type,
                message,
            } => exit_result(rid, &error_type, &message, false),
            other => function_error(
                "Runtime.Unknown",
                format!("RequestId: {rid} Error: {other}"),
            ),
        };
        let rep = Report {
            duration: Duration::ZERO,
            billed_ms: 0,
            memory_size_mb: spec.memory_mib,
            max_memory_used_mb: 0,
            init_duration,
            status: Some("error"),
        };
        let mut logs = String::new();
        push_lines(&mut logs, &init_logs);
        if let InvokeResult::FunctionError { error_type, .. } = &result {
            let _ = writeln!(
                logs,
                "INIT_REPORT Phase: init Status: error Error Type: {error_type}"
            );
        }
        logs.push_str(&report::start_line(rid, &spec.version));
        logs.push_str(&report::end_line(rid));
        logs.push_str(&report::report_line(rid, &rep));
        self.finish(spec, &result, Duration::ZERO, &logs);
        InvokeOutcome {
            request_id: req.request_id.clone(),
            executed_version: spec.version.clone(),
            result,
            logs,
            report: rep,
        }
    }

    /// Metrics and the per-function log file.
    fn finish(
        &self,
        spec: &FunctionVersionSpec,
        result: &InvokeResult,
        duration: Duration,
        logs: &str,
    ) {
        let inner = &self.inner;
        inner
            .metrics
            .invocation(&format!("{}:{}", spec.name, spec.version), duration);
        if let InvokeResult::FunctionError { error_type, .. } = result {
            inner.metrics.error(error_type);
        }
        if let Some(files) = &inner.logs {
            if let Err(e) = files.append(&spec.name, &spec.version, logs) {
                eprintln!("worker: {e}");
            }
        }
    }
}
