//! The appliance's settings, read from the kernel command line (`lambda.*` parameters).

use pid1::cmdline::split_params;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::net::NetConfig;
use crate::role::Role;

/// Where the persistent data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataDisk {
    /// A device path such as `/dev/nvme1n1`.
    Path(PathBuf),
    /// A GPT partition name (`PARTLABEL=`).
    PartLabel(String),
    /// An ext4 filesystem label (`LABEL=`).
    Label(String),
    /// The default: the partition named `lambda-data`, else the ext4 label `lambda-data`.
    Default,
    /// `none`: state lives in RAM and is lost at shutdown (said loudly at boot).
    Ephemeral,
}

pub const DATA_LABEL: &str = "lambda-data";

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub data: DataDisk,
    /// How long to wait for the data disk's device to appear.
    pub data_wait: Duration,
    pub net: NetConfig,
    pub hostname: String,
    /// A tty (e.g. `ttyS1`) that gets a root shell; none by default.
    pub shell: Option<String>,
    pub listen: SocketAddr,
    /// Extra `supervisor serve` (or, for a worker, `supervisor worker`) arguments
    /// (`lambda.serve="..."`).
    pub serve_args: Vec<String>,
    pub role: Role,
    /// This node's cluster identity (its certificate's); the hostname by default.
    pub node_id: Option<String>,
    /// Where a worker takes links from frontends, and a frontend serves code to workers.
    pub link_listen: SocketAddr,
    /// `(access key id, secret)` given on the command line.
    pub credentials: Option<(String, String)>,
    /// How long in-flight invokes get to finish at shutdown.
    pub stop_timeout: Duration,
    /// Extra modules to load by name.
    pub modules: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SettingsError {
    #[error("{key}={value:?}: {reason}")]
    Invalid {
        key: &'static str,
        value: String,
        reason: String,
    },
    #[error("lambda.access_key_id and lambda.secret_access_key must be given together")]
    HalfCredentials,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            data: DataDisk::Default,
            data_wait: Duration::from_secs(20),
            net: NetConfig::Dhcp,
            hostname: "lambda-appliance".into(),
            shell: None,
            listen: SocketAddr::from(([0, 0, 0, 0], 9000)),
            serve_args: Vec::new(),
            role: Role::Embedded,
            node_id: None,
            link_listen: SocketAddr::from(([0, 0, 0, 0], 9443)),
            credentials: None,
            stop_timeout: Duration::from_secs(90),
            modules: Vec::new(),
        }
    }
}

fn invalid(key: &'static str, value: &str, reason: impl Into<String>) -> SettingsError {
    SettingsError::Invalid {
        key,
        value: value.to_owned(),
        reason: reason.into(),
    }
}

fn secs(key: &'static str, v: &str) -> Result<Duration, SettingsError> {
    v.parse::<u64>()
        .ok()
        .filter(|s| *s > 0 && *s <= 86_400)
        .map(Duration::from_secs)
        .ok_or_else(|| invalid(key, v, "expected whole seconds between 1 and 86400"))
}

fn data_disk(v: &str) -> Result<DataDisk, SettingsError> {
    let nonempty = |s: &str| {
        if s.is_empty() {
            Err(invalid("lambda.data", v, "empty label"))
        } else {
            Ok(s.to_owned())
        }
    };
    Ok(match v {
        "none" => DataDisk::Ephemeral,
        "auto" => DataDisk::Default,
        _ if v.starts_with("PARTLABEL=") => DataDisk::PartLabel(nonempty(&v[10..])?),
        _ if v.starts_with("LABEL=") => DataDisk::Label(nonempty(&v[6..])?),
        _ if v.starts_with("/dev/") => DataDisk::Path(PathBuf::from(v)),
        _ => {
            return Err(invalid(
                "lambda.data",
                v,
                "expected /dev/..., PARTLABEL=..., LABEL=..., auto or none",
            ))
        }
    })
}

fn hostname(v: &str) -> Result<String, SettingsError> {
    let ok = !v.is_empty()
        && v.len() <= 63
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !v.starts_with('-');
    if ok {
        Ok(v.to_owned())
    } else {
        Err(invalid("lambda.hostname", v, "expected a DNS label"))
    }
}

/// A cluster node id as certificates carry it: `[A-Za-z0-9._-]{1,64}`.
fn node_id(v: &str) -> Result<String, SettingsError> {
    let ok_char = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    if !v.is_empty() && v.len() <= 64 && v.bytes().all(ok_char) {
        Ok(v.to_owned())
    } else {
        Err(invalid(
            "lambda.node_id",
            v,
            "expected [A-Za-z0-9._-], 1 to 64 characters",
        ))
    }
}

fn tty(v: &str) -> Result<String, SettingsError> {
    let name = v.strip_prefix("/dev/").unwrap_or(v);
    if name.starts_with("tty") && name.bytes().all(|b| b.is_ascii_alphanumeric()) {
        Ok(name.to_owned())
    } else {
        Err(invalid(
            "lambda.shell",
            v,
            "expected a tty name such as ttyS1",
        ))
    }
}

