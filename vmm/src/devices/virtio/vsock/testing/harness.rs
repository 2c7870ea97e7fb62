//! A vsock device activated on mock queues and run by a real event-manager loop.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_manager::{EventManager, SubscriberOps};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::driver::{GuestDriver, Seg, TestInterrupt};
use crate::devices::virtio::vsock::defs::{EVQ, NUM_QUEUES, RXQ, TXQ};
use crate::devices::virtio::vsock::packet::{VsockHeader, HDR_SIZE};
use crate::devices::virtio::vsock::{Vsock, VsockError, VsockMetrics};
use crate::devices::virtio::{ActivateContext, VirtioDevice};

type Em = EventManager<Arc<Mutex<Vsock>>>;

pub struct VsockHarness {
    pub device: Arc<Mutex<Vsock>>,
    em: Em,
    pub driver: GuestDriver,
    kicks: Vec<EventFd>,
    pub interrupt: Arc<TestInterrupt>,
    pub metrics: Arc<VsockMetrics>,
    /// Size of the receive buffers the harness keeps posted.
    rx_buf_size: u32,
    /// Post receive buffers as two descriptors (header, data), as older Linux does.
    rx_split: bool,
}

impl VsockHarness {
    /// Creates and activates the device; posts `rx_bufs` receive buffers of
    /// `rx_buf_size` bytes (header included).
    pub fn new(
        cid: u64,
        uds: PathBuf,
        rx_bufs: usize,
        rx_buf_size: u32,
    ) -> Result<Self, VsockError> {
        let vsock = Vsock::new(cid, uds)?;
        let metrics = vsock.metrics();
        let device = Arc::new(Mutex::new(vsock));
        let mut em = Em::new().expect("event manager");
        em.add_subscriber(Arc::clone(&device));
        let (driver, queues) = GuestDriver::new();
        let mut evts = Vec::new();
        let mut kicks = Vec::new();
        for _ in 0..NUM_QUEUES {
            let e = EventFd::new(EFD_NONBLOCK).expect("eventfd");
            kicks.push(e.try_clone().expect("eventfd clone"));
            evts.push(e);
        }
        let interrupt = Arc::new(TestInterrupt::default());
        let mut h = VsockHarness {
            device,
            em,
            driver,
            kicks,
            interrupt: Arc::clone(&interrupt),
            metrics,
            rx_buf_size,
            rx_split: false,
        };
        for _ in 0..rx_bufs {
            h.post_rx();
        }
        let ctx = ActivateContext {
            mem: h.driver.mem.clone(),
            queues,
            queue_evts: evts,
            interrupt,
        };
        h.dev().activate(ctx).expect("activate");
        h.pump();
        Ok(h)
    }

    /// Resets the device as a driver writing status 0 would, then activates it again on
    /// fresh queues (in the same guest memory) with the same queue eventfds, which is
    /// what the transport hands back.
    pub fn reset_and_reactivate(&mut self, rx_bufs: usize) {
        let evts = self.dev().reset().expect("reset of an active device");
        self.pump();
        let (driver, queues) = GuestDriver::with_memory(self.driver.mem.clone());
        self.driver = driver;
        for _ in 0..rx_bufs {
            self.post_rx();
        }
        let ctx = ActivateContext {
            mem: self.driver.mem.clone(),
            queues,
            queue_evts: evts,
            interrupt: Arc::clone(&self.interrupt)
                as Arc<dyn crate::devices::virtio::VirtioInterrupt>,
        };
        self.dev().activate(ctx).expect("re-activate");
        self.pump();
    }

    /// Switches to two-descriptor receive buffers for buffers posted from now on.
    pub fn set_rx_split(&mut self, split: bool) {
        self.rx_split = split;
    }

