//! The architecture floor: the warm invoke's topology with no logic in it.
//!
//! A warm invoke crosses three processes: the worker sends a frame over a Unix socket
//! to guest-init, guest-init answers the runtime's parked `GET /next` over loopback TCP,
//! the runtime POSTs the response, guest-init acknowledges it and sends a frame back.
//! Here a blocking "relay" (this binary re-executed) stands in for guest-init and the
//! worker's code, placed on CPUs as sandboxes are. The runtime is either a minimal
//! blocking loop (the topology's floor on this host) or the real function binary
//! (what guest-init and the worker add on top of the function's own cost).

use super::http_echo::message_bounds;
use super::stats::{self, RunStats};
use crate::jail::cpus::{self, CpuLease, CpuPlacer};
use crate::sandbox::lean_stream::LeanUnixStream;
use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// argv[1] that turns the bench binary into a relay or a runtime.
pub const RELAY_FLAG: &str = "--floor-relay";
pub const RUNTIME_FLAG: &str = "--floor-runtime";

/// Runs the relay or runtime role when argv asks for one; returns otherwise.
pub fn maybe_run_child() {
    let args: Vec<String> = std::env::args().collect();
    let result = match args.get(1).map(String::as_str) {
        Some(RELAY_FLAG) => relay(&args[2..]),
        Some(RUNTIME_FLAG) => runtime(&args[2..]),
        _ => return,
    };
    // The bench ends a chain by closing its socket: any end is a normal one.
    let _ = result;
    std::process::exit(0);
}

