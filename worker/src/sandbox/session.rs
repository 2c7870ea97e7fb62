//! The guest-init protocol as the worker drives it: Init once, then one Invoke at a
//! time, collecting the runtime's log lines. Shared by every backend, since the process
//! and microVM backends both end up with a Unix stream to guest-init.

use super::log_tail::{LogSink, LogTail};
use super::streamed::{is_cut_off, StreamedBody};
use super::wire::WireConn;
use super::{LogLine, Reply, SandboxError};
use crate::spec::{
    ChunkSink, FunctionVersionSpec, InvokeRequest, MAX_BUFFERED_RESPONSE_BYTES,
    MAX_STREAMED_RESPONSE_BYTES,
};
use runtime_api::protocol::{GuestMessage, HostMessage, Init, Invoke, Shutdown, WireError};
use std::time::Duration;

/// Region and account used to build ARNs and log names.
#[derive(Debug, Clone)]
pub struct Identity {
    pub region: String,
    pub account_id: String,
}

impl Default for Identity {
    fn default() -> Self {
        Self {
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
        }
    }
}

pub struct Session {
    conn: WireConn,
    init: Init,
    arn: String,
    logs: LogTail,
    /// A sandbox resumed from a SnapStart snapshot: its Init ran before the snapshot,
    /// so `init` sends Restore instead.
    restored: bool,
    /// How long the restored guest took from Restore to ready (its runtime's
    /// after-restore hooks): REPORT's Billed Restore Duration.
    resume_took: Option<std::time::Duration>,
}

#[path = "session_snapstart.rs"]
mod snapstart;

/// The Init message for a function version.
pub fn init_message(spec: &FunctionVersionSpec, id: &Identity, sandbox_id: &str) -> Init {
    let day = crate::report::rfc3339_now()
        .get(..10)
        .unwrap_or("1970-01-01")
        .replace('-', "/");
    let image = spec.image.as_ref().and_then(|i| i.ready.as_ref());
    let mut env = spec.env.clone();
    let (mut command, mut working_dir, mut handler) =
        (Vec::new(), String::new(), spec.handler.clone());
    if let Some(m) = image {
        // The image's environment first: the function's own variables win.
        env = m.command.env.iter().cloned().chain(env).collect();
        command = m.command.argv.clone();
        working_dir = m.command.working_dir.clone();
        handler = m.command.handler.clone();
    }
    Init {
        function_name: spec.name.clone(),
        function_version: spec.version.clone(),
        handler,
        memory_mib: spec.memory_mib,
        timeout_ms: u32::try_from(spec.timeout.as_millis()).unwrap_or(u32::MAX),
        region: id.region.clone(),
        log_group: format!("/aws/lambda/{}", spec.name),
        log_stream: format!("{day}/[{}]{sandbox_id}", spec.version),
        initialization_type: "on-demand".into(),
        env,
        host_now_ms: 0,
        command,
        working_dir,
    }
}

pub fn function_arn(spec: &FunctionVersionSpec, id: &Identity) -> String {
    format!(
        "arn:aws:lambda:{}:{}:function:{}",
        id.region, id.account_id, spec.name
    )
}

fn epoch_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How long a cut-off stream waits for guest-init to report the runtime's exit.
const EXIT_REPORT_GRACE: Duration = Duration::from_millis(500);

/// The message for a runtime gone without a word; backends that can see the process
/// replace it with the exit status.
pub(super) const NO_REASON: &str = "Runtime exited without providing a reason";

fn wire_err(e: WireError) -> SandboxError {
    match e {
        WireError::Closed | WireError::Io(_) => SandboxError::Exited {
            error_type: "Runtime.ExitError".into(),
            message: NO_REASON.into(),
        },
        other => SandboxError::Protocol(other.to_string()),
    }
}

/// The bare reason out of guest-init's error document for a dead runtime
/// (`{"errorMessage": "RequestId: <id> Error: Runtime exited with error: ..."}`), so
/// the caller's error says it once, in one level of JSON.
fn exit_detail(body: &[u8], request_id: &str) -> String {
    let message = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("errorMessage")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    let prefix = format!("RequestId: {request_id} Error: ");
    message
        .strip_prefix(&prefix)
        .map(str::to_owned)
        .unwrap_or(message)
}

