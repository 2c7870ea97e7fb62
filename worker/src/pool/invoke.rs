//! One synchronous invocation (buffered or streamed): admission, warm pick or cold
//! start, the bounded invoke, error mapping, logs and release.

use super::init_phase::{self, push_lines, FailedInit, NotReady};
use super::{IdleEntry, Inner, Slot, Worker};
use crate::report;
use crate::sandbox::{Reply, Sandbox, SandboxError};
use crate::spec::{
    ChunkSink, FunctionKey, FunctionVersionSpec, InvokeOutcome, InvokeRequest, InvokeResult,
    Report, ThrottleReason, WorkerError,
};
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

/// A sandbox checked out for this invoke (warm, or just initialised).
struct CheckedOut {
    sandbox: Box<dyn Sandbox>,
    id: String,
    created: Instant,
    init_duration: Option<Duration>,
    /// The cold start resumed a SnapStart snapshot: `init_duration` is its restore,
    /// this the guest's part of it.
    billed_restore: Option<Duration>,
    used: Duration,
    before_start: String,
    after_start: String,
    /// `START` is already in the log (a suppressed init wrote it).
    started: bool,
}

/// Counts a sandbox as busy while it exists, under its key, so a deletion can tell
/// which busy sandboxes must not go back to the pool.
struct Busy<'a> {
    inner: &'a Inner,
    key: FunctionKey,
}

impl<'a> Busy<'a> {
    fn new(inner: &'a Inner, key: FunctionKey) -> Self {
        let mut st = inner.lock();
        st.busy += 1;
        *st.busy_keys.entry(key.clone()).or_default() += 1;
        drop(st);
        Self { inner, key }
    }
}

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        st.busy = st.busy.saturating_sub(1);
        let left = st.busy_keys.get_mut(&self.key).map(|n| {
            *n = n.saturating_sub(1);
            *n
        });
        if left == Some(0) {
            st.busy_keys.remove(&self.key);
            st.forgotten.remove(&self.key);
        }
    }
}

/// Parks a sandbox for reuse, or destroys it: when the invoke broke it, or when its
/// function was deleted while it ran.
fn release(inner: &Inner, key: &FunctionKey, entry: IdleEntry<Box<dyn Sandbox>>, keep: bool) {
    let unwanted = {
        let mut st = inner.lock();
        if keep && !st.forgotten.contains(key) {
            st.idle.entry(key.clone()).or_default().push(entry);
            None
        } else {
            Some(entry.sandbox)
        }
    };
    if let Some(sb) = unwanted {
        inner.destroy_all(vec![sb]);
    }
}

/// How the invoke ended, before logs are assembled.
struct Ending {
    result: InvokeResult,
    keep: bool,
    status: Option<&'static str>,
    extra_log: Option<String>,
}

impl Ending {
    fn kept(result: InvokeResult) -> Self {
        Self {
            result,
            keep: true,
            status: None,
            extra_log: None,
        }
    }

    fn failed(result: InvokeResult) -> Self {
        Self {
            result,
            keep: false,
            status: Some("error"),
            extra_log: None,
        }
    }

