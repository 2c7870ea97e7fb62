//! Command line, environment and TOML configuration.
//!
//! Precedence: command-line flag, then environment variable (clap reads
//! both), then the `--config` file, then built-in defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand};
use serde::Deserialize;

use crate::dataplane::{DataPlaneArgs, DataPlaneConfig, DataPlaneFile};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:9000";
pub const DEFAULT_REGION: &str = "us-east-1";
pub const DEFAULT_ACCOUNT: &str = "000000000000";
pub const DEFAULT_MAX_CLOCK_SKEW_SECS: u32 = 900;
/// The longest function timeout: invokes in flight when code is replaced have ended by
/// then, so the chunks only they used can go.
pub const DEFAULT_CHUNK_GC_DELAY_SECS: u64 = 900;

#[derive(Debug, Parser)]
#[command(
    name = "supervisor",
    version,
    about = "Lambda-compatible control plane and invoke front end for micro-VM functions",
    long_about = "Serves the AWS Lambda API (/2015-03-31/functions...) so the AWS CLI, boto3 and other \
                  AWS SDKs can deploy functions with --endpoint-url. Every request must carry an AWS \
                  Signature Version 4 for service 'lambda'. Code is validated, encrypted with \
                  AES-256-GCM and kept in the data directory together with an SQLite registry.\n\n\
                  Every serve flag can also be set in the TOML file given by --config (same names, \
                  e.g. data-dir = \"/var/lib/supervisor\") or through the environment variable shown."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Threads running the async runtime (HTTP, SigV4, the invoke path, links).
    /// Default: one per 4 CPUs, 1 to 8: the invoke path mostly waits for sandboxes,
    /// and each extra thread makes tasks hop between threads, which costs more CPU per
    /// invoke than it gains while sandboxes compete for the same cores.
    #[arg(long, global = true, env = "SUPERVISOR_ASYNC_THREADS")]
    pub async_threads: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the API server until SIGTERM or SIGINT.
    Serve(Box<ServeArgs>),
    /// Run a worker daemon: this host's sandboxes, for frontends on other hosts.
    Worker(Box<crate::cluster_cli::WorkerArgs>),
    /// Move a stopped single host's registry into an empty shared registry in etcd.
    Migrate(Box<crate::migrate::MigrateArgs>),
    /// Cluster CA and certificates, and the status of a frontend's workers.
    #[command(subcommand)]
    Cluster(crate::cluster_cli::ClusterCommand),
    /// Start a supervisor on an embedded default (data dir under the user's cache
    /// dir, auto isolation), deploy a sample shell function, invoke it, print the
    /// response and the REPORT line, and stop.
    Demo(Box<crate::demo::DemoArgs>),
}

