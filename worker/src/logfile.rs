//! Per-function log files in the data dir, rotated by size:
//! `<dir>/<function>/<version>.log`, then `.log.1` … `.log.N` (oldest dropped). Lines
//! are buffered per file and written by a flusher thread within [`FLUSH_INTERVAL`] (or
//! at once past [`MAX_PENDING`] bytes), so a warm invoke makes no write system call of
//! its own; each append checks the size, so no file passes its limit by more than one
//! line. At most [`MAX_OPEN`] files stay open (least recently used closed first), and a
//! deleted function's files are closed. Closing a file or dropping `LogFiles` writes
//! what it still holds.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Duration;

/// Errors writing function logs (reported, never fatal to an invoke).
#[derive(Debug, thiserror::Error)]
pub enum LogFileError {
    #[error("log file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Open files kept; more are closed least recently used first.
pub const MAX_OPEN: usize = 64;

/// Longest a line waits in memory before it is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// Bytes held per file before they are written at once (so at most
/// `MAX_OPEN * MAX_PENDING` bytes are ever held).
pub const MAX_PENDING: usize = 64 * 1024;

struct Open {
    file: File,
    path: PathBuf,
    /// Bytes in the file plus `pending`.
    size: u64,
    last_used: u64,
    pending: Vec<u8>,
    /// A background write failed and was reported; later failures are not, until a
    /// write succeeds again.
    failing: bool,
}

impl Open {
    /// Writes what is held, from the flusher or on close; a failure (a full disk) is
    /// reported once until a write succeeds again, so a flood of lines does not become
    /// a flood of the worker's own.
    fn flush_reporting(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        match self.write_pending() {
            Ok(()) => self.failing = false,
            Err(e) => {
                if !std::mem::replace(&mut self.failing, true) {
                    eprintln!(
                        "worker: {e}; held lines of this log are dropped until a write succeeds"
                    );
                }
            }
        }
    }

    fn write_pending(&mut self) -> Result<(), LogFileError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let result = self.file.write_all(&self.pending);
        self.pending.clear();
        result.map_err(|source| LogFileError::Io {
            path: self.path.clone(),
            source,
        })
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.flush_reporting();
    }
}

/// Appends invoke logs to rotated files.
pub struct LogFiles {
    shared: Arc<Shared>,
}

struct Shared {
    dir: PathBuf,
    max_bytes: u64,
    keep: u32,
    open: Mutex<OpenFiles>,
    /// Signalled when the first line is held after a flush.
    held: Condvar,
    /// No flusher thread could be started: every append writes through.
    write_through: AtomicBool,
}

#[derive(Default)]
struct OpenFiles {
    /// function → version → file: looked up by `&str`, no allocation per line.
    files: HashMap<String, HashMap<String, Open>>,
    clock: u64,
    /// Some file holds lines not yet written.
    dirty: bool,
}

impl LogFiles {
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64, keep: u32) -> Self {
        let shared = Arc::new(Shared {
            dir: dir.into(),
            max_bytes: max_bytes.max(1),
            keep,
            open: Mutex::new(OpenFiles::default()),
            held: Condvar::new(),
            write_through: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&shared);
        let spawned = std::thread::Builder::new()
            .name("log-flush".into())
            .spawn(move || flusher(weak));
        if let Err(e) = spawned {
            eprintln!("worker: no log flusher thread ({e}): logs are written line by line");
            shared.write_through.store(true, Ordering::Relaxed);
        }
        Self { shared }
    }

    fn lock(&self) -> MutexGuard<'_, OpenFiles> {
        self.shared.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Closes the files of `function` (all versions): its deletion must not leave a
    /// descriptor behind.
    pub fn close_function(&self, function: &str) {
        self.lock().files.remove(function);
    }

    /// Closes one version's file.
    pub fn close(&self, function: &str, version: &str) {
        self.lock().remove(function, version);
    }

    /// How many files are open (for tests and metrics).
    pub fn open_count(&self) -> usize {
        self.lock().count()
    }

    /// Writes every held line now.
    pub fn flush(&self) {
        self.shared.flush_all();
    }

    /// Appends one line (a newline is added).
    pub fn append_line(
        &self,
        function: &str,
        version: &str,
        line: &str,
    ) -> Result<(), LogFileError> {
        self.append_parts(function, version, &[line.as_bytes(), b"\n"])
    }

    /// Path of the current file for a function version. Names are validated by the
    /// spec (`[A-Za-z0-9_-]`, digits or `$LATEST`), so they are safe path components.
    pub fn path(&self, function: &str, version: &str) -> PathBuf {
        self.shared.path(function, version)
    }

    /// Appends `text`, rotating first when it would push the file over the limit.
    pub fn append(&self, function: &str, version: &str, text: &str) -> Result<(), LogFileError> {
        self.append_parts(function, version, &[text.as_bytes()])
    }

    fn append_parts(
        &self,
        function: &str,
        version: &str,
        parts: &[&[u8]],
    ) -> Result<(), LogFileError> {
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let shared = &*self.shared;
        let mut guard = self.lock();
        let open = &mut *guard;
        open.clock += 1;
        let clock = open.clock;
        let file = open.file(shared, function, version, len)?;
        for part in parts {
            file.pending.extend_from_slice(part);
        }
        file.size += len as u64;
        file.last_used = clock;
        if shared.write_through.load(Ordering::Relaxed) || file.pending.len() >= MAX_PENDING {
            return file.write_pending();
        }
        if !open.dirty {
            open.dirty = true;
            shared.held.notify_one();
        }
        Ok(())
    }
}

