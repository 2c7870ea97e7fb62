//! Test Lambda function built with the `lambda_runtime` crate from crates.io.
//!
//! One binary serves every test case: `_HANDLER` picks the behaviour, so the same
//! executable can be dropped into `/var/task/bootstrap` for each scenario.
//!
//! Handlers:
//! - `echo`: returns the event unchanged.
//! - `context`: returns the invocation context, selected environment variables, the
//!   uid it runs as and the event itself (under `payload`).
//! - `error`: returns a typed error (`FunctionError` / "deliberate failure").
//! - `panic`: panics inside the handler.
//! - `sleep`: sleeps until 5 s past the invocation deadline.
//! - `exit`: prints a line and exits the process with status 7 mid-invoke.
//! - `abort`: aborts the process (SIGABRT) mid-invoke.
//! - `log`: prints lines on stdout and stderr, then returns `"logged"`.
//! - `big`: returns a JSON string of `event.size` bytes (quotes included).
//! - `stream`: a streamed response (`Lambda-Runtime-Function-Response-Mode: streaming`)
//!   of three chunks.
//! - `stream-slow`: streams `chunk-1 `, sleeps 1 s, streams `chunk-2`.
//! - `stream-exit`: streams `chunk-1 `, then exits with status 7 mid-stream.
//! - `stream-hang`: streams `chunk-1 `, then sleeps until 5 s past the deadline.
//! - `stream-error`: a hand-written runtime loop (not `lambda_runtime`, whose mid-stream
//!   errors end up in the body) that streams `partial ` and then ends the response with
//!   the `Lambda-Runtime-Function-Error-Type` / `-Body` trailers.
//! - `stream-big`: the same loop, streaming `STREAM_BIG_MIB` MiB (default 64).

mod raw_stream;

use futures_util::stream::{self, Stream};
use lambda_runtime::{service_fn, streaming, Diagnostic, LambdaEvent};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    let handler = std::env::var("_HANDLER").unwrap_or_default();
    if handler == "init-fail" {
        // Exiting before the first /next is an init-phase runtime exit.
        eprintln!("fn-rust: failing init on purpose");
        std::process::exit(3);
    }
    if handler == "stream" {
        return lambda_runtime::run(service_fn(stream_handler)).await;
    }
    if handler == "stream-error" || handler == "stream-big" {
        return raw_stream::serve(handler == "stream-big").map_err(Into::into);
    }
    if handler.starts_with("stream-") {
        return lambda_runtime::run(service_fn(move |event| {
            let handler = handler.clone();
            async move { paced_stream_handler(&handler, event) }
        }))
        .await;
    }
    lambda_runtime::run(service_fn(move |event| {
        let handler = handler.clone();
        async move { handle(&handler, event).await }
    }))
    .await
}

async fn handle(handler: &str, event: LambdaEvent<Value>) -> Result<Value, Diagnostic> {
    let (payload, ctx) = event.into_parts();
    match handler {
        "echo" => Ok(payload),
        "context" => Ok(json!({
            "request_id": ctx.request_id,
            "deadline": ctx.deadline,
            "invoked_function_arn": ctx.invoked_function_arn,
            "xray_trace_id": ctx.xray_trace_id,
            "client_context_present": ctx.client_context.is_some(),
            "identity_pool": ctx.identity.map(|i| i.identity_pool_id),
            "env": env_snapshot(),
            "uid": current_uid(),
            "payload": payload,
        })),
        "error" => Err(Diagnostic {
            error_type: "FunctionError".to_string(),
            error_message: "deliberate failure".to_string(),
        }),
        "panic" => panic!("deliberate panic"),
        "sleep" => {
            let wait = ctx.deadline.saturating_sub(now_ms()) + 5_000;
            tokio::time::sleep(Duration::from_millis(wait)).await;
            Ok(json!("woke up"))
        }
        "exit" => {
            println!("fn-rust: exiting mid-invoke");
            std::process::exit(7);
        }
        "abort" => std::process::abort(),
        "log" => {
            println!("fn-rust: stdout line for {}", ctx.request_id);
            eprintln!("fn-rust: stderr line for {}", ctx.request_id);
            Ok(json!("logged"))
        }
        "big" => {
            let size = payload.get("size").and_then(Value::as_u64).unwrap_or(0);
            let inner = usize::try_from(size.saturating_sub(2)).unwrap_or(0);
            Ok(Value::String("x".repeat(inner)))
        }
        other => Err(Diagnostic {
            error_type: "UnknownHandler".to_string(),
            error_message: format!("fn-rust has no handler named {other:?}"),
        }),
    }
}

/// Streams three chunks through lambda_runtime's streaming support.
async fn stream_handler(
    _event: LambdaEvent<Value>,
) -> Result<
    streaming::Response<stream::Iter<std::vec::IntoIter<Result<&'static str, Infallible>>>>,
    Diagnostic,
> {
    let chunks = vec![Ok("chunk-1 "), Ok("chunk-2 "), Ok("chunk-3")];
    Ok(streaming::Response::from(stream::iter(chunks)))
}

/// One step of a paced stream.
enum Step {
    Chunk(&'static str),
    Sleep(Duration),
    Exit(i32),
}

type PacedStream = Pin<Box<dyn Stream<Item = Result<&'static str, Infallible>> + Send>>;

/// Streams chunks with pauses (or an exit) between them, as the handler name says.
fn paced_stream_handler(
    handler: &str,
    event: LambdaEvent<Value>,
) -> Result<streaming::Response<PacedStream>, Diagnostic> {
    let steps = match handler {
        "stream-slow" => vec![
            Step::Chunk("chunk-1 "),
            Step::Sleep(Duration::from_secs(1)),
            Step::Chunk("chunk-2"),
        ],
        "stream-exit" => vec![
            Step::Chunk("chunk-1 "),
            Step::Sleep(Duration::from_millis(300)),
            Step::Exit(7),
        ],
        "stream-hang" => vec![
            Step::Chunk("chunk-1 "),
            Step::Sleep(Duration::from_millis(
                event.context.deadline.saturating_sub(now_ms()) + 5_000,
            )),
        ],
        other => {
            return Err(Diagnostic {
                error_type: "UnknownHandler".to_string(),
                error_message: format!("fn-rust has no handler named {other:?}"),
            })
        }
    };
    let chunks = stream::unfold(steps.into_iter(), |mut steps| async move {
        loop {
            match steps.next()? {
                Step::Chunk(c) => return Some((Ok(c), steps)),
                Step::Sleep(d) => tokio::time::sleep(d).await,
                Step::Exit(code) => std::process::exit(code),
            }
        }
    });
    let chunks: PacedStream = Box::pin(chunks);
    Ok(streaming::Response::from(chunks))
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The Lambda environment variables the tests check.
fn env_snapshot() -> Value {
    const KEYS: [&str; 16] = [
        "_HANDLER",
        "LAMBDA_TASK_ROOT",
        "LAMBDA_RUNTIME_DIR",
        "AWS_LAMBDA_RUNTIME_API",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_LAMBDA_LOG_STREAM_NAME",
        "AWS_LAMBDA_INITIALIZATION_TYPE",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "TZ",
        "PATH",
        "LD_LIBRARY_PATH",
        "CUSTOM_VAR",
    ];
    let map = KEYS
        .iter()
        .filter_map(|k| {
            std::env::var(k)
                .ok()
                .map(|v| (k.to_string(), Value::String(v)))
        })
        .collect();
    Value::Object(map)
}

/// Real uid from /proc, so the test can check the runtime's privilege drop.
fn current_uid() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
