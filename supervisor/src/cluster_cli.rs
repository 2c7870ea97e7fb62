//! Command line of the multi-host roles: `serve --role frontend` flags, the worker
//! daemon (`supervisor worker`), and `supervisor cluster init|issue|revoke|status`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Subcommand};
use cluster::frontend::FrontendSettings;
use cluster::tls::{self, Role, TlsFiles};

use crate::dataplane::{DataPlaneArgs, DataPlaneFile};
use crate::shared::etcd::{Etcd, EtcdSettings};

/// `supervisor serve` flags for the frontend role.
#[derive(Debug, Args, Default, Clone)]
pub struct FrontendArgs {
    /// `embedded` (one process runs the API and the sandboxes; the default) or
    /// `frontend` (the API here, sandboxes on the `--worker` hosts).
    #[arg(long, env = "SUPERVISOR_ROLE", value_name = "ROLE")]
    pub role: Option<String>,
    /// Directory with the cluster CA certificate and this node's certificate and key
    /// (as `supervisor cluster issue` writes them).
    #[arg(long, env = "SUPERVISOR_CLUSTER_DIR", value_name = "DIR")]
    pub cluster_dir: Option<PathBuf>,
    /// This node's identity (the id in its certificate).
    #[arg(long, env = "SUPERVISOR_NODE_ID", value_name = "ID")]
    pub node_id: Option<String>,
    /// A worker's link address (repeatable); with `--etcd`, the workers registered
    /// there are placed invokes too.
    #[arg(long = "worker", value_name = "[ID@]HOST:PORT")]
    pub workers: Vec<String>,
    /// Where workers fetch code from this frontend.
    #[arg(long, env = "SUPERVISOR_LINK_LISTEN", value_name = "ADDR:PORT")]
    pub link_listen: Option<SocketAddr>,
    /// The address workers dial for code, if not `--link-listen`.
    #[arg(long, value_name = "HOST:PORT")]
    pub link_advertise: Option<String>,
}

impl FrontendArgs {
    /// `None` for the embedded role. With `etcd`, workers may come from there only.
    pub fn resolve(self, etcd: bool) -> Result<Option<FrontendSettings>, String> {
        match self.role.as_deref().unwrap_or("embedded") {
            "embedded" => return Ok(None),
            "frontend" => {}
            other => return Err(format!("--role {other:?}: expected embedded or frontend")),
        }
        let dir = self
            .cluster_dir
            .ok_or("--role frontend needs --cluster-dir")?;
        let id = self.node_id.ok_or("--role frontend needs --node-id")?;
        if self.workers.is_empty() && !etcd {
            return Err("--role frontend needs --etcd or at least one --worker".into());
        }
        let link_listen = self
            .link_listen
            .ok_or("--role frontend needs --link-listen")?;
        if link_listen.ip().is_unspecified() && self.link_advertise.is_none() {
            return Err(format!(
                "--link-listen {link_listen} needs --link-advertise HOST:PORT: workers dial \
                 that address for code"
            ));
        }
        Ok(Some(FrontendSettings {
            tls: TlsFiles::in_dir(&dir, Role::Frontend, &id),
            id,
            workers: self.workers,
            link_listen,
            advertise: self.link_advertise,
        }))
    }
}

/// `supervisor worker`: the worker daemon.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// This worker's identity (the id in its certificate).
    #[arg(long, value_name = "ID")]
    pub id: String,
    /// Link address frontends connect to.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: SocketAddr,
    #[arg(long, value_name = "DIR")]
    pub cluster_dir: PathBuf,
    /// Lease of one incarnation in seconds [default: 50400 = 14 h].
    #[arg(long, value_name = "SECS")]
    pub lease_secs: Option<f64>,
    /// Start again as a new incarnation when the lease ends, instead of exiting.
    #[arg(long)]
    pub rejoin: bool,
    /// Memory for sandboxes in MiB [default: MemTotal less 512].
    #[arg(long, value_name = "MIB")]
    pub capacity_mib: Option<u64>,
    /// Sealed code kept on this worker, in MiB [default: 2048].
    #[arg(long, value_name = "MIB")]
    pub code_cache_mib: Option<u64>,
    /// Sealed copies of container images' chunks kept on this worker, in MiB; the least
    /// recently used beyond it are deleted [default: 8192].
    #[arg(long, value_name = "MIB")]
    pub chunk_cache_mib: Option<u64>,
    #[arg(long, default_value = crate::config::DEFAULT_REGION)]
    pub region: String,
    #[arg(long, default_value = crate::config::DEFAULT_ACCOUNT)]
    pub account_id: String,
    /// Per-function log files [default: RUN_DIR/logs].
    #[arg(long, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    /// Also serve GET /metrics over plain HTTP here, for scrapers without a cluster
    /// certificate (frontends read the same over the link).
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics_listen: Option<SocketAddr>,
    #[command(flatten)]
    pub membership: WorkerEtcdArgs,
    #[command(flatten)]
    pub data_plane: DataPlaneArgs,
}