impl Drop for LogFiles {
    fn drop(&mut self) {
        self.flush();
    }
}

impl Shared {
    fn path(&self, function: &str, version: &str) -> PathBuf {
        self.dir.join(function).join(format!("{version}.log"))
    }

    fn flush_all(&self) {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.dirty = false;
        for file in open.files.values_mut().flat_map(|v| v.values_mut()) {
            file.flush_reporting();
        }
    }
}

impl OpenFiles {
    /// The open file of `function`/`version` with room for `len` more bytes: opened
    /// (closing the least recently used past [`MAX_OPEN`]) or rotated as needed.
    fn file(
        &mut self,
        shared: &Shared,
        function: &str,
        version: &str,
        len: usize,
    ) -> Result<&mut Open, LogFileError> {
        let is_open = self
            .files
            .get(function)
            .is_some_and(|v| v.contains_key(version));
        if !is_open {
            if self.count() >= MAX_OPEN {
                self.evict_lru();
            }
            let file = open_append(shared.path(function, version))?;
            self.files
                .entry(function.to_owned())
                .or_default()
                .insert(version.to_owned(), file);
        }
        let versions = self.files.get_mut(function).expect("inserted above");
        let file = versions.get_mut(version).expect("inserted above");
        if file.size > 0 && file.size + len as u64 > shared.max_bytes {
            file.write_pending()?;
            let path = file.path.clone();
            versions.remove(version);
            let err = |source| LogFileError::Io {
                path: path.clone(),
                source,
            };
            rotate(&path, shared.keep).map_err(err)?;
            versions.insert(version.to_owned(), open_append(path.clone())?);
        }
        Ok(versions.get_mut(version).expect("inserted above"))
    }

    fn evict_lru(&mut self) {
        let oldest = self
            .files
            .iter()
            .flat_map(|(f, vs)| vs.iter().map(move |(v, o)| (f, v, o.last_used)))
            .min_by_key(|(_, _, used)| *used)
            .map(|(f, v, _)| (f.clone(), v.clone()));
        if let Some((f, v)) = oldest {
            self.remove(&f, &v);
        }
    }

    /// Closes one file (writing what it holds), and its function's map once empty.
    fn remove(&mut self, function: &str, version: &str) {
        if let Some(versions) = self.files.get_mut(function) {
            versions.remove(version);
            if versions.is_empty() {
                self.files.remove(function);
            }
        }
    }

    fn count(&self) -> usize {
        self.files.values().map(HashMap::len).sum()
    }
}

/// The flusher thread: waits for a held line, lets more gather for
/// [`FLUSH_INTERVAL`], writes them all; ends once the `LogFiles` is gone.
fn flusher(shared: Weak<Shared>) {
    loop {
        let Some(s) = shared.upgrade() else { return };
        let guard = s.open.lock().unwrap_or_else(|p| p.into_inner());
        // Wake now and then even when idle, to notice the owner is gone.
        let (guard, _) = s
            .held
            .wait_timeout_while(guard, Duration::from_secs(1), |o| !o.dirty)
            .unwrap_or_else(|p| p.into_inner());
        let dirty = guard.dirty;
        drop(guard);
        drop(s);
        if dirty {
            std::thread::sleep(FLUSH_INTERVAL);
            let Some(s) = shared.upgrade() else { return };
            s.flush_all();
        }
    }
}

fn open_append(path: PathBuf) -> Result<Open, LogFileError> {
    let opened = (|| {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let size = file.metadata()?.len();
        Ok((file, size))
    })();
    match opened {
        Ok((file, size)) => Ok(Open {
            file,
            path,
            size,
            last_used: 0,
            pending: Vec::new(),
            failing: false,
        }),
        Err(source) => Err(LogFileError::Io { path, source }),
    }
}

