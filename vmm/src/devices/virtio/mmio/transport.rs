//! virtio-mmio register state machine. Runs on vCPU threads (MMIO exits); hands the
//! queues to the device on DRIVER_OK. Register offsets per virtio 1.2 section 4.2.2.

use std::sync::{Arc, Mutex};

use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::interrupt::MmioInterrupt;
use crate::devices::bus::BusDevice;
use crate::devices::virtio::{ActivateContext, GuestMemory, VirtioDevice};
use crate::metrics::{inc, VMM_METRICS};

const MMIO_MAGIC_VALUE: u32 = 0x7472_6976; // "virt"
const MMIO_VERSION: u32 = 2;
const VENDOR_ID: u32 = 0;

const REG_MAGIC: u64 = 0x000;
const REG_VERSION: u64 = 0x004;
const REG_DEVICE_ID: u64 = 0x008;
const REG_VENDOR_ID: u64 = 0x00c;
const REG_DEVICE_FEATURES: u64 = 0x010;
const REG_DEVICE_FEATURES_SEL: u64 = 0x014;
const REG_DRIVER_FEATURES: u64 = 0x020;
const REG_DRIVER_FEATURES_SEL: u64 = 0x024;
const REG_QUEUE_SEL: u64 = 0x030;
const REG_QUEUE_NUM_MAX: u64 = 0x034;
const REG_QUEUE_NUM: u64 = 0x038;
const REG_QUEUE_READY: u64 = 0x044;
const REG_QUEUE_NOTIFY: u64 = 0x050;
const REG_INTERRUPT_STATUS: u64 = 0x060;
const REG_INTERRUPT_ACK: u64 = 0x064;
const REG_STATUS: u64 = 0x070;
const REG_QUEUE_DESC_LOW: u64 = 0x080;
const REG_QUEUE_DESC_HIGH: u64 = 0x084;
const REG_QUEUE_DRIVER_LOW: u64 = 0x090;
const REG_QUEUE_DRIVER_HIGH: u64 = 0x094;
const REG_QUEUE_DEVICE_LOW: u64 = 0x0a0;
const REG_QUEUE_DEVICE_HIGH: u64 = 0x0a4;
const REG_CONFIG_GENERATION: u64 = 0x0fc;
/// Offset of the device configuration space.
pub const CONFIG_SPACE: u64 = 0x100;
/// Offset of QueueNotify, where the VMM registers its ioeventfds.
pub const NOTIFY_OFFSET: u64 = REG_QUEUE_NOTIFY;

pub const STATUS_ACKNOWLEDGE: u32 = 1;
pub const STATUS_DRIVER: u32 = 2;
pub const STATUS_DRIVER_OK: u32 = 4;
pub const STATUS_FEATURES_OK: u32 = 8;
pub const STATUS_DEVICE_NEEDS_RESET: u32 = 64;
pub const STATUS_FAILED: u32 = 128;

pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;

pub struct MmioTransport {
    device: Arc<Mutex<dyn VirtioDevice>>,
    mem: GuestMemory,
    interrupt: Arc<MmioInterrupt>,
    queues: Vec<Queue>,
    /// One per queue, registered once as ioeventfd by the VMM; the device gets clones.
    queue_evts: Vec<EventFd>,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    status: u32,
    config_generation: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("queue of size {0} is invalid: {1:?}")]
    Queue(u16, virtio_queue::Error),
    #[error("queue eventfd: {0}")]
    EventFd(std::io::Error),
    #[error("snapshot holds device type {found} where this VM has {expected}")]
    DeviceType { found: u32, expected: u32 },
    #[error("snapshot of device type {device} holds {found} queues, the device has {expected}")]
    QueueCount {
        device: u32,
        found: usize,
        expected: usize,
    },
    #[error("snapshot queue {index} is invalid: {error:?}")]
    SnapshotQueue {
        index: usize,
        error: virtio_queue::Error,
    },
    #[error("snapshot queue {index} has maximum size {found}, the device's is {expected}")]
    SnapshotQueueSize {
        index: usize,
        found: u16,
        expected: u16,
    },
    #[error("device type {0} refused to resume from its snapshot")]
    Activate(u32),
}

fn lock_dev(
    d: &Arc<Mutex<dyn VirtioDevice>>,
) -> std::sync::MutexGuard<'_, dyn VirtioDevice + 'static> {
    d.lock().unwrap_or_else(|p| p.into_inner())
}