/// `supervisor worker` flags for registering in etcd.
#[derive(Debug, Args)]
pub struct WorkerEtcdArgs {
    /// etcd endpoints (`http://HOST:PORT`, comma-separated): register this worker there
    /// under a lease kept alive while it runs; frontends given the same endpoints
    /// place invokes on it while it is registered.
    #[arg(long, env = "SUPERVISOR_ETCD", value_name = "URL[,URL...]")]
    pub etcd: Option<String>,
    /// The cluster's key prefix in etcd.
    #[arg(long, default_value = "/lambda-microvm", value_name = "PREFIX")]
    pub etcd_prefix: String,
    /// Seconds this worker stays registered after its last keepalive [default: 10].
    #[arg(long, value_name = "SECS")]
    pub member_ttl_secs: Option<u32>,
    /// The link address frontends dial [default: --listen, which must then not be a
    /// wildcard].
    #[arg(long, value_name = "HOST:PORT")]
    pub link_advertise: Option<String>,
    #[command(flatten)]
    pub etcd_tls: crate::config::EtcdTlsArgs,
}

impl WorkerEtcdArgs {
    /// Connects to etcd (`None` without `--etcd`); workers hold no sealing key.
    fn connect(self, listen: SocketAddr) -> Result<Option<(Arc<Etcd>, String, i64)>, String> {
        let Some(urls) = self.etcd else {
            return Ok(None);
        };
        let link = match self.link_advertise {
            Some(a) => a,
            None if listen.ip().is_unspecified() => {
                return Err(format!(
                    "--listen {listen} needs --link-advertise HOST:PORT: frontends dial that \
                     address"
                ))
            }
            None => listen.to_string(),
        };
        let tls = self.etcd_tls.resolve().map_err(|e| e.to_string())?;
        let settings = EtcdSettings::parse(&urls, &self.etcd_prefix, tls)
            .map_err(|e| format!("--etcd: {e}"))?;
        let etcd = Etcd::connect(&settings, None).map_err(|e| format!("--etcd: {e}"))?;
        let ttl = self
            .member_ttl_secs
            .map_or(crate::shared::members::DEFAULT_TTL_SECS, i64::from)
            .max(2);
        Ok(Some((Arc::new(etcd), link, ttl)))
    }
}

