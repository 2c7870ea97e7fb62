//! The guest-init protocol as the worker drives it: Init once, then one Invoke at a
//! time, collecting the runtime's log lines. Shared by every backend, since the process
//! and microVM backends both end up with a Unix stream to guest-init.

use super::wire::WireConn;
use super::{LogLine, Reply, SandboxError};
use crate::spec::{FunctionVersionSpec, InvokeRequest};
use runtime_api::protocol::{GuestMessage, HostMessage, Init, Invoke, Shutdown, WireError};

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
    logs: Vec<LogLine>,
}

/// The Init message for a function version.
pub fn init_message(spec: &FunctionVersionSpec, id: &Identity, sandbox_id: &str) -> Init {
    let day = crate::report::rfc3339_now()
        .get(..10)
        .unwrap_or("1970-01-01")
        .replace('-', "/");
    Init {
        function_name: spec.name.clone(),
        function_version: spec.version.clone(),
        handler: spec.handler.clone(),
        memory_mib: spec.memory_mib,
        timeout_ms: u32::try_from(spec.timeout.as_millis()).unwrap_or(u32::MAX),
        region: id.region.clone(),
        log_group: format!("/aws/lambda/{}", spec.name),
        log_stream: format!("{day}/[{}]{sandbox_id}", spec.version),
        initialization_type: "on-demand".into(),
        env: spec.env.clone(),
    }
}

pub fn function_arn(spec: &FunctionVersionSpec, id: &Identity) -> String {
    format!(
        "arn:aws:lambda:{}:{}:function:{}",
        id.region, id.account_id, spec.name
    )
}

fn wire_err(e: WireError) -> SandboxError {
    match e {
        WireError::Closed | WireError::Io(_) => SandboxError::Exited {
            error_type: "Runtime.ExitError".into(),
            message: "Runtime exited without providing a reason".into(),
        },
        other => SandboxError::Protocol(other.to_string()),
    }
}

/// Error types guest-init uses for a dead runtime; the sandbox cannot serve again.
fn is_fatal(error_type: &str) -> bool {
    matches!(error_type, "Runtime.ExitError" | "Runtime.OutOfMemory")
}

impl Session {
    pub fn new(conn: WireConn, init: Init, arn: String) -> Self {
        Self {
            conn,
            init,
            arn,
            logs: Vec::new(),
        }
    }

    fn log(&mut self, l: runtime_api::protocol::Log) {
        self.logs.push(LogLine {
            request_id: l.request_id,
            text: String::from_utf8_lossy(&l.line).into_owned(),
        });
    }

    pub fn take_logs(&mut self) -> Vec<LogLine> {
        std::mem::take(&mut self.logs)
    }

    pub async fn init(&mut self) -> Result<(), SandboxError> {
        self.conn
            .send(&HostMessage::Init(self.init.clone()))
            .await
            .map_err(wire_err)?;
        loop {
            match self.conn.recv().await.map_err(wire_err)? {
                GuestMessage::InitDone => return Ok(()),
                GuestMessage::InitError(e) => {
                    return Err(SandboxError::Init {
                        error_type: e.error_type,
                        body: e.body,
                    })
                }
                GuestMessage::RuntimeExited(r) => {
                    return Err(SandboxError::Exited {
                        error_type: r.error_type,
                        message: r.message,
                    })
                }
                GuestMessage::Log(l) => self.log(l),
                other => {
                    return Err(SandboxError::Protocol(format!(
                        "unexpected message during init: {other:?}"
                    )))
                }
            }
        }
    }

    pub async fn invoke(
        &mut self,
        req: &InvokeRequest,
        deadline_ms: u64,
    ) -> Result<Reply, SandboxError> {
        let msg = HostMessage::Invoke(Invoke {
            request_id: req.request_id.clone(),
            deadline_ms,
            invoked_function_arn: self.arn.clone(),
            trace_id: req.trace_id.clone(),
            client_context: req.client_context.clone(),
            cognito_identity: req.cognito_identity.clone(),
            payload: req.payload.clone(),
        });
        self.conn.send(&msg).await.map_err(wire_err)?;
        let mut streamed: Option<Vec<u8>> = None;
        loop {
            match self.conn.recv().await.map_err(wire_err)? {
                GuestMessage::Log(l) => self.log(l),
                GuestMessage::Response(r) if r.request_id == req.request_id => {
                    return Ok(Reply::Response(r.payload))
                }
                GuestMessage::InvokeError(e) if e.request_id == req.request_id => {
                    if is_fatal(&e.error_type) {
                        return Err(SandboxError::Exited {
                            error_type: e.error_type,
                            message: String::from_utf8_lossy(&e.body).into_owned(),
                        });
                    }
                    return Ok(Reply::Error {
                        error_type: e.error_type,
                        body: e.body,
                    });
                }
                GuestMessage::StreamStart(s) if s.request_id == req.request_id => {
                    streamed = Some(Vec::new());
                }
                GuestMessage::StreamChunk(c) if c.request_id == req.request_id => {
                    streamed
                        .get_or_insert_with(Vec::new)
                        .extend_from_slice(&c.data);
                }
                GuestMessage::StreamEnd(s) if s.request_id == req.request_id => {
                    return Ok(match s.error_type {
                        Some(t) => Reply::Error {
                            body: s.error_body.map(String::into_bytes).unwrap_or_else(|| {
                                crate::report::error_body(&t, "streamed response failed")
                            }),
                            error_type: t,
                        },
                        None => Reply::Response(streamed.take().unwrap_or_default()),
                    });
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
