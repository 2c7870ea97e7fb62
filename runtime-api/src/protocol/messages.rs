//! The messages carried in frames, split by direction.
//!
//! `HostMessage` is what the host (supervisor/worker) sends to guest-init;
//! `GuestMessage` is what guest-init sends back. Each has a one-byte kind that goes in
//! the frame header; the body layout per kind is documented in `docs/protocol.md`.

use super::codec::{DecodeError, Decoder, Encoder};

/// Message kinds as they appear in the frame header.
pub mod kind {
    pub const HELLO: u8 = 0x01;
    pub const INIT: u8 = 0x02;
    pub const INVOKE: u8 = 0x03;
    pub const SHUTDOWN: u8 = 0x04;
    pub const CHECKPOINT: u8 = 0x05;
    pub const RESTORE: u8 = 0x06;
    pub const INIT_DONE: u8 = 0x10;
    pub const INIT_ERROR: u8 = 0x11;
    pub const RESPONSE: u8 = 0x12;
    pub const INVOKE_ERROR: u8 = 0x13;
    pub const STREAM_START: u8 = 0x14;
    pub const STREAM_CHUNK: u8 = 0x15;
    pub const STREAM_END: u8 = 0x16;
    pub const LOG: u8 = 0x17;
    pub const RUNTIME_EXITED: u8 = 0x18;
    pub const CHECKPOINT_READY: u8 = 0x19;
    pub const RESTORE_DONE: u8 = 0x1A;
    pub const RESTORE_ERROR: u8 = 0x1B;
    pub const PROTOCOL_ERROR: u8 = 0x7F;
}

/// First message on a connection, sent by both peers (guest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// Free-form peer identification, e.g. `guest-init 0.1.0`.
    pub agent: String,
}

/// Everything guest-init needs to start the runtime (Lambda's init phase).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Init {
    pub function_name: String,
    pub function_version: String,
    pub handler: String,
    pub memory_mib: u32,
    /// Function timeout; the host enforces it, the runtime sees it in deadlines.
    pub timeout_ms: u32,
    pub region: String,
    pub log_group: String,
    pub log_stream: String,
    /// `on-demand`, `provisioned-concurrency` or `snap-start`.
    pub initialization_type: String,
    /// The function's own environment variables, applied over Lambda's defaults.
    pub env: Vec<(String, String)>,
    /// The host's wall clock when it sent this, in milliseconds since the Unix epoch: a
    /// guest (PID 1 in a VM) sets its own clock from it before starting the runtime.
    pub host_now_ms: u64,
    /// A container image's ENTRYPOINT and CMD (after the function's ImageConfig): the
    /// program to start instead of searching for a `bootstrap`. Empty for .zip functions.
    pub command: Vec<String>,
    /// Where `command` starts; empty means the task root.
    pub working_dir: String,
}

/// One invocation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Invoke {
    pub request_id: String,
    /// Absolute deadline in milliseconds since the Unix epoch, on the host's clock.
    pub deadline_ms: u64,
    /// The host's wall clock when it sent this: the guest gives the runtime the deadline
    /// as `its own now + (deadline_ms - host_now_ms)`, so a guest clock that lags or
    /// drifts never lengthens the time a function sees.
    pub host_now_ms: u64,
    pub invoked_function_arn: String,
    pub trace_id: Option<String>,
    pub client_context: Option<String>,
    pub cognito_identity: Option<String>,
    pub payload: Vec<u8>,
}

/// Ends the sandbox: SIGTERM now, SIGKILL after `grace_ms`, then power off.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Shutdown {
    /// `spindown`, `timeout` or `failure`, as in the Extensions API.
    pub reason: String,
    /// Milliseconds between SIGTERM and SIGKILL.
    pub grace_ms: u32,
}

/// The sandbox resumed from a snapshot taken after Init (SnapStart): what must differ
/// between the copies restored from one snapshot, and the host's clock.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Restore {
    /// Mixed into the guest kernel's RNG, which then reseeds, before anything runs.
    pub seed: Vec<u8>,
    /// The host's wall clock when it sent this (as in `Init`).
    pub host_now_ms: u64,
}

/// An error in the init phase (`/runtime/init/error`, missing bootstrap, early exit).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InitError {
    pub error_type: String,
    /// JSON body as Lambda would return it to the caller.
    pub body: Vec<u8>,
}

/// A buffered invocation result.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    pub request_id: String,
    pub payload: Vec<u8>,
}

/// A failed invocation (`/response` rejected, `/error`, runtime exit, ...).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InvokeError {
    pub request_id: String,
    /// E.g. `Runtime.ExitError`, `Function.ResponseSizeTooLarge` or the runtime's type.
    pub error_type: String,
    pub body: Vec<u8>,
}