#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Address and port to listen on [default: 127.0.0.1:9000].
    #[arg(long, env = "SUPERVISOR_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// Directory for the registry, encrypted code, keys and credentials (required).
    #[arg(long, env = "SUPERVISOR_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Access key id clients sign with. Its secret comes from the environment
    /// (SUPERVISOR_SECRET_ACCESS_KEY), --credentials-file or the config file, never the
    /// command line, which every process on the host can read. Without any, a pair is
    /// generated on first start and stored in DATA_DIR/credentials.toml (mode 0600).
    #[arg(long, env = "SUPERVISOR_ACCESS_KEY_ID", value_name = "ID")]
    pub access_key_id: Option<String>,
    /// TOML file with `access_key_id` and `secret_access_key` (the format of
    /// DATA_DIR/credentials.toml).
    #[arg(long, env = "SUPERVISOR_CREDENTIALS_FILE", value_name = "FILE")]
    pub credentials_file: Option<PathBuf>,
    /// Read from SUPERVISOR_SECRET_ACCESS_KEY (not a flag).
    #[arg(skip)]
    pub secret_access_key: Option<String>,
    /// Region clients must sign for; also used in ARNs [default: us-east-1].
    #[arg(long, env = "SUPERVISOR_REGION", value_name = "REGION")]
    pub region: Option<String>,
    /// 12-digit account id used in ARNs [default: 000000000000].
    #[arg(long, env = "SUPERVISOR_ACCOUNT_ID", value_name = "ID")]
    pub account_id: Option<String>,
    /// File holding the 256-bit master key as 64 hex digits (mode 0600). Default:
    /// DATA_DIR/master.key, generated on first start.
    #[arg(long, env = "SUPERVISOR_MASTER_KEY_FILE", value_name = "FILE")]
    pub master_key_file: Option<PathBuf>,
    /// Largest accepted difference between X-Amz-Date and the server clock [default: 900].
    #[arg(long, env = "SUPERVISOR_MAX_CLOCK_SKEW_SECS", value_name = "SECS")]
    pub max_clock_skew_secs: Option<u32>,
    /// TOML configuration file with any of the settings above (data-plane keys go
    /// in a `[data-plane]` table).
    #[arg(long, env = "SUPERVISOR_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Serve `/metrics` without authentication (it lists every function name); by
    /// default it needs a SigV4 signature like every other route.
    #[arg(long, env = "SUPERVISOR_PUBLIC_METRICS")]
    pub public_metrics: bool,
    /// Seconds between the last use of an image's chunks going away (DeleteFunction,
    /// UpdateFunctionCode) and their collection, so invokes still running on the old
    /// code finish [default: 900, the longest function timeout].
    #[arg(long, value_name = "SECS")]
    pub chunk_gc_delay_secs: Option<u64>,
    /// When credentials are generated (first start), print the secret access key too,
    /// once, on stderr (an appliance's console); otherwise only where it is stored.
    #[arg(long)]
    pub announce_generated_credentials: bool,
    /// etcd endpoints (`http://HOST:PORT`, comma-separated): share the registry with
    /// the other frontends given the same endpoints, and copy code objects between
    /// them. All of them need the same master key and credentials. Without it the
    /// registry is this host's SQLite file.
    #[arg(long, env = "SUPERVISOR_ETCD", value_name = "URL[,URL...]")]
    pub etcd: Option<String>,
    /// The prefix of every key this cluster keeps in etcd [default: /lambda-microvm].
    #[arg(long, env = "SUPERVISOR_ETCD_PREFIX", value_name = "PREFIX")]
    pub etcd_prefix: Option<String>,
    /// The URL other frontends reach this one at (`http://HOST:PORT`); default
    /// `http://` and the listen address, which must then not be a wildcard.
    #[arg(long, env = "SUPERVISOR_ADVERTISE_URL", value_name = "URL")]
    pub advertise_url: Option<String>,
    /// Seconds this frontend stays listed in etcd after its last keepalive [default: 10].
    #[arg(long, value_name = "SECS")]
    pub member_ttl_secs: Option<u32>,
    /// The account's concurrent executions (Lambda's ConcurrentExecutions quota), which
    /// reservations are carved from; with `--etcd` it holds across the frontends (give
    /// each the same value) [default: --host-concurrency].
    #[arg(long, env = "SUPERVISOR_ACCOUNT_CONCURRENCY", value_name = "N")]
    pub account_concurrency: Option<u32>,
    /// With `--etcd`: registry log entries between snapshots; the log keeps that many
    /// entries behind the latest one [default: 1000].
    #[arg(long, value_name = "N")]
    pub registry_snapshot_every: Option<u64>,
    #[command(flatten)]
    pub etcd_tls: EtcdTlsArgs,
    #[command(flatten)]
    pub data_plane: DataPlaneArgs,
    #[command(flatten)]
    pub frontend: crate::cluster_cli::FrontendArgs,
}

/// PEM files for `https://` etcd endpoints (all three, or none).
#[derive(Debug, Args, Default)]
pub struct EtcdTlsArgs {
    /// The CA that signed the etcd members' certificates.
    #[arg(long, env = "SUPERVISOR_ETCD_CA", value_name = "FILE")]
    pub etcd_ca: Option<PathBuf>,
    /// This client's certificate, for etcd's --client-cert-auth.
    #[arg(long, env = "SUPERVISOR_ETCD_CERT", value_name = "FILE")]
    pub etcd_cert: Option<PathBuf>,
    /// This client's private key.
    #[arg(long, env = "SUPERVISOR_ETCD_KEY", value_name = "FILE")]
    pub etcd_key: Option<PathBuf>,
}

