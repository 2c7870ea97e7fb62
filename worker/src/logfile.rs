//! Per-function log files in the data dir, rotated by size:
//! `<dir>/<function>/<version>.log`, then `.log.1` … `.log.N` (oldest dropped). Lines
//! are appended as they arrive (each write checks the size, so no file passes its limit
//! by more than one line), at most [`MAX_OPEN`] files stay open (least recently used
//! closed first), and a deleted function's files are closed.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Errors writing function logs (reported, never fatal to an invoke).
#[derive(Debug, thiserror::Error)]
pub enum LogFileError {
    #[error("log file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Open files kept; more are closed least recently used first.
pub const MAX_OPEN: usize = 64;

struct Open {
    file: File,
    size: u64,
    last_used: u64,
}

/// Appends invoke logs to rotated files.
pub struct LogFiles {
    dir: PathBuf,
    max_bytes: u64,
    keep: u32,
    open: Mutex<OpenFiles>,
}

#[derive(Default)]
struct OpenFiles {
    files: HashMap<PathBuf, Open>,
    clock: u64,
}

impl LogFiles {
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64, keep: u32) -> Self {
        Self {
            dir: dir.into(),
            max_bytes: max_bytes.max(1),
            keep,
            open: Mutex::new(OpenFiles::default()),
        }
    }

    /// Closes the files of `function` (all versions): its deletion must not leave a
    /// descriptor behind.
    pub fn close_function(&self, function: &str) {
        let dir = self.dir.join(function);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.files
            .retain(|path, _| path.parent() != Some(dir.as_path()));
    }

    /// Closes one version's file.
    pub fn close(&self, function: &str, version: &str) {
        let path = self.path(function, version);
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.files.remove(&path);
    }

    /// How many files are open (for tests and metrics).
    pub fn open_count(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .files
            .len()
    }

    /// Appends one line (a newline is added).
    pub fn append_line(
        &self,
        function: &str,
        version: &str,
        line: &str,
    ) -> Result<(), LogFileError> {
        let mut buf = String::with_capacity(line.len() + 1);
        buf.push_str(line);
        buf.push('\n');
        self.append(function, version, &buf)
    }

    /// Path of the current file for a function version. Names are validated by the
    /// spec (`[A-Za-z0-9_-]`, digits or `$LATEST`), so they are safe path components.
    pub fn path(&self, function: &str, version: &str) -> PathBuf {
        self.dir.join(function).join(format!("{version}.log"))
    }

    /// Appends `text`, rotating first when it would push the file over the limit.
    pub fn append(&self, function: &str, version: &str, text: &str) -> Result<(), LogFileError> {
        let path = self.path(function, version);
        let err = |source| LogFileError::Io {
            path: path.clone(),
            source,
        };
        let mut guard = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let open = &mut *guard;
        open.clock += 1;
        if !open.files.contains_key(&path) {
            if open.files.len() >= MAX_OPEN {
                evict_lru(&mut open.files);
            }
            open.files
                .insert(path.clone(), open_append(&path).map_err(err)?);
        }
        let needs_rotation = open
            .files
            .get(&path)
            .is_some_and(|o| o.size > 0 && o.size + text.len() as u64 > self.max_bytes);
        if needs_rotation {
            open.files.remove(&path);
            rotate(&path, self.keep).map_err(err)?;
            open.files
                .insert(path.clone(), open_append(&path).map_err(err)?);
        }
        if let Some(o) = open.files.get_mut(&path) {
            o.file.write_all(text.as_bytes()).map_err(err)?;
            o.size += text.len() as u64;
            o.last_used = open.clock;
        }
        Ok(())
    }
}

fn evict_lru(files: &mut HashMap<PathBuf, Open>) {
    if let Some(oldest) = files
        .iter()
        .min_by_key(|(_, o)| o.last_used)
        .map(|(p, _)| p.clone())
    {
        files.remove(&oldest);
    }
}

fn open_append(path: &Path) -> io::Result<Open> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let size = file.metadata()?.len();
    Ok(Open {
        file,
        size,
        last_used: 0,
    })
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
        assert_eq!(fs::read_to_string(logs.path("g", "1")).unwrap(), "a\nc\n");
    }

    #[test]
    fn a_flood_of_lines_rotates_as_it_goes() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogFiles::new(dir.path(), 1000, 2);
        for _ in 0..1000 {
            logs.append_line("f", "1", &"z".repeat(99)).unwrap();
        }
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
        assert_eq!(fs::read_to_string(logs.path("a", "1")).unwrap(), "x\ny\n");
    }
}
