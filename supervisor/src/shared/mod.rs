//! State several frontends share through etcd (`--etcd`): the registry
//! (`registry::replica`), frontend membership ([`members`]) and code objects copied
//! between frontends ([`peer_code`]). Without `--etcd` none of this runs.

pub mod etcd;
pub mod events;
pub mod members;
pub mod peer_chunks;
pub mod peer_code;
pub mod routes;
pub mod sealing;
pub mod slots;
pub mod workers;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::WatchOptions;

use crate::codestore::MasterKey;
use etcd::{Etcd, EtcdError, EtcdSettings};

/// `--etcd` and the settings that go with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedSettings {
    pub etcd: EtcdSettings,
    /// This frontend's member id (unique per process).
    pub id: String,
    /// Where other frontends reach this one; default `http://LISTEN-ADDRESS`.
    pub advertise_url: Option<String>,
    pub member_ttl_secs: i64,
    /// Registry log entries between snapshots (`--registry-snapshot-every`).
    pub snapshot_every: u64,
}

pub struct Shared {
    pub etcd: Arc<Etcd>,
    pub peers: Arc<peer_code::PeerCode>,
    pub slots: slots::Slots,
    settings: SharedSettings,
    /// Shared with the event queue, whose claims live under the registration's lease.
    registration: Arc<Mutex<Option<members::Registration>>>,
}

impl Shared {
    pub fn connect(settings: SharedSettings, master: &MasterKey) -> Result<Self, EtcdError> {
        let etcd = Arc::new(Etcd::connect(&settings.etcd, Some(sealer(master)))?);
        let peers = Arc::new(peer_code::PeerCode::new(
            etcd.clone(),
            settings.id.clone(),
            master.derive(b"lambda frontend peer requests v1"),
        ));
        let slots = slots::Slots::new(etcd.clone(), settings.id.clone());
        Ok(Self {
            etcd,
            peers,
            slots,
            settings,
            registration: Arc::new(Mutex::new(None)),
        })
    }

    pub fn id(&self) -> &str {
        &self.settings.id
    }

    /// Registry log entries between snapshots.
    pub fn snapshot_every(&self) -> u64 {
        self.settings.snapshot_every
    }

    /// Registers this frontend, reachable at its advertised URL or `listening`.
    pub fn join(&self, listening: SocketAddr) -> Result<(), EtcdError> {
        let url = match &self.settings.advertise_url {
            Some(u) => u.clone(),
            None if listening.ip().is_unspecified() => {
                return Err(EtcdError::Settings(format!(
                    "listening on {listening}: give --advertise-url, the address other frontends reach this one at"
                )))
            }
            None => format!("http://{listening}"),
        };
        let me = members::Member {
            id: self.settings.id.clone(),
            url,
            started_unix: crate::timefmt::now().unix_timestamp().max(0) as u64,
        };
        let reg = members::join(
            &self.etcd,
            members::Role::Frontend,
            &me.id,
            &me,
            self.settings.member_ttl_secs,
        )?;
        *self.registration.lock().unwrap_or_else(|p| p.into_inner()) = Some(reg);
        Ok(())
    }

    /// The lease of this frontend's registration, once it has joined.
    pub fn lease(&self) -> Option<i64> {
        lease_of(&self.registration)
    }

    /// After a request found lease `lost` gone: the registration's new lease, once it
    /// has one (at most `wait`).
    pub async fn renewed_lease(&self, lost: i64, wait: std::time::Duration) -> Option<i64> {
        let held = self
            .registration
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(members::Registration::held)?;
        members::renewed(held, lost, wait).await
    }

    /// The Event queue the frontends share.
    pub fn events(&self) -> events::SharedEvents {
        let registration = self.registration.clone();
        events::SharedEvents::new(
            self.etcd.clone(),
            self.settings.id.clone(),
            Arc::new(move || lease_of(&registration)),
        )
    }

    /// Stops the keepalives; the registration lapses within its TTL.
    pub fn leave(&self) {
        self.registration
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
    }

    /// A counter bumped whenever a key under `prefix` changes (and once after each
    /// (re)connection of the watch, since changes may have been missed meanwhile).
    pub fn watch(&self, prefix: String) -> tokio::sync::watch::Receiver<u64> {
        watch(&self.etcd, prefix)
    }
}

/// [`Shared::watch`] for any etcd connection (a worker's has no [`Shared`]).
pub fn watch(etcd: &Etcd, prefix: String) -> tokio::sync::watch::Receiver<u64> {
    let (tx, rx) = tokio::sync::watch::channel(0u64);
    etcd.runtime().spawn(watch_loop(etcd.clients(), prefix, tx));
    rx
}

/// The key of everything frontends seal into etcd, from the master key they share.
pub fn sealer(master: &MasterKey) -> sealing::Sealer {
    sealing::Sealer::new(master.derive(b"lambda shared state in etcd v1"))
}

fn lease_of(registration: &Mutex<Option<members::Registration>>) -> Option<i64> {
    registration
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .as_ref()
        .map(members::Registration::lease)
}

async fn watch_loop(
    clients: Vec<etcd_client::Client>,
    prefix: String,
    tx: tokio::sync::watch::Sender<u64>,
) {
    let mut backoff = Duration::from_millis(100);
    // Each failure moves on to the next member.
    for mut client in clients.iter().cloned().cycle() {
        if tx.is_closed() {
            return;
        }
        let opts = WatchOptions::new().with_prefix();
        if let Ok((_watcher, mut stream)) = client.watch(prefix.clone(), Some(opts)).await {
            backoff = Duration::from_millis(100);
            tx.send_modify(|n| *n += 1);
            while let Ok(Some(_)) = stream.message().await {
                tx.send_modify(|n| *n += 1);
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}
