//! The link's messages, one implementation for both ends (sans-IO: bytes in, values
//! out). An invoke travels as one HTTP/2 request whose body is [`encode_invoke`]; the
//! response body is a sequence of records ([`Record`]): streamed chunks, then exactly
//! one outcome or failure. Heads are JSON; payloads and chunks are raw bytes.

use serde::{Deserialize, Serialize};
use std::time::Duration;
use worker::code::CodeRef;
use worker::spec::{FunctionVersionSpec, InvokeOutcome, InvokeRequest, InvokeResult, Report};
use worker::ThrottleReason;

/// Largest JSON head (spec with environment, or outcome with its log tail).
pub const MAX_HEAD_BYTES: usize = 1 << 20;
/// Largest record: a buffered response plus its head.
pub const MAX_RECORD_BYTES: usize = worker::MAX_BUFFERED_RESPONSE_BYTES as usize + MAX_HEAD_BYTES;
/// Largest invoke request body: Lambda's 6 MB payload plus the head.
pub const MAX_INVOKE_BYTES: usize = 6 * 1024 * 1024 + MAX_HEAD_BYTES;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("link message truncated")]
    Truncated,
    #[error("link message of {0} bytes exceeds its bound")]
    TooLarge(usize),
    #[error("link message head: {0}")]
    Head(String),
    #[error("unknown link record kind {0}")]
    Kind(u8),
}

/// A function version as a remote worker is told of it: code by digest only.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SpecHead {
    pub name: String,
    pub version: String,
    pub code: CodeRef,
    pub runtime: String,
    pub handler: String,
    pub memory_mib: u32,
    pub timeout_ms: u64,
    pub env: Vec<(String, String)>,
    pub reserved_concurrency: Option<u32>,
    pub revision: String,
    /// Layer packages by digest, in merge order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<CodeRef>,
    /// A container-image function's `ImageConfig` (`code` is then its image package).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<worker::code::image::ImageOverrides>,
    /// SnapStart applies to this version (`FunctionVersionSpec::snap_start`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub snap_start: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct InvokeHead {
    pub spec: SpecHead,
    pub request_id: String,
    pub client_context: Option<String>,
    pub cognito_identity: Option<String>,
    pub trace_id: Option<String>,
    pub streaming: bool,
}

impl SpecHead {
    pub fn from_spec(s: &FunctionVersionSpec, code: CodeRef) -> Self {
        Self {
            name: s.name.clone(),
            version: s.version.clone(),
            code,
            runtime: s.runtime.clone(),
            handler: s.handler.clone(),
            memory_mib: s.memory_mib,
            timeout_ms: u64::try_from(s.timeout.as_millis()).unwrap_or(u64::MAX),
            env: s.env.clone(),
            reserved_concurrency: s.reserved_concurrency,
            revision: s.revision.clone(),
            layers: s.layers.packages.clone(),
            image: s.image.as_ref().map(|i| i.overrides.clone()),
            snap_start: s.snap_start,
        }
    }

    pub fn into_spec(self) -> FunctionVersionSpec {
        FunctionVersionSpec {
            name: self.name,
            version: self.version,
            code_dir: None,
            code_image: None,
            code: Some(self.code),
            runtime: self.runtime,
            handler: self.handler,
            memory_mib: self.memory_mib,
            timeout: Duration::from_millis(self.timeout_ms),
            env: self.env,
            reserved_concurrency: self.reserved_concurrency,
            revision: self.revision,
            layers: worker::spec::Layers {
                packages: self.layers,
                dir: None,
            },
            image: self.image.map(|overrides| worker::spec::ImageSpec {
                overrides,
                ready: None,
            }),
            snap_start: self.snap_start,
        }
    }
}

impl InvokeHead {
    pub fn new(spec: SpecHead, req: &InvokeRequest, streaming: bool) -> Self {
        Self {
            spec,
            request_id: req.request_id.clone(),
            client_context: req.client_context.clone(),
            cognito_identity: req.cognito_identity.clone(),
            trace_id: req.trace_id.clone(),
            streaming,
        }
    }