/// Reads one HTTP message from `s` and returns its body.
fn read_http(s: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Vec<u8>> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some((start, total)) = message_bounds(buf)? {
            if buf.len() >= total {
                let body = buf[start..total].to_vec();
                buf.drain(..total);
                return Ok(body);
            }
        }
        let n = s.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// argv: host socket path, CPU list ("-" for none), runtime binary ("-" for the
/// built-in minimal one).
fn relay(args: &[String]) -> io::Result<()> {
    let (sock, cpu_list, runtime_bin) = match args {
        [s, c, r] => (s, c, r),
        _ => return Err(io::ErrorKind::InvalidInput.into()),
    };
    if cpu_list != "-" {
        let set: Vec<usize> = cpu_list.split(',').filter_map(|c| c.parse().ok()).collect();
        cpus::set_affinity(0, &set)?;
    }
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let mut rt_child = if runtime_bin == "-" {
        Command::new(std::env::current_exe()?)
            .args([RUNTIME_FLAG, &port.to_string()])
            .spawn()?
    } else {
        // What a Lambda runtime client reads at start (the Rust echo picks its
        // behaviour from _HANDLER).
        Command::new(runtime_bin)
            .env_clear()
            .env("AWS_LAMBDA_RUNTIME_API", format!("127.0.0.1:{port}"))
            .env("_HANDLER", "echo")
            .env("AWS_LAMBDA_FUNCTION_NAME", "floor")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
            .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/floor")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "floor")
            // It reports the relay's end on stderr: expected, and not the bench's output.
            .stderr(std::process::Stdio::null())
            .spawn()?
    };
    let (mut rt, _) = listener.accept()?;
    rt.set_nodelay(true)?;
    let mut host = std::os::unix::net::UnixStream::connect(sock)?;
    let result = relay_loop(&mut host, &mut rt);
    let _ = rt_child.kill();
    let _ = rt_child.wait();
    result
}

fn relay_loop(host: &mut std::os::unix::net::UnixStream, rt: &mut TcpStream) -> io::Result<()> {
    let mut rt_buf = Vec::new();
    loop {
        read_http(rt, &mut rt_buf)?; // the runtime's GET /next
        let mut len = [0u8; 4];
        host.read_exact(&mut len)?;
        let mut payload = vec![0u8; u32::from_le_bytes(len) as usize];
        host.read_exact(&mut payload)?;
        let deadline_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64 + 10_000);
        let mut out = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
             Lambda-Runtime-Aws-Request-Id: 8476a536-e9f4-11e8-9739-2dfe598c3fcd\r\n\
             Lambda-Runtime-Deadline-Ms: {deadline_ms}\r\n\
             Lambda-Runtime-Invoked-Function-Arn: arn:aws:lambda:us-east-1:000000000000:function:floor\r\n\
             Lambda-Runtime-Trace-Id: Root=1-5bef4de7-ad49b0e87f6ef6c87fc2e700;Parent=9a9197af755a6419;Sampled=1\r\n\
             Content-Length: {}\r\n\r\n",
            payload.len()
        )
        .into_bytes();
        out.extend_from_slice(&payload);
        rt.write_all(&out)?;
        let response = read_http(rt, &mut rt_buf)?; // POST .../response
        let mut frame = (response.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(&response);
        host.write_all(&frame)?;
        rt.write_all(b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n")?;
    }
}

/// argv: the relay's port.
fn runtime(args: &[String]) -> io::Result<()> {
    let port: u16 = args
        .first()
        .and_then(|p| p.parse().ok())
        .ok_or(io::ErrorKind::InvalidInput)?;
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_nodelay(true)?;
    let mut buf = Vec::new();
    loop {
        s.write_all(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n")?;
        let event = read_http(&mut s, &mut buf)?;
        let mut post = format!(
            "POST /2018-06-01/runtime/invocation/floor/response HTTP/1.1\r\n\
             Host: x\r\nContent-Length: {}\r\n\r\n",
            event.len()
        )
        .into_bytes();
        post.extend_from_slice(&event);
        s.write_all(&post)?;
        read_http(&mut s, &mut buf)?; // 202
    }
}

/// One relay + runtime pair, seen from the bench.
struct Chain {
    conn: LeanUnixStream,
    buf: Vec<u8>,
    relay: Child,
    _cpus: Option<CpuLease>,
}

impl Chain {
    async fn start(
        sock: &Path,
        placer: Option<&CpuPlacer>,
        runtime: Option<&Path>,
    ) -> io::Result<Self> {
        let _ = std::fs::remove_file(sock);
        let listener = tokio::net::UnixListener::bind(sock)?;
        let lease = placer.and_then(|p| p.lease(1));
        let cpu_list = lease.as_ref().map_or_else(
            || "-".to_string(),
            |l| {
                let c: Vec<String> = l.cpus().iter().map(usize::to_string).collect();
                c.join(",")
            },
        );
        let mut relay = Command::new(std::env::current_exe()?)
            .arg(RELAY_FLAG)
            .arg(sock)
            .arg(cpu_list)
            .arg(runtime.map_or_else(|| Path::new("-").into(), Path::to_path_buf))
            .spawn()?;
        let accepted = tokio::time::timeout(Duration::from_secs(5), listener.accept()).await;
        let _ = std::fs::remove_file(sock);
        let stream = match accepted {
            Ok(Ok((s, _))) => s,
            other => {
                let _ = relay.kill();
                let _ = relay.wait();
                return Err(match other {
                    Ok(Err(e)) => e,
                    _ => io::ErrorKind::TimedOut.into(),
                });
            }
        };
        Ok(Self {
            conn: LeanUnixStream::new(stream)?,
            buf: Vec::new(),
            relay,
            _cpus: lease,
        })
    }

    async fn round_trip(&mut self, payload: &[u8]) -> io::Result<Vec<u8>> {
        let mut frame = (payload.len() as u32).to_le_bytes().to_vec();
        frame.extend_from_slice(payload);
        self.conn.write_all(&frame).await?;
        loop {
            if self.buf.len() >= 4 {
                let len = u32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
                let total = 4 + len as usize;
                if self.buf.len() >= total {
                    let body = self.buf[4..total].to_vec();
                    self.buf.drain(..total);
                    return Ok(body);
                }
            }
            if self.conn.read_into(&mut self.buf).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
    }
}

impl Drop for Chain {
    fn drop(&mut self) {
        let _ = self.relay.kill();
        let _ = self.relay.wait();
    }
}

/// Where and how the chains run.
pub struct FloorSetup<'a> {
    /// Scratch directory for the sockets.
    pub dir: &'a Path,
    pub placer: Option<&'a CpuPlacer>,
    /// A Lambda runtime client binary, or `None` for the minimal built-in runtime.
    pub runtime: Option<&'a Path>,
}

/// `c` clients, each with its own relay + runtime pair, for `secs` seconds.
pub async fn run(
    setup: &FloorSetup<'_>,
    c: usize,
    secs: f64,
    payload: &[u8],
) -> io::Result<RunStats> {
    let mut chains = Vec::with_capacity(c);
    for i in 0..c {
        let sock: PathBuf = setup.dir.join(format!("floor-{i}.sock"));
        chains.push(Chain::start(&sock, setup.placer, setup.runtime).await?);
    }
    // One round trip each before the clock starts (the runtime's first /next).
    for chain in &mut chains {
        chain.round_trip(payload).await?;
    }
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let tasks: Vec<_> = chains
        .into_iter()
        .map(|mut chain| {
            let body = payload.to_vec();
            tokio::spawn(async move {
                let (mut lat, mut errors) = (Vec::new(), 0usize);
                while Instant::now() < deadline {
                    let t = Instant::now();
                    match chain.round_trip(&body).await {
                        Ok(b) if b == body => lat.push(t.elapsed()),
                        Ok(_) => errors += 1,
                        Err(_) => {
                            errors += 1;
                            break;
                        }
                    }
                }
                (lat, errors)
            })
        })
        .collect();
    Ok(stats::collect(c, tasks, start).await)
}
