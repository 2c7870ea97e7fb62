//! Fuzzes the Lambda Runtime API server as a runtime (or an extension) talks to it:
//! the real HTTP/1.1 server and the invocation state machine over an in-memory
//! connection, with the host's side (Invoke frames, runtime exit) interleaved.
//!
//! Run: `tests/fuzz.sh runtime-api/runtime_api_server`.
//! Input: a program of host invokes, well-formed requests (next, response buffered or
//! streamed with chunks and error trailers, error, init error, extension register /
//! next / errors, any path) with fuzzed ids, headers and bodies, raw bytes on a fresh
//! connection, and runtime exits. Time is tokio's paused clock, so a long poll that
//! never returns costs nothing.
//! Properties: nothing panics; every status is one the API defines; `/next` hands out
//! each pushed invocation at most once, with its id and payload; every frame for the
//! host encodes and decodes to itself; per request id there is at most one final
//! answer (response, error or stream end), stream data only inside a started stream,
//! nothing for an id the host never sent, and no answer beyond the payload limits.
#![no_main]

use std::collections::{HashMap, HashSet, VecDeque};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt as _;
use hyper::body::{Body, Frame};
use hyper::{HeaderMap, Request};
use hyper_util::rt::TokioIo;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use runtime_api::protocol::{decode, encode, GuestMessage, Invoke};
use runtime_api::server::{
    serve_connection, FunctionInfo, Invocations, MAX_RESPONSE_BYTES, MAX_STREAM_BYTES,
};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

const STATUSES: [u16; 8] = [200, 202, 400, 403, 404, 405, 413, 500];
/// How long a request may take on the paused clock before the client gives up.
const PATIENCE: Duration = Duration::from_secs(30);

/// A runtime per input: dropping it ends every task the input left behind (a long
/// poll on a closed connection), so inputs cannot influence each other.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
}

/// A request body of scripted frames: data chunks, then optional trailers.
struct Frames(VecDeque<Frame<Bytes>>);

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().0.pop_front().map(Ok))
    }
}

#[derive(Arbitrary, Debug)]
enum Id {
    /// The n-th invocation the host pushed (mod how many there are).
    Pushed(u8),
    Text(String),
}

#[derive(Arbitrary, Debug)]
struct Payload {
    chunks: Vec<Vec<u8>>,
    /// 255 appends one chunk just past the buffered response limit.
    oversize: u8,
}

impl Payload {
    fn frames(&self) -> Vec<Bytes> {
        let mut v: Vec<Bytes> = self
            .chunks
            .iter()
            .take(8)
            .map(|c| Bytes::from(c.clone()))
            .collect();
        if self.oversize == 255 {
            // Made once and shared (a `Bytes` clone copies nothing): the server's own
            // copy up to the limit is the cost that remains.
            static BIG: std::sync::OnceLock<Bytes> = std::sync::OnceLock::new();
            v.push(
                BIG.get_or_init(|| Bytes::from(vec![b'x'; MAX_RESPONSE_BYTES + 1]))
                    .clone(),
            );
        }
        v
    }
}

#[derive(Arbitrary, Debug)]
enum Call {
    Next,
    Response {
        id: Id,
        mode: Option<String>,
        streaming: bool,
        body: Payload,
        trailers: Option<(String, Vec<u8>)>,
    },
    Error {
        id: Id,
        error_type: Option<String>,
        body: Payload,
    },
    InitError {
        error_type: Option<String>,
        body: Payload,
    },
    Register {
        name: Option<String>,
        body: Vec<u8>,
    },
    ExtNext {
        id: Option<String>,
    },
    ExtError {
        init: bool,
        id: Option<String>,
        error_type: Option<String>,
    },
    Other {
        post: bool,
        path: String,
        body: Vec<u8>,
    },
}

#[derive(Arbitrary, Debug)]
enum Op {
    Push {
        payload: Vec<u8>,
        trace: Option<String>,
    },
    Call(Call),
    Raw(Vec<u8>),
    Exit {
        quiet: bool,
    },
}

struct Model {
    pushed: Vec<Invoke>,
    delivered: HashSet<String>,
}

fn header_map(pairs: &[(&'static str, Option<&str>)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        if let Some(Ok(v)) = v.map(hyper::header::HeaderValue::from_str) {
            h.insert(*k, v);
        }
    }
    h
}

