//! `supervisor migrate --to-etcd`: moves a single host's registry into a cluster's
//! shared registry.

use std::path::PathBuf;
use std::sync::Arc;

use crate::registry::Registry;
use crate::shared::etcd::{Etcd, EtcdSettings};

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The single host's data dir; its supervisor must be stopped.
    #[arg(long, value_name = "DIR")]
    pub data_dir: PathBuf,
    /// The cluster's etcd endpoints (`http://HOST:PORT`, comma-separated).
    #[arg(long, value_name = "URL[,URL...]")]
    pub to_etcd: String,
    /// The key prefix the cluster's frontends use.
    #[arg(long, default_value = "/lambda-microvm", value_name = "PREFIX")]
    pub etcd_prefix: String,
    /// The master key file the cluster's frontends share [default: DIR/master.key]: what
    /// migrate writes to etcd is sealed under it.
    #[arg(long, value_name = "FILE")]
    pub master_key_file: Option<PathBuf>,
    #[command(flatten)]
    pub etcd_tls: crate::config::EtcdTlsArgs,
}

pub fn run(args: MigrateArgs) -> Result<(), String> {
    // Held while copying: no supervisor may change the registry meanwhile.
    let _lock = worker::host::lock::DataDirLock::acquire(&args.data_dir)
        .map_err(|e| format!("{e} (stop the supervisor using it first)"))?;
    let source = args.data_dir.join("registry.sqlite3");
    if !source.is_file() {
        return Err(format!("{} holds no registry", args.data_dir.display()));
    }
    let tls = args.etcd_tls.resolve().map_err(|e| e.to_string())?;
    let settings =
        EtcdSettings::parse(&args.to_etcd, &args.etcd_prefix, tls).map_err(|e| e.to_string())?;
    let key_file = args
        .master_key_file
        .unwrap_or_else(|| args.data_dir.join("master.key"));
    let master = crate::codestore::MasterKey::load(&key_file).map_err(|e| e.to_string())?;
    let etcd = Arc::new(
        Etcd::connect(&settings, Some(crate::shared::sealer(&master)))
            .map_err(|e| e.to_string())?,
    );
    let (rows, entries) =
        Registry::migrate_to_shared(&source, etcd).map_err(|e| format!("migrating: {e}"))?;
    eprintln!(
        "supervisor: moved {rows} registry rows into {entries} entries under {}. Start the \
         frontends with --etcd, the master key of {} and the same credentials; the first one \
         on this data dir serves its code objects to the others.",
        settings.prefix,
        args.data_dir.display()
    );
    Ok(())
}