fn numbered(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

/// `x.log.(keep-1)` → `x.log.keep`, …, `x.log` → `x.log.1`.
fn rotate(path: &Path, keep: u32) -> io::Result<()> {
    if keep == 0 {
        return fs::remove_file(path);
    }
    for n in (1..keep).rev() {
        let from = numbered(path, n);
        if from.exists() {
            fs::rename(&from, numbered(path, n + 1))?;
        }
    }
    fs::rename(path, numbered(path, 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_and_keeps_n_files() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogFiles::new(dir.path(), 10, 2);
        for i in 0..5 {
            logs.append("fn", "$LATEST", &format!("line-{i}\n"))
                .unwrap();
        }
        logs.flush();
        let p = logs.path("fn", "$LATEST");
        assert_eq!(fs::read_to_string(&p).unwrap(), "line-4\n");
        assert_eq!(fs::read_to_string(numbered(&p, 1)).unwrap(), "line-3\n");
        assert_eq!(fs::read_to_string(numbered(&p, 2)).unwrap(), "line-2\n");
        assert!(!numbered(&p, 3).exists());
    }

    #[test]
    fn open_files_are_bounded_and_closed_with_their_function() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogFiles::new(dir.path(), 1000, 1);
        for i in 0..(MAX_OPEN + 10) {
            logs.append_line(&format!("f{i}"), "$LATEST", "x").unwrap();
        }
        assert_eq!(logs.open_count(), MAX_OPEN);
        logs.append_line("g", "1", "a").unwrap();
        logs.append_line("g", "$LATEST", "b").unwrap();
        let before = logs.open_count();
        logs.close_function("g");
        assert_eq!(logs.open_count(), before - 2);
        // A closed file reopens where it left off.
        logs.append_line("g", "1", "c").unwrap();
        logs.flush();
        assert_eq!(fs::read_to_string(logs.path("g", "1")).unwrap(), "a\nc\n");
    }

    #[test]
    fn a_flood_of_lines_rotates_as_it_goes() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogFiles::new(dir.path(), 1000, 2);
        for _ in 0..1000 {
            logs.append_line("f", "1", &"z".repeat(99)).unwrap();
        }
        logs.flush();
        let p = logs.path("f", "1");
        for f in [p.clone(), numbered(&p, 1), numbered(&p, 2)] {
            assert!(fs::metadata(&f).unwrap().len() <= 1000, "{}", f.display());
        }
    }

    #[test]
    fn appends_below_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogFiles::new(dir.path(), 1000, 2);
        logs.append("a", "1", "x\n").unwrap();
        logs.append("a", "1", "y\n").unwrap();
        logs.flush();
        assert_eq!(fs::read_to_string(logs.path("a", "1")).unwrap(), "x\ny\n");
    }

    #[test]
    fn held_lines_are_written_by_the_flusher_and_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogFiles::new(dir.path(), 1 << 20, 1);
        logs.append_line("h", "1", "first").unwrap();
        let p = logs.path("h", "1");
        let deadline = std::time::Instant::now() + 20 * FLUSH_INTERVAL;
        while fs::read_to_string(&p).unwrap_or_default() != "first\n" {
            assert!(std::time::Instant::now() < deadline, "never flushed");
            std::thread::sleep(FLUSH_INTERVAL / 4);
        }
        logs.append_line("h", "1", "second").unwrap();
        drop(logs);
        assert_eq!(fs::read_to_string(&p).unwrap(), "first\nsecond\n");
    }

    #[test]
    fn a_full_buffer_is_written_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogFiles::new(dir.path(), 1 << 20, 1);
        let line = "y".repeat(1023);
        // Twice the bound: at least one write at the bound, whenever the flusher runs.
        for _ in 0..(2 * MAX_PENDING / 1024) {
            logs.append_line("b", "1", &line).unwrap();
        }
        let written = fs::metadata(logs.path("b", "1")).unwrap().len();
        assert!(written >= MAX_PENDING as u64, "{written}");
    }

    #[test]
    fn a_failing_file_drops_held_lines_and_keeps_taking_them() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogFiles::new(dir.path(), 1 << 20, 1);
        let path = logs.path("full", "1");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        // Every write to /dev/full fails with ENOSPC.
        std::os::unix::fs::symlink("/dev/full", &path).unwrap();
        for _ in 0..3 {
            logs.append_line("full", "1", "lost").unwrap();
            logs.flush();
        }
        let shared = logs.lock();
        let file = &shared.files["full"]["1"];
        assert!(file.failing && file.pending.is_empty());
    }
}
