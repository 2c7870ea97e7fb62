//! Latency statistics and the bare loopback HTTP/1.1 echo used as the baseline for
//! the warm-invoke benchmark.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Summary of a set of round-trip samples.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    pub n: usize,
    pub p50: Duration,
    pub p99: Duration,
    pub per_sec: f64,
}

impl Stats {
    /// `samples` are per-request latencies, `wall` the time for all of them.
    pub fn from_samples(mut samples: Vec<Duration>, wall: Duration) -> Stats {
        samples.sort();
        let pick = |q: f64| {
            let i = ((samples.len() as f64 - 1.0) * q).round() as usize;
            samples.get(i).copied().unwrap_or_default()
        };
        Stats {
            n: samples.len(),
            p50: pick(0.50),
            p99: pick(0.99),
            per_sec: samples.len() as f64 / wall.as_secs_f64().max(1e-9),
        }
    }
}

impl std::fmt::Display for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "n={} p50={:.1} us p99={:.1} us {:.0}/s",
            self.n,
            self.p50.as_secs_f64() * 1e6,
            self.p99.as_secs_f64() * 1e6,
            self.per_sec
        )
    }
}

/// Starts a keep-alive HTTP/1.1 echo server on 127.0.0.1 (one connection served
/// at a time, enough for a sequential client). Returns its address.
pub fn start_echo_server() -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?.to_string();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = stream.set_nodelay(true);
            let _ = serve_echo(stream);
        }
    });
    Ok(addr)
}

fn serve_echo(stream: TcpStream) -> std::io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let Some(len) = read_head(&mut reader)? else {
            return Ok(());
        };
        let mut body = vec![0u8; len];
        reader.read_exact(&mut body)?;
        let mut resp = format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\n\r\n").into_bytes();
        resp.extend_from_slice(&body);
        writer.write_all(&resp)?;
    }
}

/// Reads a request or response head; returns its Content-Length, `None` at EOF.
fn read_head<R: BufRead>(reader: &mut R) -> std::io::Result<Option<usize>> {
    let mut len = 0usize;
    let mut line = String::new();
    let mut first = true;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(None);
        }
        if line == "\r\n" && !first {
            return Ok(Some(len));
        }
        first = false;
        if let Some((k, v)) = line.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
}

/// Sequential keep-alive POSTs of `body` to the echo server; per-request latencies.
pub fn run_echo_client(addr: &str, body: &[u8], n: usize) -> std::io::Result<Stats> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut req = format!(
        "POST /echo HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    let mut samples = Vec::with_capacity(n);
    let wall = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        writer.write_all(&req)?;
        let len = read_head(&mut reader)?.ok_or(std::io::ErrorKind::UnexpectedEof)?;
        let mut buf = vec![0u8; len];
        reader.read_exact(&mut buf)?;
        samples.push(t.elapsed());
    }
    Ok(Stats::from_samples(samples, wall.elapsed()))
}