impl EtcdTlsArgs {
    pub fn resolve(self) -> Result<Option<crate::shared::etcd::EtcdTls>, ConfigError> {
        match (self.etcd_ca, self.etcd_cert, self.etcd_key) {
            (None, None, None) => Ok(None),
            (Some(ca), Some(cert), Some(key)) => {
                Ok(Some(crate::shared::etcd::EtcdTls { ca, cert, key }))
            }
            _ => Err(ConfigError::Etcd(crate::shared::etcd::EtcdError::Settings(
                "give --etcd-ca, --etcd-cert and --etcd-key together".into(),
            ))),
        }
    }
}

/// The `--config` file: the same settings, kebab-case keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    region: Option<String>,
    account_id: Option<String>,
    master_key_file: Option<PathBuf>,
    max_clock_skew_secs: Option<u32>,
    public_metrics: Option<bool>,
    chunk_gc_delay_secs: Option<u64>,
    etcd: Option<String>,
    etcd_prefix: Option<String>,
    advertise_url: Option<String>,
    member_ttl_secs: Option<u32>,
    account_concurrency: Option<u32>,
    registry_snapshot_every: Option<u64>,
    etcd_ca: Option<PathBuf>,
    etcd_cert: Option<PathBuf>,
    etcd_key: Option<PathBuf>,
    #[serde(default)]
    data_plane: DataPlaneFile,
    /// `[[registries]]`: the registries container images may be pulled from.
    #[serde(default)]
    registries: Vec<RegistryFile>,
}

/// One `[[registries]]` entry of the config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RegistryFile {
    /// `host[:port]` exactly as image URIs name it.
    host: String,
    /// Plain HTTP (a registry on loopback or a private network); HTTPS otherwise.
    #[serde(default)]
    plain_http: bool,
    username: Option<String>,
    password: Option<String>,
}

impl RegistryFile {
    fn resolve(self) -> Result<oci_image::Registry, ConfigError> {
        use oci_image::pull::Credentials;
        let credentials = match (self.username, self.password) {
            (Some(username), Some(password)) => Credentials::Basic { username, password },
            (None, None) => Credentials::Anonymous,
            _ => return Err(ConfigError::Registry(self.host)),
        };
        Ok(oci_image::Registry {
            host: self.host,
            plain_http: self.plain_http,
            credentials,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("--data-dir (or SUPERVISOR_DATA_DIR, or data-dir in the config file) is required")]
    NoDataDir,
    #[error("an access key id and its secret must be given together (--access-key-id or SUPERVISOR_ACCESS_KEY_ID with SUPERVISOR_SECRET_ACCESS_KEY, a credentials file, or the config file)")]
    HalfCredentials,
    #[error("credentials file {path}: {reason}")]
    CredentialsFile { path: PathBuf, reason: String },
    #[error("invalid region '{0}': expected lowercase letters, digits and '-'")]
    Region(String),
    #[error("invalid account id '{0}': expected 12 digits")]
    Account(String),
    #[error("{0}")]
    Host(String),
    #[error("registry {0}: give both username and password, or neither")]
    Registry(String),
    #[error("--etcd: {0}")]
    Etcd(#[from] crate::shared::etcd::EtcdError),
}

/// Fully resolved settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `(access_key_id, secret_access_key)` given by the operator.
    pub credentials: Option<(String, String)>,
    pub region: String,
    pub account_id: String,
    pub master_key_file: Option<PathBuf>,
    pub max_clock_skew_secs: u32,
    /// Print generated secrets once on stderr (`--announce-generated-credentials`).
    pub announce_generated_credentials: bool,
    /// `/metrics` without SigV4.
    pub public_metrics: bool,
    pub data_plane: DataPlaneConfig,
    /// `Some` for the frontend role: sandboxes run on these workers.
    pub cluster: Option<cluster::frontend::FrontendSettings>,
    /// Registries container images may be pulled from (config file only: they may
    /// carry passwords).
    pub registries: Vec<oci_image::Registry>,
    /// See `--chunk-gc-delay-secs`.
    pub chunk_gc_delay: std::time::Duration,
    /// `Some` with `--etcd`: the registry and code are shared with other frontends.
    pub shared: Option<crate::shared::SharedSettings>,
    /// `--account-concurrency`; `None`: the host's limit.
    pub account_concurrency: Option<u32>,
}

impl Config {
    /// Defaults for everything except the data dir (tests, embedding).
    pub fn with_data_dir(data_dir: &Path) -> Self {
        Self {
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 9000))),
            data_dir: data_dir.to_owned(),
            credentials: None,
            region: DEFAULT_REGION.to_owned(),
            account_id: DEFAULT_ACCOUNT.to_owned(),
            master_key_file: None,
            max_clock_skew_secs: DEFAULT_MAX_CLOCK_SKEW_SECS,
            announce_generated_credentials: false,
            public_metrics: false,
            data_plane: DataPlaneConfig::defaults(),
            cluster: None,
            registries: Vec::new(),
            chunk_gc_delay: std::time::Duration::from_secs(DEFAULT_CHUNK_GC_DELAY_SECS),
            shared: None,
            account_concurrency: None,
        }
    }

    /// The account's concurrency limit (`--account-concurrency`, else the host's).
    pub fn account_concurrency(&self) -> u32 {
        self.account_concurrency
            .unwrap_or(self.data_plane.host.host_concurrency)
    }
}

