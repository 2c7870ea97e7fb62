//! A streamed response as it arrives from guest-init: handed to the caller's sink chunk
//! by chunk (`invoke_streaming`) or gathered for a buffered caller, within Lambda's
//! size limit for streamed responses.

use super::session::{is_fatal, NO_REASON};
use super::{Reply, SandboxError};
use crate::report;
use crate::spec::ChunkSink;
use runtime_api::protocol::StreamEnd;

/// guest-init's error type for a response body the runtime cut off.
const TRUNCATED: &str = "Runtime.TruncatedResponse";
const TOO_LARGE: &str = "Function.ResponseSizeTooLarge";

pub struct StreamedBody {
    /// The caller's sink; dropped once the caller hangs up.
    sink: Option<ChunkSink>,
    /// Whether the bytes go to a sink (else they are gathered into `gathered`).
    streaming: bool,
    gathered: Vec<u8>,
    received: u64,
    limit: u64,
}

/// Whether guest-init ended the stream because the runtime's body was cut off.
pub fn is_cut_off(end: &StreamEnd) -> bool {
    end.error_type.as_deref() == Some(TRUNCATED)
}

impl StreamedBody {
    pub fn new(sink: Option<ChunkSink>, limit: u64) -> Self {
        Self {
            streaming: sink.is_some(),
            sink,
            gathered: Vec::new(),
            received: 0,
            limit,
        }
    }

    /// One chunk from the runtime. Past the limit chunks are dropped, but the stream is
    /// still read to its end so the sandbox stays in step with guest-init.
    pub async fn push(&mut self, data: Vec<u8>) {
        self.received = self.received.saturating_add(data.len() as u64);
        if self.received > self.limit {
            self.gathered = Vec::new();
            return;
        }
        if data.is_empty() {
            return;
        }
        if !self.streaming {
            if self.gathered.is_empty() {
                self.gathered = data;
            } else {
                self.gathered.extend_from_slice(&data);
            }
            return;
        }
        if let Some(sink) = &self.sink {
            // A full sink holds the runtime back (the caller's timeout still runs).
            if sink.send(data).await.is_err() {
                // The caller hung up: read the rest and drop it.
                self.sink = None;
            }
        }
    }

    /// The reply once guest-init ended the stream.
    pub fn finish(self, end: StreamEnd) -> Result<Reply, SandboxError> {
        match end.error_type {
            Some(t) if is_fatal(&t) => Err(SandboxError::Exited {
                error_type: t,
                message: end.error_body.unwrap_or_else(|| NO_REASON.into()),
            }),
            // A runtime that dies mid-stream usually shows up as a cut-off body first
            // (guest-init sees the connection close before it reaps the process), and
            // one that cut its own response is not trusted with another invoke either:
            // the sandbox is replaced (the session looks for the exit status).
            Some(t) if t == TRUNCATED => Err(SandboxError::Exited {
                error_type: "Runtime.ExitError".into(),
                message: end.error_body.unwrap_or_else(|| NO_REASON.into()),
            }),
            Some(t) => Ok(Reply::Error {
                body: error_json(&t, end.error_body),
                error_type: t,
            }),
            None if self.received > self.limit => Ok(Reply::Error {
                error_type: TOO_LARGE.into(),
                body: report::error_body(
                    TOO_LARGE,
                    &format!(
                        "Response payload size exceeded maximum allowed payload size ({} bytes).",
                        self.limit
                    ),
                ),
            }),
            None if self.streaming => Ok(Reply::Streamed),
            None => Ok(Reply::Response(self.gathered)),
        }
    }
}