    pub fn dev(&self) -> std::sync::MutexGuard<'_, Vsock> {
        self.device.lock().expect("vsock mutex")
    }

    fn post_rx(&mut self) -> bool {
        let size = self.rx_buf_size;
        let segs_split = [
            Seg {
                len: HDR_SIZE as u32,
                writable: true,
                data: &[],
            },
            Seg {
                len: size.saturating_sub(HDR_SIZE as u32),
                writable: true,
                data: &[],
            },
        ];
        let segs_one = [Seg {
            len: size,
            writable: true,
            data: &[],
        }];
        let segs: &[Seg<'_>] = if self.rx_split && size > HDR_SIZE as u32 {
            &segs_split
        } else {
            &segs_one
        };
        self.driver.add_chain(RXQ, segs).is_some()
    }

    pub fn kick(&self, q: usize) {
        self.kicks[q].write(1).expect("kick");
    }

    /// Runs the event loop until it has nothing to do right now.
    pub fn pump(&mut self) {
        for _ in 0..1000 {
            match self.em.run_with_timeout(0) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    }

    /// One event-loop iteration waiting up to `ms`; returns the events dispatched.
    pub fn run_once(&mut self, ms: i32) -> usize {
        self.em.run_with_timeout(ms).unwrap_or(0)
    }

    /// Runs the event loop, waiting up to `ms` for the first event.
    pub fn pump_wait(&mut self, ms: i32) {
        let _ = self.em.run_with_timeout(ms);
        self.pump();
    }

    /// Sends one packet from the guest: header and payload in separate descriptors.
    pub fn send(&mut self, hdr: &VsockHeader, payload: &[u8]) {
        let raw = hdr.to_bytes();
        let head = Seg {
            len: HDR_SIZE as u32,
            writable: false,
            data: &raw,
        };
        let body = Seg {
            len: payload.len() as u32,
            writable: false,
            data: payload,
        };
        let posted = if payload.is_empty() {
            self.driver.add_chain(TXQ, &[head])
        } else {
            self.driver.add_chain(TXQ, &[head, body])
        };
        assert!(posted.is_some(), "TX descriptors exhausted");
        self.kick(TXQ);
        self.pump();
        self.reap_tx();
    }

    /// Posts a raw TX chain (malformed input) and lets the device process it.
    pub fn send_raw(&mut self, descs: &[(u64, u32, u16, u16)]) {
        assert!(
            self.driver.add_raw_chain(TXQ, descs).is_some(),
            "TX descriptors exhausted"
        );
        self.kick(TXQ);
        self.pump();
        self.reap_tx();
    }

    /// Frees TX chains the device has consumed; returns how many.
    pub fn reap_tx(&mut self) -> usize {
        let mut n = 0;
        while self.driver.pop_used(TXQ).is_some() {
            n += 1;
        }
        n
    }

    /// Packets the device delivered; re-posts a receive buffer for each.
    pub fn recv(&mut self) -> Vec<(VsockHeader, Vec<u8>)> {
        let mut out = Vec::new();
        while let Some((_, len, descs)) = self.driver.pop_used(RXQ) {
            let mut bytes = Vec::with_capacity(len as usize);
            let mut left = len;
            for d in &descs {
                if left == 0 {
                    break;
                }
                // Slot lengths follow how the chain was posted.
                let seg_len = if descs.len() == 2 && *d == descs[0] {
                    HDR_SIZE as u32
                } else {
                    left
                };
                let take = seg_len.min(left);
                bytes.extend(self.driver.read_slot(RXQ, *d, take));
                left -= take;
            }
            if bytes.len() >= HDR_SIZE {
                let mut raw = [0u8; HDR_SIZE];
                raw.copy_from_slice(&bytes[..HDR_SIZE]);
                out.push((VsockHeader::from_bytes(&raw), bytes[HDR_SIZE..].to_vec()));
            }
            self.post_rx();
        }
        if !out.is_empty() {
            self.kick(RXQ);
        }
        out
    }

    /// Pumps until `pred` holds for the packets received so far or `timeout` passes.
    pub fn recv_until(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&[(VsockHeader, Vec<u8>)]) -> bool,
    ) -> Vec<(VsockHeader, Vec<u8>)> {
        let deadline = Instant::now() + timeout;
        let mut all = Vec::new();
        loop {
            self.pump_wait(5);
            all.extend(self.recv());
            if pred(&all) || Instant::now() >= deadline {
                return all;
            }
        }
    }

    /// Posts an event-queue buffer and returns the event ids the device wrote.
    pub fn post_event_buffer(&mut self) {
        let seg = Seg {
            len: 8,
            writable: true,
            data: &[],
        };
        self.driver.add_chain(EVQ, &[seg]);
        self.kick(EVQ);
        self.pump();
    }

    pub fn pop_event(&mut self) -> Option<u32> {
        let (_, len, descs) = self.driver.pop_used(EVQ)?;
        let bytes = self.driver.read_slot(EVQ, *descs.first()?, len);
        let id: [u8; 4] = bytes.get(..4)?.try_into().ok()?;
        Some(u32::from_le_bytes(id))
    }

    /// Interrupts raised so far for queue `q`.
    pub fn interrupts(&self, q: usize) -> u64 {
        self.interrupt.used[q].load(Ordering::Relaxed)
    }

    pub fn metric(&self, name: &str) -> u64 {
        self.metrics
            .snapshot()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .unwrap_or_else(|| panic!("no metric {name}"))
    }
}
