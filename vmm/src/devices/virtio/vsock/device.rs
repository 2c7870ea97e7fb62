//! The virtio-vsock device: queues, config space and packet routing to the muxer.

use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::Arc;

use virtio_queue::{Queue, QueueOwnedT, QueueState, QueueT};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::defs::{
    EVENT_TRANSPORT_RESET, EVQ, MAX_PKT_PAYLOAD, MIN_GUEST_CID, NUM_QUEUES, QUEUE_SIZE, RXQ, TXQ,
    VIRTIO_ID_VSOCK,
};
use super::metrics::{self, VsockMetrics};
use super::packet::{read_tx_packet, write_event, PacketError, RxBuffer};
use super::unix::{MuxerError, VsockMuxer};
use super::VsockError;
use crate::devices::virtio::{
    ActivateContext, ActivateError, GuestMemory, VirtioDevice, VirtioInterrupt,
};

/// `VIRTIO_F_VERSION_1`; the transport adds it anyway, we state it for clarity.
const VIRTIO_F_VERSION_1: u64 = 1 << 32;

/// What the device holds between DRIVER_OK and reset.
pub(crate) struct Active {
    pub(crate) mem: GuestMemory,
    pub(crate) queues: Vec<Queue>,
    pub(crate) queue_evts: Vec<EventFd>,
    pub(crate) interrupt: Arc<dyn VirtioInterrupt>,
}

pub struct Vsock {
    cid: u64,
    pub(crate) muxer: VsockMuxer,
    metrics: Arc<VsockMetrics>,
    acked_features: u64,
    pub(crate) activate_evt: EventFd,
    pub(crate) active: Option<Active>,
    /// Queue eventfds this device registered with the event manager (kept across reset,
    /// since the transport hands the same eventfds back on re-activation).
    pub(crate) registered_queue_fds: Vec<RawFd>,
    pending_transport_reset: bool,
    /// Scratch buffers for one packet payload each way (no per-packet allocation).
    rx_scratch: Vec<u8>,
    tx_scratch: Vec<u8>,
    /// TX processing stopped because guest-bound control packets backed up.
    tx_stalled: bool,
}

impl std::fmt::Debug for Vsock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Vsock")
            .field("cid", &self.cid)
            .field("muxer", &self.muxer)
            .field("active", &self.active.is_some())
            .finish()
    }
}

impl From<MuxerError> for VsockError {
    fn from(e: MuxerError) -> Self {
        VsockError::Backend(e)
    }
}

impl Vsock {
    /// A vsock device for guest `cid` whose host side listens on `uds_path`.
    pub fn new(cid: u64, uds_path: PathBuf) -> Result<Vsock, VsockError> {
        if cid < MIN_GUEST_CID || cid > u64::from(u32::MAX) {
            return Err(VsockError::InvalidCid(cid));
        }
        let metrics = Arc::new(VsockMetrics::default());
        let muxer = VsockMuxer::new(cid, uds_path, Arc::clone(&metrics))?;
        let activate_evt = EventFd::new(EFD_NONBLOCK).map_err(VsockError::EventFd)?;
        Ok(Vsock {
            cid,
            muxer,
            metrics,
            acked_features: 0,
            activate_evt,
            active: None,
            registered_queue_fds: Vec::new(),
            pending_transport_reset: false,
            rx_scratch: vec![0; MAX_PKT_PAYLOAD],
            tx_scratch: Vec::with_capacity(MAX_PKT_PAYLOAD),
            tx_stalled: false,
        })
    }

    pub fn cid(&self) -> u64 {
        self.cid
    }

    pub fn metrics(&self) -> Arc<VsockMetrics> {
        Arc::clone(&self.metrics)
    }

    /// Open guest<->host connections.
    pub fn num_connections(&self) -> usize {
        self.muxer.num_connections()
    }

    /// The host socket path clients connect to.
    pub fn uds_path(&self) -> &std::path::Path {
        self.muxer.uds_path()
    }

    /// Caps concurrent connections (default `defs::MAX_CONNECTIONS`).
    pub fn set_max_connections(&mut self, n: usize) {
        self.muxer.set_max_connections(n);
    }

    /// Backend fd the event loop must poll (the muxer's epoll set).
    pub fn backend_fd(&self) -> RawFd {
        self.muxer.as_raw_fd()
    }

    /// Queues a TRANSPORT_RESET event: the guest drops all its vsock connections. Sent
    /// automatically after the device is reset and re-activated.
    pub fn send_transport_reset(&mut self) {
        self.pending_transport_reset = true;
        self.process_evq();
    }

    fn signal(&self, queue: usize) {
        if let Some(a) = &self.active {
            // `queue` is one of our three queue indices.
            if a.interrupt.signal_used_queue(queue as u16).is_err() {
                metrics::inc(&self.metrics.device_errors);
            }
        }
    }

    /// Moves guest packets to the muxer. Returns whether any chain was consumed.
    pub(crate) fn process_tx(&mut self) -> bool {
        let Some(active) = self.active.as_mut() else {
            return false;
        };
        let mut used = false;
        self.tx_stalled = false;
        loop {
            if self.muxer.control_full() {
                self.tx_stalled = true;
                break;
            }
            let Some(chain) = active.queues[TXQ].pop_descriptor_chain(&active.mem) else {
                break;
            };
            let head = chain.head_index();
            match read_tx_packet(chain, &active.mem, &mut self.tx_scratch) {
                Ok(hdr) => {
                    metrics::inc(&self.metrics.tx_packets);
                    self.muxer.send_pkt(&hdr, &self.tx_scratch);
                }
                Err(e) => count_tx_error(&self.metrics, &e),
            }
            if active.queues[TXQ].add_used(&active.mem, head, 0).is_err() {
                metrics::inc(&self.metrics.device_errors);
            }
            used = true;
        }
        if used {
            self.signal(TXQ);
        }
        used
    }