/// The runtime's error document from the trailers, or Lambda's error JSON around
/// guest-init's plain message (size limit, truncation).
fn error_json(error_type: &str, body: Option<String>) -> Vec<u8> {
    match body {
        Some(b) if serde_json::from_str::<serde_json::Map<_, _>>(&b).is_ok() => b.into_bytes(),
        Some(b) => report::error_body(error_type, &b),
        None => report::error_body(error_type, "streamed response failed"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn end(error_type: Option<&str>, body: Option<&str>) -> StreamEnd {
        StreamEnd {
            request_id: "r".into(),
            error_type: error_type.map(str::to_owned),
            error_body: body.map(str::to_owned),
        }
    }

    #[tokio::test]
    async fn forwards_chunks_in_order_and_ends_streamed() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let mut b = StreamedBody::new(Some(tx), 100);
        b.push(b"one ".to_vec()).await;
        b.push(Vec::new()).await;
        b.push(b"two".to_vec()).await;
        assert_eq!(b.finish(end(None, None)), Ok(Reply::Streamed));
        assert_eq!(rx.recv().await.as_deref(), Some(&b"one "[..]));
        assert_eq!(rx.recv().await.as_deref(), Some(&b"two"[..]));
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn gathers_without_a_sink() {
        let mut b = StreamedBody::new(None, 100);
        b.push(b"one ".to_vec()).await;
        b.push(b"two".to_vec()).await;
        assert_eq!(
            b.finish(end(None, None)),
            Ok(Reply::Response(b"one two".to_vec()))
        );
    }

    #[tokio::test]
    async fn over_the_limit_is_response_size_too_large() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(4);
        let mut b = StreamedBody::new(Some(tx), 5);
        b.push(b"1234".to_vec()).await;
        b.push(b"56".to_vec()).await;
        b.push(b"7".to_vec()).await;
        let Ok(Reply::Error { error_type, body }) = b.finish(end(None, None)) else {
            panic!("expected an error reply");
        };
        assert_eq!(error_type, TOO_LARGE);
        assert!(String::from_utf8_lossy(&body).contains("(5 bytes)"));
        assert_eq!(rx.recv().await.as_deref(), Some(&b"1234"[..]));
        assert_eq!(rx.recv().await, None, "nothing past the limit is forwarded");
    }

    #[tokio::test]
    async fn gathering_stops_at_the_limit_and_lets_go_of_what_it_held() {
        let mut b = StreamedBody::new(None, 5);
        b.push(b"1234".to_vec()).await;
        b.push(b"56".to_vec()).await;
        assert_eq!(b.gathered.capacity(), 0, "nothing is held past the limit");
        b.push(b"7".to_vec()).await;
        assert_eq!(b.gathered.capacity(), 0, "nor collected after it");
        let Ok(Reply::Error { error_type, .. }) = b.finish(end(None, None)) else {
            panic!("expected an error reply");
        };
        assert_eq!(error_type, TOO_LARGE);
    }

    #[tokio::test]
    async fn a_gone_caller_does_not_stop_the_stream() {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        drop(rx);
        let mut b = StreamedBody::new(Some(tx), 100);
        b.push(b"a".to_vec()).await;
        b.push(b"b".to_vec()).await;
        assert_eq!(b.finish(end(None, None)), Ok(Reply::Streamed));
    }

    #[test]
    fn errors_map_to_replies_or_exits() {
        let b = || StreamedBody::new(None, 100);
        let doc = r#"{"errorType":"E","errorMessage":"m"}"#;
        assert_eq!(
            b().finish(end(Some("E"), Some(doc))),
            Ok(Reply::Error {
                error_type: "E".into(),
                body: doc.as_bytes().to_vec()
            })
        );
        let Ok(Reply::Error { body, .. }) = b().finish(end(Some("E"), Some("plain"))) else {
            panic!("expected an error reply");
        };
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(v["errorMessage"], "plain");
        for t in ["Runtime.ExitError", TRUNCATED] {
            assert!(matches!(
                b().finish(end(Some(t), Some("x"))),
                Err(SandboxError::Exited { error_type, .. }) if error_type == "Runtime.ExitError"
            ));
        }
    }
}
