//! `RESPONSE_STREAM` function URLs: the function's bytes reach the client as the
//! worker hands them over. A streamed answer may open with Lambda's HTTP prelude (a
//! JSON object with `statusCode`, `headers`, `cookies`, then eight zero bytes), which
//! becomes the status line and headers; without one the answer is a 200
//! `application/octet-stream` body.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes, HttpBody};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use http_body::Frame;
use tokio::sync::mpsc;
use worker::{InvokeOutcome, InvokeRequest, InvokeResult};

use super::url_event::url_response;
use super::{InvokeService, RunError};
use crate::control::names::FunctionRef;

/// Ends a prelude.
const DELIMITER: [u8; 8] = [0; 8];
/// A prelude longer than this is not one: the bytes are body.
const MAX_PRELUDE: usize = 64 * 1024;
const CHUNK_QUEUE: usize = 4;

fn bad_gateway() -> Response {
    let body = serde_json::json!({ "Message": "Internal Server Error" }).to_string();
    (
        StatusCode::BAD_GATEWAY,
        [("content-type", "application/json")],
        body,
    )
        .into_response()
}

/// `Ok(Some(end))`: a prelude ends before byte `end`; `Ok(None)`: the bytes open with
/// none; `Err(())`: not known yet.
fn prelude_end(head: &[u8]) -> Result<Option<usize>, ()> {
    if head.first() != Some(&b'{') {
        return Ok(None);
    }
    match head.windows(DELIMITER.len()).position(|w| w == DELIMITER) {
        Some(at) => Ok(Some(at + DELIMITER.len())),
        None if head.len() > MAX_PRELUDE => Ok(None),
        None => Err(()),
    }
}

/// The response head for `head` (the bytes so far), and the body bytes in it.
fn response_head(head: Vec<u8>, end: Option<usize>) -> (Response, Bytes) {
    let mut resp = Response::new(Body::empty());
    let Some(end) = end else {
        resp.headers_mut().insert(
            "content-type",
            HeaderValue::from_static("application/octet-stream"),
        );
        return (resp, Bytes::from(head));
    };
    let Ok(pre) = url_response(&head[..end - DELIMITER.len()]) else {
        return (bad_gateway(), Bytes::new());
    };
    *resp.status_mut() = StatusCode::from_u16(pre.status).unwrap_or(StatusCode::OK);
    let cookies = pre
        .cookies
        .into_iter()
        .map(|c| ("set-cookie".to_owned(), c));
    for (k, v) in pre.headers.into_iter().chain(cookies) {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            resp.headers_mut().append(k, v);
        }
    }
    let mut rest = head;
    (resp, Bytes::from(rest.split_off(end)))
}

type Outcome = Result<InvokeOutcome, RunError>;

/// Runs `req` streamed and answers with the function's bytes as they come.
pub async fn stream(svc: &Arc<InvokeService>, f: &FunctionRef, req: InvokeRequest) -> Response {
    let spec = match svc.resolve(f).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e.message, "function URL: no such function version");
            return bad_gateway();
        }
    };
    let (chunks, mut rx) = mpsc::channel(CHUNK_QUEUE);
    let task_svc = Arc::clone(svc);
    let mut run = tokio::spawn(async move { task_svc.run_streaming(spec, req, chunks).await });
    let mut head = Vec::new();
    // Bytes until the prelude (or its absence) is known, or the invoke ended.
    let end = loop {
        tokio::select! {
            Some(chunk) = rx.recv() => {
                head.extend_from_slice(&chunk);
                if let Ok(end) = prelude_end(&head) {
                    break end;
                }
            }
            done = &mut run => {
                while let Ok(c) = rx.try_recv() {
                    head.extend_from_slice(&c);
                }
                let done: Outcome = done.unwrap_or_else(|e| {
                    Err(RunError::Api(crate::http::ApiError::service(e.to_string())))
                });
                return finished(done, head);
            }
        }
    };
    let (mut resp, first) = response_head(head, end);
    *resp.body_mut() = Body::new(ChunkBody {
        pending: first,
        chunks: rx,
    });
    resp
}

/// The answer of an invoke that ended before its prelude was known.
fn finished(done: Outcome, head: Vec<u8>) -> Response {
    match done {
        Ok(o) if matches!(o.result, InvokeResult::Success(_)) => {
            let end = prelude_end(&head).unwrap_or(None);
            let (mut resp, body) = response_head(head, end);
            if resp.status() != StatusCode::BAD_GATEWAY {
                *resp.body_mut() = Body::from(body);
            }
            resp
        }
        Err(RunError::Throttled(_)) => {
            let body = serde_json::json!({ "Message": "Rate Exceeded." }).to_string();
            (StatusCode::TOO_MANY_REQUESTS, body).into_response()
        }
        _ => bad_gateway(),
    }
}

/// The body: the bytes already read, then every chunk until the worker is done.
struct ChunkBody {
    pending: Bytes,
    chunks: mpsc::Receiver<Vec<u8>>,
}

impl HttpBody for ChunkBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if !this.pending.is_empty() {
            let b = std::mem::take(&mut this.pending);
            return Poll::Ready(Some(Ok(Frame::data(b))));
        }
        this.chunks
            .poll_recv(cx)
            .map(|c| c.map(|c| Ok(Frame::data(Bytes::from(c)))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preludes_are_found_or_ruled_out() {
        assert_eq!(prelude_end(b"plain body"), Ok(None));
        assert_eq!(prelude_end(b"{\"statusCode\":201"), Err(()));
        let mut with = b"{\"statusCode\":201}".to_vec();
        with.extend_from_slice(&DELIMITER);
        with.extend_from_slice(b"body");
        assert_eq!(prelude_end(&with), Ok(Some(with.len() - 4)));
        let (resp, rest) = response_head(with.clone(), prelude_end(&with).expect("known"));
        assert_eq!(resp.status(), StatusCode::CREATED);
        assert_eq!(&rest[..], b"body");
        let long = vec![b'{'; MAX_PRELUDE + 1];
        assert_eq!(prelude_end(&long), Ok(None));
    }
}
