//! Crash-safe file replacement: temp file in the same directory, fsync,
//! rename, fsync of the directory.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use crate::ids::random_hex;

/// Prefix of in-flight temp files; stale ones are removed at startup.
pub const TMP_PREFIX: &str = ".tmp-";

pub fn sync_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => std::fs::File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}

/// Writes the concatenation of `parts` to `dest` so that after a crash
/// `dest` holds either nothing or all of it, never a prefix.
pub fn write_atomic(dest: &Path, parts: &[&[u8]], mode: u32) -> std::io::Result<()> {
    let dir = dest
        .parent()
        .ok_or_else(|| std::io::Error::other("destination has no parent"))?;
    let tmp = dir.join(format!("{TMP_PREFIX}{}", random_hex::<8>()));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        for data in parts {
            f.write_all(data)?;
        }
        f.sync_all()?;
        std::fs::rename(&tmp, dest)?;
        sync_parent(dest)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Removes leftovers of writes interrupted by a crash.
pub fn remove_stale_temps(dir: &Path) -> std::io::Result<usize> {
    let mut n = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            let p = entry.path();
            if entry.file_type()?.is_dir() {
                std::fs::remove_dir_all(&p)?;
            } else {
                std::fs::remove_file(&p)?;
            }
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_replace_and_cleans_temps() {
        let d = tempfile::tempdir().expect("tempdir");
        let p = d.path().join("obj");
        write_atomic(&p, &[b"o", b"ne"], 0o600).expect("write");
        write_atomic(&p, &[b"two"], 0o600).expect("write");
        assert_eq!(std::fs::read(&p).expect("read"), b"two");
        std::fs::write(d.path().join(".tmp-dead"), b"partial").expect("write");
        assert_eq!(remove_stale_temps(d.path()).expect("clean"), 1);
        assert_eq!(std::fs::read_dir(d.path()).expect("ls").count(), 1);
    }
}
