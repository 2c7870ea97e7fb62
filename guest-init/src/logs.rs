//! Forwarding the runtime's stdout/stderr to the host, one frame per line, tagged with
//! the request id that was in flight when the line was read.

use runtime_api::protocol::{GuestMessage, Log, LogStream};
use runtime_api::server::{LogTag, Sink};
use std::io::{BufRead, BufReader, Read};
use std::thread::JoinHandle;

/// Longer lines are split so one runaway line cannot exhaust memory or the frame limit.
pub const MAX_LINE: u64 = 256 * 1024;

/// Reads `pipe` on a thread until end of file (every writer, including grandchildren,
/// has closed it).
pub fn forward<R: Read + Send + 'static>(
    pipe: R,
    stream: LogStream,
    tag: LogTag,
    sink: Sink,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("log-{stream:?}").to_lowercase())
        .spawn(move || {
            let mut reader = BufReader::with_capacity(64 * 1024, pipe);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.by_ref().take(MAX_LINE).read_until(b'\n', &mut line) {
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
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn lines_are_split_tagged_and_capped() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let g = Arc::clone(&got);
        let sink: Sink = Arc::new(move |m| g.lock().unwrap().push(m));
        let tag: LogTag = Arc::new(Mutex::new(Some("req-1".into())));
        let mut input = b"one\ntwo\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE as usize + 10));
        forward(std::io::Cursor::new(input), LogStream::Stdout, tag, sink)
            .unwrap()
            .join()
            .unwrap();
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
