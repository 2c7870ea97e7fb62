//! Shared helpers: locating images and functions, skipping loudly outside CI.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `$LAMBDA_IMAGES_DIR` or `<root>/target/images`.
pub fn images_dir() -> PathBuf {
    std::env::var_os("LAMBDA_IMAGES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/images"))
}

/// `$GUEST_INIT_BIN` or the image build's static guest-init.
pub fn guest_init_bin() -> PathBuf {
    std::env::var_os("GUEST_INIT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| images_dir().join("guest-init"))
}

/// The `lambda_runtime` echo function: `$FN_RUST_BIN` or a musl build in target/.
pub fn fn_rust_bin() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("FN_RUST_BIN") {
        return Some(PathBuf::from(p));
    }
    let root = workspace_root().join("target/x86_64-unknown-linux-musl");
    ["release", "debug"]
        .iter()
        .map(|p| root.join(p).join("fn-rust"))
        .find(|p| p.is_file())
}

/// Returns false (after a loud SKIPPED line) when a prerequisite is missing; panics in CI.
pub fn require(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "missing prerequisite in CI: {what}"
    );
    eprintln!("SKIPPED: {what}");
    false
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A world-readable temporary directory (jailed uids must read it).
pub fn open_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    d
}

pub fn write_exec(path: &Path, text: &str) {
    std::fs::write(path, text).expect("write");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}
