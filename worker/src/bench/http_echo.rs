//! The baseline: a bare HTTP/1.1 keep-alive echo server on loopback and its client.
//! Hand-rolled on tokio so the baseline is as lean as HTTP can be.

use std::io;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest header block accepted.
const MAX_HEAD: usize = 16 * 1024;

/// Where the body of the HTTP message at the start of `buf` lies (`start..end`), once
/// its head is complete; `None` while more head bytes are needed.
pub(crate) fn message_bounds(buf: &[u8]) -> io::Result<Option<(usize, usize)>> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "head too large"));
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end])
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "non-UTF-8 head"))?;
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    Ok(Some((end + 4, end + 4 + len)))
}

/// Reads one HTTP message (head + Content-Length body) from `s`, using `buf` as carry-over
/// storage. Returns the body, or `None` at a clean end of stream.
async fn read_message(s: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Option<Vec<u8>>> {
    loop {
        if let Some((start, total)) = message_bounds(buf)? {
            while buf.len() < total {
                if s.read_buf(buf).await? == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
            }
            let body = buf[start..total].to_vec();
            buf.drain(..total);
            return Ok(Some(body));
        }
        if s.read_buf(buf).await? == 0 {
            return if buf.is_empty() {
                Ok(None)
            } else {
                Err(io::ErrorKind::UnexpectedEof.into())
            };
        }
    }
}

/// Starts the echo server on an ephemeral loopback port.
pub async fn serve() -> io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let mut buf = Vec::with_capacity(4096);
                while let Ok(Some(body)) = read_message(&mut s, &mut buf).await {
                    let mut out = format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                        body.len()
                    )
                    .into_bytes();
                    out.extend_from_slice(&body);
                    if s.write_all(&out).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// A keep-alive client connection.
pub struct Client {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// POSTs `body` and returns the echoed body.
    pub async fn echo(&mut self, body: &[u8]) -> io::Result<Vec<u8>> {
        let mut req = format!(
            "POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        self.stream.write_all(&req).await?;
        read_message(&mut self.stream, &mut self.buf)
            .await?
            .ok_or_else(|| io::ErrorKind::UnexpectedEof.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn echoes_over_keep_alive() {
        let addr = serve().await.unwrap();
        let mut c = Client::connect(addr).await.unwrap();
        for n in [0usize, 1, 1024, 70_000] {
            let body = vec![b'x'; n];
            assert_eq!(c.echo(&body).await.unwrap(), body);
        }
    }
}