/// Start of a streamed response (`Lambda-Runtime-Function-Response-Mode: streaming`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamStart {
    pub request_id: String,
    pub content_type: String,
}

/// One piece of a streamed response body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamChunk {
    pub request_id: String,
    pub data: Vec<u8>,
}

/// End of a streamed response, with the error trailers if the runtime sent them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamEnd {
    pub request_id: String,
    pub error_type: Option<String>,
    /// Decoded `Lambda-Runtime-Function-Error-Body` trailer.
    pub error_body: Option<String>,
}

/// Which output a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    /// guest-init's own messages.
    System,
    Stdout,
    Stderr,
}

impl LogStream {
    fn to_u8(self) -> u8 {
        match self {
            LogStream::System => 0,
            LogStream::Stdout => 1,
            LogStream::Stderr => 2,
        }
    }

    fn from_u8(tag: u8) -> Result<Self, DecodeError> {
        match tag {
            0 => Ok(LogStream::System),
            1 => Ok(LogStream::Stdout),
            2 => Ok(LogStream::Stderr),
            tag => Err(DecodeError::InvalidTag {
                field: "log.stream",
                tag,
            }),
        }
    }
}

/// One line of runtime output, tagged with the invocation it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Log {
    pub stream: LogStream,
    /// The in-flight request when the line was read; `None` during init or between invokes.
    pub request_id: Option<String>,
    /// The line without its newline; not necessarily UTF-8.
    pub line: Vec<u8>,
}

/// The runtime process ended on its own (not after a Shutdown).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuntimeExited {
    /// `Runtime.ExitError`.
    pub error_type: String,
    /// E.g. `Runtime exited with error: exit status 7` or `... signal: killed`.
    pub message: String,
}

/// Sent before closing a connection whose peer broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProtocolError {
    pub code: u16,
    pub message: String,
}

/// `ProtocolError.code` values.
pub mod error_code {
    pub const UNSUPPORTED_VERSION: u16 = 1;
    pub const MALFORMED_FRAME: u16 = 2;
    pub const UNEXPECTED_MESSAGE: u16 = 3;
    pub const FRAME_TOO_LARGE: u16 = 4;
    pub const INTERNAL: u16 = 5;
}

/// Messages from the host to guest-init.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMessage {
    Hello(Hello),
    Init(Init),
    Invoke(Invoke),
    Shutdown(Shutdown),
    /// Init is done: quiesce for a snapshot and answer `CheckpointReady`.
    Checkpoint,
    Restore(Restore),
    ProtocolError(ProtocolError),
}

/// Messages from guest-init to the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestMessage {
    Hello(Hello),
    InitDone,
    InitError(InitError),
    Response(Response),
    InvokeError(InvokeError),
    StreamStart(StreamStart),
    StreamChunk(StreamChunk),
    StreamEnd(StreamEnd),
    Log(Log),
    RuntimeExited(RuntimeExited),
    /// Everything before the snapshot was sent; nothing more comes until a restore.
    CheckpointReady,
    /// The runtime is ready again after a restore (its after-restore hooks ran).
    RestoreDone,
    /// `/runtime/restore/error`: the runtime's after-restore hooks failed.
    RestoreError(InitError),
    ProtocolError(ProtocolError),
}

/// A message type that can travel in a frame.
pub trait Message: Sized {
    /// The header kind byte.
    fn kind(&self) -> u8;
    /// Approximate body size, to size the encode buffer once.
    fn size_hint(&self) -> usize;
    fn encode_body(&self, e: &mut Encoder);
    /// Decodes a body; the whole body must be consumed.
    fn decode(kind: u8, body: &[u8]) -> Result<Self, DecodeError>;
    /// Builds the error message sent before closing a broken connection.
    fn protocol_error(code: u16, message: String) -> Self;
}

impl Message for HostMessage {
    fn kind(&self) -> u8 {
        match self {
            HostMessage::Hello(_) => kind::HELLO,
            HostMessage::Init(_) => kind::INIT,
            HostMessage::Invoke(_) => kind::INVOKE,
            HostMessage::Shutdown(_) => kind::SHUTDOWN,
            HostMessage::Checkpoint => kind::CHECKPOINT,
            HostMessage::Restore(_) => kind::RESTORE,
            HostMessage::ProtocolError(_) => kind::PROTOCOL_ERROR,
        }
    }

    fn size_hint(&self) -> usize {
        match self {
            HostMessage::Invoke(i) => i.payload.len() + 512,
            _ => 512,
        }
    }

