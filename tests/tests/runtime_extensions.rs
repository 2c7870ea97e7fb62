//! The Extensions API with an external extension (shell + curl) next to the
//! `lambda_runtime` function: registration before the runtime starts, INVOKE events
//! per invocation, SHUTDOWN at the end.

use integration_tests::images::require;
use integration_tests::runtime::guest::{init, invoke};
use integration_tests::runtime::{binaries, functions, GuestProcess, InvokeOutcome, Sandbox};
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

#[test]
fn extension_sees_invokes_and_shutdown() {
    let ready = binaries::guest_init().and(binaries::fn_rust());
    let Some(_) = require("runtime_extensions", ready) else {
        return;
    };
    let sb = Sandbox::new().expect("sandbox");
    functions::stage_rust(&sb).expect("stage fn-rust");
    let Some(_) = require("runtime_extensions (curl)", functions::stage_extension(&sb)) else {
        return;
    };
    let mut g = GuestProcess::start(&sb, &[]).expect("start");
    g.send_init(&init("echo", &[]));
    g.wait_init(T)
        .expect("init completes once runtime and extension are ready");
    assert!(g.wait_log("ext: registered", T).is_some());
    let mut ids = Vec::new();
    for n in 0..3 {
        let payload = format!("{{\"n\":{n}}}").into_bytes();
        let inv = invoke(payload.clone(), 30_000);
        ids.push(inv.request_id.clone());
        assert_eq!(g.invoke(inv, T), InvokeOutcome::Response(payload));
    }
    for id in &ids {
        let needle = format!("\"requestId\":\"{id}\"");
        let line = g
            .wait_log(&needle, T)
            .unwrap_or_else(|| panic!("no INVOKE event for {id}"));
        let text = String::from_utf8_lossy(&line.line).into_owned();
        assert!(text.contains("\"eventType\":\"INVOKE\""), "{text}");
        assert!(
            text.contains("\"invokedFunctionArn\":\"arn:aws:lambda:"),
            "{text}"
        );
    }
    let status = g.shutdown(2000).expect("exits after Shutdown");
    assert!(status.success());
    let logs: Vec<String> = g
        .all_logs()
        .iter()
        .map(|l| String::from_utf8_lossy(&l.line).into_owned())
        .collect();
    assert!(
        logs.iter().any(|l| l.contains("\"eventType\":\"SHUTDOWN\"")
            && l.contains("\"shutdownReason\":\"spindown\"")),
        "{logs:?}"
    );
    assert!(logs.iter().any(|l| l == "ext: shutting down"), "{logs:?}");
}

#[test]
fn late_registration_is_refused() {
    let Some(_) = require("runtime_extensions", binaries::guest_init()) else {
        return;
    };
    let sb = Sandbox::new().expect("sandbox");
    let addr_file = functions::stage_manual(&sb).expect("stage");
    let g = GuestProcess::start(&sb, &[]).expect("start");
    g.send_init(&init("manual", &[]));
    let api = functions::read_api_addr(&addr_file);
    let resp = integration_tests::runtime::http::request(
        &api,
        "POST",
        "/2020-01-01/extension/register",
        &[("Lambda-Extension-Name", "late")],
        br#"{"events":["INVOKE"]}"#,
    )
    .expect("register");
    assert_eq!(resp.status, 403, "{resp:?}");
    assert_eq!(resp.json()["errorType"], "Extension.RegistrationClosed");
    let bad = integration_tests::runtime::http::request(
        &api,
        "GET",
        "/2020-01-01/extension/event/next",
        &[("Lambda-Extension-Identifier", "nope")],
        b"",
    )
    .expect("next");
    assert_eq!(bad.status, 403);
    drop(g);
}
