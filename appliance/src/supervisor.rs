//! The supervisor command line the appliance runs: `supervisor serve` (embedded or
//! frontend) or `supervisor worker`.

use std::path::Path;
use std::process::Command;

use crate::role::{Role, CLUSTER_DIR};
use crate::settings::Settings;

pub const SUPERVISOR: &str = "/usr/bin/supervisor";
pub const IMAGES_DIR: &str = "/usr/share/lambda-microvm/images";
/// Sandbox run dirs: on /run, a tmpfs mounted without `nodev`.
pub const RUN_DIR: &str = "/run/lambda";
/// The operator's optional supervisor config file (the `supervisor --config` format).
pub const OPERATOR_CONFIG: &str = "supervisor.toml";

/// Flags the appliance decides; the operator's file and `lambda.serve` add the rest
/// (flags win over the file, so `lambda.serve` wins over both).
pub fn command(settings: &Settings, data: &Path) -> Command {
    let mut c = Command::new(SUPERVISOR);
    let cluster_dir = data.join(CLUSTER_DIR);
    let node_id = settings.node_id.as_ref().unwrap_or(&settings.hostname);
    if settings.role == Role::Worker {
        c.arg("worker")
            .args(["--id", node_id])
            .arg("--listen")
            .arg(settings.link_listen.to_string())
            .arg("--cluster-dir")
            .arg(&cluster_dir)
            .arg("--log-dir")
            .arg(data.join("worker-logs"));
    } else {
        c.arg("serve")
            .arg("--data-dir")
            .arg(data.join("supervisor"))
            .args(["--announce-generated-credentials", "--listen"])
            .arg(settings.listen.to_string());
        let operator = data.join(OPERATOR_CONFIG);
        if operator.is_file() {
            c.arg("--config").arg(operator);
        }
    }
    if settings.role == Role::Frontend {
        c.args(["--role", "frontend", "--node-id", node_id])
            .arg("--cluster-dir")
            .arg(&cluster_dir)
            .arg("--link-listen")
            .arg(settings.link_listen.to_string());
    }
    c.args(["--images-dir", IMAGES_DIR, "--run-dir", RUN_DIR])
        .args(["--isolation", "auto"]);
    c.args(&settings.serve_args);
    c.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin")
        .env("HOME", "/root");
    // Through the environment, never argv: /proc/<pid>/cmdline is world-readable.
    if let Some((id, secret)) = settings
        .credentials
        .as_ref()
        .filter(|_| settings.role != Role::Worker)
    {
        c.env("SUPERVISOR_ACCESS_KEY_ID", id)
            .env("SUPERVISOR_SECRET_ACCESS_KEY", secret);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(c: &Command) -> Vec<String> {
        c.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn secrets_go_to_the_environment_and_extra_args_come_last() {
        let mut s = Settings::from_cmdline(
            "lambda.serve=\"--init-timeout-secs 60\" lambda.access_key_id=AKIA lambda.secret_access_key=shh",
        )
        .unwrap();
        s.listen = "127.0.0.1:9000".parse().unwrap();
        let d = tempfile::tempdir().unwrap();
        let c = command(&s, d.path());
        let a = args(&c);
        assert_eq!(a[0], "serve");
        assert!(a.windows(2).any(|w| w == ["--isolation", "auto"]));
        assert!(a.windows(2).any(|w| w == ["--listen", "127.0.0.1:9000"]));
        assert_eq!(&a[a.len() - 2..], ["--init-timeout-secs", "60"]);
        assert!(!a.iter().any(|x| x.contains("shh")));
        assert!(!a.iter().any(|x| x == "--config"));
        let env: Vec<_> = c.get_envs().collect();
        assert!(env
            .iter()
            .any(|(k, v)| *k == "SUPERVISOR_SECRET_ACCESS_KEY" && v.is_some_and(|v| v == "shh")));
        std::fs::write(d.path().join(OPERATOR_CONFIG), "region = \"eu-west-1\"\n").unwrap();
        assert!(args(&command(&s, d.path())).iter().any(|x| x == "--config"));
    }

    #[test]
    fn a_worker_runs_the_worker_daemon_with_its_certificates_on_the_data_disk() {
        let s = Settings::from_cmdline(
            "lambda.role=worker lambda.node_id=w7 lambda.serve=\"--capacity-mib 2048\" \
             lambda.access_key_id=AKIA lambda.secret_access_key=shh",
        )
        .unwrap();
        let c = command(&s, Path::new("/data"));
        let a = args(&c);
        assert_eq!(a[0], "worker");
        assert!(a.windows(2).any(|w| w == ["--id", "w7"]));
        assert!(a.windows(2).any(|w| w == ["--listen", "0.0.0.0:9443"]));
        assert!(a
            .windows(2)
            .any(|w| w == ["--cluster-dir", "/data/cluster"]));
        assert!(a.windows(2).any(|w| w == ["--isolation", "auto"]));
        assert_eq!(&a[a.len() - 2..], ["--capacity-mib", "2048"]);
        // A worker has no API: no credentials, no serve-only flags.
        assert!(!a
            .iter()
            .any(|x| x.contains("credentials") || x == "--data-dir"));
        assert!(c
            .get_envs()
            .all(|(k, _)| !k.to_string_lossy().starts_with("SUPERVISOR_")));
    }

    #[test]
    fn a_frontend_serves_the_api_and_takes_its_identity_from_the_hostname() {
        let s = Settings::from_cmdline(
            "lambda.role=frontend lambda.hostname=fe-2 lambda.serve=\"--worker w1@10.0.0.2:9443\"",
        )
        .unwrap();
        let a = args(&command(&s, Path::new("/data")));
        assert_eq!(a[0], "serve");
        assert!(a.windows(2).any(|w| w == ["--role", "frontend"]));
        assert!(a.windows(2).any(|w| w == ["--node-id", "fe-2"]));
        assert!(a
            .windows(2)
            .any(|w| w == ["--cluster-dir", "/data/cluster"]));
        assert!(a.windows(2).any(|w| w == ["--link-listen", "0.0.0.0:9443"]));
        assert_eq!(&a[a.len() - 2..], ["--worker", "w1@10.0.0.2:9443"]);
    }
}