    fn encode_body(&self, e: &mut Encoder) {
        match self {
            HostMessage::Hello(h) => e.str(&h.agent),
            HostMessage::Init(i) => {
                e.str(&i.function_name);
                e.str(&i.function_version);
                e.str(&i.handler);
                e.u32(i.memory_mib);
                e.u32(i.timeout_ms);
                e.str(&i.region);
                e.str(&i.log_group);
                e.str(&i.log_stream);
                e.str(&i.initialization_type);
                e.pairs(&i.env);
                e.u64(i.host_now_ms);
                e.strs(&i.command);
                e.str(&i.working_dir);
            }
            HostMessage::Invoke(i) => {
                e.str(&i.request_id);
                e.u64(i.deadline_ms);
                e.u64(i.host_now_ms);
                e.str(&i.invoked_function_arn);
                e.opt_str(i.trace_id.as_deref());
                e.opt_str(i.client_context.as_deref());
                e.opt_str(i.cognito_identity.as_deref());
                e.bytes(&i.payload);
            }
            HostMessage::Shutdown(s) => {
                e.str(&s.reason);
                e.u32(s.grace_ms);
            }
            HostMessage::Checkpoint => {}
            HostMessage::Restore(r) => {
                e.bytes(&r.seed);
                e.u64(r.host_now_ms);
            }
            HostMessage::ProtocolError(p) => encode_protocol_error(p, e),
        }
    }

    fn decode(kind: u8, body: &[u8]) -> Result<Self, DecodeError> {
        let mut d = Decoder::new(body);
        let msg = match kind {
            kind::HELLO => HostMessage::Hello(Hello {
                agent: d.string("hello.agent")?,
            }),
            kind::INIT => HostMessage::Init(Init {
                function_name: d.string("init.function_name")?,
                function_version: d.string("init.function_version")?,
                handler: d.string("init.handler")?,
                memory_mib: d.u32("init.memory_mib")?,
                timeout_ms: d.u32("init.timeout_ms")?,
                region: d.string("init.region")?,
                log_group: d.string("init.log_group")?,
                log_stream: d.string("init.log_stream")?,
                initialization_type: d.string("init.initialization_type")?,
                env: d.pairs("init.env")?,
                host_now_ms: d.u64("init.host_now_ms")?,
                command: d.strs("init.command")?,
                working_dir: d.string("init.working_dir")?,
            }),
            kind::INVOKE => HostMessage::Invoke(Invoke {
                request_id: d.string("invoke.request_id")?,
                deadline_ms: d.u64("invoke.deadline_ms")?,
                host_now_ms: d.u64("invoke.host_now_ms")?,
                invoked_function_arn: d.string("invoke.invoked_function_arn")?,
                trace_id: d.opt_string("invoke.trace_id")?,
                client_context: d.opt_string("invoke.client_context")?,
                cognito_identity: d.opt_string("invoke.cognito_identity")?,
                payload: d.bytes("invoke.payload")?,
            }),
            kind::SHUTDOWN => HostMessage::Shutdown(Shutdown {
                reason: d.string("shutdown.reason")?,
                grace_ms: d.u32("shutdown.grace_ms")?,
            }),
            kind::CHECKPOINT => HostMessage::Checkpoint,
            kind::RESTORE => HostMessage::Restore(Restore {
                seed: d.bytes("restore.seed")?,
                host_now_ms: d.u64("restore.host_now_ms")?,
            }),
            kind::PROTOCOL_ERROR => HostMessage::ProtocolError(decode_protocol_error(&mut d)?),
            other => return Err(DecodeError::UnexpectedKind(other)),
        };
        d.finish()?;
        Ok(msg)
    }

    fn protocol_error(code: u16, message: String) -> Self {
        HostMessage::ProtocolError(ProtocolError { code, message })
    }
}

impl Message for GuestMessage {
    fn kind(&self) -> u8 {
        match self {
            GuestMessage::Hello(_) => kind::HELLO,
            GuestMessage::InitDone => kind::INIT_DONE,
            GuestMessage::InitError(_) => kind::INIT_ERROR,
            GuestMessage::Response(_) => kind::RESPONSE,
            GuestMessage::InvokeError(_) => kind::INVOKE_ERROR,
            GuestMessage::StreamStart(_) => kind::STREAM_START,
            GuestMessage::StreamChunk(_) => kind::STREAM_CHUNK,
            GuestMessage::StreamEnd(_) => kind::STREAM_END,
            GuestMessage::Log(_) => kind::LOG,
            GuestMessage::RuntimeExited(_) => kind::RUNTIME_EXITED,
            GuestMessage::CheckpointReady => kind::CHECKPOINT_READY,
            GuestMessage::RestoreDone => kind::RESTORE_DONE,
            GuestMessage::RestoreError(_) => kind::RESTORE_ERROR,
            GuestMessage::ProtocolError(_) => kind::PROTOCOL_ERROR,
        }
    }

    fn size_hint(&self) -> usize {
        match self {
            GuestMessage::Response(r) => r.payload.len() + 128,
            GuestMessage::InvokeError(r) => r.body.len() + 128,
            GuestMessage::StreamChunk(c) => c.data.len() + 128,
            GuestMessage::Log(l) => l.line.len() + 128,
            _ => 256,
        }
    }

