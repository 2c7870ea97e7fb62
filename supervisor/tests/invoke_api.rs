//! The Invoke API in process, with a scripted sandbox backend behind the real
//! worker pool: headers, limits, function errors, throttling, reserved concurrency,
//! Event/DryRun, logs and metrics - everything on the frontend side of the
//! worker interface, without root or images.

use std::collections::HashMap;
use std::io::{Cursor, Write as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use base64::Engine as _;
use http_body_util::BodyExt as _;
use supervisor::config::Config;
use supervisor::dataplane::Host;
use supervisor::invoke::InvokeService;
use supervisor::invoke::{local_code_supply, CodeIndex};
use supervisor::Supervisor;
use tower::ServiceExt as _;
use worker::sandbox::{Backend, BoxFuture, LogLine, Reply, Sandbox, SandboxError};
use worker::spec::ChunkSink;
use worker::{FunctionVersionSpec, InvokeRequest, Worker, WorkerConfig};

mod common;

const AK: &str = "AKIAINVOKETEST000000";
const SK: &str = "invoke-secret";

/// Request ids each function's sandboxes have seen, by function name.
type Seen = Arc<Mutex<HashMap<String, Vec<String>>>>;

/// A sandbox whose behaviour is chosen by the function's handler.
struct Scripted {
    function: String,
    handler: String,
    id: String,
    logs: Vec<LogLine>,
    seen: Seen,
}

impl Sandbox for Scripted {
    fn init(&mut self) -> BoxFuture<'_, Result<(), SandboxError>> {
        Box::pin(async { Ok(()) })
    }

    fn invoke<'a>(
        &'a mut self,
        req: &'a InvokeRequest,
        _deadline_ms: u64,
    ) -> BoxFuture<'a, Result<Reply, SandboxError>> {
        Box::pin(async move {
            self.seen
                .lock()
                .expect("seen")
                .entry(self.function.clone())
                .or_default()
                .push(req.request_id.clone());
            self.logs.push(LogLine {
                request_id: Some(req.request_id.clone()),
                text: format!("scripted {} ran", self.handler),
            });
            match self.handler.as_str() {
                "fail" => Ok(Reply::Error {
                    error_type: "Boom".into(),
                    body: br#"{"errorType":"Boom","errorMessage":"scripted failure"}"#.to_vec(),
                }),
                "sleep" => {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok(Reply::Response(b"late".to_vec()))
                }
                "big" => Ok(Reply::Response(vec![b'x'; 6_291_557])),
                "whoami" => Ok(Reply::Response(
                    serde_json::json!({"function": self.function, "sandbox": self.id})
                        .to_string()
                        .into_bytes(),
                )),
                "context" => Ok(Reply::Response(
                    serde_json::json!({"client_context": req.client_context})
                        .to_string()
                        .into_bytes(),
                )),
                _ => Ok(Reply::Response(req.payload.clone())),
            }
        })
    }

    /// Streaming handlers write through `chunks`; the others answer as `invoke` does.
    fn invoke_streaming<'a>(
        &'a mut self,
        req: &'a InvokeRequest,
        deadline_ms: u64,
        chunks: ChunkSink,
    ) -> BoxFuture<'a, Result<Reply, SandboxError>> {
        Box::pin(async move {
            let pause = Duration::from_millis(600);
            match self.handler.as_str() {
                "stream" => {
                    let _ = chunks.send(b"one ".to_vec()).await;
                    tokio::time::sleep(pause).await;
                    let _ = chunks.send(b"two".to_vec()).await;
                    Ok(Reply::Streamed)
                }
                "stream-fail" => {
                    let _ = chunks.send(b"partial ".to_vec()).await;
                    tokio::time::sleep(pause).await;
                    Ok(Reply::Error {
                        error_type: "StreamFailure".into(),
                        body:
                            br#"{"errorType":"StreamFailure","errorMessage":"failed mid-stream"}"#
                                .to_vec(),
                    })
                }
                "stream-hang" => {
                    let _ = chunks.send(b"partial ".to_vec()).await;
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    Ok(Reply::Streamed)
                }
                _ => self.invoke(req, deadline_ms).await,
            }
        })
    }

    fn take_logs(&mut self) -> Vec<LogLine> {
        std::mem::take(&mut self.logs)
    }
    fn max_memory_bytes(&self) -> Option<u64> {
        Some(5 << 20)
    }
    fn oom_killed(&self) -> bool {
        false
    }
    fn destroy(self: Box<Self>, _grace: Duration) -> BoxFuture<'static, ()> {
        Box::pin(async {})
    }
}

