//! Per-function log files in the data dir, rotated by size:
//! `<dir>/<function>/<version>.log`, then `.log.1` … `.log.N` (oldest dropped).

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

struct Open {
    file: File,
    size: u64,
}

/// Appends invoke logs to rotated files.
pub struct LogFiles {
    dir: PathBuf,
    max_bytes: u64,
    keep: u32,
    open: Mutex<HashMap<PathBuf, Open>>,
}

impl LogFiles {
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64, keep: u32) -> Self {
        Self {
            dir: dir.into(),
            max_bytes: max_bytes.max(1),
            keep,
            open: Mutex::new(HashMap::new()),
        }
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
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        if !open.contains_key(&path) {
            open.insert(path.clone(), open_append(&path).map_err(err)?);
        }
        let needs_rotation = open
            .get(&path)
            .is_some_and(|o| o.size > 0 && o.size + text.len() as u64 > self.max_bytes);
        if needs_rotation {
            open.remove(&path);
            rotate(&path, self.keep).map_err(err)?;
            open.insert(path.clone(), open_append(&path).map_err(err)?);
        }
        if let Some(o) = open.get_mut(&path) {
            o.file.write_all(text.as_bytes()).map_err(err)?;
            o.size += text.len() as u64;
        }
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<Open> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    let file = OpenOptions::new().create(true).append(true).open(path)?;
    let size = file.metadata()?.len();
    Ok(Open { file, size })
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
    fn appends_below_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let logs = LogFiles::new(dir.path(), 1000, 2);
        logs.append("a", "1", "x\n").unwrap();
        logs.append("a", "1", "y\n").unwrap();
        assert_eq!(fs::read_to_string(logs.path("a", "1")).unwrap(), "x\ny\n");
    }
}
