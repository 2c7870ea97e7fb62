//! `supervisor serve` flags (and `[data-plane]` config-file keys) for the data plane.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use super::config::{parse_isolation, DataPlaneConfig, Prewarm};

#[derive(Debug, Args, Default, Clone)]
pub struct DataPlaneArgs {
    /// Sandbox isolation: microvm, process (jailed guest-init on the host) or auto
    /// (microvm when KVM can run guests) [default: auto].
    #[arg(long, env = "SUPERVISOR_ISOLATION", value_name = "MODE")]
    pub isolation: Option<String>,
    /// Our VMM binary [default: `vmm` beside this executable].
    #[arg(long, env = "SUPERVISOR_VMM_BINARY", value_name = "FILE")]
    pub vmm_binary: Option<PathBuf>,
    /// Guest kernel [default: IMAGES_DIR/vmlinux].
    #[arg(long, env = "SUPERVISOR_KERNEL", value_name = "FILE")]
    pub kernel: Option<PathBuf>,
    /// Extra guest kernel command line.
    #[arg(long, env = "SUPERVISOR_VM_CMDLINE", value_name = "ARGS")]
    pub vm_cmdline: Option<String>,
    /// Directory with guest-init, rootfs-* and kernels [default: $LAMBDA_IMAGES_DIR, else
    /// ../share/lambda-microvm/images beside this binary, else <build tree>/target/images].
    #[arg(long, env = "LAMBDA_IMAGES_DIR", value_name = "DIR")]
    pub images_dir: Option<PathBuf>,
    /// Per-sandbox run directories [default: a fresh directory under $TMPDIR].
    #[arg(long, env = "SUPERVISOR_RUN_DIR", value_name = "DIR")]
    pub run_dir: Option<PathBuf>,
    /// Idle sandboxes are reaped after this many seconds [default: 600].
    #[arg(long, env = "SUPERVISOR_IDLE_TIMEOUT_SECS", value_name = "SECS")]
    pub idle_timeout_secs: Option<f64>,
    /// Maximum sandbox lifetime in seconds [default: 50400 = 14 h].
    #[arg(long, env = "SUPERVISOR_SANDBOX_LEASE_SECS", value_name = "SECS")]
    pub sandbox_lease_secs: Option<f64>,
    /// Concurrent executions on this host [default: 1000].
    #[arg(long, env = "SUPERVISOR_HOST_CONCURRENCY", value_name = "N")]
    pub host_concurrency: Option<u32>,
    /// Pre-warmed sandboxes, FUNCTION[:VERSION]=COUNT (repeatable).
    #[arg(long, value_name = "FUNCTION[:VERSION]=COUNT")]
    pub prewarm: Vec<String>,
    /// Delay before the first retry of a failed Event invocation in ms; the second
    /// waits twice as long [default: 60000].
    #[arg(long, env = "SUPERVISOR_EVENT_RETRY_BASE_MS", value_name = "MS")]
    pub event_retry_base_ms: Option<u64>,
    /// Bound on sandbox start plus init in seconds [default: 10, Lambda's limit]; raise it
    /// only for slow hosts (nested virtualisation under an emulator).
    #[arg(long, env = "SUPERVISOR_INIT_TIMEOUT_SECS", value_name = "SECS")]
    pub init_timeout_secs: Option<f64>,
    /// Leave the cgroup2 mount's options as they are. By default the worker turns on
    /// `favordynmods`, without which a sandbox's start often waits 10-30 ms for an RCU
    /// grace period (see `worker::jail::dynmods`).
    #[arg(long)]
    pub keep_cgroup_mount_options: bool,
}

/// The `[data-plane]` table of the `--config` file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct DataPlaneFile {
    isolation: Option<String>,
    vmm_binary: Option<PathBuf>,
    kernel: Option<PathBuf>,
    vm_cmdline: Option<String>,
    images_dir: Option<PathBuf>,
    run_dir: Option<PathBuf>,
    idle_timeout_secs: Option<f64>,
    sandbox_lease_secs: Option<f64>,
    host_concurrency: Option<u32>,
    #[serde(default)]
    prewarm: Vec<String>,
    event_retry_base_ms: Option<u64>,
    init_timeout_secs: Option<f64>,
    #[serde(default)]
    keep_cgroup_mount_options: bool,
}

fn secs(name: &str, v: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("--{name} must be a positive number of seconds, got {v}"))
}

impl DataPlaneArgs {
    /// Flag (or environment) over file over default.
    pub fn resolve(self, file: DataPlaneFile) -> Result<DataPlaneConfig, String> {
        let mut c = DataPlaneConfig::defaults();
        if let Some(i) = self.isolation.or(file.isolation) {
            c.host.isolation = parse_isolation(&i)?;
        }
        c.host.vmm_binary = self.vmm_binary.or(file.vmm_binary);
        c.host.kernel = self.kernel.or(file.kernel);
        c.host.vm_cmdline = self.vm_cmdline.or(file.vm_cmdline).unwrap_or_default();
        if let Some(d) = self.images_dir.or(file.images_dir) {
            c.host.images_dir = d;
        }
        c.host.run_dir = self.run_dir.or(file.run_dir);
        if let Some(s) = self.idle_timeout_secs.or(file.idle_timeout_secs) {
            c.host.idle_timeout = secs("idle-timeout-secs", s)?;
        }
        if let Some(s) = self.sandbox_lease_secs.or(file.sandbox_lease_secs) {
            c.host.lease = secs("sandbox-lease-secs", s)?;
        }
        if let Some(n) = self.host_concurrency.or(file.host_concurrency) {
            if n == 0 {
                return Err("--host-concurrency must be at least 1".into());
            }
            c.host.host_concurrency = n;
        }
        let prewarm = if self.prewarm.is_empty() {
            file.prewarm
        } else {
            self.prewarm
        };
        c.prewarm = prewarm
            .iter()
            .map(|p| p.parse::<Prewarm>().map_err(|e| e.to_string()))
            .collect::<Result<_, _>>()?;
        if let Some(ms) = self.event_retry_base_ms.or(file.event_retry_base_ms) {
            c.event_retry_base = Duration::from_millis(ms);
        }
        if let Some(s) = self.init_timeout_secs.or(file.init_timeout_secs) {
            c.host.init_timeout = secs("init-timeout-secs", s)?;
        }
        c.host.favor_cgroup_dynmods =
            !(self.keep_cgroup_mount_options || file.keep_cgroup_mount_options);
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use worker::sandbox::select::Isolation;

    #[test]
    fn flags_beat_file_and_bad_values_are_errors() {
        let file: DataPlaneFile =
            toml::from_str("isolation = \"microvm\"\nhost-concurrency = 7\nprewarm = [\"f=2\"]\n")
                .expect("toml");
        let args = DataPlaneArgs {
            isolation: Some("process".into()),
            idle_timeout_secs: Some(1.5),
            ..Default::default()
        };
        let c = args.resolve(file).expect("resolve");
        assert_eq!(c.host.isolation, Isolation::Process);
        assert_eq!(c.host.host_concurrency, 7);
        assert_eq!(c.host.idle_timeout, Duration::from_millis(1500));
        assert_eq!(c.prewarm.len(), 1);
        let bad = DataPlaneArgs {
            idle_timeout_secs: Some(-1.0),
            ..Default::default()
        };
        assert!(bad.resolve(DataPlaneFile::default()).is_err());
        assert!(toml::from_str::<DataPlaneFile>("bogus = 1").is_err());
    }
}