    fn encode_body(&self, e: &mut Encoder) {
        match self {
            GuestMessage::Hello(h) => e.str(&h.agent),
            GuestMessage::InitDone | GuestMessage::CheckpointReady | GuestMessage::RestoreDone => {}
            GuestMessage::InitError(i) | GuestMessage::RestoreError(i) => {
                e.str(&i.error_type);
                e.bytes(&i.body);
            }
            GuestMessage::Response(r) => {
                e.str(&r.request_id);
                e.bytes(&r.payload);
            }
            GuestMessage::InvokeError(r) => {
                e.str(&r.request_id);
                e.str(&r.error_type);
                e.bytes(&r.body);
            }
            GuestMessage::StreamStart(s) => {
                e.str(&s.request_id);
                e.str(&s.content_type);
            }
            GuestMessage::StreamChunk(c) => {
                e.str(&c.request_id);
                e.bytes(&c.data);
            }
            GuestMessage::StreamEnd(s) => {
                e.str(&s.request_id);
                e.opt_str(s.error_type.as_deref());
                e.opt_str(s.error_body.as_deref());
            }
            GuestMessage::Log(l) => {
                e.u8(l.stream.to_u8());
                e.opt_str(l.request_id.as_deref());
                e.bytes(&l.line);
            }
            GuestMessage::RuntimeExited(r) => {
                e.str(&r.error_type);
                e.str(&r.message);
            }
            GuestMessage::ProtocolError(p) => encode_protocol_error(p, e),
        }
    }

    fn decode(kind: u8, body: &[u8]) -> Result<Self, DecodeError> {
        let mut d = Decoder::new(body);
        let msg = match kind {
            kind::HELLO => GuestMessage::Hello(Hello {
                agent: d.string("hello.agent")?,
            }),
            kind::INIT_DONE => GuestMessage::InitDone,
            kind::INIT_ERROR => GuestMessage::InitError(InitError {
                error_type: d.string("init_error.error_type")?,
                body: d.bytes("init_error.body")?,
            }),
            kind::RESPONSE => GuestMessage::Response(Response {
                request_id: d.string("response.request_id")?,
                payload: d.bytes("response.payload")?,
            }),
            kind::INVOKE_ERROR => GuestMessage::InvokeError(InvokeError {
                request_id: d.string("invoke_error.request_id")?,
                error_type: d.string("invoke_error.error_type")?,
                body: d.bytes("invoke_error.body")?,
            }),
            kind::STREAM_START => GuestMessage::StreamStart(StreamStart {
                request_id: d.string("stream_start.request_id")?,
                content_type: d.string("stream_start.content_type")?,
            }),
            kind::STREAM_CHUNK => GuestMessage::StreamChunk(StreamChunk {
                request_id: d.string("stream_chunk.request_id")?,
                data: d.bytes("stream_chunk.data")?,
            }),
            kind::STREAM_END => GuestMessage::StreamEnd(StreamEnd {
                request_id: d.string("stream_end.request_id")?,
                error_type: d.opt_string("stream_end.error_type")?,
                error_body: d.opt_string("stream_end.error_body")?,
            }),
            kind::LOG => GuestMessage::Log(Log {
                stream: LogStream::from_u8(d.u8("log.stream")?)?,
                request_id: d.opt_string("log.request_id")?,
                line: d.bytes("log.line")?,
            }),
            kind::RUNTIME_EXITED => GuestMessage::RuntimeExited(RuntimeExited {
                error_type: d.string("runtime_exited.error_type")?,
                message: d.string("runtime_exited.message")?,
            }),
            kind::CHECKPOINT_READY => GuestMessage::CheckpointReady,
            kind::RESTORE_DONE => GuestMessage::RestoreDone,
            kind::RESTORE_ERROR => GuestMessage::RestoreError(InitError {
                error_type: d.string("restore_error.error_type")?,
                body: d.bytes("restore_error.body")?,
            }),
            kind::PROTOCOL_ERROR => GuestMessage::ProtocolError(decode_protocol_error(&mut d)?),
            other => return Err(DecodeError::UnexpectedKind(other)),
        };
        d.finish()?;
        Ok(msg)
    }

    fn protocol_error(code: u16, message: String) -> Self {
        GuestMessage::ProtocolError(ProtocolError { code, message })
    }
}

fn encode_protocol_error(p: &ProtocolError, e: &mut Encoder) {
    e.u16(p.code);
    e.str(&p.message);
}

fn decode_protocol_error(d: &mut Decoder<'_>) -> Result<ProtocolError, DecodeError> {
    Ok(ProtocolError {
        code: d.u16("protocol_error.code")?,
        message: d.string("protocol_error.message")?,
    })
}