fn pick(model: &Model, id: &Id) -> String {
    match id {
        Id::Pushed(n) if !model.pushed.is_empty() => model.pushed
            [usize::from(*n) % model.pushed.len()]
        .request_id
        .clone(),
        Id::Pushed(n) => format!("none-{n}"),
        Id::Text(t) => t.clone(),
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

const RUNTIME: &str = "/2018-06-01/runtime";
const EXTENSION: &str = "/2020-01-01/extension";

/// One request: method, path, headers and body frames.
type Built = (&'static str, String, HeaderMap, Vec<Frame<Bytes>>);

fn data(p: &Payload) -> Vec<Frame<Bytes>> {
    p.frames().into_iter().map(Frame::data).collect()
}

/// `POST /invocation/{id}/response`, buffered or streamed, with error trailers if given.
fn response(
    id: String,
    mode: Option<&str>,
    body: &Payload,
    trailers: &Option<(String, Vec<u8>)>,
) -> Built {
    let mut h = header_map(&[("lambda-runtime-function-response-mode", mode)]);
    let mut frames = data(body);
    if let Some((t, b)) = trailers {
        h.insert(
            "trailer",
            hyper::header::HeaderValue::from_static(
                "Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body",
            ),
        );
        let mut tr = HeaderMap::new();
        let b64 = runtime_b64(b);
        for (k, v) in [
            ("lambda-runtime-function-error-type", t.as_str()),
            ("lambda-runtime-function-error-body", b64.as_str()),
        ] {
            if let Ok(v) = hyper::header::HeaderValue::from_str(v) {
                tr.insert(k, v);
            }
        }
        frames.push(Frame::trailers(tr));
    }
    let path = format!("{RUNTIME}/invocation/{}/response", enc(&id));
    ("POST", path, h, frames)
}

fn extension(call: &Call) -> Option<Built> {
    Some(match call {
        Call::Register { name, body } => {
            let h = header_map(&[("lambda-extension-name", name.as_deref())]);
            let frames = vec![Frame::data(Bytes::from(body.clone()))];
            ("POST", format!("{EXTENSION}/register"), h, frames)
        }
        Call::ExtNext { id } => {
            let h = header_map(&[("lambda-extension-identifier", id.as_deref())]);
            ("GET", format!("{EXTENSION}/event/next"), h, vec![])
        }
        Call::ExtError {
            init,
            id,
            error_type,
        } => {
            let h = header_map(&[
                ("lambda-extension-identifier", id.as_deref()),
                (
                    "lambda-extension-function-error-type",
                    error_type.as_deref(),
                ),
            ]);
            let which = if *init { "init" } else { "exit" };
            ("POST", format!("{EXTENSION}/{which}/error"), h, vec![])
        }
        _ => return None,
    })
}

/// Method, path, headers and body frames of a call.
fn build(model: &Model, call: &Call) -> Built {
    if let Some(b) = extension(call) {
        return b;
    }
    let error_type =
        |t: &Option<String>| header_map(&[("lambda-runtime-function-error-type", t.as_deref())]);
    match call {
        Call::Next => (
            "GET",
            format!("{RUNTIME}/invocation/next"),
            HeaderMap::new(),
            vec![],
        ),
        Call::Response {
            id,
            mode,
            streaming,
            body,
            trailers,
        } => {
            let mode = mode.as_deref().or(streaming.then_some("streaming"));
            response(pick(model, id), mode, body, trailers)
        }
        Call::Error {
            id,
            error_type: t,
            body,
        } => {
            let path = format!("{RUNTIME}/invocation/{}/error", enc(&pick(model, id)));
            ("POST", path, error_type(t), data(body))
        }
        Call::InitError {
            error_type: t,
            body,
        } => (
            "POST",
            format!("{RUNTIME}/init/error"),
            error_type(t),
            data(body),
        ),
        Call::Other { post, path, body } => {
            let method = if *post { "POST" } else { "GET" };
            let path = format!(
                "/{}",
                path.split('/').map(enc).collect::<Vec<_>>().join("/")
            );
            let frames = vec![Frame::data(Bytes::from(body.clone()))];
            (method, path, HeaderMap::new(), frames)
        }
        Call::Register { .. } | Call::ExtNext { .. } | Call::ExtError { .. } => {
            unreachable!("extension calls are built above")
        }
    }
}

fn runtime_b64(b: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(b)
}

type Sender = hyper::client::conn::http1::SendRequest<Frames>;

async fn connect(inv: &Arc<Invocations>) -> Option<Sender> {
    let (client, server) = tokio::io::duplex(64 * 1024);
    tokio::spawn(serve_connection(server, Arc::clone(inv)));
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(client))
        .await
        .ok()?;
    tokio::spawn(conn);
    Some(sender)
}

/// Sends one call; a call still pending after [`PATIENCE`] (a long poll) is given up
/// together with its connection, as a runtime that exits would.
async fn call(inv: &Arc<Invocations>, conn: &mut Option<Sender>, model: &mut Model, c: &Call) {
    if conn.as_ref().is_none_or(|s| s.is_closed()) {
        *conn = connect(inv).await;
    }
    let Some(sender) = conn.as_mut() else { return };
    let (method, path, headers, frames) = build(model, c);
    let mut req = Request::builder().method(method).uri(path);
    if let Some(h) = req.headers_mut() {
        h.extend(headers);
        h.insert(
            "host",
            hyper::header::HeaderValue::from_static("127.0.0.1:9001"),
        );
    }
    let Ok(req) = req.body(Frames(frames.into())) else {
        return;
    };
    let answer = tokio::time::timeout(PATIENCE, async {
        sender.ready().await.ok()?;
        let resp = sender.send_request(req).await.ok()?;
        let status = resp.status().as_u16();
        let id = resp
            .headers()
            .get("lambda-runtime-aws-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        Some((status, id, body))
    })
    .await;
    let Ok(Some((status, id, body))) = answer else {
        *conn = None;
        return;
    };
    if trace() {
        eprintln!("runtime_api_server: {status} for {c:?}");
    }
    assert!(STATUSES.contains(&status), "status {status} for {c:?}");
    if matches!(c, Call::Next) && status == 200 {
        let id = id.expect("an invocation carries its request id");
        let pushed = model
            .pushed
            .iter()
            .find(|i| i.request_id == id)
            .expect("a pushed id");
        assert_eq!(body, pushed.payload, "payload of {id}");
        assert!(model.delivered.insert(id.clone()), "{id} handed out twice");
    }
}

/// `RUNTIME_API_FUZZ_TRACE=1`: print each call's status (to see what a corpus reaches).
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("RUNTIME_API_FUZZ_TRACE").is_some())
}

/// Raw bytes on a connection of their own; whatever comes back is read and dropped.
async fn raw(inv: &Arc<Invocations>, bytes: &[u8]) {
    let (mut client, server) = tokio::io::duplex(64 * 1024);
    tokio::spawn(serve_connection(server, Arc::clone(inv)));
    let _ = client.write_all(bytes).await;
    let _ = client.shutdown().await;
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, client.read_to_end(&mut sink)).await;
}

