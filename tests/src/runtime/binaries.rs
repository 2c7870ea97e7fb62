//! The guest-init and fn-rust binaries the runtime tests launch.
//!
//! Outside CI each test binary runs `cargo build -p guest-init -p fn-rust` once (a
//! no-op after `cargo test --workspace`, which builds both because they have
//! integration tests), so `cargo test -p integration-tests` never runs stale binaries.
//! Under CI (`CI` set) tests/run.sh builds everything first and no cargo runs here.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// `target/<profile>`, derived from this test executable (`target/<profile>/deps/x`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    exe.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| crate::images::workspace_root().join("target/debug"))
}

/// Runs `cargo build` with `args` in the workspace.
pub fn cargo_build(args: &[&str]) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(&cargo)
        .arg("build")
        .args(args)
        .current_dir(crate::images::workspace_root())
        .output()
        .map_err(|e| format!("{cargo}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "cargo build {} failed:\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

fn ensure_built() -> Result<(), String> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    if std::env::var_os("CI").is_some() {
        return Ok(());
    }
    BUILT
        .get_or_init(|| {
            let release = profile_dir().file_name().is_some_and(|n| n == "release");
            let mut args = vec!["-p", "guest-init", "-p", "fn-rust"];
            if release {
                args.push("--release");
            }
            cargo_build(&args)
        })
        .clone()
}

/// `env` (e.g. `GUEST_INIT_BIN`) overrides the location, so benchmarks can use
/// release builds.
fn find(name: &str, env: &str) -> Result<PathBuf, String> {
    let path = match std::env::var_os(env) {
        Some(p) => PathBuf::from(p),
        None => {
            ensure_built()?;
            profile_dir().join(name)
        }
    };
    path.is_file()
        .then_some(path.clone())
        .ok_or_else(|| format!("{} is missing", path.display()))
}

pub fn guest_init() -> Result<PathBuf, String> {
    find("guest-init", "GUEST_INIT_BIN")
}

pub fn fn_rust() -> Result<PathBuf, String> {
    find("fn-rust", "FN_RUST_BIN")
}
