//! Data-plane settings of `supervisor serve`: isolation backend, the VMM and guest
//! images, pool tunables, pre-warming and asynchronous-invoke retries.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use worker::host::{HostConfig, HostSettings};
use worker::sandbox::select::Isolation;

/// Lambda recycles execution environments after about 14 hours.
pub const DEFAULT_LEASE_SECS: u64 = 14 * 3600;
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 600;
pub const DEFAULT_HOST_CONCURRENCY: u32 = 1000;
/// Lambda waits about a minute before the first retry of a failed event, two before the second.
pub const DEFAULT_EVENT_RETRY_BASE_MS: u64 = 60_000;

#[derive(Debug, thiserror::Error)]
pub enum DataPlaneArgError {
    #[error("invalid --prewarm {0:?}: expected FUNCTION[:VERSION]=COUNT")]
    Prewarm(String),
}

/// `--prewarm name[:version]=count`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prewarm {
    pub function: String,
    pub version: Option<String>,
    pub count: u32,
}

impl FromStr for Prewarm {
    type Err = DataPlaneArgError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || DataPlaneArgError::Prewarm(s.to_owned());
        let (target, count) = s.rsplit_once('=').ok_or_else(bad)?;
        let count: u32 = count.parse().map_err(|_| bad())?;
        let (function, version) = match target.split_once(':') {
            Some((f, v)) => (f, Some(v.to_owned())),
            None => (target, None),
        };
        if function.is_empty() || count == 0 || count > 1000 {
            return Err(bad());
        }
        Ok(Self {
            function: function.to_owned(),
            version,
            count,
        })
    }
}

/// Resolved data-plane settings: this host's sandboxes, pre-warming and Event retries.
#[derive(Debug, Clone)]
pub struct DataPlaneConfig {
    pub host: HostConfig,
    pub prewarm: Vec<Prewarm>,
    /// Delay before the first retry of a failed asynchronous invocation; doubled for the second.
    pub event_retry_base: Duration,
}

impl DataPlaneConfig {
    pub fn defaults() -> Self {
        Self {
            host: HostConfig {
                isolation: Isolation::Auto,
                vmm_binary: None,
                kernel: None,
                vm_cmdline: String::new(),
                images_dir: default_images_dir(),
                run_dir: None,
                idle_timeout: Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECS),
                lease: Duration::from_secs(DEFAULT_LEASE_SECS),
                host_concurrency: DEFAULT_HOST_CONCURRENCY,
                // Lambda's Init bound.
                init_timeout: Duration::from_secs(10),
                favor_cgroup_dynmods: true,
            },
            prewarm: Vec::new(),
            event_retry_base: Duration::from_millis(DEFAULT_EVENT_RETRY_BASE_MS),
        }
    }

    /// The settings of this host's worker (the embedded data plane).
    pub fn host_settings(&self, region: &str, account_id: &str, log_dir: PathBuf) -> HostSettings {
        HostSettings {
            config: self.host.clone(),
            region: region.to_owned(),
            account_id: account_id.to_owned(),
            log_dir: Some(log_dir),
            code: None,
            snapshot_vault: None,
        }
    }
}

/// The workspace root this binary was built from.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// Where an installation keeps the guest images, relative to the supervisor binary
/// (`/usr/bin/supervisor` -> `/usr/share/lambda-microvm/images`, as in the appliance).
pub const INSTALLED_IMAGES: &str = "../share/lambda-microvm/images";

/// `$LAMBDA_IMAGES_DIR`; else the installed images beside this binary; else, for a
/// binary run from its build tree, `<repo>/target/images`.
pub fn default_images_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("LAMBDA_IMAGES_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    let installed = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join(INSTALLED_IMAGES)));
    images_dir_from(installed, repo_root().join("target").join("images"))
}

fn images_dir_from(installed: Option<PathBuf>, build_tree: PathBuf) -> PathBuf {
    match installed {
        Some(i) if i.is_dir() => i,
        Some(i) if !build_tree.is_dir() => i,
        _ => build_tree,
    }
}

/// Parses `microvm|process|auto` into the worker's type.
pub fn parse_isolation(s: &str) -> Result<Isolation, String> {
    s.parse::<Isolation>().map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_images_win_over_the_build_tree() {
        let d = tempfile::tempdir().expect("tempdir");
        let installed = d.path().join("share/lambda-microvm/images");
        let tree = d.path().join("target/images");
        // Neither exists: the installed path, so errors name where images belong.
        assert_eq!(
            images_dir_from(Some(installed.clone()), tree.clone()),
            installed
        );
        std::fs::create_dir_all(&tree).expect("mkdir");
        assert_eq!(images_dir_from(Some(installed.clone()), tree.clone()), tree);
        std::fs::create_dir_all(&installed).expect("mkdir");
        assert_eq!(
            images_dir_from(Some(installed.clone()), tree.clone()),
            installed
        );
        assert_eq!(images_dir_from(None, tree.clone()), tree);
    }

    #[test]
    fn parses_prewarm_and_isolation() {
        let p: Prewarm = "echo:3=2".parse().expect("prewarm");
        assert_eq!(p.function, "echo");
        assert_eq!(p.version.as_deref(), Some("3"));
        assert_eq!(p.count, 2);
        let p: Prewarm = "echo=1".parse().expect("prewarm");
        assert_eq!(p.version, None);
        for bad in ["echo", "=1", "echo=0", "echo=x", "echo=5000"] {
            assert!(bad.parse::<Prewarm>().is_err(), "{bad}");
        }
        assert_eq!(parse_isolation("process"), Ok(Isolation::Process));
        assert!(parse_isolation("vm").is_err());
    }
}