/// Error types guest-init uses for a dead runtime; the sandbox cannot serve again.
pub(super) fn is_fatal(error_type: &str) -> bool {
    matches!(error_type, "Runtime.ExitError" | "Runtime.OutOfMemory")
}

impl Session {
    pub fn new(conn: WireConn, init: Init, arn: String) -> Self {
        Self {
            conn,
            init,
            arn,
            logs: LogTail::default(),
            restored: false,
            resume_took: None,
        }
    }

    fn log(&mut self, l: runtime_api::protocol::Log) {
        self.logs.push(LogLine {
            request_id: l.request_id,
            text: String::from_utf8_lossy(&l.line).into_owned(),
        });
    }

    /// Function output goes to `sink` as it arrives from now on.
    pub fn set_log_sink(&mut self, sink: std::sync::Arc<dyn LogSink>) {
        self.logs.set_sink(sink);
    }

    /// The last few KB of output since the previous call.
    pub fn take_logs(&mut self) -> Vec<LogLine> {
        self.logs.take()
    }

    /// Init, or for a restored sandbox the Restore that takes its place.
    pub async fn init(&mut self) -> Result<(), SandboxError> {
        if self.restored {
            return self.resume().await;
        }
        let init = Init {
            host_now_ms: epoch_ms(),
            ..self.init.clone()
        };
        self.conn
            .send(&HostMessage::Init(init))
            .await
            .map_err(wire_err)?;
        self.await_phase("init", |m| match m {
            GuestMessage::InitDone => Ok(Ok(())),
            GuestMessage::InitError(e) => Ok(Err(SandboxError::Init {
                error_type: e.error_type,
                body: e.body,
            })),
            other => Err(other),
        })
        .await
    }

    /// Reads guest messages until `outcome` takes one (Init, a checkpoint, a restore):
    /// log lines are kept, a runtime that exits ends the phase, any other message
    /// breaks the protocol.
    pub(super) async fn await_phase(
        &mut self,
        phase: &str,
        outcome: impl Fn(GuestMessage) -> Result<Result<(), SandboxError>, GuestMessage>,
    ) -> Result<(), SandboxError> {
        loop {
            match self.conn.recv().await.map_err(wire_err)? {
                GuestMessage::Log(l) => self.log(l),
                GuestMessage::RuntimeExited(r) => {
                    return Err(SandboxError::Exited {
                        error_type: r.error_type,
                        message: r.message,
                    })
                }
                msg => {
                    return outcome(msg).unwrap_or_else(|other| {
                        Err(SandboxError::Protocol(format!(
                            "unexpected message during {phase}: {other:?}"
                        )))
                    })
                }
            }
        }
    }

    /// Runs one invocation. A streamed response is gathered into `Reply::Response`.
    pub async fn invoke(
        &mut self,
        req: &InvokeRequest,
        deadline_ms: u64,
    ) -> Result<Reply, SandboxError> {
        // Gathered for a buffered caller: bounded by the buffered limit where the bytes
        // come in, not after 200 MiB of a streaming function were collected.
        let body = StreamedBody::new(None, MAX_BUFFERED_RESPONSE_BYTES);
        self.invoke_into(req, deadline_ms, body).await
    }

    /// Runs one invocation, handing a streamed response to `chunks` as it arrives.
    pub async fn invoke_streaming(
        &mut self,
        req: &InvokeRequest,
        deadline_ms: u64,
        chunks: ChunkSink,
    ) -> Result<Reply, SandboxError> {
        let body = StreamedBody::new(Some(chunks), MAX_STREAMED_RESPONSE_BYTES);
        self.invoke_into(req, deadline_ms, body).await
    }

