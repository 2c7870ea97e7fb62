//! Cold start: create a sandbox and run init, together bounded by a time limit (the
//! init timeout in Lambda's Init phase, what is left of the function timeout for a
//! suppressed init).

use super::Inner;
use crate::sandbox::{LogLine, Sandbox, SandboxError};
use crate::spec::FunctionVersionSpec;
use std::time::{Duration, Instant};

pub(crate) struct Started {
    pub sandbox: Box<dyn Sandbox>,
    pub id: String,
    pub init_duration: Duration,
    pub logs: Vec<LogLine>,
    /// The Init of the snapshot this sandbox resumed, when its start took it: logged
    /// already, here for the caller's log tail.
    pub snapshot_init: Option<String>,
}

/// Why a cold start produced no sandbox.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ColdStartError {
    /// Infrastructure failure: a service error, not a function error.
    #[error("{0}")]
    Start(SandboxError),
    /// The function's code could not be had or unpacked.
    #[error(transparent)]
    Code(crate::code::CodeError),
    /// The function's init failed: returned to the caller as a function error.
    #[error("init failed: {error}")]
    Init {
        error: SandboxError,
        logs: Vec<LogLine>,
        duration: Duration,
    },
    /// Start plus init did not finish within the limit (a slow VM boot counts: it is
    /// part of the environment's init as the caller sees it).
    #[error("init timed out after {0:?}")]
    InitTimeout(Duration, Vec<LogLine>),
    /// A sandbox resumed from a SnapStart snapshot failed its restore: the caller gets
    /// Lambda's SnapStart error, with no second try.
    #[error("{0}")]
    Restore(crate::spec::SnapStartFailure),
}

impl ColdStartError {
    /// As the worker interface reports a start that produced no sandbox.
    pub fn into_worker_error(self) -> crate::spec::WorkerError {
        use crate::spec::WorkerError;
        match self {
            Self::Code(e) => WorkerError::Code(e),
            Self::Start(e) | Self::Init { error: e, .. } => WorkerError::Sandbox(e),
            Self::InitTimeout(limit, _) => WorkerError::Sandbox(SandboxError::Start(format!(
                "init did not finish within {limit:?}"
            ))),
            Self::Restore(f) => WorkerError::SnapStart(f),
        }
    }

    /// The runtime's output during the failed init.
    pub fn take_logs(&mut self) -> Vec<LogLine> {
        match self {
            ColdStartError::Start(_) | ColdStartError::Code(_) | ColdStartError::Restore(_) => {
                Vec::new()
            }
            ColdStartError::Init { logs, .. } | ColdStartError::InitTimeout(_, logs) => {
                std::mem::take(logs)
            }
        }
    }
}

/// RAII count of sandboxes in the starting state, in total and per version.
struct Starting<'a>(&'a Inner, crate::spec::FunctionKey);

impl<'a> Starting<'a> {
    fn new(inner: &'a Inner, spec: &FunctionVersionSpec) -> Self {
        let key = spec.key();
        let mut st = inner.lock();
        st.starting += 1;
        *st.starting_keys.entry(key.clone()).or_default() += 1;
        st.memory_mib.insert(key.clone(), spec.memory_mib);
        drop(st);
        Self(inner, key)
    }
}

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.starting = st.starting.saturating_sub(1);
        if let Some(n) = st.starting_keys.get_mut(&self.1) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.starting_keys.remove(&self.1);
            }
        }
    }
}

pub(crate) async fn start(
    inner: &Inner,
    spec: &FunctionVersionSpec,
    limit: Duration,
) -> Result<Started, ColdStartError> {
    let _starting = Starting::new(inner, spec);
    let id = inner.new_sandbox_id();
    // Fetching code has its own bound and is not the function's init: the clock starts
    // once the code is in place.
    let fetch = Instant::now();
    let (local_spec, code_dir) = match inner.unpack_code(spec, &id).await {
        Ok(Some((s, d))) => (Some(s), d),
        Ok(None) => (None, None),
        Err(e) => {
            eprintln!("worker: sandbox {id} ({}:{}): {e}", spec.name, spec.version);
            return Err(ColdStartError::Code(e));
        }
    };
    let spec = local_spec.as_ref().unwrap_or(spec);
    let code_ms = local_spec
        .as_ref()
        .map(|_| fetch.elapsed().as_secs_f64() * 1000.0);
    // Outside the Init bound too: a SnapStart version's snapshot, whose Init Lambda
    // runs when the version is published.
    let prepared = inner.backend.prepare(spec).await;
    let snapshot_init = prepared.map(|init| log_snapshot_init(inner, spec, init));
    let t0 = Instant::now();
    let deadline = tokio::time::Instant::from_std(t0 + limit);
    let created = create(inner, spec, &id, deadline, code_dir).await;
    let mut sb = match created {
        Ok(Ok(mut sb)) => {
            if let Some(sink) = inner.log_sink(spec) {
                sb.set_log_sink(sink);
            }
            sb
        }
        Ok(Err(e)) => {
            eprintln!(
                "worker: sandbox {id} ({}:{}) failed to start: {e}",
                spec.name, spec.version
            );
            return Err(ColdStartError::Start(e));
        }
        Err(_) => {
            eprintln!(
                "worker: sandbox {id} ({}:{}) did not start within {limit:?}",
                spec.name, spec.version
            );
            return Err(ColdStartError::InitTimeout(limit, Vec::new()));
        }
    };
    let result = tokio::time::timeout_at(deadline, sb.init()).await;
    let attempt = Attempt {
        id,
        t0,
        limit,
        code_ms,
        snapshot_init,
    };
    conclude(inner, spec, sb, attempt, result)
}

