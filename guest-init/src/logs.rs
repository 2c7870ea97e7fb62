//! Forwarding the runtime's stdout/stderr to the host, one frame per line, tagged with
//! the request id that was in flight when the line was read.
//!
//! Each pipe is read by a task on the agent's event loop, not a thread of its own:
//! a sandbox's memory is mostly per-thread kernel and stack pages, and its density
//! counts every one of them.

use runtime_api::protocol::{GuestMessage, Log, LogStream};
use runtime_api::server::{LogTag, Sink};
use std::os::fd::OwnedFd;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, BufReader};
use tokio::net::unix::pipe;
use tokio::task::JoinHandle;

/// Longer lines are split so one runaway line cannot exhaust memory or the frame limit.
pub const MAX_LINE: u64 = 256 * 1024;

/// Read buffer per pipe; longer lines are gathered across reads up to [`MAX_LINE`].
const READ_BUFFER: usize = 16 * 1024;

/// Reads the pipe `fd` on a task until end of file (every writer, including
/// grandchildren, has closed it). Must be called on the agent's runtime.
pub fn forward(
    fd: OwnedFd,
    stream: LogStream,
    tag: LogTag,
    sink: Sink,
) -> std::io::Result<JoinHandle<()>> {
    let pipe = pipe::Receiver::from_owned_fd(fd)?;
    Ok(tokio::spawn(async move {
        let mut reader = BufReader::with_capacity(READ_BUFFER, pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match (&mut reader)
                .take(MAX_LINE)
                .read_until(b'\n', &mut line)
                .await
            {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            let request_id = tag.lock().unwrap_or_else(|p| p.into_inner()).clone();
            sink(GuestMessage::Log(Log {
                stream,
                request_id,
                line: std::mem::take(&mut line),
            }));
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use std::sync::{Arc, Mutex};

    #[tokio::test]
    async fn lines_are_split_tagged_and_capped() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = Arc::clone(&got);
        let sink: Sink = Arc::new(move |m| g.lock().unwrap().push(m));
        let tag: LogTag = Arc::new(Mutex::new(Some("req-1".into())));
        let mut input = b"one\ntwo\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE as usize + 10));
        let (read, write) = nix::unistd::pipe().unwrap();
        let writer = std::thread::spawn(move || {
            let mut w = std::fs::File::from(write);
            w.write_all(&input).unwrap();
        });
        forward(read, LogStream::Stdout, tag, sink)
            .unwrap()
            .await
            .unwrap();
        writer.join().unwrap();
        let got = got.lock().unwrap();
        let lines: Vec<(Option<String>, usize)> = got
            .iter()
            .map(|m| match m {
                GuestMessage::Log(l) => (l.request_id.clone(), l.line.len()),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[0], (Some("req-1".into()), 3));
        assert_eq!(lines[2].1, MAX_LINE as usize);
        assert_eq!(lines[3].1, 10);
    }
}
