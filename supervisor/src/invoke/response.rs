//! HTTP responses of the Invoke API.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use worker::{InvokeOutcome, InvokeResult, ThrottleReason};

use super::headers::{log_tail, MAX_SYNC_RESPONSE_BYTES};

fn header(resp: &mut Response, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().insert(name, v);
    }
}

/// A successful payload above 6 MB becomes Lambda's `Function.ResponseSizeTooLarge`
/// (guest-init enforces the same limit; this keeps the frontend's promise on its own).
pub fn enforce_response_limit(result: InvokeResult) -> InvokeResult {
    match result {
        InvokeResult::Success(p) if p.len() > MAX_SYNC_RESPONSE_BYTES => {
            let error_type = "Function.ResponseSizeTooLarge".to_owned();
            let body = serde_json::json!({
                "errorMessage": format!(
                    "Response payload size ({} bytes) exceeded maximum allowed payload size ({MAX_SYNC_RESPONSE_BYTES} bytes).",
                    p.len()
                ),
                "errorType": error_type,
            })
            .to_string()
            .into_bytes();
            InvokeResult::FunctionError { error_type, body }
        }
        other => other,
    }
}

/// 200 with the payload (or the error JSON and `X-Amz-Function-Error: Unhandled`).
pub fn outcome(out: InvokeOutcome, tail_logs: bool) -> Response {
    let (body, error) = match out.result {
        InvokeResult::Success(p) => (p, None),
        InvokeResult::FunctionError { body, error_type } => (body, Some(error_type)),
    };
    let mut resp = (StatusCode::OK, Body::from(body)).into_response();
    header(&mut resp, "content-type", "application/json");
    header(&mut resp, "x-amz-executed-version", &out.executed_version);
    header(&mut resp, "x-amzn-requestid", &out.request_id);
    if error.is_some() {
        header(&mut resp, "x-amz-function-error", "Unhandled");
    }
    if tail_logs {
        header(&mut resp, "x-amz-log-result", &log_tail(&out.logs));
    }
    resp
}

/// InvokeWithResponseStream: 200 with the eventstream `body` (`PayloadChunk` events,
/// then `InvokeComplete`).
pub fn event_stream(body: Body, request_id: &str, executed_version: &str) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    header(
        &mut resp,
        "content-type",
        "application/vnd.amazon.eventstream",
    );
    header(&mut resp, "x-amz-executed-version", executed_version);
    header(&mut resp, "x-amzn-requestid", request_id);
    resp
}

/// The `InvokeComplete` event's JSON: `ErrorCode` and `ErrorDetails` for a function
/// error, `ServiceException` when there is no outcome, and `LogResult` when asked for.
pub fn invoke_complete(done: Result<&InvokeOutcome, &str>, tail_logs: bool) -> Vec<u8> {
    let mut complete = serde_json::Map::new();
    match done {
        Ok(out) => {
            if let InvokeResult::FunctionError { error_type, body } = &out.result {
                complete.insert("ErrorCode".into(), error_type.clone().into());
                complete.insert(
                    "ErrorDetails".into(),
                    String::from_utf8_lossy(body).into_owned().into(),
                );
            }
            if tail_logs {
                complete.insert("LogResult".into(), log_tail(&out.logs).into());
            }
        }
        Err(why) => {
            complete.insert("ErrorCode".into(), "ServiceException".into());
            complete.insert("ErrorDetails".into(), why.into());
        }
    }
    serde_json::Value::Object(complete).to_string().into_bytes()
}

/// 429 `TooManyRequestsException` with Lambda's `Reason`.
pub fn throttled(reason: ThrottleReason, request_id: &str) -> Response {
    let body = serde_json::json!({
        "Type": "User",
        "message": reason.message(),
        "Reason": reason.as_str(),
    });
    let mut resp = (StatusCode::TOO_MANY_REQUESTS, axum::Json(body)).into_response();
    header(&mut resp, "x-amzn-errortype", "TooManyRequestsException");
    header(&mut resp, "x-amzn-requestid", request_id);
    resp
}