    /// Fills guest receive buffers with what the muxer has. Returns whether any was used.
    pub(crate) fn process_rx(&mut self) -> bool {
        let Some(active) = self.active.as_mut() else {
            return false;
        };
        let mut used = false;
        while self.muxer.has_pending_rx() {
            let Some(chain) = active.queues[RXQ].pop_descriptor_chain(&active.mem) else {
                break;
            };
            let head = chain.head_index();
            let buf = match RxBuffer::new(chain, &active.mem) {
                Ok(b) => b,
                Err(_) => {
                    metrics::inc(&self.metrics.drop_short_rx_desc);
                    if active.queues[RXQ].add_used(&active.mem, head, 0).is_err() {
                        metrics::inc(&self.metrics.device_errors);
                    }
                    used = true;
                    continue;
                }
            };
            let cap = buf.payload_capacity();
            let Some((hdr, len)) = self.muxer.recv_pkt(&mut self.rx_scratch[..cap]) else {
                // Nothing after all (the host socket had no data): give the chain back.
                active.queues[RXQ].go_to_previous_position();
                break;
            };
            let written = match buf.write(&hdr, &self.rx_scratch[..len]) {
                Ok(n) => {
                    metrics::inc(&self.metrics.rx_packets);
                    metrics::add(&self.metrics.rx_bytes, len as u64);
                    n
                }
                Err(_) => {
                    metrics::inc(&self.metrics.device_errors);
                    0
                }
            };
            if active.queues[RXQ]
                .add_used(&active.mem, head, written)
                .is_err()
            {
                metrics::inc(&self.metrics.device_errors);
            }
            used = true;
        }
        if used {
            self.signal(RXQ);
        }
        used
    }

    /// RX then, if TX was held back by a full control queue, TX again, until settled.
    pub(crate) fn process_all(&mut self) {
        // Bounded: each round either makes progress or stops.
        for _ in 0..4 {
            self.process_rx();
            if !self.tx_stalled || self.muxer.control_full() {
                break;
            }
            self.process_tx();
        }
    }

    pub(crate) fn process_evq(&mut self) {
        if !self.pending_transport_reset {
            return;
        }
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let Some(chain) = active.queues[EVQ].pop_descriptor_chain(&active.mem) else {
            return;
        };
        let head = chain.head_index();
        let len = match write_event(chain, &active.mem, EVENT_TRANSPORT_RESET) {
            Ok(n) => {
                self.pending_transport_reset = false;
                metrics::inc(&self.metrics.events_sent);
                n
            }
            Err(_) => {
                metrics::inc(&self.metrics.drop_short_rx_desc);
                0
            }
        };
        if active.queues[EVQ].add_used(&active.mem, head, len).is_err() {
            metrics::inc(&self.metrics.device_errors);
        }
        self.signal(EVQ);
    }

    pub(crate) fn process_backend(&mut self) {
        self.muxer.process_events();
        self.process_all();
    }
}

fn count_tx_error(m: &VsockMetrics, e: &PacketError) {
    match e {
        PacketError::LenTooLarge { .. } | PacketError::LenExceedsBuffer { .. } => {
            metrics::inc(&m.drop_bad_len)
        }
        PacketError::ShortDescriptor(_) | PacketError::Chain(_) | PacketError::Memory(_) => {
            metrics::inc(&m.drop_short_desc)
        }
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE; NUM_QUEUES]
    }

    fn avail_features(&self) -> u64 {
        VIRTIO_F_VERSION_1
    }

    fn set_acked_features(&mut self, acked: u64) {
        self.acked_features = acked & self.avail_features();
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        // Config space is `le64 guest_cid`.
        let cfg = self.cid.to_le_bytes();
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| o.checked_add(i))
                .and_then(|at| cfg.get(at).copied())
                .unwrap_or(0);
        }
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        // guest_cid is read-only.
    }

    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        if self.active.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        if ctx.queues.len() != NUM_QUEUES || ctx.queue_evts.len() != NUM_QUEUES {
            return Err(ActivateError::QueueCount {
                expected: NUM_QUEUES,
                got: ctx.queues.len().min(ctx.queue_evts.len()),
            });
        }
        self.activate_evt.write(1).map_err(ActivateError::EventFd)?;
        self.active = Some(Active {
            mem: ctx.mem,
            queues: ctx.queues,
            queue_evts: ctx.queue_evts,
            interrupt: ctx.interrupt,
        });
        log::info!(
            "vsock: guest driver activated the device (DRIVER_OK, {NUM_QUEUES} queues ready, guest cid {})",
            self.cid
        );
        Ok(())
    }

    fn reset(&mut self) -> Option<Vec<EventFd>> {
        let active = self.active.take()?;
        self.muxer.reset();
        // After re-activation the guest must forget connections it may still track.
        self.pending_transport_reset = true;
        self.tx_stalled = false;
        Some(active.queue_evts)
    }

    fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    fn queue_states(&self) -> Vec<QueueState> {
        self.active
            .iter()
            .flat_map(|a| a.queues.iter().map(|q| q.state()))
            .collect()
    }

    /// The host ends of the guest's connections are gone (a new process, a new muxer):
    /// as Firecracker does, the guest learns it from a TRANSPORT_RESET event.
    fn restored(&mut self) {
        self.send_transport_reset();
    }
}
