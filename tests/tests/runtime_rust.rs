//! guest-init as a host process running the `lambda_runtime` (crates.io) test function.

use integration_tests::images::require;
use integration_tests::runtime::guest::{init, invoke, json_string_of_len};
use integration_tests::runtime::{binaries, functions, GuestProcess, InvokeOutcome, Sandbox};
use runtime_api::protocol::{GuestMessage, LogStream};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// A guest-init running fn-rust with `handler`, past its init phase.
fn start(handler: &str) -> Option<(Sandbox, GuestProcess)> {
    let ready = binaries::guest_init().and(binaries::fn_rust());
    require("runtime_rust", ready)?;
    let sb = Sandbox::new().expect("sandbox");
    functions::stage_rust(&sb).expect("stage fn-rust");
    let mut g = GuestProcess::start(&sb, &[]).expect("start guest-init");
    g.send_init(&init(handler, &[("CUSTOM_VAR", "custom-value".into())]));
    g.wait_init(T).expect("init succeeds");
    Some((sb, g))
}

#[test]
fn echo_round_trips_1_kib_and_6_mb_payloads() {
    let Some((_sb, mut g)) = start("echo") else {
        return;
    };
    for len in [1024, 6 * 1024 * 1024] {
        let payload = json_string_of_len(len);
        match g.invoke(invoke(payload.clone(), 30_000), T) {
            InvokeOutcome::Response(out) => {
                assert_eq!(out.len(), len);
                assert!(out == payload, "echo of {len} bytes differs");
            }
            other => panic!("{len}-byte echo failed: {other:?}"),
        }
    }
    assert_eq!(g.shutdown(1000).map(|s| s.success()), Some(true));
}

#[test]
fn empty_payload_gets_the_clients_unmarshal_error_and_runtime_survives() {
    let Some((_sb, mut g)) = start("echo") else {
        return;
    };
    match g.invoke(invoke(Vec::new(), 30_000), T) {
        InvokeOutcome::Error { error_type, body } => {
            // lambda_runtime reports its own deserialisation error type for a 0-byte event.
            assert!(error_type.contains("DeserializeError"), "{error_type}");
            assert_eq!(body["errorType"], error_type.as_str());
            assert!(body["errorMessage"]
                .as_str()
                .unwrap_or("")
                .contains("deserialize"));
        }
        other => panic!("unexpected {other:?}"),
    }
    let next = g.invoke(invoke(&b"{\"a\":1}"[..], 30_000), T);
    assert_eq!(next, InvokeOutcome::Response(b"{\"a\":1}".to_vec()));
}

#[test]
fn context_headers_and_environment_reach_the_function() {
    let Some((_sb, mut g)) = start("context") else {
        return;
    };
    let mut inv = invoke(&b"{}"[..], 30_000);
    inv.client_context = Some(r#"{"client":{"installation_id":"i","app_title":"t","app_version_name":"v","app_version_code":"c","app_package_name":"p"},"custom":{},"env":{}}"#.into());
    inv.cognito_identity = Some(r#"{"identity_id":"id-1","identity_pool_id":"pool-1"}"#.into());
    let (id, deadline, trace) = (
        inv.request_id.clone(),
        inv.deadline_ms,
        inv.trace_id.clone(),
    );
    let InvokeOutcome::Response(out) = g.invoke(inv, T) else {
        panic!("context handler failed")
    };
    let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(v["request_id"], id.as_str());
    // guest-init gives the function the time left when the host sent the invoke, on its
    // own clock: here the same clock, so the deadline moves by the transit time (often
    // a millisecond boundary crossed), never earlier.
    let seen = v["deadline"].as_u64().expect("deadline");
    assert!(
        (deadline..deadline + 1000).contains(&seen),
        "{seen} vs {deadline}"
    );
    assert_eq!(
        v["invoked_function_arn"],
        integration_tests::runtime::guest::TEST_ARN
    );
    assert_eq!(v["xray_trace_id"], trace.as_deref().unwrap_or_default());
    assert_eq!(v["client_context_present"], true);
    assert_eq!(v["identity_pool"], "pool-1");
    let env = &v["env"];
    assert_eq!(env["_HANDLER"], "context");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_NAME"], "test-fn");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "128");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_VERSION"], "$LATEST");
    assert_eq!(env["AWS_LAMBDA_LOG_GROUP_NAME"], "/aws/lambda/test-fn");
    assert_eq!(env["AWS_LAMBDA_INITIALIZATION_TYPE"], "on-demand");
    assert_eq!(env["AWS_REGION"], "us-east-1");
    assert_eq!(env["AWS_DEFAULT_REGION"], "us-east-1");
    assert_eq!(env["TZ"], ":UTC");
    assert_eq!(env["CUSTOM_VAR"], "custom-value");
    let api = env["AWS_LAMBDA_RUNTIME_API"].as_str().unwrap_or_default();
    assert!(
        api.starts_with("127.0.0.1:") && !api.ends_with(":9001"),
        "{api}"
    );
    // As a host process the runtime keeps the caller's uid.
    let my_uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(str::to_string)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|u| u.parse::<u64>().ok())
        });
    assert_eq!(v["uid"].as_u64(), my_uid);
}