    async fn invoke_into(
        &mut self,
        req: &InvokeRequest,
        deadline_ms: u64,
        mut body: StreamedBody,
    ) -> Result<Reply, SandboxError> {
        self.logs.begin_invoke();
        let msg = HostMessage::Invoke(Invoke {
            request_id: req.request_id.clone(),
            deadline_ms,
            host_now_ms: epoch_ms(),
            invoked_function_arn: self.arn.clone(),
            trace_id: req.trace_id.clone(),
            client_context: req.client_context.clone(),
            cognito_identity: req.cognito_identity.clone(),
            payload: req.payload.clone(),
        });
        self.conn.send(&msg).await.map_err(wire_err)?;
        loop {
            match self.conn.recv().await.map_err(wire_err)? {
                GuestMessage::Log(l) => self.log(l),
                GuestMessage::Response(r) if r.request_id == req.request_id => {
                    return Ok(Reply::Response(r.payload))
                }
                GuestMessage::InvokeError(e) if e.request_id == req.request_id => {
                    if is_fatal(&e.error_type) {
                        return Err(SandboxError::Exited {
                            message: exit_detail(&e.body, &req.request_id),
                            error_type: e.error_type,
                        });
                    }
                    return Ok(Reply::Error {
                        error_type: e.error_type,
                        body: e.body,
                    });
                }
                GuestMessage::StreamStart(s) if s.request_id == req.request_id => {}
                GuestMessage::StreamChunk(c) if c.request_id == req.request_id => {
                    body.push(c.data).await;
                }
                GuestMessage::StreamEnd(s) if s.request_id == req.request_id => {
                    let cut_off = is_cut_off(&s);
                    return match body.finish(s) {
                        Err(e) if cut_off => Err(self.exit_after_cut_off(e).await),
                        reply => reply,
                    };
                }
                GuestMessage::RuntimeExited(r) => {
                    return Err(SandboxError::Exited {
                        error_type: r.error_type,
                        message: r.message,
                    })
                }
                // Late frames of an earlier, abandoned request: skip.
                GuestMessage::Response(_)
                | GuestMessage::InvokeError(_)
                | GuestMessage::StreamStart(_)
                | GuestMessage::StreamChunk(_)
                | GuestMessage::StreamEnd(_) => {}
                other => {
                    return Err(SandboxError::Protocol(format!(
                        "unexpected message during invoke: {other:?}"
                    )))
                }
            }
        }
    }

    /// After a streamed body was cut off: guest-init usually reports the runtime's exit
    /// right after, and its exit status is the better error. The sandbox is retired
    /// either way, so abandoning the read after the grace leaves nothing out of step.
    async fn exit_after_cut_off(&mut self, cut_off: SandboxError) -> SandboxError {
        let exit = async {
            loop {
                match self.conn.recv().await {
                    Ok(GuestMessage::Log(l)) => self.log(l),
                    Ok(GuestMessage::RuntimeExited(r)) => {
                        return Some(SandboxError::Exited {
                            error_type: r.error_type,
                            message: r.message,
                        })
                    }
                    Ok(_) => {}
                    Err(_) => return None,
                }
            }
        };
        tokio::time::timeout(EXIT_REPORT_GRACE, exit)
            .await
            .ok()
            .flatten()
            .unwrap_or(cut_off)
    }

