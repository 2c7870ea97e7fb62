//! Lambda's Init phase for a cold start, and the "suppressed init" after a failed one:
//! when the Init phase (bounded by the 10 s init timeout) times out or fails, Lambda
//! logs `INIT_REPORT ... Phase: init Status: timeout|error` and initializes again inside
//! the invoke phase, within the function's own timeout. If that fails too, the invoke
//! fails with `Sandbox.Timedout` ("Task timed out after <Timeout> seconds") or the init
//! error, logged as `INIT_REPORT ... Phase: invoke`.

use super::cold::{self, ColdStartError};
use super::memory;
use super::Inner;
use crate::report;
use crate::sandbox::{LogLine, Sandbox, SandboxError};
use crate::spec::{FunctionVersionSpec, InvokeResult};
use std::time::{Duration, Instant};

/// A sandbox whose init succeeded (at once or suppressed), with its log lines.
pub(crate) struct Ready {
    pub sandbox: Box<dyn Sandbox>,
    pub id: String,
    /// `Init Duration` for REPORT: only when the Init phase itself succeeded.
    pub init_duration: Option<Duration>,
    /// Function timeout already used by a suppressed init.
    pub used: Duration,
    /// Lines before `START` (the Init phase) and after it (a suppressed init), for the
    /// caller's `LogType=Tail` (the log file has them already).
    pub before_start: String,
    pub after_start: String,
    /// A suppressed init ran, so `START` is already in the log.
    pub started: bool,
}

/// Why no sandbox is ready.
pub(crate) enum NotReady {
    /// Infrastructure failure: a service error, not the function's.
    Service(SandboxError),
    /// The function's code could not be had or unpacked.
    Code(crate::code::CodeError),
    /// The host has no memory for another sandbox: a throttle, retried like one.
    NoCapacity,
    /// Both inits failed: the invoke's result, as Lambda gives it.
    Failed(FailedInit),
    /// A SnapStart restore failed: Lambda's SnapStart error, not a suppressed init.
    SnapStart(crate::spec::SnapStartFailure),
}

pub(crate) struct FailedInit {
    pub result: InvokeResult,
    /// `timeout` or `error`, for REPORT.
    pub status: &'static str,
    pub before_start: String,
    pub after_start: String,
    /// Time the suppressed init took (billed, as on Lambda).
    pub duration: Duration,
    /// What the worker itself adds to the log after the suppressed init's lines.
    pub platform_lines: String,
}

pub(crate) fn push_lines(out: &mut String, lines: &[LogLine]) {
    for l in lines {
        out.push_str(&l.text);
        out.push('\n');
    }
}

/// `Status` and `Error Type` of a failed init; the init error's JSON body.
fn describe(e: &ColdStartError) -> (&'static str, Option<String>) {
    match e {
        ColdStartError::InitTimeout(..) => ("timeout", None),
        ColdStartError::Init { error, .. } => ("error", Some(error_type_of(error))),
        ColdStartError::Start(_) | ColdStartError::Code(_) | ColdStartError::Restore(_) => {
            ("error", None)
        }
    }
}

fn error_type_of(e: &SandboxError) -> String {
    match e {
        SandboxError::Init { error_type, .. } | SandboxError::Exited { error_type, .. } => {
            error_type.clone()
        }
        _ => "Runtime.Unknown".to_owned(),
    }
}

fn duration_of(e: &ColdStartError, limit: Duration) -> Duration {
    match e {
        ColdStartError::Init { duration, .. } => *duration,
        _ => limit,
    }
}

