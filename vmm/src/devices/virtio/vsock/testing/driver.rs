//! The driver side of three split virtqueues in test guest memory.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::devices::virtio::vsock::defs::{NUM_QUEUES, QUEUE_SIZE};
use crate::devices::virtio::{GuestMemory, VirtioInterrupt};

const VRING_DESC_F_NEXT: u16 = 1;
const VRING_DESC_F_WRITE: u16 = 2;

/// Every descriptor index of every queue owns a buffer slot of this size.
pub const RX_SLOT_SIZE: u32 = 0x11000;
const BUFFERS_BASE: u64 = 0x10_0000;
const MEM_SIZE: usize =
    BUFFERS_BASE as usize + NUM_QUEUES * QUEUE_SIZE as usize * RX_SLOT_SIZE as usize;

/// Counts interrupts per queue.
#[derive(Debug, Default)]
pub struct TestInterrupt {
    pub used: [AtomicU64; NUM_QUEUES],
    pub config: AtomicU64,
}

impl VirtioInterrupt for TestInterrupt {
    fn signal_used_queue(&self, queue_index: u16) -> std::io::Result<()> {
        match self.used.get(queue_index as usize) {
            Some(c) => {
                c.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            None => Err(std::io::Error::other("bad queue index")),
        }
    }

    fn signal_config_change(&self) -> std::io::Result<()> {
        self.config.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

struct DriverQueue {
    desc: GuestAddress,
    avail: GuestAddress,
    used: GuestAddress,
    free: Vec<u16>,
    chains: HashMap<u16, Vec<u16>>,
    avail_idx: u16,
    last_used: u16,
}

/// Lays out one split queue at `base` and returns the device-side `Queue`.
///
/// `MockSplitQueue` 0.18 places the used ring `len` bytes after the avail ring start
/// (it counts ring elements, not bytes), so for queues longer than 128 entries the used
/// ring overlaps the second half of the avail ring. We keep its descriptor table and
/// queue construction but put the avail and used rings where the spec wants them.
fn make_queue(
    mem: &GuestMemory,
    base: GuestAddress,
) -> (Queue, GuestAddress, GuestAddress, GuestAddress) {
    let mock = MockSplitQueue::create(mem, base, QUEUE_SIZE);
    let mut q: Queue = mock.create_queue().expect("mock queue");
    let desc = mock.desc_table_addr();
    let avail = GuestAddress(desc.0 + 16 * u64::from(QUEUE_SIZE));
    // 6 + 2 * size bytes of avail ring, then the used ring aligned to 4.
    let used = GuestAddress((avail.0 + 6 + 2 * u64::from(QUEUE_SIZE) + 3) & !3);
    for (at, len) in [
        (avail.0, 6 + 2 * u64::from(QUEUE_SIZE)),
        (used.0, 6 + 8 * u64::from(QUEUE_SIZE)),
    ] {
        mem.write_slice(&vec![0u8; len as usize], GuestAddress(at))
            .expect("ring clear");
    }
    q.set_avail_ring_address(Some(avail.0 as u32), Some((avail.0 >> 32) as u32));
    q.set_used_ring_address(Some(used.0 as u32), Some((used.0 >> 32) as u32));
    (q, desc, avail, used)
}

/// One segment of a chain to post: its length, direction and (readable) contents.
#[derive(Debug, Clone, Copy)]
pub struct Seg<'a> {
    pub len: u32,
    pub writable: bool,
    pub data: &'a [u8],
}

/// The guest side of the vsock queues.
pub struct GuestDriver {
    pub mem: GuestMemory,
    queues: Vec<DriverQueue>,
}

impl GuestDriver {
    /// Guest memory plus three queues; returns the device-side `Queue`s to activate with.
    pub fn new() -> (GuestDriver, Vec<Queue>) {
        let mem: GuestMemory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM_SIZE)])
            .expect("test guest memory");
        Self::with_memory(mem)
    }

    /// Fresh queues (empty rings, every descriptor free) in memory from an earlier
    /// driver, as a guest driver re-initialising after a device reset: no new mapping.
    pub fn with_memory(mem: GuestMemory) -> (GuestDriver, Vec<Queue>) {
        let mut queues = Vec::new();
        let mut dq = Vec::new();
        for index in 0..NUM_QUEUES {
            let base = GuestAddress(index as u64 * 0x1_0000);
            let (q, desc, avail, used) = make_queue(&mem, base);
            queues.push(q);
            dq.push(DriverQueue {
                desc,
                avail,
                used,
                free: (0..QUEUE_SIZE).rev().collect(),
                chains: HashMap::new(),
                avail_idx: 0,
                last_used: 0,
            });
        }
        (GuestDriver { mem, queues: dq }, queues)
    }

    /// Address of the buffer slot owned by descriptor `desc` of queue `q`.
    pub fn slot_addr(q: usize, desc: u16) -> GuestAddress {
        GuestAddress(
            BUFFERS_BASE + ((q * QUEUE_SIZE as usize + desc as usize) as u64) * RX_SLOT_SIZE as u64,
        )
    }

    pub fn free_descriptors(&self, q: usize) -> usize {
        self.queues[q].free.len()
    }

    fn write_desc(&self, q: usize, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = self.queues[q].desc.0 + 16 * u64::from(i);
        let m = &self.mem;
        m.write_obj(addr.to_le(), GuestAddress(at))
            .expect("desc addr");
        m.write_obj(len.to_le(), GuestAddress(at + 8))
            .expect("desc len");
        m.write_obj(flags.to_le(), GuestAddress(at + 12))
            .expect("desc flags");
        m.write_obj(next.to_le(), GuestAddress(at + 14))
            .expect("desc next");
    }

    fn publish(&mut self, q: usize, head: u16) {
        let dq = &mut self.queues[q];
        let slot = dq.avail.0 + 4 + 2 * u64::from(dq.avail_idx % QUEUE_SIZE);
        self.mem
            .write_obj(head.to_le(), GuestAddress(slot))
            .expect("avail ring");
        dq.avail_idx = dq.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(dq.avail_idx.to_le(), GuestAddress(dq.avail.0 + 2))
            .expect("avail idx");
    }

    /// Posts a chain whose buffers live in the slots; `None` if descriptors ran out.
    pub fn add_chain(&mut self, q: usize, segs: &[Seg<'_>]) -> Option<u16> {
        if segs.is_empty() || self.queues[q].free.len() < segs.len() {
            return None;
        }
        let idx: Vec<u16> = (0..segs.len())
            .filter_map(|_| self.queues[q].free.pop())
            .collect();
        for (n, seg) in segs.iter().enumerate() {
            let addr = Self::slot_addr(q, idx[n]);
            if !seg.data.is_empty() {
                self.mem.write_slice(seg.data, addr).expect("slot write");
            }
            let mut flags = if seg.writable { VRING_DESC_F_WRITE } else { 0 };
            let next = idx.get(n + 1).copied().unwrap_or(0);
            if n + 1 < segs.len() {
                flags |= VRING_DESC_F_NEXT;
            }
            self.write_desc(q, idx[n], addr.0, seg.len.min(RX_SLOT_SIZE), flags, next);
        }
        let head = idx[0];
        self.queues[q].chains.insert(head, idx);
        self.publish(q, head);
        Some(head)
    }

    /// Posts a chain of raw descriptors (any address, length, flags, `next` index as
    /// given): for feeding the device malformed input.
    pub fn add_raw_chain(&mut self, q: usize, descs: &[(u64, u32, u16, u16)]) -> Option<u16> {
        if descs.is_empty() || self.queues[q].free.len() < descs.len() {
            return None;
        }
        let idx: Vec<u16> = (0..descs.len())
            .filter_map(|_| self.queues[q].free.pop())
            .collect();
        for (n, &(addr, len, flags, next_off)) in descs.iter().enumerate() {
            // `next_off` indexes into this chain; out-of-range values point anywhere.
            let next = idx.get(next_off as usize).copied().unwrap_or(next_off);
            self.write_desc(q, idx[n], addr, len, flags, next);
        }
        let head = idx[0];
        self.queues[q].chains.insert(head, idx);
        self.publish(q, head);
        Some(head)
    }

    /// The next used element of queue `q`: (head, written length, the chain's
    /// descriptor indices). Frees its descriptors.
    pub fn pop_used(&mut self, q: usize) -> Option<(u16, u32, Vec<u16>)> {
        let dq = &mut self.queues[q];
        let used_idx: u16 = u16::from_le(self.mem.read_obj(GuestAddress(dq.used.0 + 2)).ok()?);
        if used_idx == dq.last_used {
            return None;
        }
        let at = dq.used.0 + 4 + 8 * u64::from(dq.last_used % QUEUE_SIZE);
        let id: u32 = u32::from_le(self.mem.read_obj(GuestAddress(at)).ok()?);
        let len: u32 = u32::from_le(self.mem.read_obj(GuestAddress(at + 4)).ok()?);
        dq.last_used = dq.last_used.wrapping_add(1);
        let head = u16::try_from(id).ok()?;
        let descs = dq.chains.remove(&head).unwrap_or_default();
        dq.free.extend(descs.iter().copied());
        Some((head, len, descs))
    }

    /// Writes raw bytes into guest memory (for hand-made descriptors).
    pub fn mem_write(&self, addr: GuestAddress, bytes: &[u8]) {
        self.mem
            .write_slice(bytes, addr)
            .expect("guest memory write");
    }

    /// Reads `len` bytes starting at the slot of descriptor `desc` of queue `q`.
    pub fn read_slot(&self, q: usize, desc: u16, len: u32) -> Vec<u8> {
        let mut v = vec![0u8; len.min(RX_SLOT_SIZE) as usize];
        self.mem
            .read_slice(&mut v, Self::slot_addr(q, desc))
            .expect("slot read");
        v
    }
}
