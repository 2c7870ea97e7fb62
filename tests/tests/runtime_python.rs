//! guest-init as a host process running a Python function through `awslambdaric`
//! (the Runtime Interface Client from PyPI), bootstrapped from the runtime directory
//! as in the python3.11 rootfs.

use integration_tests::images::require;
use integration_tests::runtime::guest::{init, invoke, json_string_of_len};
use integration_tests::runtime::{binaries, functions, GuestProcess, InvokeOutcome, Sandbox};
use runtime_api::protocol::{GuestMessage, LogStream};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn start(handler: &str) -> Option<(Sandbox, GuestProcess)> {
    require("runtime_python", binaries::guest_init())?;
    let sb = Sandbox::new().expect("sandbox");
    let env = require(
        "runtime_python (awslambdaric)",
        functions::stage_python(&sb),
    )?;
    let mut g = GuestProcess::start(&sb, &[]).expect("start guest-init");
    g.send_init(&init(handler, &env));
    g.wait_init(T).expect("init succeeds");
    Some((sb, g))
}

#[test]
fn echo_round_trips_1_kib_and_6_mb_payloads() {
    let Some((_sb, mut g)) = start("app.echo") else {
        return;
    };
    for len in [1024, 6 * 1024 * 1024] {
        let payload = json_string_of_len(len);
        match g.invoke(invoke(payload.clone(), 60_000), T) {
            InvokeOutcome::Response(out) => assert!(out == payload, "{len}-byte echo differs"),
            other => panic!("{len}-byte echo failed: {other:?}"),
        }
    }
    assert_eq!(g.shutdown(1000).map(|s| s.success()), Some(true));
}

#[test]
fn empty_payload_is_the_clients_unmarshal_error() {
    let Some((_sb, mut g)) = start("app.echo") else {
        return;
    };
    match g.invoke(invoke(Vec::new(), 60_000), T) {
        InvokeOutcome::Error { error_type, body } => {
            assert_eq!(error_type, "Runtime.UnmarshalError");
            assert_eq!(body["errorType"], "Runtime.UnmarshalError");
            assert!(body["errorMessage"]
                .as_str()
                .unwrap_or_default()
                .contains("Unable to unmarshal"));
        }
        other => panic!("unexpected {other:?}"),
    }
    let ok = g.invoke(invoke(&b"[1,2]"[..], 60_000), T);
    assert_eq!(ok, InvokeOutcome::Response(b"[1, 2]".to_vec()));
}

#[test]
fn raised_exception_has_lambda_shape() {
    let Some((_sb, mut g)) = start("app.raises") else {
        return;
    };
    match g.invoke(invoke(&b"{}"[..], 60_000), T) {
        InvokeOutcome::Error { error_type, body } => {
            assert_eq!(error_type, "ValueError");
            assert_eq!(body["errorType"], "ValueError");
            assert_eq!(body["errorMessage"], "deliberate failure");
            let trace = body["stackTrace"].as_array().expect("stackTrace array");
            assert!(trace
                .iter()
                .any(|l| l.as_str().unwrap_or_default().contains("app.py")));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn prints_arrive_as_logs_tagged_with_the_request_id() {
    let Some((_sb, mut g)) = start("app.logs") else {
        return;
    };
    let inv = invoke(&b"{}"[..], 60_000);
    let id = inv.request_id.clone();
    assert_eq!(
        g.invoke(inv, T),
        InvokeOutcome::Response(b"\"logged\"".to_vec())
    );
    let want_out = format!("python stdout line for {id}");
    let want_err = format!("python stderr line for {id}");
    assert!(g.wait_log(&want_out, T).is_some() && g.wait_log(&want_err, T).is_some());
    let lines = g.logs_for(&id);
    assert!(lines.contains(&(LogStream::Stdout, want_out)), "{lines:?}");
    assert!(lines.contains(&(LogStream::Stderr, want_err)), "{lines:?}");
}

#[test]
fn context_object_matches_the_invoke() {
    let Some((_sb, mut g)) = start("app.context") else {
        return;
    };
    let inv = invoke(&b"{}"[..], 60_000);
    let id = inv.request_id.clone();
    let InvokeOutcome::Response(out) = g.invoke(inv, T) else {
        panic!("context handler failed")
    };
    let v: serde_json::Value = serde_json::from_slice(&out).expect("json");
    assert_eq!(v["request_id"], id.as_str());
    assert_eq!(v["function_name"], "test-fn");
    assert_eq!(v["memory_limit_in_mb"], "128");
    assert_eq!(
        v["invoked_function_arn"],
        integration_tests::runtime::guest::TEST_ARN
    );
    assert_eq!(v["remaining_ms_positive"], true);
}

#[test]
fn exit_mid_invoke_is_runtime_exit_error() {
    let Some((_sb, mut g)) = start("app.exit_now") else {
        return;
    };
    let inv = invoke(&b"{}"[..], 60_000);
    let id = inv.request_id.clone();
    match g.invoke(inv, T) {
        InvokeOutcome::Error { error_type, body } => {
            assert_eq!(error_type, "Runtime.ExitError");
            assert_eq!(
                body["errorMessage"],
                format!("RequestId: {id} Error: Runtime exited with error: exit status 7").as_str()
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(g
        .logs_for(&id)
        .iter()
        .any(|(_, l)| l == "python: exiting mid-invoke"));
    assert!(matches!(g.recv(T), Some(GuestMessage::RuntimeExited(_))));
}

#[test]
fn missing_handler_module_is_the_clients_init_error() {
    let Some((_sb, mut g)) = (|| {
        require("runtime_python", binaries::guest_init())?;
        let sb = Sandbox::new().expect("sandbox");
        let env = require(
            "runtime_python (awslambdaric)",
            functions::stage_python(&sb),
        )?;
        let g = GuestProcess::start(&sb, &[]).expect("start guest-init");
        g.send_init(&init("nosuchmodule.handler", &env));
        Some((sb, g))
    })() else {
        return;
    };
    let err = g.wait_init(T).expect_err("init must fail");
    assert_eq!(err.error_type, "Runtime.ImportModuleError");
    let body: serde_json::Value = serde_json::from_slice(&err.body).expect("json");
    assert_eq!(body["errorType"], "Runtime.ImportModuleError");
    assert!(body["errorMessage"]
        .as_str()
        .unwrap_or_default()
        .contains("nosuchmodule"));
}