    pub fn into_parts(self, payload: Vec<u8>) -> (FunctionVersionSpec, InvokeRequest, bool) {
        let req = InvokeRequest {
            request_id: self.request_id,
            payload,
            client_context: self.client_context,
            cognito_identity: self.cognito_identity,
            trace_id: self.trace_id,
        };
        (self.spec.into_spec(), req, self.streaming)
    }
}

/// An outcome without its payload (which follows the head raw).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct OutcomeHead {
    pub request_id: String,
    pub executed_version: String,
    /// `None`: success; `Some(type)`: a function error whose body is the payload.
    pub function_error: Option<String>,
    pub logs: String,
    pub duration_us: u64,
    pub billed_ms: u64,
    pub memory_size_mb: u32,
    pub max_memory_used_mb: u64,
    pub init_duration_us: Option<u64>,
    /// The cold start was a SnapStart restore: its guest part (`Report::billed_restore`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billed_restore_us: Option<u64>,
    pub status: Option<String>,
    pub error_type: Option<String>,
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// `Report::status` is one of Lambda's two words; anything else from a peer is `error`.
fn status_word(s: &str) -> &'static str {
    if s == "timeout" {
        "timeout"
    } else {
        "error"
    }
}

impl OutcomeHead {
    /// Splits an outcome into its head and payload.
    pub fn split(o: InvokeOutcome) -> (Self, Vec<u8>) {
        let (function_error, payload) = match o.result {
            InvokeResult::Success(p) => (None, p),
            InvokeResult::FunctionError { error_type, body } => (Some(error_type), body),
        };
        let r = o.report;
        let head = Self {
            request_id: o.request_id,
            executed_version: o.executed_version,
            function_error,
            logs: o.logs,
            duration_us: micros(r.duration),
            billed_ms: r.billed_ms,
            memory_size_mb: r.memory_size_mb,
            max_memory_used_mb: r.max_memory_used_mb,
            init_duration_us: r.init_duration.map(micros),
            billed_restore_us: r.billed_restore.map(micros),
            status: r.status.map(str::to_owned),
            error_type: r.error_type,
        };
        (head, payload)
    }

    pub fn join(self, payload: Vec<u8>) -> InvokeOutcome {
        let result = match self.function_error {
            None => InvokeResult::Success(payload),
            Some(error_type) => InvokeResult::FunctionError {
                error_type,
                body: payload,
            },
        };
        InvokeOutcome {
            request_id: self.request_id,
            executed_version: self.executed_version,
            result,
            logs: self.logs,
            report: Report {
                duration: Duration::from_micros(self.duration_us),
                billed_ms: self.billed_ms,
                memory_size_mb: self.memory_size_mb,
                max_memory_used_mb: self.max_memory_used_mb,
                init_duration: self.init_duration_us.map(Duration::from_micros),
                billed_restore: self.billed_restore_us.map(Duration::from_micros),
                status: self.status.as_deref().map(status_word),
                error_type: self.error_type,
            },
        }
    }
}

/// Why a worker did not produce an outcome.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Failure {
    /// Refused before running (429 on the frontend unless another worker takes it).
    Throttled {
        reserved: bool,
    },
    /// The worker is draining at the end of its lease: nothing ran; place elsewhere.
    Draining,
    InvalidSpec(String),
    /// No sandbox could be had (transient).
    Sandbox(String),
    /// The code could not be had or unpacked.
    Code {
        message: String,
        transient: bool,
    },
    /// A SnapStart restore failed in the function's part of it.
    SnapStart(worker::SnapStartFailure),
}

impl Failure {
    pub fn from_worker(e: &worker::WorkerError) -> Self {
        use worker::WorkerError as W;
        match e {
            W::Throttled(r) => Self::Throttled {
                reserved: *r == ThrottleReason::ReservedFunctionConcurrentInvocationLimitExceeded,
            },
            W::InvalidSpec(m) => Self::InvalidSpec(m.clone()),
            W::Sandbox(s) => Self::Sandbox(s.to_string()),
            W::Code(c) => Self::Code {
                message: c.to_string(),
                transient: c.is_transient(),
            },
            W::SnapStart(f) => Self::SnapStart(f.clone()),
        }
    }
}