#[test]
fn returned_error_has_lambda_shape() {
    let Some((_sb, mut g)) = start("error") else {
        return;
    };
    match g.invoke(invoke(&b"{}"[..], 30_000), T) {
        InvokeOutcome::Error { error_type, body } => {
            assert_eq!(error_type, "FunctionError");
            assert_eq!(body["errorType"], "FunctionError");
            assert_eq!(body["errorMessage"], "deliberate failure");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn panic_is_reported_as_an_error_and_the_runtime_keeps_serving() {
    let Some((_sb, mut g)) = start("panic") else {
        return;
    };
    for _ in 0..2 {
        match g.invoke(invoke(&b"{}"[..], 30_000), T) {
            InvokeOutcome::Error { error_type, body } => {
                assert!(!error_type.is_empty());
                let msg = body["errorMessage"].as_str().unwrap_or_default();
                assert!(msg.contains("deliberate panic"), "{body}");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn logs_arrive_tagged_with_the_request_id() {
    let Some((_sb, mut g)) = start("log") else {
        return;
    };
    let inv = invoke(&b"{}"[..], 30_000);
    let id = inv.request_id.clone();
    assert_eq!(
        g.invoke(inv, T),
        InvokeOutcome::Response(b"\"logged\"".to_vec())
    );
    let want_out = format!("fn-rust: stdout line for {id}");
    let want_err = format!("fn-rust: stderr line for {id}");
    assert!(g.wait_log(&want_err, T).is_some() && g.wait_log(&want_out, T).is_some());
    let lines = g.logs_for(&id);
    assert!(lines.contains(&(LogStream::Stdout, want_out)), "{lines:?}");
    assert!(lines.contains(&(LogStream::Stderr, want_err)), "{lines:?}");
}

#[test]
fn exit_mid_invoke_is_runtime_exit_error() {
    let Some((_sb, mut g)) = start("exit") else {
        return;
    };
    let inv = invoke(&b"{}"[..], 30_000);
    let id = inv.request_id.clone();
    match g.invoke(inv, T) {
        InvokeOutcome::Error { error_type, body } => {
            assert_eq!(error_type, "Runtime.ExitError");
            assert_eq!(body["errorType"], "Runtime.ExitError");
            assert_eq!(
                body["errorMessage"],
                format!("RequestId: {id} Error: Runtime exited with error: exit status 7").as_str()
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    // The line printed just before exiting still carries the request id.
    assert!(g
        .logs_for(&id)
        .iter()
        .any(|(_, l)| l == "fn-rust: exiting mid-invoke"));
    let exited = g.recv(T);
    assert!(
        matches!(&exited, Some(GuestMessage::RuntimeExited(e)) if e.message == "Runtime exited with error: exit status 7"),
        "{exited:?}"
    );
    // Nothing can serve later invocations: they fail at once with the same cause.
    let late = invoke(&b"{}"[..], 30_000);
    let late_id = late.request_id.clone();
    match g.invoke(late, T) {
        InvokeOutcome::Error { error_type, body } => {
            assert_eq!(error_type, "Runtime.ExitError");
            assert_eq!(
                body["errorMessage"],
                format!("RequestId: {late_id} Error: Runtime exited with error: exit status 7")
                    .as_str()
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn oversized_response_is_function_response_size_too_large() {
    let Some((_sb, mut g)) = start("big") else {
        return;
    };
    let inv = invoke(&br#"{"size":6291557}"#[..], 30_000);
    match g.invoke(inv, T) {
        InvokeOutcome::Error { error_type, body } => {
            assert_eq!(error_type, "Function.ResponseSizeTooLarge");
            assert_eq!(
                body["errorMessage"],
                "Response payload size exceeded maximum allowed payload size (6291556 bytes)."
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    // Exactly at the limit is still a response.
    match g.invoke(invoke(&br#"{"size":6291556}"#[..], 30_000), T) {
        InvokeOutcome::Response(out) => assert_eq!(out.len(), 6_291_556),
        other => panic!("at-limit response failed: {other:?}"),
    }
}

#[test]
fn sleeping_past_the_deadline_is_stopped_by_shutdown() {
    let Some((_sb, mut g)) = start("sleep") else {
        return;
    };
    let inv = invoke(&b"{}"[..], 1_000);
    // The host owns the timeout: nothing may come back before the deadline.
    assert_eq!(
        g.invoke(inv, Duration::from_millis(1_500)),
        InvokeOutcome::Timeout
    );
    let started = std::time::Instant::now();
    let status = g.shutdown(500).expect("guest-init exits after Shutdown");
    assert!(status.success(), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[test]
fn init_phase_exit_is_an_init_error() {
    let ready = binaries::guest_init().and(binaries::fn_rust());
    let Some(_) = require("runtime_rust", ready) else {
        return;
    };
    let sb = Sandbox::new().expect("sandbox");
    functions::stage_rust(&sb).expect("stage");
    let mut g = GuestProcess::start(&sb, &[]).expect("start");
    g.send_init(&init("init-fail", &[]));
    let err = g.wait_init(T).expect_err("init must fail");
    assert_eq!(err.error_type, "Runtime.ExitError");
    let body: serde_json::Value = serde_json::from_slice(&err.body).expect("json");
    assert_eq!(
        body["errorMessage"],
        "Error: Runtime exited with error: exit status 3"
    );
    assert!(g.wait_log("fn-rust: failing init on purpose", T).is_some());
}

#[test]
fn streamed_response_through_lambda_runtime() {
    let Some((_sb, mut g)) = start("stream") else {
        return;
    };
    match g.invoke(invoke(&b"{}"[..], 30_000), T) {
        InvokeOutcome::Streamed {
            content_type,
            data,
            error_type,
            ..
        } => {
            assert_eq!(
                content_type,
                "application/vnd.awslambda.http-integration-response"
            );
            // lambda_runtime sends its metadata prelude, 8 NUL bytes, then the chunks.
            let sep = data
                .windows(8)
                .position(|w| w == [0u8; 8])
                .expect("prelude separator");
            let prelude: serde_json::Value = serde_json::from_slice(&data[..sep]).expect("prelude");
            assert!(prelude.is_object(), "{prelude}");
            assert_eq!(&data[sep + 8..], b"chunk-1 chunk-2 chunk-3");
            assert_eq!(error_type, None);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn death_by_signal_is_described_like_lambda() {
    let Some((_sb, mut g)) = start("abort") else {
        return;
    };
    let inv = invoke(&b"{}"[..], 30_000);
    let id = inv.request_id.clone();
    match g.invoke(inv, T) {
        InvokeOutcome::Error { error_type, body } => {
            assert_eq!(error_type, "Runtime.ExitError");
            assert_eq!(
                body["errorMessage"],
                format!("RequestId: {id} Error: Runtime exited with error: signal: aborted")
                    .as_str()
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}
