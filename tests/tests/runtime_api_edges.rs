//! The Runtime API's exact behaviour, driven by the test itself over raw HTTP/1.1:
//! Lambda's error codes and shapes, limits, streaming with trailers, init errors,
//! Logs/Telemetry answers, and protocol violations on the host link.

use integration_tests::images::require;
use integration_tests::runtime::guest::{init, invoke, now_ms};
use integration_tests::runtime::http::{request, request_chunked, HttpResponse};
use integration_tests::runtime::{binaries, functions, GuestProcess, InvokeOutcome, Sandbox};
use runtime_api::protocol::{GuestMessage, HostMessage, Invoke};
use std::io::{Read, Write};
use std::time::Duration;

const T: Duration = Duration::from_secs(20);
const NEXT: &str = "/2018-06-01/runtime/invocation/next";

struct Manual {
    sb: Sandbox,
    g: GuestProcess,
    api: String,
}

/// guest-init with a bootstrap that idles; the test plays the runtime.
fn manual() -> Option<Manual> {
    require("runtime_api_edges", binaries::guest_init())?;
    let sb = Sandbox::new().expect("sandbox");
    let addr_file = functions::stage_manual(&sb).expect("stage");
    let g = GuestProcess::start(&sb, &[]).expect("start guest-init");
    g.send_init(&init("manual", &[]));
    let api = functions::read_api_addr(&addr_file);
    Some(Manual { sb, g, api })
}

impl Manual {
    fn get_next(&mut self) -> HttpResponse {
        request(&self.api, "GET", NEXT, &[], b"").expect("GET next")
    }

    /// Sends an invoke and fetches it through /next.
    fn next_invoke(&mut self, inv: Invoke) -> HttpResponse {
        self.g
            .sender()
            .send(&HostMessage::Invoke(inv))
            .expect("send invoke");
        self.get_next()
    }

    fn post(&self, path: &str, headers: &[(&str, &str)], body: &[u8]) -> HttpResponse {
        request(&self.api, "POST", path, headers, body).expect("POST")
    }
}

fn response_path(id: &str) -> String {
    format!("/2018-06-01/runtime/invocation/{id}/response")
}

fn assert_error(resp: &HttpResponse, status: u16, error_type: &str) {
    assert_eq!(resp.status, status, "{resp:?}");
    let v = resp.json();
    assert_eq!(v["errorType"], error_type, "{v}");
    assert!(
        v["errorMessage"].as_str().is_some_and(|m| !m.is_empty()),
        "{v}"
    );
}

#[test]
fn next_carries_lambda_headers_and_raw_payload() {
    let Some(mut m) = manual() else { return };
    let mut inv = invoke(&b"\x00binary\xffpayload"[..], 10_000);
    inv.client_context = Some("{\"custom\":{}}".into());
    inv.cognito_identity = Some("{\"identity_id\":\"x\"}".into());
    let (id, deadline) = (inv.request_id.clone(), inv.deadline_ms);
    let resp = m.next_invoke(inv);
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body, b"\x00binary\xffpayload");
    assert_eq!(
        resp.header("Lambda-Runtime-Aws-Request-Id"),
        Some(id.as_str())
    );
    // guest-init re-bases the deadline on its own clock (here the same one): the time
    // left is the host's, less the moment the frame took to arrive.
    let given: u64 = resp
        .header("Lambda-Runtime-Deadline-Ms")
        .and_then(|d| d.parse().ok())
        .expect("deadline header");
    assert!(
        (deadline..deadline + 1_000).contains(&given),
        "{given} vs {deadline}"
    );
    assert_eq!(
        resp.header("Lambda-Runtime-Invoked-Function-Arn"),
        Some(integration_tests::runtime::guest::TEST_ARN)
    );
    assert!(resp
        .header("Lambda-Runtime-Trace-Id")
        .is_some_and(|t| t.starts_with("Root=1-")));
    assert_eq!(
        resp.header("Lambda-Runtime-Client-Context"),
        Some("{\"custom\":{}}")
    );
    assert_eq!(
        resp.header("Lambda-Runtime-Cognito-Identity"),
        Some("{\"identity_id\":\"x\"}")
    );
    // The first /next ended the init phase.
    assert!(m.g.others.is_empty() || m.g.others.contains(&GuestMessage::InitDone));
    assert_eq!(m.g.wait_init(T), Ok(()));
}