fn read_credentials_file(path: &Path) -> Result<(String, String), ConfigError> {
    let bad = |reason: String| ConfigError::CredentialsFile {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
    let c: crate::auth::Credentials = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
    Ok((c.access_key_id, c.secret_access_key))
}

/// The id and the secret are resolved separately (flag or environment first,
/// then a credentials file, then the config file), so an operator can keep the
/// secret in the environment and the id in a file; only the pair is checked.
fn pair_credentials(
    id: Option<String>,
    secret: Option<String>,
) -> Result<Option<(String, String)>, ConfigError> {
    match (id, secret) {
        (Some(i), Some(s)) => Ok(Some((i, s))),
        (None, None) => Ok(None),
        _ => Err(ConfigError::HalfCredentials),
    }
}

impl ServeArgs {
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let file = match &self.config {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                toml::from_str::<FileConfig>(&text).map_err(|source| ConfigError::Parse {
                    path: path.clone(),
                    source,
                })?
            }
            None => FileConfig::default(),
        };
        let data_dir = self
            .data_dir
            .or(file.data_dir)
            .ok_or(ConfigError::NoDataDir)?;
        let mut cfg = Config::with_data_dir(&data_dir);
        if let Some(l) = self.listen.or(file.listen) {
            cfg.listen = l;
        }
        let from_file = match &self.credentials_file {
            Some(path) => Some(read_credentials_file(path)?),
            None => None,
        };
        let env_secret = self
            .secret_access_key
            .or_else(|| std::env::var("SUPERVISOR_SECRET_ACCESS_KEY").ok())
            .filter(|s| !s.is_empty());
        let (file_id, file_secret) = from_file.unzip();
        cfg.credentials = pair_credentials(
            self.access_key_id.or(file_id).or(file.access_key_id),
            env_secret.or(file_secret).or(file.secret_access_key),
        )?;
        if let Some(r) = self.region.or(file.region) {
            let ok = !r.is_empty()
                && r.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return Err(ConfigError::Region(r));
            }
            cfg.region = r;
        }
        if let Some(a) = self.account_id.or(file.account_id) {
            if a.len() != 12 || !a.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ConfigError::Account(a));
            }
            cfg.account_id = a;
        }
        cfg.master_key_file = self.master_key_file.or(file.master_key_file);
        if let Some(s) = self.max_clock_skew_secs.or(file.max_clock_skew_secs) {
            cfg.max_clock_skew_secs = s;
        }
        if let Some(s) = self.chunk_gc_delay_secs.or(file.chunk_gc_delay_secs) {
            cfg.chunk_gc_delay = std::time::Duration::from_secs(s);
        }
        cfg.announce_generated_credentials = self.announce_generated_credentials;
        cfg.public_metrics = self.public_metrics || file.public_metrics.unwrap_or(false);
        cfg.data_plane = self
            .data_plane
            .resolve(file.data_plane)
            .map_err(ConfigError::Host)?;
        cfg.account_concurrency = match self.account_concurrency.or(file.account_concurrency) {
            Some(0) => {
                return Err(ConfigError::Host(
                    "--account-concurrency must be at least 1".into(),
                ))
            }
            n => n,
        };
        let etcd = self.etcd.or(file.etcd);
        cfg.cluster = self
            .frontend
            .resolve(etcd.is_some())
            .map_err(ConfigError::Host)?;
        if let Some(urls) = etcd {
            let prefix = self
                .etcd_prefix
                .or(file.etcd_prefix)
                .unwrap_or_else(|| "/lambda-microvm".to_owned());
            let tls = EtcdTlsArgs {
                etcd_ca: self.etcd_tls.etcd_ca.or(file.etcd_ca),
                etcd_cert: self.etcd_tls.etcd_cert.or(file.etcd_cert),
                etcd_key: self.etcd_tls.etcd_key.or(file.etcd_key),
            }
            .resolve()?;
            cfg.shared = Some(crate::shared::SharedSettings {
                etcd: crate::shared::etcd::EtcdSettings::parse(&urls, &prefix, tls)?,
                id: crate::ids::random_hex::<8>(),
                advertise_url: self.advertise_url.or(file.advertise_url),
                member_ttl_secs: i64::from(
                    self.member_ttl_secs
                        .or(file.member_ttl_secs)
                        .unwrap_or(crate::shared::members::DEFAULT_TTL_SECS as u32)
                        .max(2),
                ),
                snapshot_every: self
                    .registry_snapshot_every
                    .or(file.registry_snapshot_every)
                    .unwrap_or(crate::registry::DEFAULT_SNAPSHOT_EVERY)
                    .max(2),
            });
        }
        if cfg.shared.is_none() && cfg.cluster.is_none() {
            // One host is the whole account: its worker runs no more than the account.
            let account = cfg.account_concurrency();
            let host = &mut cfg.data_plane.host.host_concurrency;
            *host = (*host).min(account);
        }
        cfg.registries = file
            .registries
            .into_iter()
            .map(RegistryFile::resolve)
            .collect::<Result<_, _>>()?;
        Ok(cfg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_override_file_which_overrides_defaults() {
        let d = tempfile::tempdir().expect("tempdir");
        let file = d.path().join("c.toml");
        std::fs::write(
            &file,
            "data-dir = \"/tmp/x\"\nregion = \"eu-west-1\"\nlisten = \"127.0.0.1:1234\"\n",
        )
        .expect("write");
        let args = ServeArgs {
            config: Some(file.clone()),
            region: Some("ap-south-1".into()),
            ..Default::default()
        };
        let c = args.resolve().expect("resolve");
        assert_eq!(c.region, "ap-south-1");
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.listen.port(), 1234);
        assert_eq!(c.account_id, DEFAULT_ACCOUNT);
    }

    #[test]
    fn the_account_limit_caps_a_single_host_and_spans_a_cluster() {
        let args = |etcd: Option<&str>| ServeArgs {
            data_dir: Some("/tmp".into()),
            account_concurrency: Some(6),
            etcd: etcd.map(str::to_owned),
            ..Default::default()
        };
        let single = args(None).resolve().expect("resolve");
        assert_eq!(single.account_concurrency(), 6);
        assert_eq!(single.data_plane.host.host_concurrency, 6);
        let shared = args(Some("http://127.0.0.1:2379"))
            .resolve()
            .expect("resolve");
        assert_eq!(shared.account_concurrency(), 6);
        assert_eq!(shared.data_plane.host.host_concurrency, 1000, "per host");
        let zero = ServeArgs {
            account_concurrency: Some(0),
            ..args(None)
        };
        assert!(matches!(zero.resolve(), Err(ConfigError::Host(_))));
        let default = ServeArgs {
            account_concurrency: None,
            ..args(None)
        };
        assert_eq!(default.resolve().unwrap().account_concurrency(), 1000);
    }

    #[test]
    fn bad_settings_are_clear_errors() {
        assert!(matches!(
            ServeArgs::default().resolve(),
            Err(ConfigError::NoDataDir)
        ));
        let half = ServeArgs {
            data_dir: Some("/tmp".into()),
            access_key_id: Some("A".into()),
            ..Default::default()
        };
        assert!(matches!(half.resolve(), Err(ConfigError::HalfCredentials)));
        let pair = ServeArgs {
            data_dir: Some("/tmp".into()),
            access_key_id: Some("A".into()),
            secret_access_key: Some("s".into()),
            ..Default::default()
        };
        assert_eq!(
            pair.resolve().unwrap().credentials,
            Some(("A".into(), "s".into()))
        );
        let d = tempfile::tempdir().expect("tempdir");
        let creds = d.path().join("creds.toml");
        std::fs::write(
            &creds,
            "access_key_id = \"AKIAF\"\nsecret_access_key = \"fromfile\"\n",
        )
        .unwrap();
        let from_file = ServeArgs {
            data_dir: Some("/tmp".into()),
            credentials_file: Some(creds),
            ..Default::default()
        };
        assert_eq!(
            from_file.resolve().unwrap().credentials,
            Some(("AKIAF".into(), "fromfile".into()))
        );
        let d2 = tempfile::tempdir().expect("tempdir");
        let conf = d2.path().join("c.toml");
        std::fs::write(&conf, "access-key-id = \"AKIACONF\"\n").unwrap();
        let mixed = ServeArgs {
            config: Some(conf),
            data_dir: Some("/tmp".into()),
            secret_access_key: Some("fromenv".into()),
            ..Default::default()
        };
        assert_eq!(
            mixed.resolve().unwrap().credentials,
            Some(("AKIACONF".into(), "fromenv".into()))
        );
        let region = ServeArgs {
            data_dir: Some("/tmp".into()),
            region: Some("US EAST".into()),
            ..Default::default()
        };
        assert!(matches!(region.resolve(), Err(ConfigError::Region(_))));
        let d = tempfile::tempdir().expect("tempdir");
        let file = d.path().join("c.toml");
        std::fs::write(&file, "bogus-key = 1\n").expect("write");
        let unknown = ServeArgs {
            config: Some(file),
            ..Default::default()
        };
        assert!(matches!(unknown.resolve(), Err(ConfigError::Parse { .. })));
    }

    #[test]
    fn cli_parses_serve() {
        let cli = Cli::try_parse_from([
            "supervisor",
            "serve",
            "--data-dir",
            "/d",
            "--listen",
            "127.0.0.1:0",
        ])
        .expect("parse");
        let Command::Serve(args) = cli.command else {
            panic!("expected serve");
        };
        assert_eq!(args.data_dir, Some(PathBuf::from("/d")));
    }

    #[test]
    fn registries_come_from_the_config_file() {
        let d = tempfile::tempdir().expect("tempdir");
        let file = d.path().join("c.toml");
        let resolve = |text: &str| {
            std::fs::write(&file, text).expect("write");
            ServeArgs {
                config: Some(file.clone()),
                data_dir: Some("/tmp".into()),
                ..Default::default()
            }
            .resolve()
        };
        let c = resolve(
            "[[registries]]\nhost = \"127.0.0.1:5000\"\nplain-http = true\n\
             username = \"u\"\npassword = \"p\"\n\
             [[registries]]\nhost = \"registry.example.com\"\n",
        )
        .expect("resolve");
        assert_eq!(c.registries.len(), 2);
        assert!(c.registries[0].plain_http && !c.registries[1].plain_http);
        assert_eq!(
            c.registries[0].credentials,
            oci_image::pull::Credentials::Basic {
                username: "u".into(),
                password: "p".into()
            }
        );
        assert_eq!(
            c.registries[1].credentials,
            oci_image::pull::Credentials::Anonymous
        );
        let half = resolve("[[registries]]\nhost = \"r.example\"\nusername = \"u\"\n");
        assert!(matches!(half, Err(ConfigError::Registry(h)) if h == "r.example"));
    }
}