/// 202 for a stored `Event` invocation; the request id is the event's.
pub fn accepted(request_id: &str) -> Response {
    let mut resp = StatusCode::ACCEPTED.into_response();
    header(&mut resp, "x-amzn-requestid", request_id);
    resp
}

/// 204 for `DryRun`.
pub fn dry_run(request_id: &str) -> Response {
    let mut resp = StatusCode::NO_CONTENT.into_response();
    header(&mut resp, "x-amzn-requestid", request_id);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn out(result: InvokeResult) -> InvokeOutcome {
        InvokeOutcome {
            request_id: "rid".into(),
            executed_version: "$LATEST".into(),
            result,
            logs: "START\nEND\nREPORT\n".into(),
            report: worker::Report {
                duration: Duration::from_millis(1),
                billed_ms: 1,
                memory_size_mb: 128,
                max_memory_used_mb: 10,
                init_duration: None,
                billed_restore: None,
                status: None,
                error_type: None,
            },
        }
    }

    #[test]
    fn function_errors_keep_200_and_flag_unhandled() {
        let r = outcome(
            out(InvokeResult::FunctionError {
                error_type: "X".into(),
                body: b"{}".to_vec(),
            }),
            true,
        );
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()["x-amz-function-error"], "Unhandled");
        assert_eq!(r.headers()["x-amz-executed-version"], "$LATEST");
        assert_eq!(r.headers()["x-amz-log-result"], "U1RBUlQKRU5EClJFUE9SVAo=");
        let r = outcome(out(InvokeResult::Success(b"1".to_vec())), false);
        assert!(r.headers().get("x-amz-function-error").is_none());
        assert!(r.headers().get("x-amz-log-result").is_none());
    }

    #[test]
    fn oversized_responses_become_function_errors() {
        let big = InvokeResult::Success(vec![b'x'; MAX_SYNC_RESPONSE_BYTES + 1]);
        match enforce_response_limit(big) {
            InvokeResult::FunctionError { error_type, .. } => {
                assert_eq!(error_type, "Function.ResponseSizeTooLarge")
            }
            other => panic!("unexpected {other:?}"),
        }
        let ok = InvokeResult::Success(vec![b'x'; MAX_SYNC_RESPONSE_BYTES]);
        assert!(matches!(
            enforce_response_limit(ok),
            InvokeResult::Success(_)
        ));
    }

    #[test]
    fn invoke_complete_carries_the_error_and_the_log_tail() {
        let json = |b: Vec<u8>| -> serde_json::Value { serde_json::from_slice(&b).expect("json") };
        let ok = out(InvokeResult::Success(Vec::new()));
        assert_eq!(json(invoke_complete(Ok(&ok), false)), serde_json::json!({}));
        assert_eq!(
            json(invoke_complete(Ok(&ok), true))["LogResult"],
            "U1RBUlQKRU5EClJFUE9SVAo="
        );
        let failed = out(InvokeResult::FunctionError {
            error_type: "Sandbox.Timedout".into(),
            body: br#"{"errorType":"Sandbox.Timedout"}"#.to_vec(),
        });
        let c = json(invoke_complete(Ok(&failed), false));
        assert_eq!(c["ErrorCode"], "Sandbox.Timedout");
        assert_eq!(c["ErrorDetails"], r#"{"errorType":"Sandbox.Timedout"}"#);
        assert!(c.get("LogResult").is_none());
        let c = json(invoke_complete(Err("worker gone"), true));
        assert_eq!(c["ErrorCode"], "ServiceException");
        assert_eq!(c["ErrorDetails"], "worker gone");
    }

    #[test]
    fn throttle_carries_reason() {
        let r = throttled(ThrottleReason::ConcurrentInvocationLimitExceeded, "x");
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(r.headers()["x-amzn-errortype"], "TooManyRequestsException");
    }
}