#[test]
fn unknown_id_second_response_and_bad_mode_get_lambdas_errors() {
    let Some(mut m) = manual() else { return };
    let inv = invoke(&b"{}"[..], 10_000);
    let id = inv.request_id.clone();
    assert_eq!(m.next_invoke(inv).status, 200);
    // Unknown request id.
    assert_error(
        &m.post(&response_path("not-a-request"), &[], b"{}"),
        400,
        "InvalidRequestID",
    );
    // Unsupported response mode: rejected without consuming the invocation.
    let bad_mode = m.post(
        &response_path(&id),
        &[("Lambda-Runtime-Function-Response-Mode", "buffered-ish")],
        b"{}",
    );
    assert_error(&bad_mode, 400, "InvalidFunctionResponseMode");
    // /next before answering is a state error.
    assert_error(&m.get_next(), 403, "InvalidStateTransition");
    let ok = m.post(&response_path(&id), &[], b"{\"ok\":true}");
    assert_eq!(ok.status, 202);
    assert_eq!(ok.json()["status"], "OK");
    assert_eq!(
        m.g.collect(&id, T),
        InvokeOutcome::Response(b"{\"ok\":true}".to_vec())
    );
    // A second response to the same invocation.
    assert_error(
        &m.post(&response_path(&id), &[], b"{}"),
        403,
        "InvalidStateTransition",
    );
    let err_path = format!("/2018-06-01/runtime/invocation/{id}/error");
    assert_error(
        &m.post(&err_path, &[], b"{}"),
        403,
        "InvalidStateTransition",
    );
}

#[test]
fn response_limit_is_6291556_bytes() {
    let Some(mut m) = manual() else { return };
    let inv = invoke(&b"{}"[..], 10_000);
    let id = inv.request_id.clone();
    m.next_invoke(inv);
    let too_big = vec![b'x'; 6_291_557];
    assert_error(
        &m.post(&response_path(&id), &[], &too_big),
        413,
        "RequestEntityTooLarge",
    );
    match m.g.collect(&id, T) {
        InvokeOutcome::Error { error_type, .. } => {
            assert_eq!(error_type, "Function.ResponseSizeTooLarge")
        }
        other => panic!("unexpected {other:?}"),
    }
    // The rejected response used up the invocation.
    assert_error(
        &m.post(&response_path(&id), &[], b"{}"),
        403,
        "InvalidStateTransition",
    );
    let inv = invoke(&b"{}"[..], 10_000);
    let id = inv.request_id.clone();
    m.next_invoke(inv);
    let at_limit = vec![b'y'; 6_291_556];
    assert_eq!(m.post(&response_path(&id), &[], &at_limit).status, 202);
    assert_eq!(m.g.collect(&id, T), InvokeOutcome::Response(at_limit));
}

