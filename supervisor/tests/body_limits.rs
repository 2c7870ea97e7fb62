//! Invoke payload limits where the body enters: a `Content-Length` past the limit for
//! the invocation type is refused before any of the body is read, and a body of
//! unknown length is cut off as soon as it passes the limit (nothing waits for the rest).

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, Request, StatusCode};
use axum::Router;
use http_body::Frame;
use http_body_util::BodyExt as _;
use supervisor::config::Config;
use supervisor::invoke::InvokeService;
use supervisor::Supervisor;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tower::ServiceExt as _;

mod common;

const AK: &str = "AKIABODYLIMITS000000";
const SK: &str = "body-limits-secret";
const INVOKE: &str = "/2015-03-31/functions/f/invocations";
const STREAM: &str = "/2021-11-15/functions/f/response-streaming-invocations";
/// The refusal must not wait for a body that never comes.
const PROMPT: Duration = Duration::from_secs(3);

/// A body of the given chunks that then never ends (a client still sending).
struct Hanging(VecDeque<Bytes>);

impl http_body::Body for Hanging {
    type Data = Bytes;
    type Error = std::io::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.0.pop_front() {
            Some(c) => Poll::Ready(Some(Ok(Frame::data(c)))),
            None => Poll::Pending,
        }
    }
}

fn hanging(chunks: usize, size: usize) -> Body {
    Body::new(Hanging(
        (0..chunks).map(|_| Bytes::from(vec![b' '; size])).collect(),
    ))
}

/// A supervisor without a data plane: everything here is decided before the handler
/// would reach a sandbox.
fn router() -> (tempfile::TempDir, Router) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut cfg = Config::with_data_dir(&dir.path().join("data"));
    cfg.credentials = Some((AK.into(), SK.into()));
    let (sup, _) = Supervisor::open(cfg).expect("open");
    let codes = supervisor::invoke::CodeIndex::new(&sup);
    let svc = InvokeService::new(sup.clone(), Err("no data plane in this test".into()), codes)
        .expect("invoke service");
    let router = sup.router(svc.signed_routes(), svc.public_routes());
    (dir, router)
}

/// Signed headers for a POST of `body` to `path`.
fn signed_headers(path: &str, extra: &[(&'static str, &str)], body: &[u8]) -> HeaderMap {
    common::signed_headers(("POST", path), (AK, SK), extra, body)
}

/// A signed request whose body is `body`, announcing `content_length` (if any).
fn request(
    path: &str,
    extra: &[(&'static str, &str)],
    content_length: Option<usize>,
    body: Body,
) -> Request<Body> {
    let mut req = Request::post(path).body(body).expect("request");
    *req.headers_mut() = signed_headers(path, extra, b"{}");
    if let Some(n) = content_length {
        req.headers_mut().insert("content-length", n.into());
    }
    req
}

/// Status, error type and message, answered within [`PROMPT`].
async fn answer(router: &Router, req: Request<Body>) -> (StatusCode, String, String) {
    let resp = tokio::time::timeout(PROMPT, router.clone().oneshot(req))
        .await
        .expect("answered without waiting for the body")
        .expect("infallible");
    let status = resp.status();
    let etype = resp
        .headers()
        .get("x-amzn-errortype")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let message = json["Message"].as_str().unwrap_or_default().to_owned();
    (status, etype, message)
}

#[tokio::test]
async fn an_invoke_announcing_7_mb_is_refused_before_its_body_arrives() {
    let (_dir, router) = router();
    let seven_mb = 7 * 1024 * 1024;
    for path in [INVOKE, STREAM] {
        let req = request(path, &[], Some(seven_mb), hanging(1, 2));
        assert_eq!(
            answer(&router, req).await,
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestTooLargeException".into(),
                "7340032 byte payload is too large for the RequestResponse invocation type (limit 6291456 bytes)".into()
            ),
            "{path}"
        );
    }
}

#[tokio::test]
async fn an_event_of_1_mb_plus_1_is_refused_before_its_body_arrives() {
    let (_dir, router) = router();
    let event = [("x-amz-invocation-type", "Event")];
    let req = request(INVOKE, &event, Some(1_048_577), hanging(1, 2));
    assert_eq!(
        answer(&router, req).await,
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLargeException".into(),
            "1048577 byte payload is too large for the Event invocation type (limit 1048576 bytes)"
                .into()
        )
    );
}

#[tokio::test]
async fn a_body_of_unknown_length_is_cut_off_once_past_the_limit() {
    let (_dir, router) = router();
    // 97 chunks of 64 KiB pass 6 MiB (96 of them); the client then never finishes.
    let req = request(INVOKE, &[], None, hanging(97, 64 * 1024));
    let (status, etype, message) = answer(&router, req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(etype, "RequestTooLargeException");
    assert!(
        message.ends_with("for the RequestResponse invocation type (limit 6291456 bytes)"),
        "{message}"
    );
    let event = [("x-amz-invocation-type", "Event")];
    let req = request(INVOKE, &event, None, hanging(17, 64 * 1024));
    let (status, _, message) = answer(&router, req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(message.contains("(limit 1048576 bytes)"), "{message}");
}

#[tokio::test]
async fn payloads_at_the_limit_pass_it() {
    let (_dir, router) = router();
    for (kind, size) in [("Event", 1_048_576), ("DryRun", 6_291_456)] {
        let mut payload = vec![b' '; size];
        payload[0] = b'1';
        let mut req = Request::post(INVOKE)
            .body(Body::from(payload.clone()))
            .expect("request");
        *req.headers_mut() = signed_headers(INVOKE, &[("x-amz-invocation-type", kind)], &payload);
        req.headers_mut().insert("content-length", size.into());
        // Read, verified and handed on: the function does not exist.
        let (status, etype, _) = answer(&router, req).await;
        assert_eq!(
            (status, etype.as_str()),
            (StatusCode::NOT_FOUND, "ResourceNotFoundException"),
            "{kind}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_a_connection_the_413_comes_first_and_the_body_is_still_taken() {
    let (_dir, router) = router();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(supervisor::http::serve(listener, router, async {
        let _ = stopped.await;
    }));
    let size = 7 * 1024 * 1024;
    let mut head = format!("POST {INVOKE} HTTP/1.1\r\n");
    for (k, v) in &signed_headers(INVOKE, &[], b"{}") {
        head.push_str(&format!("{k}: {}\r\n", v.to_str().expect("ascii")));
    }
    head.push_str(&format!("content-length: {size}\r\n\r\n{{}}"));
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(head.as_bytes()).await.expect("head");
    let mut reply = vec![0; 4096];
    let n = tokio::time::timeout(PROMPT, conn.read(&mut reply))
        .await
        .expect("the answer comes before the body")
        .expect("read");
    let reply = String::from_utf8_lossy(&reply[..n]).to_lowercase();
    assert!(reply.starts_with("http/1.1 413"), "{reply}");
    assert!(
        reply.contains("x-amzn-errortype: requesttoolargeexception"),
        "{reply}"
    );
    // A client that sends its whole body before reading is not cut off under it.
    let rest = vec![b' '; size - 2];
    tokio::time::timeout(Duration::from_secs(20), conn.write_all(&rest))
        .await
        .expect("the body is drained")
        .expect("the connection stays open while the body arrives");
    let _ = stop.send(());
    drop(conn);
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("server stops")
        .expect("server task")
        .expect("serve");
}
