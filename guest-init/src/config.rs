//! guest-init's configuration: command-line flags for host-process runs, kernel
//! command-line parameters (`gi.*`) when running as PID 1.

use runtime_api::protocol::DEFAULT_VSOCK_PORT;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// How guest-init reaches the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostTransport {
    /// AF_VSOCK to CID 2 on this port (in the guest).
    Vsock { port: u32 },
    /// A Unix socket path (guest-init as a host process, for tests).
    Unix(PathBuf),
}

/// Which user runs the runtime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuntimeUser {
    pub uid: u32,
    pub gid: u32,
}

/// Lambda's `sbx_user1051` as our rootfs images define it (uid 993, gid 990); looked up
/// in /etc/passwd at start, this is the fallback.
pub const SANDBOX_USER: RuntimeUser = RuntimeUser { uid: 993, gid: 990 };
pub const SANDBOX_USER_NAME: &str = "sbx_user1051";

/// `sbx_user1051` from the guest's /etc/passwd, else [`SANDBOX_USER`].
pub fn sandbox_user() -> RuntimeUser {
    match nix::unistd::User::from_name(SANDBOX_USER_NAME) {
        Ok(Some(u)) => RuntimeUser {
            uid: u.uid.as_raw(),
            gid: u.gid.as_raw(),
        },
        _ => SANDBOX_USER,
    }
}

/// Where guest-init runs, which decides what PID 1 duties it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// PID 1 of a microVM: mounts, clock, power off at the end.
    Vm,
    /// PID 1 of a process sandbox's jail (`--jail-init`): reaps orphans and takes every
    /// process down at the end, but the jail did the mounts and the host owns the clock.
    JailInit,
    /// An ordinary host process (tests).
    Process,
}

impl Role {
    /// Whether guest-init is the init of its PID namespace (orphans come to it, and
    /// `kill(-1)` reaches every process of the sandbox).
    pub fn is_pid1(self) -> bool {
        matches!(self, Role::Vm | Role::JailInit)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub transport: HostTransport,
    /// Set by `--jail-init`.
    pub jail_init: bool,
    pub runtime_api_addr: SocketAddr,
    pub task_root: PathBuf,
    pub opt_dir: PathBuf,
    pub runtime_dir: PathBuf,
    /// `None` keeps the caller's uid.
    pub runtime_user: Option<RuntimeUser>,
    /// Block device holding the function code (PID 1 only).
    pub task_device: Option<PathBuf>,
    /// Block device holding the layers merged into /opt (PID 1 only).
    pub opt_device: Option<PathBuf>,
    /// Block device holding a container image, which becomes the root (PID 1 only).
    pub image_device: Option<PathBuf>,
    /// How long to keep retrying the connection to the host.
    pub connect_timeout: Duration,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("flag {0} needs a value")]
    MissingValue(String),
    #[error("invalid value {value:?} for {flag}: {reason}")]
    Invalid {
        flag: String,
        value: String,
        reason: &'static str,
    },
    #[error("unknown flag {0} (see --help)")]
    UnknownFlag(String),
}

pub const USAGE: &str = "usage: guest-init [--host-uds PATH | --vsock-port N] \
[--runtime-api-addr ADDR] [--task-root DIR] [--opt-dir DIR] [--runtime-dir DIR] \
[--runtime-user UID:GID] [--connect-timeout-ms N] [--jail-init]";

impl Config {
    /// Defaults for the guest (PID 1): vsock, 127.0.0.1:9001, Lambda paths, sbx_user1051.
    pub fn guest_defaults() -> Self {
        Self {
            runtime_user: Some(sandbox_user()),
            ..Self::base()
        }
    }

