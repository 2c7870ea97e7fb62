//! The `supervisor serve` command line the appliance runs.

use std::path::Path;
use std::process::Command;

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
    c.arg("serve")
        .arg("--data-dir")
        .arg(data.join("supervisor"))
        .args(["--images-dir", IMAGES_DIR, "--run-dir", RUN_DIR])
        .args(["--isolation", "auto", "--announce-generated-credentials"])
        .arg("--listen")
        .arg(settings.listen.to_string());
    let operator = data.join(OPERATOR_CONFIG);
    if operator.is_file() {
        c.arg("--config").arg(operator);
    }
    c.args(&settings.serve_args);
    c.env_clear()
        .env("PATH", "/usr/sbin:/usr/bin")
        .env("HOME", "/root");
    // Through the environment, never argv: /proc/<pid>/cmdline is world-readable.
    if let Some((id, secret)) = &settings.credentials {
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
}
