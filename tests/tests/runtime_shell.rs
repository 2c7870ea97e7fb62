//! guest-init as a host process running a shell `bootstrap` in the style of AWS's custom
//! runtime tutorial (curl against the Runtime API).

use integration_tests::images::require;
use integration_tests::runtime::guest::{init, invoke, json_string_of_len};
use integration_tests::runtime::{binaries, functions, GuestProcess, InvokeOutcome, Sandbox};
use runtime_api::protocol::{GuestMessage, LogStream};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

fn start(handler: &str) -> Option<(Sandbox, GuestProcess)> {
    require("runtime_shell", binaries::guest_init())?;
    let sb = Sandbox::new().expect("sandbox");
    require("runtime_shell (curl)", functions::stage_shell(&sb))?;
    let mut g = GuestProcess::start(&sb, &[]).expect("start guest-init");
    g.send_init(&init(handler, &[]));
    g.wait_init(T).expect("init succeeds");
    Some((sb, g))
}

#[test]
fn echo_round_trips_0_b_1_kib_and_6_mb_payloads() {
    let Some((_sb, mut g)) = start("function.handler") else {
        return;
    };
    let payloads = [
        Vec::new(),
        json_string_of_len(1024),
        json_string_of_len(6 * 1024 * 1024),
    ];
    for payload in payloads {
        match g.invoke(invoke(payload.clone(), 30_000), T) {
            InvokeOutcome::Response(out) => {
                assert!(out == payload, "{}-byte echo differs", payload.len())
            }
            other => panic!("{}-byte echo failed: {other:?}", payload.len()),
        }
    }
}

#[test]
fn posted_error_has_lambda_shape_and_logs_are_tagged() {
    let Some((_sb, mut g)) = start("function.fail") else {
        return;
    };
    let inv = invoke(&b"{}"[..], 30_000);
    let id = inv.request_id.clone();
    match g.invoke(inv, T) {
        InvokeOutcome::Error { error_type, body } => {
            assert_eq!(error_type, "ShellError");
            assert_eq!(body["errorMessage"], "shell failure");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(g.wait_log("shell: about to fail", T).is_some());
    assert!(g
        .logs_for(&id)
        .contains(&(LogStream::Stderr, "shell: about to fail".to_string())));
}

#[test]
fn log_lines_arrive_in_order_with_the_request_id() {
    let Some((_sb, mut g)) = start("function.chatty") else {
        return;
    };
    let inv = invoke(&b"{}"[..], 30_000);
    let id = inv.request_id.clone();
    assert_eq!(
        g.invoke(inv, T),
        InvokeOutcome::Response(b"\"logged\"".to_vec())
    );
    assert!(g.wait_log("shell: second log line", T).is_some());
    let lines: Vec<String> = g.logs_for(&id).into_iter().map(|(_, l)| l).collect();
    assert_eq!(
        lines,
        vec!["shell: first log line", "shell: second log line"]
    );
}

#[test]
fn exit_mid_invoke_is_runtime_exit_error() {
    let Some((_sb, mut g)) = start("function.die") else {
        return;
    };
    let inv = invoke(&b"{}"[..], 30_000);
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
        .any(|(_, l)| l == "shell: exiting mid-invoke"));
    assert!(matches!(g.recv(T), Some(GuestMessage::RuntimeExited(_))));
}
