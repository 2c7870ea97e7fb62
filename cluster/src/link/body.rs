//! The link's HTTP/2 bodies: a whole buffer, or records sent as they are produced
//! through a bounded channel (a full channel holds the producer back: HTTP/2 flow
//! control reaches the function's writes).

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

pub enum LinkBody {
    Full(Option<Bytes>),
    Channel(mpsc::Receiver<Bytes>),
}

impl LinkBody {
    pub fn full(b: impl Into<Bytes>) -> Self {
        Self::Full(Some(b.into()))
    }

    /// A body fed through the returned sender; it ends when the sender is dropped.
    pub fn channel(depth: usize) -> (mpsc::Sender<Bytes>, Self) {
        let (tx, rx) = mpsc::channel(depth);
        (tx, Self::Channel(rx))
    }
}

impl Body for LinkBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Self::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Self::Channel(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self, Self::Full(None))
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Self::Full(None) => SizeHint::with_exact(0),
            Self::Channel(_) => SizeHint::default(),
        }
    }
}

/// Reads a whole body, refusing more than `limit` bytes.
pub async fn read_limited<B>(body: B, limit: usize) -> Result<Vec<u8>, ReadError>
where
    B: Body<Data = Bytes>,
    B::Error: std::fmt::Display,
{
    use http_body_util::BodyExt as _;
    let mut body = std::pin::pin!(body);
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ReadError::Stream(e.to_string()))?;
        if let Ok(data) = frame.into_data() {
            if out.len() + data.len() > limit {
                return Err(ReadError::TooLarge(limit));
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out)
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("link body larger than {0} bytes")]
    TooLarge(usize),
    #[error("link stream failed: {0}")]
    Stream(String),
}
