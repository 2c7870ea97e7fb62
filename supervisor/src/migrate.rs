//! `supervisor migrate --to-etcd`: moves a single host's registry into a cluster's
//! shared registry, and the Events still queued on it into the shared Event queue.

use std::path::PathBuf;
use std::sync::Arc;

use crate::invoke::events::store::{EventBackend, EventStore, EventStoreError};
use crate::registry::Registry;
use crate::shared::etcd::{Etcd, EtcdSettings};
use crate::shared::events::SharedEvents;

/// The single host's Event queue, in its data dir.
const EVENTS_FILE: &str = "events.sqlite3";
/// Events read from it at a time.
const EVENT_BATCH: usize = 256;

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
    let (rows, entries) = Registry::migrate_to_shared(&source, etcd.clone())
        .map_err(|e| format!("migrating: {e}"))?;
    let events = move_events(&args.data_dir.join(EVENTS_FILE), etcd)
        .map_err(|e| format!("moving queued Events: {e}"))?;
    eprintln!(
        "supervisor: moved {rows} registry rows into {entries} entries and {events} queued \
         Events under {}. Start the frontends with --etcd, the master key of {} and the same \
         credentials; the first one on this data dir serves its code objects to the others.",
        settings.prefix,
        args.data_dir.display()
    );
    Ok(())
}

/// Moves every Event queued in the single host's file into the shared queue, keeping its
/// id (the request id), attempts and schedule. Each leaves the file only once etcd holds
/// it, so none is lost: one moved twice (a failure between the two steps) is the same
/// keys written again. Returns how many moved.
fn move_events(file: &std::path::Path, etcd: Arc<Etcd>) -> Result<u64, EventStoreError> {
    if !file.is_file() {
        return Ok(0);
    }
    let local = EventStore::open(file)?;
    // Inserting needs no claim, so no membership lease.
    let shared = SharedEvents::new(etcd, "migrate".to_owned(), Arc::new(|| None));
    let mut moved = 0;
    loop {
        let batch = local.due(i64::MAX, EVENT_BATCH)?;
        if batch.is_empty() {
            return Ok(moved);
        }
        for event in batch {
            shared.insert(&event)?;
            local.remove(&event.id)?;
            moved += 1;
        }
    }
}