impl MmioTransport {
    pub fn new(
        mem: GuestMemory,
        device: Arc<Mutex<dyn VirtioDevice>>,
        interrupt: Arc<MmioInterrupt>,
    ) -> Result<Self, TransportError> {
        let sizes = lock_dev(&device).queue_max_sizes().to_vec();
        let mut queues = Vec::with_capacity(sizes.len());
        let mut queue_evts = Vec::with_capacity(sizes.len());
        for size in sizes {
            queues.push(Queue::new(size).map_err(|e| TransportError::Queue(size, e))?);
            queue_evts.push(EventFd::new(libc::EFD_NONBLOCK).map_err(TransportError::EventFd)?);
        }
        Ok(Self {
            device,
            mem,
            interrupt,
            queues,
            queue_evts,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            status: 0,
            config_generation: 0,
        })
    }

    pub fn queue_evts(&self) -> &[EventFd] {
        &self.queue_evts
    }

    pub fn interrupt(&self) -> &Arc<MmioInterrupt> {
        &self.interrupt
    }

    pub fn status(&self) -> u32 {
        self.status
    }

    fn device_features(&self) -> u64 {
        lock_dev(&self.device).avail_features() | VIRTIO_F_VERSION_1
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// Queue registers may change only between FEATURES_OK and DRIVER_OK.
    fn queue_setup_allowed(&self) -> bool {
        self.status & (STATUS_FEATURES_OK | STATUS_DRIVER_OK | STATUS_FAILED) == STATUS_FEATURES_OK
    }

    fn invalid(&self, what: &str, value: u32) {
        inc(&VMM_METRICS.mmio_transport_invalid);
        crate::rl_log!(
            warn,
            "virtio-mmio: {what} (value {value:#x}, status {:#x})",
            self.status
        );
    }

    fn reset(&mut self) {
        {
            let mut dev = lock_dev(&self.device);
            if dev.is_activated() && dev.reset().is_none() {
                log::warn!("virtio-mmio: device cannot be reset; it stays active");
            }
        }
        for q in &mut self.queues {
            q.reset();
        }
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.status = 0;
        self.interrupt.clear();
    }

    fn activate(&mut self) -> bool {
        for (i, q) in self.queues.iter().enumerate() {
            if !q.ready() || !q.is_valid(&self.mem) {
                log::error!("virtio-mmio: queue {i} not ready or invalid at DRIVER_OK");
                return false;
            }
        }
        // Queue is not Clone; its state snapshot rebuilds an equal copy for the device.
        let mut queues = Vec::with_capacity(self.queues.len());
        for (i, q) in self.queues.iter().enumerate() {
            match Queue::try_from(q.state()) {
                Ok(copy) => queues.push(copy),
                Err(e) => {
                    log::error!("virtio-mmio: queue {i}: {e:?}");
                    return false;
                }
            }
        }
        let mut evts = Vec::with_capacity(self.queue_evts.len());
        for e in &self.queue_evts {
            match e.try_clone() {
                Ok(c) => evts.push(c),
                Err(err) => {
                    log::error!("virtio-mmio: cloning queue eventfd: {err}");
                    return false;
                }
            }
        }
        let ctx = ActivateContext {
            mem: self.mem.clone(),
            queues,
            queue_evts: evts,
            interrupt: self.interrupt.clone(),
        };
        match lock_dev(&self.device).activate(ctx) {
            Ok(()) => true,
            Err(e) => {
                log::error!("virtio-mmio: device activation failed: {e}");
                false
            }
        }
    }

    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        if value & STATUS_FAILED != 0 {
            self.status |= STATUS_FAILED;
            return;
        }
        let old = self.status;
        // The driver sets one new bit at a time, in this order (virtio 1.2, 3.1.1).
        let next = match old {
            0 => STATUS_ACKNOWLEDGE,
            STATUS_ACKNOWLEDGE => STATUS_ACKNOWLEDGE | STATUS_DRIVER,
            s if s == STATUS_ACKNOWLEDGE | STATUS_DRIVER => s | STATUS_FEATURES_OK,
            s if s == STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK => {
                s | STATUS_DRIVER_OK
            }
            _ => 0,
        };
        if value != next {
            self.invalid("unexpected device status transition", value);
            return;
        }
        if value & !old == STATUS_FEATURES_OK {
            if self.driver_features & VIRTIO_F_VERSION_1 == 0 {
                // Leaving FEATURES_OK clear tells the driver we refuse (legacy not offered).
                self.invalid("driver did not accept VIRTIO_F_VERSION_1", value);
                return;
            }
            lock_dev(&self.device).set_acked_features(self.driver_features & !VIRTIO_F_VERSION_1);
        }
        if value & !old == STATUS_DRIVER_OK && !self.activate() {
            self.status |= STATUS_DEVICE_NEEDS_RESET;
            self.config_generation = self.config_generation.wrapping_add(1);
            return;
        }
        self.status = value;
    }

