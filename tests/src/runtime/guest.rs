//! A test host: runs guest-init as a host process and speaks the wire protocol to it.

use super::binaries;
use crate::tcg::TempDir;
use runtime_api::protocol::{
    GuestMessage, HostConnection, HostSender, Init, InitError, Invoke, Log, LogStream, Shutdown,
};
use std::io::Read;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A scratch directory with Lambda's three code locations.
pub struct Sandbox {
    dir: TempDir,
    pub task: PathBuf,
    pub opt: PathBuf,
    pub runtime: PathBuf,
}

impl Sandbox {
    pub fn new() -> Result<Self, String> {
        let dir = TempDir::new("gi-sandbox")?;
        let task = dir.path().join("task");
        let opt = dir.path().join("opt");
        let runtime = dir.path().join("runtime");
        for d in [&task, &opt, &runtime] {
            std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
        }
        Ok(Self {
            dir,
            task,
            opt,
            runtime,
        })
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

/// How an invocation ended, as the host saw it.
#[derive(Debug, Clone, PartialEq)]
pub enum InvokeOutcome {
    Response(Vec<u8>),
    Error {
        error_type: String,
        body: serde_json::Value,
    },
    Streamed {
        content_type: String,
        data: Vec<u8>,
        error_type: Option<String>,
        error_body: Option<String>,
    },
    Timeout,
}

/// guest-init running as a child process, connected to this test over a Unix socket.
pub struct GuestProcess {
    child: Child,
    tx: HostSender<UnixStream>,
    events: mpsc::Receiver<GuestMessage>,
    logs: Arc<Mutex<Vec<Log>>>,
    stderr: Arc<Mutex<String>>,
    /// Messages a wait skipped over (InitDone, RuntimeExited, ...), in arrival order.
    pub others: Vec<GuestMessage>,
    pub peer_agent: String,
}

const ACCEPT_TIMEOUT: Duration = Duration::from_secs(15);

impl GuestProcess {
    /// Starts guest-init with its Runtime API on an ephemeral port and accepts its
    /// connection.
    pub fn start(sb: &Sandbox, extra_args: &[&str]) -> Result<Self, String> {
        let bin = binaries::guest_init()?;
        let sock = sb.path().join("host.sock");
        let listener =
            UnixListener::bind(&sock).map_err(|e| format!("bind {}: {e}", sock.display()))?;
        let mut child = Command::new(bin)
            .arg("--host-uds")
            .arg(&sock)
            .args(["--runtime-api-addr", "127.0.0.1:0"])
            .arg("--task-root")
            .arg(&sb.task)
            .arg("--opt-dir")
            .arg(&sb.opt)
            .arg("--runtime-dir")
            .arg(&sb.runtime)
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawn guest-init: {e}"))?;
        let stderr = Arc::new(Mutex::new(String::new()));
        let logs = Arc::new(Mutex::new(Vec::new()));
        if let Some(mut pipe) = child.stderr.take() {
            let sink = Arc::clone(&stderr);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    if let Ok(mut s) = sink.lock() {
                        s.push_str(&String::from_utf8_lossy(&buf[..n]));
                    }
                }
            });
        }
        let stream = accept_with_timeout(&listener, &mut child)?;
        let (tx, events, peer_agent) = connect(stream, Arc::clone(&logs))?;
        Ok(Self {
            child,
            tx,
            events,
            logs,
            stderr,
            others: Vec::new(),
            peer_agent,
        })
    }

    /// Breaks the connection as a snapshot's restore does and accepts guest-init's
    /// new one on the same socket path (SnapStart, after `CheckpointReady`).
    pub fn reconnect(&mut self, sb: &Sandbox) -> Result<(), String> {
        let sock = sb.path().join("host.sock");
        let _ = std::fs::remove_file(&sock);
        let listener =
            UnixListener::bind(&sock).map_err(|e| format!("bind {}: {e}", sock.display()))?;
        self.tx.close();
        let stream = accept_with_timeout(&listener, &mut self.child)?;
        let (tx, events, peer_agent) = connect(stream, Arc::clone(&self.logs))?;
        (self.tx, self.events, self.peer_agent) = (tx, events, peer_agent);
        Ok(())
    }

    pub fn send_init(&self, init: &Init) {
        self.tx
            .send(&runtime_api::protocol::HostMessage::Init(init.clone()))
            .expect("send Init");
    }

    /// The next non-log message, if one arrives in time.
    pub fn recv(&mut self, timeout: Duration) -> Option<GuestMessage> {
        self.events.recv_timeout(timeout).ok()
    }

    /// Waits for InitDone (`Ok`) or InitError (`Err`).
    pub fn wait_init(&mut self, timeout: Duration) -> Result<(), InitError> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Some(GuestMessage::InitDone) => return Ok(()),
                Some(GuestMessage::InitError(e)) => return Err(e),
                Some(other) => self.others.push(other),
                None => panic!(
                    "no InitDone/InitError within {timeout:?}; guest-init stderr:\n{}\nlogs: {:?}",
                    self.stderr(),
                    self.all_logs()
                ),
            }
        }
    }

    /// Sends `invoke` and collects its outcome.
    pub fn invoke(&mut self, invoke: Invoke, timeout: Duration) -> InvokeOutcome {
        let id = invoke.request_id.clone();
        self.tx
            .send(&runtime_api::protocol::HostMessage::Invoke(invoke))
            .expect("send Invoke");
        self.collect(&id, timeout)
    }

    /// Collects the outcome of request `id`.
    pub fn collect(&mut self, id: &str, timeout: Duration) -> InvokeOutcome {
        let deadline = Instant::now() + timeout;
        let mut stream: Option<(String, Vec<u8>)> = None;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(msg) = self.recv(left) else {
                return InvokeOutcome::Timeout;
            };
            match msg {
                GuestMessage::Response(r) if r.request_id == id => {
                    return InvokeOutcome::Response(r.payload)
                }
                GuestMessage::InvokeError(e) if e.request_id == id => {
                    let body = serde_json::from_slice(&e.body).unwrap_or_else(|_| {
                        serde_json::Value::String(String::from_utf8_lossy(&e.body).into_owned())
                    });
                    return InvokeOutcome::Error {
                        error_type: e.error_type,
                        body,
                    };
                }
                GuestMessage::StreamStart(s) if s.request_id == id => {
                    stream = Some((s.content_type, Vec::new()))
                }
                GuestMessage::StreamChunk(c) if c.request_id == id => {
                    if let Some((_, data)) = stream.as_mut() {
                        data.extend_from_slice(&c.data);
                    }
                }
                GuestMessage::StreamEnd(e) if e.request_id == id => {
                    let (content_type, data) = stream.take().unwrap_or_default();
                    return InvokeOutcome::Streamed {
                        content_type,
                        data,
                        error_type: e.error_type,
                        error_body: e.error_body,
                    };
                }
                other => self.others.push(other),
            }
        }
    }

    /// Sends Shutdown and waits for guest-init to exit.
    pub fn shutdown(&mut self, grace_ms: u32) -> Option<ExitStatus> {
        let _ = self
            .tx
            .send(&runtime_api::protocol::HostMessage::Shutdown(Shutdown {
                reason: "spindown".into(),
                grace_ms,
            }));
        self.wait_exit(Duration::from_millis(u64::from(grace_ms)) + Duration::from_secs(5))
    }

    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// Lines logged for `request_id` as (stream, text).
    pub fn logs_for(&self, request_id: &str) -> Vec<(LogStream, String)> {
        self.all_logs()
            .into_iter()
            .filter(|l| l.request_id.as_deref() == Some(request_id))
            .map(|l| (l.stream, String::from_utf8_lossy(&l.line).into_owned()))
            .collect()
    }

    pub fn all_logs(&self) -> Vec<Log> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Waits until a log line containing `needle` has arrived.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> Option<Log> {
        let deadline = Instant::now() + timeout;
        loop {
            let found = self
                .all_logs()
                .into_iter()
                .find(|l| String::from_utf8_lossy(&l.line).contains(needle));
            if found.is_some() || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The raw sender, for protocol-level tests.
    pub fn sender(&self) -> &HostSender<UnixStream> {
        &self.tx
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for GuestProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Connected = (HostSender<UnixStream>, mpsc::Receiver<GuestMessage>, String);

/// The handshake on an accepted stream, and a thread that files log lines in `logs`
/// and hands every other message to the returned receiver.
fn connect(stream: UnixStream, logs: Arc<Mutex<Vec<Log>>>) -> Result<Connected, String> {
    let conn = HostConnection::accept(stream, "integration-test-host")
        .map_err(|e| format!("handshake: {e}"))?;
    let peer_agent = conn.peer_agent().to_string();
    let (mut rx, tx) = conn.into_split();
    let (ev_tx, events) = mpsc::channel();
    std::thread::spawn(move || {
        while let Ok(msg) = rx.recv() {
            match msg {
                GuestMessage::Log(l) => logs.lock().unwrap_or_else(|p| p.into_inner()).push(l),
                other => {
                    if ev_tx.send(other).is_err() {
                        break;
                    }
                }
            }
        }
    });
    Ok((tx, events, peer_agent))
}

fn accept_with_timeout(listener: &UnixListener, child: &mut Child) -> Result<UnixStream, String> {
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + ACCEPT_TIMEOUT;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).map_err(|e| e.to_string())?;
                return Ok(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("accept: {e}")),
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("guest-init exited before connecting: {status}"));
        }
        if Instant::now() > deadline {
            return Err("guest-init did not connect in time".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// A UUID-shaped request id, unique within this process run.
pub fn request_id() -> String {
    static N: AtomicU64 = AtomicU64::new(1);
    let n = N.fetch_add(1, Ordering::Relaxed);
    format!(
        "{:08x}-{:04x}-4000-8000-{:012x}",
        std::process::id(),
        n & 0xffff,
        now_ms() & 0xffff_ffff_ffff
    )
}

pub const TEST_ARN: &str = "arn:aws:lambda:us-east-1:123456789012:function:test-fn";

/// An invocation with `payload` and a deadline `timeout_ms` from now.
pub fn invoke(payload: impl Into<Vec<u8>>, timeout_ms: u64) -> Invoke {
    let now = now_ms();
    Invoke {
        request_id: request_id(),
        deadline_ms: now + timeout_ms,
        host_now_ms: now,
        invoked_function_arn: TEST_ARN.into(),
        trace_id: Some(
            "Root=1-5e1b4151-5ac6c58f3b1e9d7a2e5d4c3b;Parent=1234567890abcdef;Sampled=1".into(),
        ),
        client_context: None,
        cognito_identity: None,
        payload: payload.into(),
    }
}

/// A typical Init for `handler`, passing the host PATH so the runtimes find python3
/// and curl where this machine has them.
pub fn init(handler: &str, env: &[(&str, String)]) -> Init {
    let mut vars: Vec<(String, String)> = vec![(
        "PATH".into(),
        std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
    )];
    vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.clone())));
    Init {
        function_name: "test-fn".into(),
        function_version: "$LATEST".into(),
        handler: handler.into(),
        memory_mib: 128,
        timeout_ms: 30_000,
        region: "us-east-1".into(),
        log_group: "/aws/lambda/test-fn".into(),
        log_stream: "2026/11/27/[$LATEST]0123456789abcdef".into(),
        initialization_type: "on-demand".into(),
        env: vars,
        host_now_ms: now_ms(),
        ..Init::default()
    }
}

/// A JSON string document of exactly `len` bytes (`len >= 2`).
pub fn json_string_of_len(len: usize) -> Vec<u8> {
    let mut v = Vec::with_capacity(len);
    v.push(b'"');
    v.extend(std::iter::repeat_n(b'a', len.saturating_sub(2)));
    v.push(b'"');
    v
}