    /// Asks guest-init to stop the runtime (SIGTERM, then SIGKILL after `grace_ms`).
    pub async fn shutdown(&mut self, grace_ms: u32) {
        let _ = self
            .conn
            .send(&HostMessage::Shutdown(Shutdown {
                reason: "spindown".into(),
                grace_ms,
            }))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use runtime_api::protocol::{
        GuestConnection, RuntimeExited, StreamChunk, StreamEnd, StreamStart,
    };
    use std::os::unix::net::UnixStream;

    fn chunk(data: &[u8]) -> GuestMessage {
        GuestMessage::StreamChunk(StreamChunk {
            request_id: "r".into(),
            data: data.to_vec(),
        })
    }

    fn end(error_type: Option<&str>) -> GuestMessage {
        GuestMessage::StreamEnd(StreamEnd {
            request_id: "r".into(),
            error_type: error_type.map(str::to_owned),
            error_body: None,
        })
    }

    /// A session whose guest side runs `script` on a thread: for each Invoke, the
    /// frames to send, each after waiting for one `go` when it is `None`.
    async fn session_with_guest(
        script: Vec<Vec<Option<GuestMessage>>>,
        go: std::sync::mpsc::Receiver<()>,
    ) -> (Session, std::thread::JoinHandle<()>) {
        let (host, guest) = UnixStream::pair().expect("socketpair");
        let thread = std::thread::spawn(move || {
            let mut conn = GuestConnection::handshake(guest, "guest-test").expect("hello");
            for frames in script {
                let Ok(HostMessage::Invoke(_)) = conn.recv() else {
                    return;
                };
                for f in frames {
                    match f {
                        Some(m) => conn.send(&m).expect("send"),
                        None => go.recv().expect("go"),
                    }
                }
            }
        });
        host.set_nonblocking(true).expect("nonblocking");
        let host = tokio::net::UnixStream::from_std(host).expect("tokio stream");
        let conn = WireConn::handshake(host).await.expect("handshake");
        (Session::new(conn, Init::default(), "arn".into()), thread)
    }

    fn req() -> InvokeRequest {
        InvokeRequest {
            request_id: "r".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn chunks_reach_the_sink_while_the_stream_is_open() {
        let start = GuestMessage::StreamStart(StreamStart {
            request_id: "r".into(),
            content_type: "text/plain".into(),
        });
        let (go_tx, go_rx) = std::sync::mpsc::channel();
        let (mut session, guest) = session_with_guest(
            vec![
                vec![
                    Some(start.clone()),
                    Some(chunk(b"one ")),
                    None,
                    Some(chunk(b"two")),
                    Some(end(None)),
                ],
                vec![
                    Some(start),
                    Some(chunk(b"a")),
                    Some(chunk(b"b")),
                    Some(end(None)),
                ],
                vec![
                    Some(chunk(b"cut")),
                    Some(end(Some("Runtime.TruncatedResponse"))),
                    Some(GuestMessage::RuntimeExited(RuntimeExited {
                        error_type: "Runtime.ExitError".into(),
                        message: "Runtime exited with error: exit status 7".into(),
                    })),
                ],
            ],
            go_rx,
        )
        .await;
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let reader = async {
            // The guest sends "two" only after "one " arrived here.
            let first = rx.recv().await;
            go_tx.send(()).expect("go");
            (first, rx.recv().await, rx.recv().await)
        };
        let r = req();
        let (reply, (first, second, closed)) =
            tokio::join!(session.invoke_streaming(&r, 0, tx), reader);
        assert_eq!(reply, Ok(Reply::Streamed));
        assert_eq!(first.as_deref(), Some(&b"one "[..]));
        assert_eq!(second.as_deref(), Some(&b"two"[..]));
        assert_eq!(closed, None, "the sink closes with the invoke");
        // Without a sink the same frames are gathered.
        assert_eq!(
            session.invoke(&r, 0).await,
            Ok(Reply::Response(b"ab".to_vec()))
        );
        // A body cut off mid-stream retires the sandbox, with the exit status that
        // guest-init reports after it.
        let (tx, _rx) = tokio::sync::mpsc::channel(4);
        assert_eq!(
            session.invoke_streaming(&r, 0, tx).await,
            Err(SandboxError::Exited {
                error_type: "Runtime.ExitError".into(),
                message: "Runtime exited with error: exit status 7".into(),
            })
        );
        guest.join().expect("guest thread");
    }

    /// Frames of a streamed response of `size` bytes, in chunks of at most 1 MiB.
    fn streamed(size: usize) -> Vec<Option<GuestMessage>> {
        let mut frames = Vec::new();
        let mut left = size;
        while left > 0 {
            let n = left.min(1 << 20);
            frames.push(Some(chunk(&vec![b'x'; n])));
            left -= n;
        }
        frames.push(Some(end(None)));
        frames
    }

    #[tokio::test]
    async fn a_buffered_invoke_of_a_stream_stops_at_the_buffered_limit() {
        let limit = MAX_BUFFERED_RESPONSE_BYTES as usize;
        let (_go, go_rx) = std::sync::mpsc::channel();
        let (mut session, guest) =
            session_with_guest(vec![streamed(limit), streamed(limit + 1)], go_rx).await;
        let r = req();
        let Ok(Reply::Response(body)) = session.invoke(&r, 0).await else {
            panic!("a stream of exactly the limit is gathered");
        };
        assert_eq!(body.len(), limit);
        // One byte more is refused, not gathered up to the streaming limit.
        let Ok(Reply::Error { error_type, body }) = session.invoke(&r, 0).await else {
            panic!("expected an error reply");
        };
        assert_eq!(error_type, "Function.ResponseSizeTooLarge");
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains(&format!("({limit} bytes)")), "{body}");
        guest.join().expect("guest thread");
    }
}
