//! A runtime loop over plain HTTP/1.1 for streamed responses `lambda_runtime` cannot
//! produce: `stream-error` streams part of a response and then reports a function
//! error in the trailers, the way Lambda documents it for custom runtimes
//! (`Lambda-Runtime-Function-Error-Type` / `-Body`, base64); `stream-big` streams
//! `STREAM_BIG_MIB` MiB (default 64) in 64 KiB chunks.

use std::io::{self, BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

const ERROR_TYPE: &str = "StreamFailure";
const ERROR_DOC: &str = r#"{"errorMessage":"failed mid-stream","errorType":"StreamFailure"}"#;

/// Serves invocations until the Runtime API goes away.
pub fn serve(big: bool) -> io::Result<()> {
    let api = std::env::var("AWS_LAMBDA_RUNTIME_API")
        .map_err(|e| io::Error::new(io::ErrorKind::NotFound, e))?;
    let mib: usize = std::env::var("STREAM_BIG_MIB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    loop {
        let request_id = next_invocation(&api)?;
        if big {
            stream_big(&api, &request_id, mib)?;
        } else {
            stream_then_fail(&api, &request_id)?;
        }
    }
}

/// Streams `mib` MiB of `x` bytes in 64 KiB chunks.
fn stream_big(api: &str, request_id: &str, mib: usize) -> io::Result<()> {
    let mut s = TcpStream::connect(api)?;
    write!(
        s,
        "POST /2018-06-01/runtime/invocation/{request_id}/response HTTP/1.1\r\n\
         Host: {api}\r\nConnection: close\r\n\
         Lambda-Runtime-Function-Response-Mode: streaming\r\n\
         Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    )?;
    let chunk = vec![b'x'; 64 * 1024];
    for _ in 0..mib * 16 {
        write!(s, "{:x}\r\n", chunk.len())?;
        s.write_all(&chunk)?;
        s.write_all(b"\r\n")?;
    }
    s.write_all(b"0\r\n\r\n")?;
    io::copy(&mut s, &mut io::sink())?;
    Ok(())
}

/// `GET /next` (one request per connection); returns the request id.
fn next_invocation(api: &str) -> io::Result<String> {
    let mut s = TcpStream::connect(api)?;
    write!(
        s,
        "GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: {api}\r\nConnection: close\r\n\r\n"
    )?;
    let mut reader = BufReader::new(s);
    let mut request_id = None;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.trim()
                .eq_ignore_ascii_case("lambda-runtime-aws-request-id")
            {
                request_id = Some(v.trim().to_string());
            }
        }
    }
    // The event is not needed; the server closes the connection after it.
    io::copy(&mut reader, &mut io::sink())?;
    request_id.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no request id"))
}

/// Streams `partial `, pauses, then ends the chunked body with the error trailers.
fn stream_then_fail(api: &str, request_id: &str) -> io::Result<()> {
    let mut s = TcpStream::connect(api)?;
    s.set_nodelay(true)?;
    write!(
        s,
        "POST /2018-06-01/runtime/invocation/{request_id}/response HTTP/1.1\r\n\
         Host: {api}\r\nConnection: close\r\n\
         Lambda-Runtime-Function-Response-Mode: streaming\r\n\
         Content-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\n\
         Trailer: Lambda-Runtime-Function-Error-Type, Lambda-Runtime-Function-Error-Body\r\n\r\n"
    )?;
    let chunk = b"partial ";
    write!(s, "{:x}\r\n", chunk.len())?;
    s.write_all(chunk)?;
    s.write_all(b"\r\n")?;
    std::thread::sleep(Duration::from_millis(500));
    write!(
        s,
        "0\r\nLambda-Runtime-Function-Error-Type: {ERROR_TYPE}\r\n\
         Lambda-Runtime-Function-Error-Body: {}\r\n\r\n",
        base64(ERROR_DOC.as_bytes())
    )?;
    // guest-init's 202.
    io::copy(&mut s, &mut io::sink())?;
    Ok(())
}

/// Standard base64 with padding (the function has no dependency for it).
fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for group in data.chunks(3) {
        let byte = |i: usize| u32::from(group.get(i).copied().unwrap_or(0));
        let n = (byte(0) << 16) | (byte(1) << 8) | byte(2);
        for i in 0..4 {
            if i <= group.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn base64_pads_like_the_standard_alphabet() {
        assert_eq!(super::base64(b"Man"), "TWFu");
        assert_eq!(super::base64(b"Ma"), "TWE=");
        assert_eq!(super::base64(b"M"), "TQ==");
        assert_eq!(super::base64(b""), "");
    }
}
