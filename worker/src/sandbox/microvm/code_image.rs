//! A sandbox's read-only code drive: an ext4 image of its unpacked code directory,
//! built with `mke2fs -d` (e2fsprogs), so no mount or root privilege is needed.

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

/// Bytes and entries under `dir` (for [`image_size_bytes`]).
fn measure(dir: &Path) -> std::io::Result<(u64, u64)> {
    let (mut bytes, mut entries) = (0u64, 0u64);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let m = entry.metadata()?;
            entries += 1;
            if m.is_dir() {
                stack.push(entry.path());
            } else {
                bytes += m.len();
            }
        }
    }
    Ok((bytes, entries))
}

/// Writes an image of `dir` to `image`, sized for its content. Blocking.
pub fn build(dir: &Path, image: &Path) -> Result<(), Ext4Error> {
    let (bytes, entries) = measure(dir).map_err(Ext4Error::Spawn)?;
    build_image(dir, image, image_size_bytes(bytes, entries), entries)
}

/// Writes an ext4 image of `src` to `image` (which must not exist).
pub fn build_image(
    src: &Path,
    image: &Path,
    size_bytes: u64,
    inodes: u64,
) -> Result<(), Ext4Error> {
    let mut cmd = Command::new(mke2fs()?);
    cmd.args([
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
    .stdout(std::process::Stdio::null())
    .stderr(std::process::Stdio::piped());
    let child = {
        // Spawned like a jail: no unpacked code open for writing is copied into it.
        let _gate = crate::jail::CLONE_GATE
            .write()
            .unwrap_or_else(|p| p.into_inner());
        cmd.spawn()
    };
    let out = child
        .and_then(|c| c.wait_with_output())
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

/// Builds the read-only ext4 image of `dir` at `out` (world-readable: the jailed VMM
/// opens it) on the blocking pool.
pub(super) async fn image_of(
    dir: &Path,
    out: PathBuf,
) -> Result<PathBuf, crate::sandbox::SandboxError> {
    let (dir, at) = (dir.to_path_buf(), out.clone());
    tokio::task::spawn_blocking(move || {
        build(&dir, &at).map_err(|e| super::start_err(format!("code image: {e}")))?;
        super::chmod(&at, 0o644)
    })
    .await
    .map_err(|e| super::start_err(e.to_string()))??;
    Ok(out)
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