    fn read_reg(&mut self, offset: u64) -> u32 {
        match offset {
            REG_MAGIC => MMIO_MAGIC_VALUE,
            REG_VERSION => MMIO_VERSION,
            REG_DEVICE_ID => lock_dev(&self.device).device_type(),
            REG_VENDOR_ID => VENDOR_ID,
            REG_DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device_features() as u32,
                1 => (self.device_features() >> 32) as u32,
                _ => 0,
            },
            REG_QUEUE_NUM_MAX => self.selected_queue().map_or(0, |q| u32::from(q.max_size())),
            REG_QUEUE_READY => self.selected_queue().map_or(0, |q| u32::from(q.ready())),
            REG_INTERRUPT_STATUS => self.interrupt.status(),
            REG_STATUS => self.status,
            REG_CONFIG_GENERATION => self.config_generation,
            _ => {
                self.invalid("read of unknown or write-only register", offset as u32);
                0
            }
        }
    }

    fn write_queue_reg(&mut self, offset: u64, v: u32) {
        if !self.queue_setup_allowed() {
            self.invalid("queue register write outside FEATURES_OK", v);
            return;
        }
        let Some(q) = self.selected_queue() else {
            self.invalid("queue register write with invalid QueueSel", v);
            return;
        };
        match offset {
            REG_QUEUE_NUM => q.set_size(v as u16),
            REG_QUEUE_READY => q.set_ready(v == 1),
            REG_QUEUE_DESC_LOW => q.set_desc_table_address(Some(v), None),
            REG_QUEUE_DESC_HIGH => q.set_desc_table_address(None, Some(v)),
            REG_QUEUE_DRIVER_LOW => q.set_avail_ring_address(Some(v), None),
            REG_QUEUE_DRIVER_HIGH => q.set_avail_ring_address(None, Some(v)),
            REG_QUEUE_DEVICE_LOW => q.set_used_ring_address(Some(v), None),
            REG_QUEUE_DEVICE_HIGH => q.set_used_ring_address(None, Some(v)),
            _ => {}
        }
    }

    fn write_reg(&mut self, offset: u64, v: u32) {
        match offset {
            REG_DEVICE_FEATURES_SEL => self.device_features_sel = v,
            REG_DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            REG_DRIVER_FEATURES => {
                if self.status != STATUS_ACKNOWLEDGE | STATUS_DRIVER {
                    self.invalid("feature write outside negotiation", v);
                    return;
                }
                let shift = match self.driver_features_sel {
                    0 => 0,
                    1 => 32,
                    _ => return self.invalid("DriverFeaturesSel out of range", v),
                };
                let mask = 0xffff_ffffu64 << shift;
                let offered = self.device_features();
                let wanted = u64::from(v) << shift;
                if wanted & !offered != 0 {
                    self.invalid("driver acked features the device did not offer", v);
                }
                self.driver_features = (self.driver_features & !mask) | (wanted & offered);
            }
            REG_QUEUE_SEL => self.queue_sel = v,
            REG_QUEUE_NUM
            | REG_QUEUE_READY
            | REG_QUEUE_DESC_LOW
            | REG_QUEUE_DESC_HIGH
            | REG_QUEUE_DRIVER_LOW
            | REG_QUEUE_DRIVER_HIGH
            | REG_QUEUE_DEVICE_LOW
            | REG_QUEUE_DEVICE_HIGH => self.write_queue_reg(offset, v),
            REG_QUEUE_NOTIFY => {
                // Normally KVM consumes these through the ioeventfd; this is the fallback.
                match self.queue_evts.get(v as usize) {
                    Some(evt) => {
                        if let Err(e) = evt.write(1) {
                            crate::rl_log!(warn, "virtio-mmio: queue notify: {e}");
                        }
                    }
                    None => self.invalid("notify for a queue that does not exist", v),
                }
            }
            REG_INTERRUPT_ACK => self.interrupt.ack(v),
            REG_STATUS => self.set_status(v),
            _ => self.invalid("write to unknown or read-only register", offset as u32),
        }
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE {
            lock_dev(&self.device).read_config(offset - CONFIG_SPACE, data);
            return;
        }
        if data.len() != 4 {
            data.fill(0);
            self.invalid("register read with width != 4", data.len() as u32);
            return;
        }
        let v = self.read_reg(offset);
        data.copy_from_slice(&v.to_le_bytes());
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE {
            lock_dev(&self.device).write_config(offset - CONFIG_SPACE, data);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            self.invalid("register write with width != 4", data.len() as u32);
            return;
        };
        self.write_reg(offset, u32::from_le_bytes(bytes));
    }
}

#[path = "transport_state.rs"]
mod state;
pub use state::{QueueSnapshot, TransportState};

#[cfg(test)]
#[path = "transport_tests.rs"]
mod tests;