struct ScriptedBackend {
    seen: Seen,
}

impl Backend for ScriptedBackend {
    fn name(&self) -> &'static str {
        "scripted"
    }
    fn create<'a>(
        &'a self,
        spec: &'a FunctionVersionSpec,
        id: &'a str,
    ) -> BoxFuture<'a, Result<Box<dyn Sandbox>, SandboxError>> {
        Box::pin(async move {
            let sb: Box<dyn Sandbox> = Box::new(Scripted {
                function: spec.name.clone(),
                handler: spec.handler.clone(),
                id: id.to_owned(),
                logs: Vec::new(),
                seen: self.seen.clone(),
            });
            Ok(sb)
        })
    }
}

struct Env {
    _dir: tempfile::TempDir,
    router: Router,
    seen: Seen,
}

fn env_with(plane: bool) -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = Config::with_data_dir(&dir.path().join("data"));
    cfg.credentials = Some((AK.into(), SK.into()));
    cfg.data_plane.event_retry_base = Duration::from_millis(50);
    cfg.data_plane.host.host_concurrency = 10;
    let (sup, _) = Supervisor::open(cfg).expect("open");
    let seen: Seen = Arc::default();
    let codes = CodeIndex::new(&sup);
    let run_dir = dir.path().join("run");
    let plane = if plane {
        let worker = Worker::with_code(
            Arc::new(ScriptedBackend { seen: seen.clone() }),
            WorkerConfig {
                host_concurrency: 10,
                ..WorkerConfig::default()
            },
            Some(local_code_supply(&sup, &codes, &run_dir)),
        );
        Ok(Host::from_worker(worker, run_dir))
    } else {
        Err("no backend in this test".to_owned())
    };
    let svc = InvokeService::new(sup.clone(), plane, codes).expect("invoke service");
    svc.start_background();
    let router = sup.router(svc.signed_routes(), svc.public_routes());
    Env {
        _dir: dir,
        router,
        seen,
    }
}

fn signed(method: &str, uri: &str, extra: &[(&'static str, &str)], body: Vec<u8>) -> Request<Body> {
    let headers = common::signed_headers((method, uri), (AK, SK), extra, &body);
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in &headers {
        req = req.header(k, v);
    }
    req.body(Body::from(body)).expect("request")
}

struct Resp {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("json body")
    }
}

async fn send(env: &Env, req: Request<Body>) -> Resp {
    let resp = env.router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    Resp {
        status,
        headers,
        body,
    }
}

fn zip() -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let o = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
    w.start_file("bootstrap", o).expect("zip");
    w.write_all(b"#!/bin/sh\n").expect("zip");
    w.finish().expect("zip").into_inner()
}

async fn create(env: &Env, name: &str, handler: &str, timeout: u32) {
    let body = serde_json::json!({
        "FunctionName": name,
        "Runtime": "provided.al2023",
        "Role": "arn:aws:iam::000000000000:role/r",
        "Handler": handler,
        "Timeout": timeout,
        "Code": {"ZipFile": base64::engine::general_purpose::STANDARD.encode(zip())},
    });
    let r = send(
        env,
        signed(
            "POST",
            "/2015-03-31/functions",
            &[],
            body.to_string().into_bytes(),
        ),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&r.body)
    );
}