/// What a cold start knows besides its sandbox once Init (or the restore) ended.
struct Attempt {
    id: String,
    t0: Instant,
    limit: Duration,
    code_ms: Option<f64>,
    snapshot_init: Option<String>,
}

/// Logs the Init a SnapStart snapshot was taken after (its output and INIT_REPORT)
/// before the restore that follows, which may fail; returns the text for the caller's
/// log tail.
fn log_snapshot_init(
    inner: &Inner,
    spec: &FunctionVersionSpec,
    init: crate::sandbox::SnapshotInit,
) -> String {
    let mut text = String::new();
    super::init_phase::push_lines(&mut text, &init.logs);
    text.push_str(&crate::report::snapshot_init_report_line(init.took));
    inner.log_platform(spec, &text);
    text
}

/// The started sandbox, or why not (destroying it).
fn conclude(
    inner: &Inner,
    spec: &FunctionVersionSpec,
    mut sb: Box<dyn Sandbox>,
    a: Attempt,
    result: Result<Result<(), SandboxError>, tokio::time::error::Elapsed>,
) -> Result<Started, ColdStartError> {
    let logs = sb.take_logs();
    let id = a.id;
    match result {
        Ok(Ok(())) => {
            let init_duration = a.t0.elapsed();
            inner.metrics.cold_start(init_duration);
            let code = a
                .code_ms
                .map(|ms| format!(" after {ms:.1} ms getting its code"));
            let details = sb
                .start_details()
                .map(|d| format!(": {d}"))
                .unwrap_or_default();
            eprintln!(
                "worker: sandbox {id} ({}:{}, {}) ready in {} ms{}{details}",
                spec.name,
                spec.version,
                inner.backend.name(),
                init_duration.as_millis(),
                code.unwrap_or_default(),
            );
            Ok(Started {
                sandbox: sb,
                id,
                init_duration,
                logs,
                snapshot_init: a.snapshot_init,
            })
        }
        Ok(Err(SandboxError::Start(m))) => {
            report_console(&id, sb.as_ref(), &m);
            inner.destroy_all(vec![sb]);
            Err(ColdStartError::Start(SandboxError::Start(m)))
        }
        Ok(Err(SandboxError::Restore { error_type, body })) => {
            report_console(&id, sb.as_ref(), &format!("restore failed: {error_type}"));
            inner.destroy_all(vec![sb]);
            let failure = crate::spec::SnapStartFailure::hook(error_type, &body);
            Err(ColdStartError::Restore(failure))
        }
        Ok(Err(error)) => {
            report_console(&id, sb.as_ref(), &error.to_string());
            inner.destroy_all(vec![sb]);
            Err(ColdStartError::Init {
                error,
                logs,
                duration: a.t0.elapsed(),
            })
        }
        Err(_) => {
            let limit = a.limit;
            report_console(
                &id,
                sb.as_ref(),
                &format!("init did not finish within {limit:?}"),
            );
            let restoring = sb.is_restored();
            inner.destroy_all(vec![sb]);
            if restoring {
                let failure = crate::spec::SnapStartFailure::Timeout(limit);
                return Err(ColdStartError::Restore(failure));
            }
            Err(ColdStartError::InitTimeout(limit, logs))
        }
    }
}

/// Creates the sandbox within `deadline`; with `code_dir`, the directory goes with it.
async fn create(
    inner: &Inner,
    spec: &FunctionVersionSpec,
    id: &str,
    deadline: tokio::time::Instant,
    code_dir: Option<crate::code::unpack::CodeDir>,
) -> Result<Result<Box<dyn Sandbox>, SandboxError>, tokio::time::error::Elapsed> {
    let created = tokio::time::timeout_at(deadline, inner.backend.create(spec, id)).await;
    match (created, code_dir) {
        (Ok(Ok(sb)), Some(code_dir)) => Ok(Ok(Box::new(crate::code::unpack::WithCode {
            inner: sb,
            code_dir,
        }))),
        // A failed start drops `code_dir`, which removes it.
        (other, _) => other,
    }
}

/// A failed init is explained in the worker's log with what the sandbox printed on its
/// console (a microVM's kernel and guest-init output), if anything.
fn report_console(id: &str, sb: &dyn Sandbox, why: &str) {
    match sb.console_tail() {
        Some(text) if !text.is_empty() => {
            eprintln!("worker: sandbox {id}: {why}; its console ended with:\n{text}")
        }
        _ => eprintln!("worker: sandbox {id}: {why}"),
    }
}
