//! Staging the test functions into a [`Sandbox`](super::Sandbox).

use super::binaries;
use super::guest::Sandbox;
use crate::images::workspace_root;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

fn functions_dir() -> PathBuf {
    workspace_root().join("tests/functions")
}

fn copy_exec(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::copy(from, to)
        .map_err(|e| format!("copy {} -> {}: {e}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("chmod {}: {e}", to.display()))
}

/// `/var/task/bootstrap` = the `lambda_runtime` test function.
pub fn stage_rust(sb: &Sandbox) -> Result<(), String> {
    let bin = binaries::fn_rust()?;
    std::os::unix::fs::symlink(&bin, sb.task.join("bootstrap"))
        .map_err(|e| format!("symlink {}: {e}", bin.display()))
}

/// The AWS-tutorial-style shell runtime: `/var/task/bootstrap` + `function.sh`.
pub fn stage_shell(sb: &Sandbox) -> Result<(), String> {
    which("curl").ok_or("curl is not installed (apt-get install curl)")?;
    let dir = functions_dir().join("shell");
    copy_exec(&dir.join("bootstrap"), &sb.task.join("bootstrap"))?;
    copy_exec(&dir.join("function.sh"), &sb.task.join("function.sh"))
}

/// The `log-events` external extension into `/opt/extensions`.
pub fn stage_extension(sb: &Sandbox) -> Result<(), String> {
    which("curl").ok_or("curl is not installed (apt-get install curl)")?;
    let dir = sb.opt.join("extensions");
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    copy_exec(
        &functions_dir().join("extensions/log-events"),
        &dir.join("log-events"),
    )
}

/// The Python function: the managed-runtime bootstrap goes to the runtime dir (as in the
/// python3.11 rootfs), the handler module to the task root. Returns the variables the
/// function needs (PYTHONPATH when awslambdaric is not installed system-wide).
pub fn stage_python(sb: &Sandbox) -> Result<Vec<(&'static str, String)>, String> {
    let env = awslambdaric_env()?;
    let dir = functions_dir().join("python");
    copy_exec(&dir.join("bootstrap"), &sb.runtime.join("bootstrap"))?;
    std::fs::copy(dir.join("app.py"), sb.task.join("app.py"))
        .map_err(|e| format!("copy app.py: {e}"))?;
    Ok(env)
}

/// A runtime driven by the test itself: the bootstrap records the Runtime API address
/// in `<sandbox>/api-addr` (and its pid in `<sandbox>/runtime-pid`) and idles.
pub fn stage_manual(sb: &Sandbox) -> Result<PathBuf, String> {
    let addr_file = sb.path().join("api-addr");
    // `exec` keeps the pid, so `<sandbox>/runtime-pid` names the sleeping runtime.
    let script = format!(
        "#!/bin/sh\necho $$ > '{1}'\necho \"$AWS_LAMBDA_RUNTIME_API\" > '{0}.tmp' && mv '{0}.tmp' '{0}'\nexec sleep 600\n",
        addr_file.display(),
        sb.path().join("runtime-pid").display()
    );
    let path = sb.task.join("bootstrap");
    std::fs::write(&path, script).map_err(|e| e.to_string())?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    Ok(addr_file)
}

/// Waits for the manual runtime's address file.
pub fn read_api_addr(file: &Path) -> String {
    for _ in 0..1000 {
        if let Ok(s) = std::fs::read_to_string(file) {
            if !s.trim().is_empty() {
                return s.trim().to_string();
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("manual runtime never wrote {}", file.display());
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
    })
}

/// Version installed into `target/pydeps` when awslambdaric is nowhere to be found.
const AWSLAMBDARIC: &str = "awslambdaric==4.2.2";

/// Variables that make `python3 -m awslambdaric` work for the runtime, trying in turn:
/// the CI virtualenv `target/pyenv` (tests/run.sh installs tests/python/requirements.txt
/// there), the system python3, a `pip install --target` directory `target/pydeps`
/// (created here once if pip is available).
pub fn awslambdaric_env() -> Result<Vec<(&'static str, String)>, String> {
    let venv_bin = workspace_root().join("target/pyenv/bin");
    if python_imports(&venv_bin.join("python3"), None) {
        let path = std::env::var("PATH").unwrap_or_default();
        return Ok(vec![("PATH", format!("{}:{path}", venv_bin.display()))]);
    }
    let python = which("python3").ok_or("python3 is not installed")?;
    if python_imports(&python, None) {
        return Ok(Vec::new());
    }
    let target = workspace_root().join("target/pydeps");
    if !python_imports(&python, Some(&target)) {
        pip_install_target(&target)?;
    }
    python_imports(&python, Some(&target))
        .then(|| vec![("PYTHONPATH", target.display().to_string())])
        .ok_or_else(|| "awslambdaric still not importable after pip install".to_string())
}

fn pip_install_target(target: &Path) -> Result<(), String> {
    // Install into a private directory and rename, so parallel tests never see a
    // half-installed package.
    let tmp = workspace_root().join(format!("target/pydeps.tmp-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let out = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--only-binary=:all:", "--target"])
        .arg(&tmp)
        .arg(AWSLAMBDARIC)
        .output()
        .map_err(|e| format!("pip: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "awslambdaric is not installed and `pip install {AWSLAMBDARIC}` failed \
             (install tests/python/requirements.txt into target/pyenv): {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if std::fs::rename(&tmp, target).is_err() {
        // Another test won the race; use its copy.
        let _ = std::fs::remove_dir_all(&tmp);
    }
    Ok(())
}

fn python_imports(python: &Path, path: Option<&Path>) -> bool {
    let mut cmd = Command::new(python);
    cmd.args(["-c", "import awslambdaric.bootstrap"]);
    if let Some(p) = path {
        cmd.env("PYTHONPATH", p);
    }
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}
