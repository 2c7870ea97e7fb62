//! Buffered request bodies, bounded by their route's limit while they are read.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::request::Parts;
use http_body_util::BodyExt as _;

use super::error::{ApiError, ErrorKind};
use super::server::MAX_REQUEST_BYTES;
use crate::invoke::headers::{self as invoke_headers, InvocationType};

/// Bytes of a refused body still read (and dropped) so that a client that sends its
/// whole upload before reading gets the error instead of a connection reset.
const DRAIN_LIMIT: u64 = 256 * 1024 * 1024;

pub enum BodyError {
    /// More than the limit: `seen` bytes had arrived, `rest` is the unread remainder.
    TooLarge {
        seen: u64,
        rest: Body,
    },
    Read(String),
}

/// The most a request's body may hold, known from its head before any of it is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyLimit {
    /// Invoke routes: Lambda's payload limit for the invocation type.
    Invoke(InvocationType),
    /// Everything else: the control plane's upload limit.
    Request,
}

impl BodyLimit {
    /// By route and, for Invoke, `X-Amz-Invocation-Type`.
    pub fn of(parts: &Parts) -> Self {
        if is_invoke(parts.uri.path()) {
            // An invalid type is refused (400) by the handler if the body fits.
            let kind = invoke_headers::invocation_type(&parts.headers)
                .unwrap_or(InvocationType::RequestResponse);
            Self::Invoke(kind)
        } else {
            Self::Request
        }
    }

    /// The limit in bytes.
    pub fn bytes(self) -> usize {
        match self {
            Self::Invoke(kind) => invoke_headers::payload_limit(kind),
            Self::Request => MAX_REQUEST_BYTES,
        }
    }

    /// The 413 for a body of `size` bytes (for one cut off mid-way, those received).
    pub fn refusal(self, size: u64) -> ApiError {
        match self {
            Self::Invoke(kind) => invoke_headers::too_large(kind, size),
            Self::Request => ApiError::new(
                ErrorKind::RequestTooLarge,
                format!("Request must be smaller than {MAX_REQUEST_BYTES} bytes"),
            ),
        }
    }
}

/// The Invoke routes (buffered and streaming), as the router matches them.
pub fn is_invoke(path: &str) -> bool {
    let mut seg = path.split('/');
    let parts = [(); 6].map(|()| seg.next());
    match parts {
        [Some(""), Some(version), Some("functions"), Some(name), Some(op), None] => {
            !name.is_empty()
                && matches!(
                    (version, op),
                    ("2015-03-31", "invocations")
                        | ("2021-11-15", "response-streaming-invocations")
                )
        }
        _ => false,
    }
}

/// Reads at most `limit` bytes. A larger body stops being read (and held) the moment
/// it passes the limit; its remainder comes back in [`BodyError::TooLarge`].
pub async fn read_limited(
    body: Body,
    limit: usize,
    content_length: Option<u64>,
) -> Result<Bytes, BodyError> {
    let mut body = body;
    let mut buf = Vec::with_capacity(content_length.map_or(0, |n| n.min(limit as u64) as usize));
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| BodyError::Read(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let seen = buf.len() as u64 + data.len() as u64;
        if seen > limit as u64 {
            return Err(BodyError::TooLarge { seen, rest: body });
        }
        buf.extend_from_slice(&data);
    }
    Ok(Bytes::from(buf))
}

/// Reads and discards the body (up to the drain cap), so a client that sends its whole
/// upload before reading still gets the error response.
pub async fn discard(body: Body) {
    let mut body = body;
    let mut seen: u64 = 0;
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            seen += data.len() as u64;
            if seen > DRAIN_LIMIT {
                break;
            }
        }
    }
}