#[test]
fn error_endpoint_passes_the_runtimes_document() {
    let Some(mut m) = manual() else { return };
    let inv = invoke(&b"{}"[..], 10_000);
    let id = inv.request_id.clone();
    m.next_invoke(inv);
    let doc =
        br#"{"errorMessage":"bad thing","errorType":"Custom.Failure","stackTrace":["a","b"]}"#;
    let path = format!("/2018-06-01/runtime/invocation/{id}/error");
    let resp = m.post(
        &path,
        &[("Lambda-Runtime-Function-Error-Type", "Unhandled")],
        doc,
    );
    assert_eq!(resp.status, 202);
    match m.g.collect(&id, T) {
        InvokeOutcome::Error { error_type, body } => {
            assert_eq!(error_type, "Custom.Failure");
            assert_eq!(body["stackTrace"][1], "b");
        }
        other => panic!("unexpected {other:?}"),
    }
    // A non-JSON error body becomes a Lambda error document typed by the header.
    let inv = invoke(&b"{}"[..], 10_000);
    let id = inv.request_id.clone();
    m.next_invoke(inv);
    let path = format!("/2018-06-01/runtime/invocation/{id}/error");
    m.post(
        &path,
        &[("Lambda-Runtime-Function-Error-Type", "Runtime.Broken")],
        b"plain text",
    );
    match m.g.collect(&id, T) {
        InvokeOutcome::Error { error_type, body } => {
            assert_eq!(error_type, "Runtime.Broken");
            assert_eq!(body["errorType"], "Runtime.Broken");
            assert_eq!(body["errorMessage"], "plain text");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn streaming_response_with_error_trailers() {
    let Some(mut m) = manual() else { return };
    let inv = invoke(&b"{}"[..], 10_000);
    let id = inv.request_id.clone();
    m.next_invoke(inv);
    // base64 of {"errorMessage":"midstream","errorType":"StreamBroke"}
    let body_b64 = "eyJlcnJvck1lc3NhZ2UiOiJtaWRzdHJlYW0iLCJlcnJvclR5cGUiOiJTdHJlYW1Ccm9rZSJ9";
    let resp = request_chunked(
        &m.api,
        &response_path(&id),
        &[
            ("Lambda-Runtime-Function-Response-Mode", "streaming"),
            ("Content-Type", "text/plain"),
        ],
        &[b"hello ", b"streaming ", b"world"],
        &[
            ("Lambda-Runtime-Function-Error-Type", "StreamBroke"),
            ("Lambda-Runtime-Function-Error-Body", body_b64),
        ],
    )
    .expect("stream");
    assert_eq!(resp.status, 202, "{resp:?}");
    match m.g.collect(&id, T) {
        InvokeOutcome::Streamed {
            content_type,
            data,
            error_type,
            error_body,
        } => {
            assert_eq!(content_type, "text/plain");
            assert_eq!(data, b"hello streaming world");
            assert_eq!(error_type.as_deref(), Some("StreamBroke"));
            assert_eq!(
                error_body.as_deref(),
                Some(r#"{"errorMessage":"midstream","errorType":"StreamBroke"}"#)
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    // A clean stream has no error.
    let inv = invoke(&b"{}"[..], 10_000);
    let id = inv.request_id.clone();
    m.next_invoke(inv);
    let resp = request_chunked(
        &m.api,
        &response_path(&id),
        &[("Lambda-Runtime-Function-Response-Mode", "streaming")],
        &[b"part1", b"part2"],
        &[],
    )
    .expect("stream");
    assert_eq!(resp.status, 202);
    assert!(matches!(
        m.g.collect(&id, T),
        InvokeOutcome::Streamed { data, error_type: None, .. } if data == b"part1part2"
    ));
}

#[test]
fn init_error_is_forwarded_once_and_refused_after_init() {
    let Some(mut m) = manual() else { return };
    let doc = br#"{"errorMessage":"cannot start","errorType":"Runtime.Custom"}"#;
    let resp = m.post(
        "/2018-06-01/runtime/init/error",
        &[("Lambda-Runtime-Function-Error-Type", "Runtime.Custom")],
        doc,
    );
    assert_eq!(resp.status, 202);
    let err = m.g.wait_init(T).expect_err("init error expected");
    assert_eq!(err.error_type, "Runtime.Custom");
    assert_eq!(err.body, doc.to_vec());
    let again = m.post("/2018-06-01/runtime/init/error", &[], doc);
    assert_error(&again, 403, "InvalidStateTransition");
}

#[test]
fn init_error_after_first_next_is_a_state_error() {
    let Some(mut m) = manual() else { return };
    let inv = invoke(&b"{}"[..], 10_000);
    m.next_invoke(inv);
    let resp = m.post("/2018-06-01/runtime/init/error", &[], b"{}");
    assert_error(&resp, 403, "InvalidStateTransition");
}

#[test]
fn logs_and_telemetry_subscriptions_say_not_supported() {
    let Some(m) = manual() else { return };
    let logs = request(&m.api, "PUT", "/2020-08-15/logs", &[], b"{}").expect("logs");
    assert_error(&logs, 202, "Logs.NotSupported");
    let tel = request(&m.api, "PUT", "/2022-07-01/telemetry", &[], b"{}").expect("telemetry");
    assert_error(&tel, 202, "Telemetry.NotSupported");
    let missing = request(&m.api, "GET", "/2018-06-01/nope", &[], b"").expect("404");
    assert_error(&missing, 404, "NotFound");
    let wrong = request(&m.api, "POST", NEXT, &[], b"").expect("405");
    assert_eq!(wrong.status, 405);
}

#[test]
fn waiting_next_is_released_by_a_later_invoke() {
    let Some(m) = manual() else { return };
    let api = m.api.clone();
    let waiter = std::thread::spawn(move || request(&api, "GET", NEXT, &[], b"").expect("next"));
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !waiter.is_finished(),
        "/next must block until an invoke arrives"
    );
    let inv = Invoke {
        deadline_ms: now_ms() + 5_000,
        ..invoke(&b"late"[..], 5_000)
    };
    let id = inv.request_id.clone();
    m.g.sender().send(&HostMessage::Invoke(inv)).expect("send");
    let resp = waiter.join().expect("join");
    assert_eq!(
        resp.header("Lambda-Runtime-Aws-Request-Id"),
        Some(id.as_str())
    );
    assert_eq!(resp.body, b"late");
}

#[test]
fn missing_bootstrap_is_invalid_entrypoint() {
    let Some(_) = require("runtime_api_edges", binaries::guest_init()) else {
        return;
    };
    let sb = Sandbox::new().expect("sandbox");
    let mut g = GuestProcess::start(&sb, &[]).expect("start");
    g.send_init(&init("x", &[]));
    let err = g.wait_init(T).expect_err("must fail");
    assert_eq!(err.error_type, "Runtime.InvalidEntrypoint");
    let body: serde_json::Value = serde_json::from_slice(&err.body).expect("json");
    let expected = format!(
        "Couldn't find valid bootstrap(s): [{} {} {}]",
        sb.task.join("bootstrap").display(),
        sb.opt.join("bootstrap").display(),
        sb.runtime.join("bootstrap").display()
    );
    assert_eq!(body["errorMessage"], expected.as_str());
    assert_eq!(g.shutdown(100).map(|s| s.success()), Some(true));
}

#[test]
fn non_executable_bootstrap_is_invalid_entrypoint() {
    let Some(_) = require("runtime_api_edges", binaries::guest_init()) else {
        return;
    };
    let sb = Sandbox::new().expect("sandbox");
    std::fs::write(sb.task.join("bootstrap"), "#!/bin/sh\n").expect("write");
    let mut g = GuestProcess::start(&sb, &[]).expect("start");
    g.send_init(&init("x", &[]));
    let err = g.wait_init(T).expect_err("must fail");
    assert_eq!(err.error_type, "Runtime.InvalidEntrypoint");
    let body: serde_json::Value = serde_json::from_slice(&err.body).expect("json");
    let msg = body["errorMessage"].as_str().unwrap_or_default();
    assert!(
        msg.starts_with("fork/exec ") && msg.contains("ermission denied"),
        "{msg}"
    );
}

#[test]
fn malformed_host_frame_gets_protocol_error_and_guest_init_exits() {
    let Some(_) = require("runtime_api_edges", binaries::guest_init()) else {
        return;
    };
    // A raw host: accept, handshake by hand, then send garbage.
    let sb = Sandbox::new().expect("sandbox");
    let sock = sb.path().join("raw.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).expect("bind");
    let mut child = std::process::Command::new(binaries::guest_init().expect("bin"))
        .arg("--host-uds")
        .arg(&sock)
        .args(["--runtime-api-addr", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn");
    let (mut s, _) = listener.accept().expect("accept");
    s.set_read_timeout(Some(T)).expect("timeout");
    let hello: GuestMessage = runtime_api::protocol::read_frame(&mut s).expect("guest hello");
    assert!(matches!(hello, GuestMessage::Hello(h) if h.agent.starts_with("guest-init ")));
    runtime_api::protocol::write_frame(
        &mut s,
        &HostMessage::Hello(runtime_api::protocol::Hello {
            agent: "raw".into(),
        }),
    )
    .expect("hello");
    // Right magic, unknown protocol version 7.
    s.write_all(b"LR\x07\x02\x00\x00\x00\x00").expect("garbage");
    let reply: GuestMessage = runtime_api::protocol::read_frame(&mut s).expect("error frame");
    match reply {
        GuestMessage::ProtocolError(p) => {
            assert_eq!(
                p.code,
                runtime_api::protocol::error_code::UNSUPPORTED_VERSION
            );
            assert!(p.message.contains("version 7"), "{}", p.message);
        }
        other => panic!("expected ProtocolError, got {other:?}"),
    }
    let mut rest = Vec::new();
    assert_eq!(
        s.read_to_end(&mut rest).unwrap_or(0),
        0,
        "connection closed"
    );
    let deadline = std::time::Instant::now() + T;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "guest-init did not exit"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(1));
}

#[test]
fn killing_guest_init_takes_the_runtime_with_it() {
    let Some(m) = manual() else { return };
    let pid_file = m.sb.path().join("runtime-pid");
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .expect("runtime pid")
        .trim()
        .parse()
        .expect("numeric pid");
    let proc_dir = std::path::PathBuf::from(format!("/proc/{pid}"));
    assert!(proc_dir.exists(), "runtime should be running");
    drop(m); // SIGKILLs guest-init
    let deadline = std::time::Instant::now() + T;
    while proc_dir.exists() {
        // A zombie is gone for our purposes: it no longer runs.
        let state = std::fs::read_to_string(proc_dir.join("stat")).unwrap_or_default();
        if state.split_whitespace().nth(2) == Some("Z") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "runtime {pid} outlived guest-init"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}
