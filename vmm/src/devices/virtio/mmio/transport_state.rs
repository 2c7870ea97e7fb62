//! A transport's registers and its device's queues as a snapshot keeps them, and their
//! restore into a freshly built transport of the same device, re-activated when the
//! driver had it running.

use serde::{Deserialize, Serialize};
use virtio_queue::{Queue, QueueState, QueueT};

use super::{
    lock_dev, MmioTransport, TransportError, STATUS_DEVICE_NEEDS_RESET, STATUS_DRIVER_OK,
    STATUS_FEATURES_OK, VIRTIO_F_VERSION_1,
};

/// `virtio_queue::QueueState`, which has no serde support.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSnapshot {
    pub max_size: u16,
    pub next_avail: u16,
    pub next_used: u16,
    pub event_idx_enabled: bool,
    pub size: u16,
    pub ready: bool,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
}

impl From<QueueState> for QueueSnapshot {
    fn from(q: QueueState) -> Self {
        Self {
            max_size: q.max_size,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx_enabled,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        }
    }
}

impl From<QueueSnapshot> for QueueState {
    fn from(q: QueueSnapshot) -> Self {
        Self {
            max_size: q.max_size,
            next_avail: q.next_avail,
            next_used: q.next_used,
            event_idx_enabled: q.event_idx_enabled,
            size: q.size,
            ready: q.ready,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportState {
    pub device_type: u32,
    pub status: u32,
    pub driver_features: u64,
    pub device_features_sel: u32,
    pub driver_features_sel: u32,
    pub queue_sel: u32,
    pub config_generation: u32,
    pub interrupt_status: u32,
    pub queues: Vec<QueueSnapshot>,
}

impl MmioTransport {
    /// Taken with the vCPUs paused and the event loop stopped, so nothing moves meanwhile.
    pub fn snapshot(&self) -> TransportState {
        let dev = lock_dev(&self.device);
        // An active device's rings moved on since DRIVER_OK; before it, the transport's
        // copies are the queues' whole state.
        let live = dev.queue_states();
        let queues = if live.len() == self.queues.len() {
            live
        } else {
            self.queues.iter().map(|q| q.state()).collect()
        };
        TransportState {
            device_type: dev.device_type(),
            status: self.status,
            driver_features: self.driver_features,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            queue_sel: self.queue_sel,
            config_generation: self.config_generation,
            interrupt_status: self.interrupt.status(),
            queues: queues.into_iter().map(QueueSnapshot::from).collect(),
        }
    }

    /// Restores registers and queues; a device the driver had running is activated with
    /// the saved rings (checked against guest memory, as at DRIVER_OK), told it was
    /// restored, and kicked once per queue for buffers whose notification the snapshot
    /// process consumed.
    pub fn restore(&mut self, s: &TransportState) -> Result<(), TransportError> {
        let device = lock_dev(&self.device).device_type();
        if s.device_type != device {
            return Err(TransportError::DeviceType {
                found: s.device_type,
                expected: device,
            });
        }
        if s.queues.len() != self.queues.len() {
            return Err(TransportError::QueueCount {
                device,
                found: s.queues.len(),
                expected: self.queues.len(),
            });
        }
        for (index, (q, snap)) in self.queues.iter_mut().zip(&s.queues).enumerate() {
            if snap.max_size != q.max_size() {
                return Err(TransportError::SnapshotQueueSize {
                    index,
                    found: snap.max_size,
                    expected: q.max_size(),
                });
            }
            *q = Queue::try_from(QueueState::from(*snap))
                .map_err(|error| TransportError::SnapshotQueue { index, error })?;
        }
        self.status = s.status;
        self.driver_features = s.driver_features;
        self.device_features_sel = s.device_features_sel;
        self.driver_features_sel = s.driver_features_sel;
        self.queue_sel = s.queue_sel;
        self.config_generation = s.config_generation;
        self.interrupt.restore_status(s.interrupt_status);
        if s.status & STATUS_FEATURES_OK != 0 {
            lock_dev(&self.device).set_acked_features(s.driver_features & !VIRTIO_F_VERSION_1);
        }
        let running = s.status & STATUS_DRIVER_OK != 0 && s.status & STATUS_DEVICE_NEEDS_RESET == 0;
        if running {
            if !self.activate() {
                return Err(TransportError::Activate(device));
            }
            lock_dev(&self.device).restored();
            for evt in &self.queue_evts {
                if let Err(e) = evt.write(1) {
                    log::warn!("virtio-mmio: kicking a restored queue: {e}");
                }
            }
        }
        Ok(())
    }
}