/// Drains a refused body on its own task, for at most `within`, so that the refusal is
/// answered at once. Not done when the client waits for `100 Continue` (it will not
/// send the body) or announced more than the drain cap: the connection then closes
/// after the answer.
pub fn drain_in_background(
    parts: &Parts,
    body: Body,
    content_length: Option<u64>,
    within: Duration,
) {
    let expects_continue = parts
        .headers
        .get("expect")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if expects_continue || content_length.is_some_and(|n| n > DRAIN_LIMIT) {
        return;
    }
    tokio::spawn(async move {
        let _ = tokio::time::timeout(within, discard(body)).await;
    });
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use axum::http::{HeaderValue, Request};
    use http_body::Frame;

    use super::*;

    /// A chunked body: its chunks, then the end or (`hang`) nothing more, ever.
    struct Chunks {
        chunks: VecDeque<Bytes>,
        hang: bool,
    }

    impl http_body::Body for Chunks {
        type Data = Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            match self.chunks.pop_front() {
                Some(c) => Poll::Ready(Some(Ok(Frame::data(c)))),
                None if self.hang => Poll::Pending,
                None => Poll::Ready(None),
            }
        }
    }

    fn body(sizes: &[usize], hang: bool) -> Body {
        let chunks = sizes.iter().map(|&n| Bytes::from(vec![b'x'; n])).collect();
        Body::new(Chunks { chunks, hang })
    }

    #[tokio::test]
    async fn reading_stops_as_soon_as_the_limit_is_passed() {
        let got = read_limited(body(&[4, 6], false), 10, None).await;
        assert_eq!(got.ok().map(|b| b.len()), Some(10), "at the limit");
        // The body never ends: only stopping at the limit gives an answer.
        let read = read_limited(body(&[4, 6, 1, 100], true), 10, None);
        let got = tokio::time::timeout(Duration::from_secs(5), read)
            .await
            .expect("answered without waiting for the rest");
        let Err(BodyError::TooLarge { seen, rest }) = got else {
            panic!("expected TooLarge");
        };
        assert_eq!(seen, 11);
        // What came after the chunk that passed the limit was never read.
        let mut rest = rest;
        let next = rest.frame().await.and_then(|f| f.ok()?.into_data().ok());
        assert_eq!(next.map(|d| d.len()), Some(100));
    }

    #[test]
    fn limits_follow_the_route_and_the_invocation_type() {
        let parts = |path: &str, kind: Option<&str>| {
            let mut req = Request::post(path).body(()).expect("request");
            if let Some(k) = kind {
                let v = HeaderValue::from_str(k).expect("value");
                req.headers_mut().insert("x-amz-invocation-type", v);
            }
            req.into_parts().0
        };
        let invoke = "/2015-03-31/functions/f/invocations";
        let stream = "/2021-11-15/functions/arn%3Aaws%3Alambda%3Af/response-streaming-invocations";
        assert_eq!(BodyLimit::of(&parts(invoke, None)).bytes(), 6_291_456);
        assert_eq!(
            BodyLimit::of(&parts(invoke, Some("Event"))).bytes(),
            1_048_576
        );
        assert_eq!(
            BodyLimit::of(&parts(invoke, Some("DryRun"))).bytes(),
            6_291_456
        );
        assert_eq!(
            BodyLimit::of(&parts(invoke, Some("Later"))).bytes(),
            6_291_456
        );
        assert_eq!(
            BodyLimit::of(&parts(stream, Some("Event"))).bytes(),
            1_048_576
        );
        for other in [
            "/2015-03-31/functions",
            "/2015-03-31/functions/f/code",
            "/2015-03-31/functions//invocations",
            "/2015-03-31/functions/f/invocations/",
            "/2015-03-31/functions/f/g/invocations",
            "/2021-11-15/functions/f/invocations",
            "/x/2015-03-31/functions/f/invocations",
        ] {
            assert_eq!(
                BodyLimit::of(&parts(other, Some("Event"))),
                BodyLimit::Request,
                "{other}"
            );
        }
        assert_eq!(BodyLimit::Request.bytes(), MAX_REQUEST_BYTES);
        let e = BodyLimit::Invoke(InvocationType::Event).refusal(1_048_577);
        assert_eq!(e.kind, ErrorKind::RequestTooLarge);
        assert_eq!(
            e.message,
            "1048577 byte payload is too large for the Event invocation type (limit 1048576 bytes)"
        );
        assert_eq!(
            BodyLimit::Request.refusal(1).message,
            format!("Request must be smaller than {MAX_REQUEST_BYTES} bytes")
        );
    }
}