    fn base() -> Self {
        Self {
            transport: HostTransport::Vsock {
                port: DEFAULT_VSOCK_PORT,
            },
            jail_init: false,
            runtime_api_addr: SocketAddr::from(([127, 0, 0, 1], 9001)),
            task_root: PathBuf::from("/var/task"),
            opt_dir: PathBuf::from("/opt"),
            runtime_dir: PathBuf::from("/var/runtime"),
            runtime_user: Some(SANDBOX_USER),
            task_device: Some(PathBuf::from("/dev/vdb")),
            opt_device: None,
            image_device: None,
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// Host-process defaults: like the guest but keeping the caller's uid and no devices.
    pub fn host_defaults() -> Self {
        Self {
            runtime_user: None,
            task_device: None,
            opt_device: None,
            ..Self::base()
        }
    }

    /// Applies `gi.port=`, `gi.uid=UID:GID`, `gi.task=DEV`, `gi.opt=DEV`, `gi.image=DEV`
    /// from the kernel command line.
    pub fn apply_cmdline(&mut self, cmdline: &str) -> Result<(), ConfigError> {
        use crate::cmdline::value_of;
        if let Some(v) = value_of(cmdline, "gi.port") {
            self.transport = HostTransport::Vsock {
                port: parse_num("gi.port", &v)?,
            };
        }
        if let Some(v) = value_of(cmdline, "gi.uid") {
            self.runtime_user = parse_user("gi.uid", &v)?;
        }
        if let Some(v) = value_of(cmdline, "gi.task") {
            self.task_device = (!v.is_empty()).then(|| PathBuf::from(v));
        }
        if let Some(v) = value_of(cmdline, "gi.opt") {
            self.opt_device = (!v.is_empty()).then(|| PathBuf::from(v));
        }
        if let Some(v) = value_of(cmdline, "gi.image") {
            self.image_device = (!v.is_empty()).then(|| PathBuf::from(v));
        }
        Ok(())
    }

    /// Applies command-line flags. Returns whether any transport flag was given.
    pub fn apply_args<I: IntoIterator<Item = String>>(
        &mut self,
        args: I,
    ) -> Result<bool, ConfigError> {
        let mut args = args.into_iter();
        let mut transport_given = false;
        while let Some(flag) = args.next() {
            let mut value = || {
                args.next()
                    .ok_or_else(|| ConfigError::MissingValue(flag.clone()))
            };
            match flag.as_str() {
                "--host-uds" => {
                    self.transport = HostTransport::Unix(PathBuf::from(value()?));
                    transport_given = true;
                }
                "--vsock-port" => {
                    self.transport = HostTransport::Vsock {
                        port: parse_num(&flag, &value()?)?,
                    };
                    transport_given = true;
                }
                "--runtime-api-addr" => {
                    let v = value()?;
                    self.runtime_api_addr = v.parse().map_err(|_| ConfigError::Invalid {
                        flag: flag.clone(),
                        value: v,
                        reason: "expected IP:PORT",
                    })?;
                }
                "--task-root" => self.task_root = PathBuf::from(value()?),
                "--opt-dir" => self.opt_dir = PathBuf::from(value()?),
                "--runtime-dir" => self.runtime_dir = PathBuf::from(value()?),
                "--runtime-user" => self.runtime_user = parse_user(&flag, &value()?)?,
                "--jail-init" => self.jail_init = true,
                "--connect-timeout-ms" => {
                    let ms = parse_num(&flag, &value()?)?;
                    self.connect_timeout = Duration::from_millis(u64::from(ms));
                }
                _ => return Err(ConfigError::UnknownFlag(flag)),
            }
        }
        Ok(transport_given)
    }
}

fn parse_num(flag: &str, v: &str) -> Result<u32, ConfigError> {
    v.parse().map_err(|_| ConfigError::Invalid {
        flag: flag.to_string(),
        value: v.to_string(),
        reason: "expected a number",
    })
}

/// `UID:GID`, or `keep` for the caller's identity.
fn parse_user(flag: &str, v: &str) -> Result<Option<RuntimeUser>, ConfigError> {
    if v == "keep" {
        return Ok(None);
    }
    let (u, g) = v.split_once(':').ok_or_else(|| ConfigError::Invalid {
        flag: flag.to_string(),
        value: v.to_string(),
        reason: "expected UID:GID or keep",
    })?;
    Ok(Some(RuntimeUser {
        uid: parse_num(flag, u)?,
        gid: parse_num(flag, g)?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_override_host_defaults() {
        let mut c = Config::host_defaults();
        let given = c
            .apply_args(args(&[
                "--host-uds",
                "/tmp/h.sock",
                "--runtime-api-addr",
                "127.0.0.1:0",
                "--task-root",
                "/x/task",
                "--runtime-user",
                "1000:1001",
            ]))
            .unwrap();
        assert!(given);
        assert_eq!(c.transport, HostTransport::Unix("/tmp/h.sock".into()));
        assert_eq!(c.runtime_api_addr.port(), 0);
        assert_eq!(c.task_root, PathBuf::from("/x/task"));
        assert_eq!(
            c.runtime_user,
            Some(RuntimeUser {
                uid: 1000,
                gid: 1001
            })
        );
    }

    #[test]
    fn bad_flags_are_clear_errors() {
        let mut c = Config::host_defaults();
        assert_eq!(
            c.apply_args(args(&["--host-uds"])),
            Err(ConfigError::MissingValue("--host-uds".into()))
        );
        assert!(matches!(
            c.apply_args(args(&["--runtime-api-addr", "nope"])),
            Err(ConfigError::Invalid { .. })
        ));
        assert!(matches!(
            c.apply_args(args(&["--runtime-user", "12"])),
            Err(ConfigError::Invalid { .. })
        ));
        assert_eq!(
            c.apply_args(args(&["--frob"])),
            Err(ConfigError::UnknownFlag("--frob".into()))
        );
    }

    #[test]
    fn kernel_cmdline_sets_guest_options() {
        let mut c = Config::guest_defaults();
        c.apply_cmdline("console=ttyS0 gi.port=5123 gi.uid=keep gi.opt=/dev/vdc")
            .unwrap();
        assert_eq!(c.transport, HostTransport::Vsock { port: 5123 });
        assert_eq!(c.runtime_user, None);
        assert_eq!(c.opt_device, Some(PathBuf::from("/dev/vdc")));
        assert_eq!(c.image_device, None);
        c.apply_cmdline("gi.task= gi.image=/dev/vdb").unwrap();
        assert_eq!(
            (c.task_device.clone(), c.image_device.clone()),
            (None, Some(PathBuf::from("/dev/vdb")))
        );
        assert!(c.apply_cmdline("gi.port=x").is_err());
    }
}