async fn invoke(env: &Env, name: &str, extra: &[(&'static str, &str)], payload: &[u8]) -> Resp {
    send(
        env,
        signed(
            "POST",
            &format!("/2015-03-31/functions/{name}/invocations"),
            extra,
            payload.to_vec(),
        ),
    )
    .await
}

fn tail(r: &Resp) -> String {
    let b = base64::engine::general_purpose::STANDARD
        .decode(r.header("x-amz-log-result").expect("log result"))
        .expect("base64");
    String::from_utf8(b).expect("utf8")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_logs_and_warm_reuse() {
    let env = env_with(true);
    create(&env, "echo", "echo", 3).await;
    let r = invoke(&env, "echo", &[("x-amz-log-type", "Tail")], br#"{"a":1}"#).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body, br#"{"a":1}"#);
    assert_eq!(r.header("x-amz-executed-version"), Some("$LATEST"));
    assert!(r.header("x-amz-function-error").is_none());
    let rid = r.header("x-amzn-requestid").expect("request id").to_owned();
    let logs = tail(&r);
    assert!(
        logs.contains(&format!("START RequestId: {rid} Version: $LATEST")),
        "{logs}"
    );
    assert!(logs.contains("scripted echo ran"), "{logs}");
    assert!(logs.contains(&format!("END RequestId: {rid}")), "{logs}");
    assert!(logs.contains("Init Duration:"), "{logs}");
    let r = invoke(&env, "echo", &[("x-amz-log-type", "Tail")], b"").await;
    assert_eq!(r.body, b"{}", "an empty payload is sent as {{}}");
    assert!(
        !tail(&r).contains("Init Duration:"),
        "second invoke is warm"
    );
    assert_eq!(env.seen.lock().expect("seen")["echo"].len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_limits_and_bad_requests() {
    let env = env_with(true);
    create(&env, "fail", "fail", 3).await;
    create(&env, "big", "big", 3).await;
    create(&env, "sleep", "sleep", 1).await;
    let r = invoke(&env, "fail", &[], b"{}").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
    assert_eq!(r.json()["errorType"], "Boom");
    let r = invoke(&env, "big", &[], b"{}").await;
    assert_eq!(r.header("x-amz-function-error"), Some("Unhandled"));
    assert_eq!(r.json()["errorType"], "Function.ResponseSizeTooLarge");
    let r = invoke(&env, "sleep", &[], b"{}").await;
    assert_eq!(r.json()["errorType"], "Sandbox.Timedout");
    assert!(r.json()["errorMessage"]
        .as_str()
        .expect("message")
        .contains("Task timed out after 1.00 seconds"));
    let mut big = vec![b' '; 6 * 1024 * 1024 + 1];
    big[0] = b'1';
    let r = invoke(&env, "fail", &[], &big).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        r.header("x-amzn-errortype"),
        Some("RequestTooLargeException")
    );
    let r = invoke(&env, "fail", &[], b"{not json").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = invoke(&env, "fail", &[("x-amz-invocation-type", "Later")], b"{}").await;
    assert_eq!(
        r.header("x-amzn-errortype"),
        Some("InvalidParameterValueException")
    );
    let r = invoke(&env, "nope", &[], b"{}").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(
        r.header("x-amzn-errortype"),
        Some("ResourceNotFoundException")
    );
    let uri = "/2015-03-31/functions/fail/invocations?Qualifier=7";
    let r = send(&env, signed("POST", uri, &[], b"{}".to_vec())).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(String::from_utf8_lossy(&r.body).contains("function:fail:7"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_concurrency_and_throttling() {
    let env = env_with(true);
    create(&env, "f", "echo", 3).await;
    let put = |n: &str| {
        signed(
            "PUT",
            "/2017-10-31/functions/f/concurrency",
            &[],
            format!(r#"{{"ReservedConcurrentExecutions":{n}}}"#).into_bytes(),
        )
    };
    let r = send(&env, put("0")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["ReservedConcurrentExecutions"], 0);
    let r = invoke(&env, "f", &[], b"{}").await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        r.header("x-amzn-errortype"),
        Some("TooManyRequestsException")
    );
    assert_eq!(
        r.json()["Reason"],
        "ReservedFunctionConcurrentInvocationLimitExceeded"
    );
    let r = send(
        &env,
        signed("GET", "/2019-09-30/functions/f/concurrency", &[], vec![]),
    )
    .await;
    assert_eq!(r.json()["ReservedConcurrentExecutions"], 0);
    // Host limit 10 keeps 1 unreserved.
    assert_eq!(send(&env, put("10")).await.status, StatusCode::BAD_REQUEST);
    assert_eq!(send(&env, put("-1")).await.status, StatusCode::BAD_REQUEST);
    let r = send(
        &env,
        signed("DELETE", "/2017-10-31/functions/f/concurrency", &[], vec![]),
    )
    .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = send(
        &env,
        signed("GET", "/2019-09-30/functions/f/concurrency", &[], vec![]),
    )
    .await;
    assert_eq!(r.json(), serde_json::json!({}));
    assert_eq!(invoke(&env, "f", &[], b"{}").await.status, StatusCode::OK);
    let r = send(
        &env,
        signed("GET", "/2019-09-30/functions/zz/concurrency", &[], vec![]),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_event_client_context_and_metrics() {
    let env = env_with(true);
    create(&env, "ctx", "context", 3).await;
    let r = invoke(&env, "ctx", &[("x-amz-invocation-type", "DryRun")], b"{}").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    assert!(
        env.seen.lock().expect("seen").is_empty(),
        "DryRun runs nothing"
    );
    let r = invoke(
        &env,
        "ctx",
        &[("x-amz-invocation-type", "Event")],
        br#"{"e":1}"#,
    )
    .await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    let rid = r.header("x-amzn-requestid").expect("rid").to_owned();
    for _ in 0..100 {
        if env
            .seen
            .lock()
            .expect("seen")
            .get("ctx")
            .is_some_and(|v| v.contains(&rid))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        env.seen.lock().expect("seen")["ctx"].contains(&rid),
        "event ran with its id"
    );
    let cc = base64::engine::general_purpose::STANDARD.encode(r#"{"custom":{"k":"v"}}"#);
    let r = invoke(&env, "ctx", &[("x-amz-client-context", &cc)], b"{}").await;
    assert_eq!(r.json()["client_context"], r#"{"custom":{"k":"v"}}"#);
    // /metrics names every function: unsigned, it is refused like any other route.
    let req = Request::builder()
        .uri("/metrics")
        .body(Body::empty())
        .expect("request");
    assert_eq!(send(&env, req).await.status, StatusCode::FORBIDDEN);
    let m = send(&env, signed("GET", "/metrics", &[], Vec::new())).await;
    assert_eq!(m.status, StatusCode::OK);
    let text = String::from_utf8(m.body).expect("utf8");
    assert!(
        text.contains("supervisor_invoke_requests_total{type=\"DryRun\",status=\"204\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("supervisor_events_total{outcome=\"queued\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("worker_invocations_total{function=\"ctx:$LATEST\"}"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_are_per_function_even_for_identical_code() {
    let env = env_with(true);
    create(&env, "a", "whoami", 3).await;
    create(&env, "b", "whoami", 3).await;
    let mut by_fn: HashMap<String, String> = HashMap::new();
    for _ in 0..3 {
        for f in ["a", "b"] {
            let out = invoke(&env, f, &[], b"{}").await.json();
            assert_eq!(out["function"], f);
            let sb = out["sandbox"].as_str().expect("sandbox").to_owned();
            let first = by_fn.entry(f.to_owned()).or_insert_with(|| sb.clone());
            assert_eq!(*first, sb, "warm reuse within a function");
        }
    }
    assert_ne!(by_fn["a"], by_fn["b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_data_plane_invoke_is_a_service_error() {
    let env = env_with(false);
    create(&env, "f", "echo", 3).await;
    let r = invoke(&env, "f", &[], b"{}").await;
    assert_eq!(r.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(r.header("x-amzn-errortype"), Some("ServiceException"));
    // The control plane still answers.
    let r = invoke(&env, "f", &[("x-amz-invocation-type", "DryRun")], b"{}").await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_stream_frames_payload_then_completion() {
    let env = env_with(true);
    create(&env, "s", "echo", 3).await;
    let uri = "/2021-11-15/functions/s/response-streaming-invocations";
    let r = send(&env, signed("POST", uri, &[], br#"{"x":1}"#.to_vec())).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.amazon.eventstream")
    );
    let total = u32::from_be_bytes(r.body[0..4].try_into().expect("len")) as usize;
    let hlen = u32::from_be_bytes(r.body[4..8].try_into().expect("len")) as usize;
    assert_eq!(&r.body[12 + hlen..total - 4], br#"{"x":1}"#);
    let rest = &r.body[total..];
    assert!(String::from_utf8_lossy(rest).contains("InvokeComplete"));
    let r = send(
        &env,
        signed(
            "POST",
            uri,
            &[("x-amz-invocation-type", "Event")],
            b"{}".to_vec(),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
}

/// One eventstream message as received: when its last byte arrived (since the request
/// was sent), its `:event-type` and its payload.
struct StreamEvent {
    at: Duration,
    kind: String,
    payload: Vec<u8>,
}

/// Sends an InvokeWithResponseStream request and reads the body frame by frame, noting
/// when each event arrived.
async fn stream_events(
    env: &Env,
    name: &str,
    extra: &[(&'static str, &str)],
) -> (StatusCode, Vec<StreamEvent>) {
    let uri = format!("/2021-11-15/functions/{name}/response-streaming-invocations");
    let sent = Instant::now();
    let resp = env
        .router
        .clone()
        .oneshot(signed("POST", &uri, extra, b"{}".to_vec()))
        .await
        .expect("infallible");
    let status = resp.status();
    if status != StatusCode::OK {
        return (status, Vec::new());
    }
    let mut body = resp.into_body();
    let (mut buf, mut events) = (Vec::new(), Vec::new());
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("frame").into_data() {
            buf.extend_from_slice(&data);
        }
        while buf.len() >= 12 {
            let total = u32::from_be_bytes(buf[0..4].try_into().expect("len")) as usize;
            if buf.len() < total {
                break;
            }
            let hlen = u32::from_be_bytes(buf[4..8].try_into().expect("len")) as usize;
            let msg: Vec<u8> = buf.drain(..total).collect();
            // The first header is `:event-type` (name, type 7, u16 length, value).
            let nlen = msg[12] as usize;
            assert_eq!(&msg[13..13 + nlen], b":event-type");
            let vlen = u16::from_be_bytes([msg[14 + nlen], msg[15 + nlen]]) as usize;
            let kind = String::from_utf8_lossy(&msg[16 + nlen..16 + nlen + vlen]).into_owned();
            events.push(StreamEvent {
                at: sent.elapsed(),
                kind,
                payload: msg[12 + hlen..total - 4].to_vec(),
            });
        }
    }
    assert!(buf.is_empty(), "a partial message was left over");
    (status, events)
}

fn complete_of(events: &[StreamEvent]) -> serde_json::Value {
    let last = events.last().expect("events");
    assert_eq!(last.kind, "InvokeComplete");
    serde_json::from_slice(&last.payload).expect("json")
}

fn payload_of(events: &[StreamEvent]) -> Vec<u8> {
    events
        .iter()
        .filter(|e| e.kind == "PayloadChunk")
        .flat_map(|e| e.payload.clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_stream_delivers_chunks_as_they_are_written() {
    let env = env_with(true);
    create(&env, "st", "stream", 3).await;
    let (status, events) = stream_events(&env, "st", &[("x-amz-log-type", "Tail")]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(payload_of(&events), b"one two");
    assert_eq!(events[0].kind, "PayloadChunk");
    assert_eq!(events[0].payload, b"one ");
    let done = events.last().expect("events").at;
    // The function pauses 600 ms between its two chunks.
    assert!(
        done >= events[0].at + Duration::from_millis(400),
        "first chunk at {:?}, InvokeComplete at {done:?}",
        events[0].at
    );
    let complete = complete_of(&events);
    assert!(complete.get("ErrorCode").is_none(), "{complete}");
    let logs = base64::engine::general_purpose::STANDARD
        .decode(complete["LogResult"].as_str().expect("LogResult"))
        .expect("base64");
    assert!(String::from_utf8_lossy(&logs).contains("REPORT RequestId"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_stream_errors_end_with_invoke_complete() {
    let env = env_with(true);
    create(&env, "sf", "stream-fail", 3).await;
    let (status, events) = stream_events(&env, "sf", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(payload_of(&events), b"partial ");
    let complete = complete_of(&events);
    assert_eq!(complete["ErrorCode"], "StreamFailure");
    assert!(complete["ErrorDetails"]
        .as_str()
        .expect("details")
        .contains("failed mid-stream"));
    assert!(complete.get("LogResult").is_none());

    create(&env, "sh", "stream-hang", 1).await;
    let (_, events) = stream_events(&env, "sh", &[("x-amz-log-type", "Tail")]).await;
    assert_eq!(payload_of(&events), b"partial ");
    assert!(
        events[0].at < Duration::from_millis(900),
        "{:?}",
        events[0].at
    );
    let complete = complete_of(&events);
    assert_eq!(complete["ErrorCode"], "Sandbox.Timedout");
    assert!(complete["ErrorDetails"]
        .as_str()
        .expect("details")
        .contains("Task timed out after 1.00 seconds"));
    let logs = base64::engine::general_purpose::STANDARD
        .decode(complete["LogResult"].as_str().expect("LogResult"))
        .expect("base64");
    assert!(String::from_utf8_lossy(&logs).contains("Status: timeout"));

    // Refused before anything ran: an HTTP error, not a stream.
    let r = send(
        &env,
        signed(
            "PUT",
            "/2017-10-31/functions/sf/concurrency",
            &[],
            br#"{"ReservedConcurrentExecutions":0}"#.to_vec(),
        ),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK);
    let (status, events) = stream_events(&env, "sf", &[]).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(events.is_empty());
}
