//! Builds a read-only ext4 image from a materialised code directory with
//! `mke2fs -d` (e2fsprogs), so no mount or root privilege is needed.

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    #[error("mke2fs not found (install e2fsprogs)")]
    NoMke2fs,
    #[error("running mke2fs: {0}")]
    Spawn(std::io::Error),
    #[error("mke2fs failed ({status}): {stderr}")]
    Failed { status: String, stderr: String },
}

fn mke2fs() -> Result<PathBuf, Ext4Error> {
    let candidates = ["/usr/sbin/mke2fs", "/sbin/mke2fs", "/usr/bin/mke2fs"];
    if let Some(p) = candidates.iter().map(PathBuf::from).find(|p| p.exists()) {
        return Ok(p);
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join("mke2fs"))
                .find(|p| p.exists())
        })
        .ok_or(Ext4Error::NoMke2fs)
}

/// Image size for `data_bytes` of content in `entries` inodes: every file
/// rounded to 4 KiB blocks, plus metadata headroom.
pub fn image_size_bytes(data_bytes: u64, entries: u64) -> u64 {
    let blocks = data_bytes / 4096 + entries + 1;
    let raw = blocks * 4096;
    let size = raw + raw / 5 + 4 * 1024 * 1024;
    size.div_ceil(1024 * 1024) * 1024 * 1024
}

/// Writes an ext4 image of `src` to `image` (which must not exist).
pub fn build_image(
    src: &Path,
    image: &Path,
    size_bytes: u64,
    inodes: u64,
) -> Result<(), Ext4Error> {
    let out = Command::new(mke2fs()?)
        .args([
            "-q",
            "-F",
            "-t",
            "ext4",
            "-b",
            "4096",
            "-m",
            "0",
            "-L",
            "lambda-code",
        ])
        // No journal: the image is mounted read-only and never modified.
        .args(["-O", "^has_journal", "-E", "root_owner=0:0"])
        .arg("-N")
        .arg((inodes + 64).to_string())
        .arg("-d")
        .arg(src)
        .arg(image)
        .arg(format!("{}k", size_bytes / 1024))
        .output()
        .map_err(Ext4Error::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Ext4Error::Failed {
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_has_headroom_and_is_mib_aligned() {
        let s = image_size_bytes(10 * 1024 * 1024, 100);
        assert!(s > 10 * 1024 * 1024 + 100 * 4096);
        assert_eq!(s % (1024 * 1024), 0);
        assert!(image_size_bytes(0, 1) >= 4 * 1024 * 1024);
    }
}