/// Runs the Init phase and, if it fails, the suppressed init.
pub(crate) async fn cold_start(
    inner: &Inner,
    spec: &FunctionVersionSpec,
    request_id: &str,
) -> Result<Ready, NotReady> {
    // Held until the Init phase is over: by then the sandbox's memory is in use.
    let Some(_memory) = memory::reserve(inner, spec).await else {
        return Err(NotReady::NoCapacity);
    };
    let limit = inner.cfg.init_timeout;
    let mut first = match cold::start(inner, spec, limit).await {
        Ok(s) => {
            let mut before_start = s.snapshot_init.unwrap_or_default();
            push_lines(&mut before_start, &s.logs);
            return Ok(Ready {
                sandbox: s.sandbox,
                id: s.id,
                init_duration: Some(s.init_duration),
                used: Duration::ZERO,
                before_start,
                after_start: String::new(),
                started: false,
            });
        }
        Err(ColdStartError::Start(e)) => return Err(NotReady::Service(e)),
        Err(ColdStartError::Code(e)) => return Err(NotReady::Code(e)),
        Err(ColdStartError::Restore(f)) => return Err(NotReady::SnapStart(f)),
        Err(e) => e,
    };
    let mut before_start = String::new();
    push_lines(&mut before_start, &first.take_logs());
    let (status, error_type) = describe(&first);
    let init_report = report::init_report_line(
        duration_of(&first, limit),
        "init",
        status,
        error_type.as_deref(),
    );
    inner.log_platform(spec, &init_report);
    before_start.push_str(&init_report);
    // The suppressed init is part of the invoke phase.
    inner.log_platform(spec, &report::start_line(request_id, &spec.version));
    let t0 = Instant::now();
    match cold::start(inner, spec, spec.timeout).await {
        Ok(s) => {
            let mut after_start = String::new();
            push_lines(&mut after_start, &s.logs);
            Ok(Ready {
                sandbox: s.sandbox,
                id: s.id,
                init_duration: None,
                used: t0.elapsed(),
                before_start,
                after_start,
                started: true,
            })
        }
        Err(ColdStartError::Start(e)) => Err(NotReady::Service(e)),
        Err(ColdStartError::Code(e)) => Err(NotReady::Code(e)),
        Err(ColdStartError::Restore(f)) => Err(NotReady::SnapStart(f)),
        Err(second) => {
            let f = failed_twice(spec, request_id, second, before_start, t0.elapsed());
            inner.log_platform(spec, &f.platform_lines);
            Err(NotReady::Failed(f))
        }
    }
}

fn failed_twice(
    spec: &FunctionVersionSpec,
    rid: &str,
    mut second: ColdStartError,
    before_start: String,
    took: Duration,
) -> FailedInit {
    let mut after_start = String::new();
    push_lines(&mut after_start, &second.take_logs());
    let (status, error_type) = describe(&second);
    let mut platform_lines = report::init_report_line(
        duration_of(&second, spec.timeout),
        "invoke",
        status,
        error_type.as_deref(),
    );
    let result = match second {
        ColdStartError::InitTimeout(..) => {
            platform_lines.push_str(&report::timeout_log_line(rid, spec.timeout));
            InvokeResult::FunctionError {
                error_type: "Sandbox.Timedout".into(),
                body: report::error_body(
                    "Sandbox.Timedout",
                    &report::timeout_message(rid, spec.timeout),
                ),
            }
        }
        ColdStartError::Init { error, .. } => init_error_result(rid, error),
        ColdStartError::Start(e) => init_error_result(rid, e),
        ColdStartError::Code(e) => init_error_result(rid, SandboxError::Start(e.to_string())),
        ColdStartError::Restore(f) => init_error_result(rid, SandboxError::Start(f.to_string())),
    };
    after_start.push_str(&platform_lines);
    FailedInit {
        result,
        status,
        before_start,
        after_start,
        duration: took,
        platform_lines,
    }
}

/// The init error as the caller sees it: the runtime's own error document, or Lambda's
/// for a runtime that died.
fn init_error_result(rid: &str, error: SandboxError) -> InvokeResult {
    match error {
        SandboxError::Init { error_type, body } => InvokeResult::FunctionError { error_type, body },
        SandboxError::Exited {
            error_type,
            message,
        } => InvokeResult::FunctionError {
            body: report::error_body(&error_type, &report::exit_message(rid, &message)),
            error_type,
        },
        other => InvokeResult::FunctionError {
            error_type: "Runtime.Unknown".into(),
            body: report::error_body(
                "Runtime.Unknown",
                &format!("RequestId: {rid} Error: {other}"),
            ),
        },
    }
}