/// One record of an invoke's response body.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    Chunk(Vec<u8>),
    Outcome(OutcomeHead, Vec<u8>),
    Failure(Failure),
}

const KIND_CHUNK: u8 = 1;
const KIND_OUTCOME: u8 = 2;
const KIND_FAILURE: u8 = 3;

fn head_json<T: Serialize>(v: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail.
    serde_json::to_vec(v).unwrap_or_default()
}

fn parse_head<'a, T: Deserialize<'a>>(b: &'a [u8]) -> Result<T, WireError> {
    if b.len() > MAX_HEAD_BYTES {
        return Err(WireError::TooLarge(b.len()));
    }
    serde_json::from_slice(b).map_err(|e| WireError::Head(e.to_string()))
}

fn len_u32(n: usize) -> [u8; 4] {
    u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes()
}

/// `[u32 head length][head][payload]`.
pub fn encode_invoke(head: &InvokeHead, payload: &[u8]) -> Vec<u8> {
    let h = head_json(head);
    let mut out = Vec::with_capacity(4 + h.len() + payload.len());
    out.extend_from_slice(&len_u32(h.len()));
    out.extend_from_slice(&h);
    out.extend_from_slice(payload);
    out
}

pub fn decode_invoke(body: &[u8]) -> Result<(InvokeHead, Vec<u8>), WireError> {
    if body.len() > MAX_INVOKE_BYTES {
        return Err(WireError::TooLarge(body.len()));
    }
    let (len, rest) = split_len(body)?;
    if rest.len() < len {
        return Err(WireError::Truncated);
    }
    let (h, payload) = rest.split_at(len);
    Ok((parse_head(h)?, payload.to_vec()))
}

fn split_len(b: &[u8]) -> Result<(usize, &[u8]), WireError> {
    let (len, rest) = b.split_first_chunk::<4>().ok_or(WireError::Truncated)?;
    Ok((u32::from_le_bytes(*len) as usize, rest))
}

/// `[u8 kind][u32 length][body]`; an outcome's body is `[u32 head length][head][payload]`.
pub fn encode_record(r: &Record) -> Vec<u8> {
    let (kind, body) = match r {
        Record::Chunk(c) => (KIND_CHUNK, c.clone()),
        Record::Outcome(h, p) => {
            let h = head_json(h);
            let mut b = Vec::with_capacity(4 + h.len() + p.len());
            b.extend_from_slice(&len_u32(h.len()));
            b.extend_from_slice(&h);
            b.extend_from_slice(p);
            (KIND_OUTCOME, b)
        }
        Record::Failure(f) => (KIND_FAILURE, head_json(f)),
    };
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(kind);
    out.extend_from_slice(&len_u32(body.len()));
    out.extend_from_slice(&body);
    out
}

/// Decodes one record from the front of `buf`: `Ok(None)` until it is complete;
/// otherwise the record and the bytes it took.
pub fn decode_record(buf: &[u8]) -> Result<Option<(Record, usize)>, WireError> {
    let Some((&kind, rest)) = buf.split_first() else {
        return Ok(None);
    };
    if !matches!(kind, KIND_CHUNK | KIND_OUTCOME | KIND_FAILURE) {
        return Err(WireError::Kind(kind));
    }
    let Ok((len, rest)) = split_len(rest) else {
        return Ok(None);
    };
    if len > MAX_RECORD_BYTES {
        return Err(WireError::TooLarge(len));
    }
    if rest.len() < len {
        return Ok(None);
    }
    let body = &rest[..len];
    let rec = match kind {
        KIND_CHUNK => Record::Chunk(body.to_vec()),
        KIND_OUTCOME => {
            let (hlen, b) = split_len(body)?;
            if b.len() < hlen {
                return Err(WireError::Truncated);
            }
            let (h, p) = b.split_at(hlen);
            Record::Outcome(parse_head(h)?, p.to_vec())
        }
        _ => Record::Failure(parse_head(body)?),
    };
    Ok(Some((rec, 5 + len)))
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