    /// The `Error Type` REPORT gives for an abnormal end.
    fn error_type(&self) -> Option<String> {
        match (&self.result, self.status) {
            (InvokeResult::FunctionError { error_type, .. }, Some("error")) => {
                Some(error_type.clone())
            }
            _ => None,
        }
    }
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

/// What the sandbox's answer (or its absence within `budget`) means for the caller.
fn ending_of(
    res: Result<Result<Reply, SandboxError>, tokio::time::error::Elapsed>,
    sb: &dyn Sandbox,
    rid: &str,
    timeout: Duration,
) -> Ending {
    let ending = match res {
        Ok(Ok(Reply::Response(p))) => Ending::kept(InvokeResult::Success(p)),
        Ok(Ok(Reply::Streamed)) => Ending::kept(InvokeResult::Success(Vec::new())),
        Ok(Ok(Reply::Error { error_type, body })) => {
            Ending::kept(InvokeResult::FunctionError { error_type, body })
        }
        Ok(Err(SandboxError::Exited {
            error_type,
            message,
        })) => Ending::failed(exit_result(rid, &error_type, &message, sb.oom_killed())),
        Ok(Err(other)) => Ending::failed(exit_result(
            rid,
            "Runtime.ExitError",
            &other.to_string(),
            sb.oom_killed(),
        )),
        Err(_) => Ending {
            result: function_error("Sandbox.Timedout", report::timeout_message(rid, timeout)),
            keep: false,
            status: Some("timeout"),
            extra_log: Some(report::timeout_log_line(rid, timeout)),
        },
    };
    // A process of the sandbox was OOM-killed even if the runtime survived (cgroup v1
    // kills one task): like v2's memory.oom.group, the sandbox is done for.
    if ending.keep && sb.oom_killed() {
        return Ending::failed(exit_result(
            rid,
            "Runtime.OutOfMemory",
            "signal: killed",
            true,
        ));
    }
    ending
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
        let ready = match self.check_out(spec, &req.request_id).await {
            Ok(r) => r,
            Err(NotReady::Service(e)) => return Err(WorkerError::Sandbox(e)),
            Err(NotReady::Code(e)) => return Err(WorkerError::Code(e)),
            Err(NotReady::SnapStart(f)) => return Err(WorkerError::SnapStart(f)),
            Err(NotReady::NoCapacity) => {
                inner.metrics.throttle("host_memory");
                return Err(WorkerError::Throttled(
                    ThrottleReason::ConcurrentInvocationLimitExceeded,
                ));
            }
            Err(NotReady::Failed(f)) => return Ok(self.init_failed(spec, &req, f)),
        };
        let busy = Busy::new(inner, spec.key());
        let mut sb = ready.sandbox;
        let rid = &req.request_id;
        let start_line = report::start_line(rid, &spec.version);
        if !ready.started {
            inner.log_platform(spec, &start_line);
        }
        // A suppressed init already spent part of the function's timeout.
        let budget = spec.timeout.saturating_sub(ready.used);
        let deadline = epoch_ms() + budget.as_millis() as u64;
        let start = Instant::now();
        let call = match &chunks {
            None => sb.invoke(&req, deadline),
            Some(c) => sb.invoke_streaming(&req, deadline, c.clone()),
        };
        let res = tokio::time::timeout(budget, call).await;
        let duration = start.elapsed() + ready.used;
        let mut ending = ending_of(res, sb.as_ref(), rid, spec.timeout);
        let fn_logs = sb.take_logs();
        let max_mem = sb.max_memory_bytes().unwrap_or(0);
        let entry = IdleEntry {
            sandbox: sb,
            id: ready.id,
            created: ready.created,
            last_used: Instant::now(),
        };
        release(inner, &busy.key, entry, ending.keep);
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
            init_duration: ready.init_duration,
            billed_restore: ready.billed_restore,
            status: ending.status,
            error_type: ending.error_type(),
        };
        let mut closing = ending.extra_log.clone().unwrap_or_default();
        closing.push_str(&report::end_line(rid));
        closing.push_str(&report::report_line(rid, &rep));
        inner.log_platform(spec, &closing);
        // The caller's tail: the log file already has every line, as it came.
        let mut logs = ready.before_start;
        logs.push_str(&start_line);
        logs.push_str(&ready.after_start);
        push_lines(&mut logs, &fn_logs);
        logs.push_str(&closing);
        self.finish(spec, &ending.result, duration);
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
    async fn check_out(
        &self,
        spec: &FunctionVersionSpec,
        request_id: &str,
    ) -> Result<CheckedOut, NotReady> {
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
                billed_restore: None,
                used: Duration::ZERO,
                before_start: String::new(),
                after_start: String::new(),
                started: false,
            });
        }
        let r = init_phase::cold_start(inner, spec, request_id).await?;
        Ok(CheckedOut {
            billed_restore: r.sandbox.resume_took(),
            sandbox: r.sandbox,
            id: r.id,
            created: Instant::now(),
            init_duration: r.init_duration,
            used: r.used,
            before_start: r.before_start,
            after_start: r.after_start,
            started: r.started,
        })
    }

    /// Outcome of an invoke whose Init phase and suppressed init both failed.
    fn init_failed(
        &self,
        spec: &FunctionVersionSpec,
        req: &InvokeRequest,
        f: FailedInit,
    ) -> InvokeOutcome {
        let rid = &req.request_id;
        let error_type = match (&f.result, f.status) {
            (InvokeResult::FunctionError { error_type, .. }, "error") => Some(error_type.clone()),
            _ => None,
        };
        let rep = Report {
            duration: f.duration,
            billed_ms: report::billed_ms(f.duration),
            memory_size_mb: spec.memory_mib,
            max_memory_used_mb: 0,
            init_duration: None,
            billed_restore: None,
            status: Some(f.status),
            error_type,
        };
        let mut closing = report::end_line(rid);
        closing.push_str(&report::report_line(rid, &rep));
        self.inner.log_platform(spec, &closing);
        let mut logs = f.before_start;
        logs.push_str(&report::start_line(rid, &spec.version));
        logs.push_str(&f.after_start);
        logs.push_str(&closing);
        self.finish(spec, &f.result, f.duration);
        InvokeOutcome {
            request_id: req.request_id.clone(),
            executed_version: spec.version.clone(),
            result: f.result,
            logs,
            report: rep,
        }
    }

    /// Metrics of a finished invoke.
    fn finish(&self, spec: &FunctionVersionSpec, result: &InvokeResult, duration: Duration) {
        let inner = &self.inner;
        inner
            .metrics
            .invocation(&format!("{}:{}", spec.name, spec.version), duration);
        if let InvokeResult::FunctionError { error_type, .. } = result {
            inner.metrics.error(error_type);
        }
    }
}
