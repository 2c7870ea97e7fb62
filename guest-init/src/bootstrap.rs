//! Finding and starting the runtime's bootstrap.

use crate::config::{Config, RuntimeUser};
use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// Lambda's wording for a missing entrypoint.
    #[error("Couldn't find valid bootstrap(s): [{}]", .0.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(" "))]
    NotFound(Vec<PathBuf>),
    #[error("fork/exec {}: {source}", path.display())]
    Spawn { path: PathBuf, source: io::Error },
    /// A container image's ENTRYPOINT/CMD names no program (Go's wording, as Lambda's).
    #[error("exec: {0:?}: executable file not found in $PATH")]
    NotInPath(String),
    #[error("the container image has no ENTRYPOINT or CMD to run")]
    EmptyCommand,
}

impl BootstrapError {
    /// The Lambda error type reported to the host.
    pub fn error_type(&self) -> &'static str {
        "Runtime.InvalidEntrypoint"
    }
}

/// Candidate bootstrap paths in Lambda's order.
pub fn candidates(config: &Config) -> Vec<PathBuf> {
    vec![
        config.task_root.join("bootstrap"),
        config.opt_dir.join("bootstrap"),
        config.runtime_dir.join("bootstrap"),
    ]
}

/// The first candidate that is a regular file (executability is checked at exec time,
/// so a non-executable bootstrap yields Lambda's "permission denied" message).
pub fn find(config: &Config) -> Result<PathBuf, BootstrapError> {
    let list = candidates(config);
    list.iter()
        .find(|p| p.metadata().map(|m| m.is_file()).unwrap_or(false))
        .cloned()
        .ok_or(BootstrapError::NotFound(list))
}

/// A container image's program: `command[0]` as a path when it holds a `/`, otherwise
/// looked up in `PATH` (the runtime's environment, which starts from the image's own),
/// and the rest of `command` as its arguments.
pub fn resolve_command(
    command: &[String],
    env: &BTreeMap<String, String>,
) -> Result<(PathBuf, Vec<String>), BootstrapError> {
    let (program, args) = command.split_first().ok_or(BootstrapError::EmptyCommand)?;
    if program.contains('/') {
        return Ok((PathBuf::from(program), args.to_vec()));
    }
    let path = env.get("PATH").map_or("", String::as_str);
    path.split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|p| is_executable(p))
        .map(|p| (p, args.to_vec()))
        .ok_or_else(|| BootstrapError::NotInPath(program.clone()))
}

/// Whether any execute bit is set (used for extensions, which are skipped otherwise).
pub fn is_executable(path: &Path) -> bool {
    path.metadata()
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// Starts `path` with `args` and exactly `env`, in its own process group, as `user`,
/// with stdout/stderr piped for log forwarding, in `cwd`.
pub fn spawn(
    path: &Path,
    args: &[String],
    cwd: &Path,
    env: &BTreeMap<String, String>,
    user: Option<RuntimeUser>,
) -> Result<Child, BootstrapError> {
    let mut cmd = Command::new(path);
    cmd.args(args)
        .env_clear()
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    if cwd.is_dir() {
        cmd.current_dir(cwd);
    }
    if let Some(u) = user {
        // std drops supplementary groups (setgroups(0)) when root changes uid.
        cmd.uid(u.uid).gid(u.gid);
    }
    // SAFETY: the closure runs in the forked child before exec and only calls prctl(2),
    // which is async-signal-safe and touches no memory of the parent. std runs these
    // closures after its setuid/setgid, so the credential change cannot reset it.
    unsafe {
        cmd.pre_exec(|| {
            // If guest-init dies (host-process runs: the test killed it), take the
            // function's processes with it instead of leaving orphans behind.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|source| BootstrapError::Spawn {
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_order_and_lambda_message() {
        let dir = std::env::temp_dir().join(format!("gi-bootstrap-{}", std::process::id()));
        let mut cfg = Config::host_defaults();
        cfg.task_root = dir.join("task");
        cfg.opt_dir = dir.join("opt");
        cfg.runtime_dir = dir.join("runtime");
        for d in [&cfg.task_root, &cfg.opt_dir, &cfg.runtime_dir] {
            std::fs::create_dir_all(d).unwrap();
        }
        let err = find(&cfg).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "Couldn't find valid bootstrap(s): [{} {} {}]",
                cfg.task_root.join("bootstrap").display(),
                cfg.opt_dir.join("bootstrap").display(),
                cfg.runtime_dir.join("bootstrap").display()
            )
        );
        std::fs::write(cfg.runtime_dir.join("bootstrap"), "#!/bin/sh\n").unwrap();
        assert_eq!(find(&cfg).unwrap(), cfg.runtime_dir.join("bootstrap"));
        std::fs::write(cfg.opt_dir.join("bootstrap"), "#!/bin/sh\n").unwrap();
        assert_eq!(find(&cfg).unwrap(), cfg.opt_dir.join("bootstrap"));
        std::fs::write(cfg.task_root.join("bootstrap"), "#!/bin/sh\n").unwrap();
        assert_eq!(find(&cfg).unwrap(), cfg.task_root.join("bootstrap"));
        assert!(!is_executable(&cfg.task_root.join("bootstrap")));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn image_command_is_found_in_path_or_refused() {
        let env = |path: &str| BTreeMap::from([("PATH".to_string(), path.to_string())]);
        let cmd = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let (p, args) = resolve_command(&cmd(&["sh", "-c", "true"]), &env("/nope:/bin")).unwrap();
        assert_eq!((p, args), (PathBuf::from("/bin/sh"), cmd(&["-c", "true"])));
        let (p, _) = resolve_command(&cmd(&["./run"]), &env("")).unwrap();
        assert_eq!(p, PathBuf::from("./run"));
        let err = resolve_command(&cmd(&["no-such-program"]), &env("/bin")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "exec: \"no-such-program\": executable file not found in $PATH"
        );
        assert!(matches!(
            resolve_command(&[], &env("/bin")),
            Err(BootstrapError::EmptyCommand)
        ));
    }
}
