//! A minimal SigV4-signing HTTP/1.1 client over loopback (one request per
//! connection), enough for the demo to deploy and invoke without an AWS SDK.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use axum::http::{HeaderMap, HeaderValue};

use crate::auth::{sign_request, SigningRequest};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to {addr}: {source}")]
    Io {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("signing: {0}")]
    Sign(String),
    #[error("malformed HTTP response: {0}")]
    Response(String),
}

pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

pub struct Client {
    pub addr: SocketAddr,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
}

impl Client {
    /// A signed request's HTTP/1.1 head: `extra` headers are signed too, `more` lines
    /// (each ending in CRLF) follow unsigned. The body is what was signed.
    pub fn signed_head(
        &self,
        method: &str,
        path: &str,
        extra: &[(&'static str, &str)],
        body: &[u8],
        more: &str,
    ) -> Result<String, ClientError> {
        let sign = |e: &dyn std::fmt::Display| ClientError::Sign(e.to_string());
        let mut headers = HeaderMap::new();
        let host = HeaderValue::from_str(&self.addr.to_string()).map_err(|e| sign(&e))?;
        headers.insert("host", host);
        for (k, v) in extra {
            headers.insert(*k, HeaderValue::from_str(v).map_err(|e| sign(&e))?);
        }
        let auth = sign_request(
            &SigningRequest {
                method,
                path,
                query: None,
                body,
                access_key_id: &self.access_key_id,
                secret_access_key: &self.secret_access_key,
                region: &self.region,
                service: "lambda",
                now: crate::timefmt::now(),
            },
            &mut headers,
        )
        .map_err(|e| sign(&e))?;
        Ok(request_head(
            method,
            path,
            &headers,
            &auth,
            body.len(),
            more,
        ))
    }

    /// Sends one signed request; `extra` headers are signed too.
    pub fn send(
        &self,
        method: &str,
        path: &str,
        extra: &[(&'static str, &str)],
        body: &[u8],
    ) -> Result<Response, ClientError> {
        let io = |source| ClientError::Io {
            addr: self.addr,
            source,
        };
        let req = self.signed_head(method, path, extra, body, "connection: close\r\n")?;
        let mut stream = TcpStream::connect(self.addr).map_err(io)?;
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .map_err(io)?;
        stream.write_all(req.as_bytes()).map_err(io)?;
        stream.write_all(body).map_err(io)?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).map_err(io)?;
        parse(&raw)
    }
}

/// A signed request's HTTP/1.1 head: the request line, the signed `headers`,
/// `Authorization` and `Content-Length`, then `more` (whole lines, each ending in
/// CRLF) and the blank line.
fn request_head(
    method: &str,
    path: &str,
    headers: &HeaderMap,
    auth: &str,
    body_len: usize,
    more: &str,
) -> String {
    let mut req = format!("{method} {path} HTTP/1.1\r\n");
    for (k, v) in headers {
        req.push_str(&format!(
            "{k}: {}\r\n",
            String::from_utf8_lossy(v.as_bytes())
        ));
    }
    req.push_str(&format!(
        "authorization: {auth}\r\ncontent-length: {body_len}\r\n{more}\r\n"
    ));
    req
}

fn parse(raw: &[u8]) -> Result<Response, ClientError> {
    let bad = |m: &str| ClientError::Response(m.to_owned());
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no header terminator"))?;
    let head = std::str::from_utf8(&raw[..split]).map_err(|_| bad("non-UTF-8 headers"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let rest = &raw[split + 4..];
    let chunked = headers
        .iter()
        .any(|(k, v)| k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    let body = if chunked {
        dechunk(rest)?
    } else {
        rest.to_vec()
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, ClientError> {
    let bad = || ClientError::Response("bad chunked encoding".into());
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n").ok_or_else(bad)?;
        let size_text = std::str::from_utf8(&data[..eol]).map_err(|_| bad())?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad())?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = data.get(..size).ok_or_else(bad)?;
        out.extend_from_slice(chunk);
        data = data.get(size + 2..).ok_or_else(bad)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_bodies() {
        let r = parse(b"HTTP/1.1 200 OK\r\nX-A: b\r\n\r\nhello").expect("plain");
        assert_eq!(r.status, 200);
        assert_eq!(r.header("x-a"), Some("b"));
        assert_eq!(r.body, b"hello");
        let r = parse(b"HTTP/1.1 201 Created\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            .expect("chunked");
        assert_eq!(r.body, b"abcde");
        assert!(parse(b"garbage").is_err());
        assert!(parse(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n").is_err());
    }
}