/// Runs the worker daemon until SIGTERM/SIGINT (or the end of its lease without
/// `--rejoin`).
pub async fn run_worker(
    args: WorkerArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let dp = args.data_plane.resolve(DataPlaneFile::default())?;
    let lease = match args.lease_secs {
        Some(s) => Duration::try_from_secs_f64(s)
            .ok()
            .filter(|d| !d.is_zero())
            .ok_or(format!("--lease-secs must be positive, got {s}"))?,
        None => Duration::from_secs(crate::dataplane::config::DEFAULT_LEASE_SECS),
    };
    let log_dir = args
        .log_dir
        .unwrap_or_else(|| std::env::temp_dir().join(format!("lambda-worker-{}-logs", args.id)));
    let tls = TlsFiles::in_dir(&args.cluster_dir, Role::Worker, &args.id);
    let settings = cluster::daemon::DaemonSettings {
        id: args.id.clone(),
        listen: args.listen,
        tls: tls.clone(),
        host: dp.host_settings(&args.region, &args.account_id, log_dir),
        code_cache_max_bytes: args.code_cache_mib.unwrap_or(2048) << 20,
        chunk_copies_max_bytes: args.chunk_cache_mib.unwrap_or(8192) << 20,
        lease,
        rejoin: args.rejoin,
        capacity_mib: args.capacity_mib,
        metrics_listen: args.metrics_listen,
    };
    let membership = args.membership.connect(args.listen)?;
    let (daemon, listener) = cluster::daemon::Daemon::start(settings)
        .await
        .map_err(|e| e.to_string())?;
    let registration = match membership {
        Some((etcd, link, ttl)) => {
            let reg = crate::shared::workers::register(etcd, &daemon, link.clone(), ttl)
                .await
                .map_err(|e| format!("registering in etcd: {e}"))?;
            eprintln!("worker {}: registered in etcd as {link}", args.id);
            Some(reg)
        }
        None => None,
    };
    eprintln!("worker {}: listening on {}", args.id, args.listen);
    let served = daemon
        .serve(listener, &tls, args.rejoin, shutdown)
        .await
        .map_err(|e| e.to_string());
    if let Some(reg) = registration {
        // Frontends stop placing here now rather than when the lease lapses.
        if let Err(e) = reg.leave().await {
            eprintln!(
                "worker {}: leaving etcd: {e} (the entry lapses with its lease)",
                args.id
            );
        }
    }
    served?;
    eprintln!("worker {}: stopped", args.id);
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Create the cluster CA in DIR.
    Init {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// Issue a certificate for a worker or a frontend.
    Issue {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[command(flatten)]
        node: NodeArg,
        /// Where the certificate and key go [default: DIR].
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Lifetime in hours [default: 12, shorter than the default 14 h worker lease].
        #[arg(long, value_name = "HOURS")]
        hours: Option<f64>,
    },
    /// Revoke every certificate of a worker or a frontend (new handshakes only).
    Revoke {
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
        #[command(flatten)]
        node: NodeArg,
    },
    /// List a frontend's workers: role, lease remaining, load (a signed API call).
    Status {
        /// The frontend's API address, e.g. 127.0.0.1:9000.
        #[arg(long, value_name = "ADDR:PORT")]
        endpoint: SocketAddr,
        /// TOML credentials file (access_key_id, secret_access_key).
        #[arg(long, value_name = "FILE")]
        credentials_file: PathBuf,
        #[arg(long, default_value = crate::config::DEFAULT_REGION)]
        region: String,
    },
}

/// `--worker ID` or `--frontend ID`: whose certificate.
#[derive(Debug, Args)]
pub struct NodeArg {
    #[arg(
        long,
        value_name = "ID",
        conflicts_with = "frontend",
        required_unless_present = "frontend"
    )]
    worker: Option<String>,
    #[arg(long, value_name = "ID")]
    frontend: Option<String>,
}

fn identity(node: NodeArg) -> Result<(Role, String), String> {
    match (node.worker, node.frontend) {
        (Some(w), None) => Ok((Role::Worker, w)),
        (None, Some(f)) => Ok((Role::Frontend, f)),
        _ => Err("give exactly one of --worker ID or --frontend ID".into()),
    }
}

pub async fn run_cluster(cmd: ClusterCommand) -> Result<(), String> {
    match cmd {
        ClusterCommand::Init { dir } => {
            tls::ca::init(&dir).map_err(|e| e.to_string())?;
            eprintln!("cluster CA created in {}", dir.display());
        }
        ClusterCommand::Issue {
            dir,
            node,
            out,
            hours,
        } => {
            let (role, id) = identity(node)?;
            let lifetime = match hours {
                Some(h) => Duration::try_from_secs_f64(h * 3600.0)
                    .map_err(|_| format!("--hours {h}: not a lifetime"))?,
                None => tls::DEFAULT_CERT_LIFETIME,
            };
            let out = out.unwrap_or_else(|| dir.clone());
            let paths =
                tls::ca::issue(&dir, role, &id, lifetime, &out).map_err(|e| e.to_string())?;
            eprintln!("issued {role} {id}: {paths:?}");
        }
        ClusterCommand::Revoke { dir, node } => {
            let (role, id) = identity(node)?;
            let n = tls::ca::revoke(&dir, role, &id).map_err(|e| e.to_string())?;
            eprintln!("revoked {n} certificate(s) of {role} {id}");
        }
        ClusterCommand::Status {
            endpoint,
            credentials_file,
            region,
        } => {
            let text = std::fs::read_to_string(&credentials_file)
                .map_err(|e| format!("{}: {e}", credentials_file.display()))?;
            let c: crate::auth::Credentials = toml::from_str(&text)
                .map_err(|e| format!("{}: {e}", credentials_file.display()))?;
            let client = crate::demo::client::Client {
                addr: endpoint,
                access_key_id: c.access_key_id,
                secret_access_key: c.secret_access_key,
                region,
            };
            let r = tokio::task::spawn_blocking(move || {
                client.send("GET", "/cluster/status", &[], b"")
            })
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
            if r.status != 200 {
                return Err(format!(
                    "{} answered {}: {}",
                    endpoint,
                    r.status,
                    String::from_utf8_lossy(&r.body)
                ));
            }
            println!("{}", String::from_utf8_lossy(&r.body));
        }
    }
    Ok(())
}