impl Settings {
    /// Reads every `lambda.*` parameter of `cmdline`; unknown `lambda.*` keys are errors
    /// (a typo must not silently change nothing).
    pub fn from_cmdline(cmdline: &str) -> Result<Self, SettingsError> {
        let mut s = Settings::default();
        let (mut key_id, mut secret) = (None, None);
        for param in split_params(cmdline) {
            let Some((key, v)) = param.split_once('=') else {
                continue;
            };
            match key {
                "lambda.data" => s.data = data_disk(v)?,
                "lambda.data_wait" => s.data_wait = secs("lambda.data_wait", v)?,
                "lambda.ip" => {
                    s.net = v.parse().map_err(|e: crate::net::NetParseError| {
                        invalid("lambda.ip", v, e.to_string())
                    })?
                }
                "lambda.hostname" => s.hostname = hostname(v)?,
                "lambda.shell" => s.shell = Some(tty(v)?),
                "lambda.listen" => {
                    s.listen = v
                        .parse()
                        .map_err(|_| invalid("lambda.listen", v, "expected ADDR:PORT"))?
                }
                "lambda.serve" => s.serve_args = v.split_whitespace().map(str::to_owned).collect(),
                "lambda.role" => s.role = v.parse().map_err(|e| invalid("lambda.role", v, e))?,
                "lambda.node_id" => s.node_id = Some(node_id(v)?),
                "lambda.link_listen" => {
                    s.link_listen = v
                        .parse()
                        .map_err(|_| invalid("lambda.link_listen", v, "expected ADDR:PORT"))?
                }
                "lambda.access_key_id" => key_id = Some(v.to_owned()),
                "lambda.secret_access_key" => secret = Some(v.to_owned()),
                "lambda.stop_timeout" => s.stop_timeout = secs("lambda.stop_timeout", v)?,
                "lambda.modules" => {
                    s.modules = v
                        .split(',')
                        .filter(|m| !m.is_empty())
                        .map(str::to_owned)
                        .collect()
                }
                k if k.starts_with("lambda.") => {
                    return Err(invalid("lambda.*", &param, "unknown parameter"))
                }
                _ => {}
            }
        }
        s.credentials = match (key_id, secret) {
            (Some(k), Some(v)) => Some((k, v)),
            (None, None) => None,
            _ => return Err(SettingsError::HalfCredentials),
        };
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_without_parameters() {
        let s = Settings::from_cmdline("console=ttyS0 quiet").unwrap();
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn reads_every_key() {
        let s = Settings::from_cmdline(
            "lambda.data=/dev/vdb lambda.shell=ttyS1 lambda.listen=127.0.0.1:80 \
             lambda.serve=\"--init-timeout-secs 60 --host-concurrency 8\" \
             lambda.access_key_id=AKIA1 lambda.secret_access_key=s3cret \
             lambda.stop_timeout=5 lambda.modules=tun,veth lambda.hostname=box-1 lambda.ip=off \
             lambda.role=worker lambda.node_id=w-1.a lambda.link_listen=10.0.0.5:7443",
        )
        .unwrap();
        assert_eq!(s.role, Role::Worker);
        assert_eq!(s.node_id.as_deref(), Some("w-1.a"));
        assert_eq!(s.link_listen, "10.0.0.5:7443".parse().unwrap());
        assert_eq!(s.data, DataDisk::Path("/dev/vdb".into()));
        assert_eq!(s.shell.as_deref(), Some("ttyS1"));
        assert_eq!(s.listen.port(), 80);
        assert_eq!(
            s.serve_args,
            ["--init-timeout-secs", "60", "--host-concurrency", "8"]
        );
        assert_eq!(s.credentials, Some(("AKIA1".into(), "s3cret".into())));
        assert_eq!(s.stop_timeout, Duration::from_secs(5));
        assert_eq!(s.modules, ["tun", "veth"]);
        assert_eq!(s.hostname, "box-1");
        assert_eq!(s.net, NetConfig::Off);
    }

    #[test]
    fn bad_values_are_errors() {
        for bad in [
            "lambda.data=sdb",
            "lambda.data=LABEL=",
            "lambda.stop_timeout=0",
            "lambda.shell=/etc/passwd",
            "lambda.hostname=-x",
            "lambda.listen=nowhere",
            "lambda.typo=1",
            "lambda.access_key_id=only-half",
            "lambda.role=primary",
            "lambda.node_id=a/b",
            "lambda.link_listen=9443",
        ] {
            assert!(Settings::from_cmdline(bad).is_err(), "{bad}");
        }
        assert_eq!(
            Settings::from_cmdline("lambda.data=PARTLABEL=data2")
                .unwrap()
                .data,
            DataDisk::PartLabel("data2".into())
        );
        assert_eq!(
            Settings::from_cmdline("lambda.data=none").unwrap().data,
            DataDisk::Ephemeral
        );
    }
}