/// What the host received must be a valid conversation.
fn check_frames(frames: &[GuestMessage], model: &Model) {
    let pushed: HashSet<&str> = model.pushed.iter().map(|i| i.request_id.as_str()).collect();
    let mut finals: HashSet<&str> = HashSet::new();
    let mut streams: HashMap<&str, usize> = HashMap::new();
    for f in frames {
        let wire = encode(f).expect("every frame for the host encodes");
        let (back, _) = decode::<GuestMessage>(&wire)
            .expect("decodes")
            .expect("complete");
        assert_eq!(&back, f);
        let (id, is_final) = match f {
            GuestMessage::Response(r) => {
                assert!(r.payload.len() <= MAX_RESPONSE_BYTES, "oversized response");
                (r.request_id.as_str(), true)
            }
            GuestMessage::InvokeError(e) => (e.request_id.as_str(), true),
            GuestMessage::StreamStart(s) => {
                assert!(
                    streams.insert(&s.request_id, 0).is_none(),
                    "stream started twice"
                );
                (s.request_id.as_str(), false)
            }
            GuestMessage::StreamChunk(c) => {
                let n = streams
                    .get_mut(c.request_id.as_str())
                    .expect("chunk outside a stream");
                *n += c.data.len();
                assert!(*n <= MAX_STREAM_BYTES, "stream beyond its limit");
                (c.request_id.as_str(), false)
            }
            GuestMessage::StreamEnd(e) => {
                assert!(
                    streams.contains_key(e.request_id.as_str()),
                    "end of no stream"
                );
                (e.request_id.as_str(), true)
            }
            _ => continue,
        };
        assert!(
            pushed.contains(id),
            "frame for {id:?}, which the host never sent"
        );
        if is_final {
            assert!(finals.insert(id), "second final answer for {id}");
        }
    }
}

fuzz_target!(|ops: Vec<Op>| {
    runtime().block_on(async {
        let frames: Arc<Mutex<Vec<GuestMessage>>> = Arc::default();
        let log = Arc::clone(&frames);
        let inv = Invocations::new(Arc::new(move |m| log.lock().expect("log").push(m)));
        inv.set_function(FunctionInfo {
            name: "fuzz".into(),
            version: "$LATEST".into(),
            handler: "main".into(),
        });
        let mut model = Model {
            pushed: Vec::new(),
            delivered: HashSet::new(),
        };
        let mut conn = None;
        for op in ops.iter().take(24) {
            match op {
                Op::Push { payload, trace } => {
                    let invoke = Invoke {
                        request_id: format!("req-{}", model.pushed.len()),
                        deadline_ms: 4_000_000_000_000,
                        host_now_ms: 3_999_999_990_000,
                        invoked_function_arn: "arn:aws:lambda:us-east-1:000000000000:function:fuzz"
                            .into(),
                        trace_id: trace.clone(),
                        payload: payload.clone(),
                        ..Invoke::default()
                    };
                    model.pushed.push(invoke.clone());
                    inv.push_invoke(invoke);
                }
                Op::Call(c) => call(&inv, &mut conn, &mut model, c).await,
                Op::Raw(bytes) => raw(&inv, bytes).await,
                Op::Exit { quiet } => {
                    inv.runtime_exited("Runtime.ExitError", "exit status 3", *quiet)
                }
            }
        }
        drop(conn);
        // Let the server tasks finish what they started before judging the frames.
        tokio::time::sleep(PATIENCE).await;
        check_frames(&frames.lock().expect("log"), &model);
    });
});
