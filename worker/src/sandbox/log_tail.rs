//! A sandbox's function output as the worker keeps it: every line goes to the log sink
//! (the function version's rotated file) as it arrives, while memory holds only the
//! last 4 KB for `LogType=Tail`. One invoke may write at most [`MAX_INVOKE_LOG_BYTES`]
//! to the file; the rest is dropped, with one line saying so (Lambda too drops what a
//! function logs past its limits rather than buffer it).

use std::collections::VecDeque;
use std::sync::Arc;

use super::LogLine;

/// Bytes of log lines one invoke may write to the function's log file.
pub const MAX_INVOKE_LOG_BYTES: u64 = 10 << 20;
/// What is kept in memory: Lambda's `X-Amz-Log-Result` is the last 4 KB.
const TAIL_BYTES: usize = 4096;

/// Where function output goes as it arrives.
pub trait LogSink: Send + Sync {
    fn line(&self, text: &str);
}

#[derive(Default)]
pub struct LogTail {
    sink: Option<Arc<dyn LogSink>>,
    tail: VecDeque<LogLine>,
    tail_bytes: usize,
    /// Written to the sink since the current invoke began.
    written: u64,
    dropped: u64,
}

impl LogTail {
    pub fn set_sink(&mut self, sink: Arc<dyn LogSink>) {
        self.sink = Some(sink);
    }

    /// A new invoke: its own allowance of log bytes.
    pub fn begin_invoke(&mut self) {
        self.written = 0;
        self.dropped = 0;
    }

    pub fn push(&mut self, line: LogLine) {
        let len = line.text.len() as u64 + 1;
        if let Some(sink) = &self.sink {
            if self.written + len <= MAX_INVOKE_LOG_BYTES {
                sink.line(&line.text);
                self.written += len;
            } else {
                if self.dropped == 0 {
                    sink.line(&format!(
                        "[lambda-microvm] log output truncated: this invoke wrote more than {} MiB; the rest is dropped",
                        MAX_INVOKE_LOG_BYTES >> 20
                    ));
                }
                self.dropped += 1;
            }
        }
        self.tail_bytes += line.text.len() + 1;
        self.tail.push_back(line);
        while self.tail_bytes > TAIL_BYTES && self.tail.len() > 1 {
            if let Some(old) = self.tail.pop_front() {
                self.tail_bytes -= old.text.len() + 1;
            }
        }
    }

    /// The lines kept since the last call (at most about 4 KB).
    pub fn take(&mut self) -> Vec<LogLine> {
        self.tail_bytes = 0;
        std::mem::take(&mut self.tail).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Collect(Mutex<Vec<String>>);
    impl LogSink for Collect {
        fn line(&self, text: &str) {
            self.0.lock().unwrap().push(text.to_owned());
        }
    }

    fn line(t: &str) -> LogLine {
        LogLine {
            request_id: None,
            text: t.to_owned(),
        }
    }

    #[test]
    fn memory_keeps_a_small_tail_while_the_sink_gets_everything() {
        let sink = Arc::new(Collect::default());
        let mut t = LogTail::default();
        t.set_sink(sink.clone());
        t.begin_invoke();
        for i in 0..10_000 {
            t.push(line(&format!("line {i:05} {}", "x".repeat(90))));
        }
        assert_eq!(sink.0.lock().unwrap().len(), 10_000);
        let kept = t.take();
        let bytes: usize = kept.iter().map(|l| l.text.len() + 1).sum();
        assert!(bytes <= TAIL_BYTES && !kept.is_empty(), "{bytes}");
        assert!(kept.last().unwrap().text.starts_with("line 09999"));
        assert!(t.take().is_empty());
    }

    #[test]
    fn an_invoke_past_its_allowance_is_truncated_once() {
        let sink = Arc::new(Collect::default());
        let mut t = LogTail::default();
        t.set_sink(sink.clone());
        t.begin_invoke();
        let big = "y".repeat(1 << 20);
        for _ in 0..12 {
            t.push(line(&big));
        }
        let got = sink.0.lock().unwrap().clone();
        assert_eq!(
            got.len(),
            10,
            "9 full lines fit in 10 MiB with newlines, then the notice"
        );
        assert!(got.last().unwrap().contains("truncated"));
        t.begin_invoke();
        t.push(line("next invoke"));
        assert_eq!(sink.0.lock().unwrap().last().unwrap(), "next invoke");
    }
}
