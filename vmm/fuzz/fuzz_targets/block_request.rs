//! Fuzzes the virtio-blk device through its request queue.
//!
//! Run: `tests/fuzz.sh vmm/block_request` (or `cargo fuzz run block_request` here).
//! Input: the first byte picks the mode. Structured (even): up to eight requests with
//! fuzzed type, sector, header and status shape and data segments (length, direction),
//! laid out as a guest driver would; every outcome is checked against a model of the
//! virtio 1.2 section 5.2.6 rules (status byte, used length, data read, disk written).
//! Raw (odd): the descriptor table, the available ring and guest memory are fuzzed bytes;
//! the device must return every chain it took, with ids inside the queue (unless the
//! guest let it write over the rings), and never grow or touch the disk outside its
//! capacity.
//!
//! Setup is paid once: guest memory, the disk (a memfd) and the devices are reused; each
//! input rewrites the disk pattern and the queue area and re-activates the device.
#![no_main]

use std::cell::RefCell;
use std::fs::File;
use std::os::fd::FromRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm::devices::virtio::block::request::*;
use vmm::devices::virtio::block::Block;
use vmm::devices::virtio::{ActivateContext, GuestMemory, VirtioDevice, VirtioInterrupt};
use vmm_sys_util::eventfd::EventFd;

const QSIZE: u16 = 16;
const DESC: u64 = 0x0;
const AVAIL: u64 = 0x100;
const USED: u64 = 0x200;
/// Headers, data buffers and status bytes live here; the guest has this much memory.
const AREA: u64 = 0x1000;
const MEM: u64 = 0x2_0000;
const SECTORS: u64 = 16;
const DISK: usize = (SECTORS * SECTOR_SIZE) as usize;
const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;

struct NoIrq;
impl VirtioInterrupt for NoIrq {
    fn signal_used_queue(&self, _q: u16) -> std::io::Result<()> {
        Ok(())
    }
    fn signal_config_change(&self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Fixture {
    mem: GuestMemory,
    disk: File,
    rw: Block,
    ro: Block,
}

fn memfd() -> File {
    // SAFETY: memfd_create with a NUL-terminated name; the fd it returns is owned by the
    // File below and by nothing else.
    let fd = unsafe { libc::memfd_create(c"blk-fuzz".as_ptr(), 0) };
    assert!(fd >= 0, "memfd_create");
    // SAFETY: `fd` was just created and is not owned elsewhere.
    unsafe { File::from_raw_fd(fd) }
}

impl Fixture {
    fn new() -> Self {
        let disk = memfd();
        disk.set_len(DISK as u64).expect("disk size");
        let dup = |f: &File| f.try_clone().expect("dup disk");
        let path = Path::new("memfd:blk-fuzz");
        Self {
            mem: GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM as usize)]).expect("memory"),
            rw: Block::from_file(dup(&disk), path, false).expect("rw block"),
            ro: Block::from_file(dup(&disk), path, true).expect("ro block"),
            disk,
        }
    }
}

thread_local! {
    static FIXTURE: RefCell<Fixture> = RefCell::new(Fixture::new());
}

fn pattern() -> Vec<u8> {
    (0..DISK)
        .map(|i| (i / 512) as u8 ^ (i as u8).rotate_left(3))
        .collect()
}

/// Writes descriptor `i` of the table.
fn put_desc(mem: &GuestMemory, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
    let mut raw = [0u8; 16];
    raw[..8].copy_from_slice(&addr.to_le_bytes());
    raw[8..12].copy_from_slice(&len.to_le_bytes());
    raw[12..14].copy_from_slice(&flags.to_le_bytes());
    raw[14..].copy_from_slice(&next.to_le_bytes());
    mem.write_slice(&raw, GuestAddress(DESC + 16 * u64::from(i)))
        .expect("descriptor table");
}

fn set_avail(mem: &GuestMemory, heads: &[u16]) {
    for (i, h) in heads.iter().enumerate() {
        mem.write_obj(h.to_le(), GuestAddress(AVAIL + 4 + 2 * i as u64))
            .expect("avail ring");
    }
    mem.write_obj((heads.len() as u16).to_le(), GuestAddress(AVAIL + 2))
        .expect("avail idx");
}

fn queue() -> Queue {
    let mut q = Queue::new(256).expect("queue");
    q.set_size(QSIZE);
    q.set_desc_table_address(Some(DESC as u32), Some(0));
    q.set_avail_ring_address(Some(AVAIL as u32), Some(0));
    q.set_used_ring_address(Some(USED as u32), Some(0));
    q.set_ready(true);
    q
}

/// Activates `dev` on a fresh queue, serves it and resets it; returns the used ring.
fn serve(dev: &mut Block, mem: &GuestMemory) -> Vec<(u32, u32)> {
    let ctx = ActivateContext {
        mem: mem.clone(),
        queues: vec![queue()],
        queue_evts: vec![EventFd::new(libc::EFD_NONBLOCK).expect("eventfd")],
        interrupt: Arc::new(NoIrq),
    };
    dev.activate(ctx).expect("activate");
    dev.process_queue();
    dev.reset();
    let idx: u16 = mem.read_obj(GuestAddress(USED + 2)).expect("used idx");
    (0..idx.min(QSIZE))
        .map(|i| {
            let at = USED + 4 + 8 * u64::from(i);
            let id: u32 = mem.read_obj(GuestAddress(at)).expect("used id");
            let len: u32 = mem.read_obj(GuestAddress(at + 4)).expect("used len");
            (id, len)
        })
        .collect()
}

#[derive(Arbitrary, Debug)]
enum Kind {
    In,
    Out,
    Flush,
    GetId,
    Other(u32),
}

impl Kind {
    fn code(&self) -> u32 {
        match self {
            Kind::In => VIRTIO_BLK_T_IN,
            Kind::Out => VIRTIO_BLK_T_OUT,
            Kind::Flush => VIRTIO_BLK_T_FLUSH,
            Kind::GetId => VIRTIO_BLK_T_GET_ID,
            Kind::Other(c) => *c,
        }
    }
}

#[derive(Arbitrary, Debug)]
struct Seg {
    /// Whole sectors (mod 5), plus `extra` bytes (mod 4) to break alignment.
    sectors: u8,
    extra: u8,
    /// Flip the direction the request type calls for.
    wrong_direction: bool,
    fill: u8,
}

#[derive(Arbitrary, Debug)]
enum StatusShape {
    Good,
    ReadOnly,
    Empty,
    Missing,
}

#[derive(Arbitrary, Debug)]
struct Req {
    kind: Kind,
    sector: u8,
    /// Header length 16 unless `short_header` (then 0..15).
    short_header: Option<u8>,
    header_writable: bool,
    segs: Vec<Seg>,
    status: StatusShape,
}

/// Where one request's descriptors went, in chain order.
struct Placed {
    head: u16,
    descs: Vec<(u64, u32, bool)>,
}

struct Layout {
    next_desc: u16,
    next_addr: u64,
}

impl Layout {
    fn alloc(&mut self, len: u32) -> Option<u64> {
        let at = self.next_addr;
        let end = at.checked_add(u64::from(len))?;
        (end <= MEM).then(|| {
            self.next_addr = end.next_multiple_of(8);
            at
        })
    }
}

/// Lays out `r` (header, data, status) as descriptors; `None` when the table or the
/// memory area is full.
fn place(mem: &GuestMemory, lay: &mut Layout, r: &Req) -> Option<Placed> {
    let data_write = matches!(r.kind, Kind::In | Kind::GetId);
    let mut descs: Vec<(u64, u32, bool)> = Vec::new();
    let hlen = r.short_header.map_or(16, |n| u32::from(n % 16));
    let hdr = lay.alloc(16)?;
    let mut raw = [0u8; 16];
    raw[..4].copy_from_slice(&r.kind.code().to_le_bytes());
    raw[8..].copy_from_slice(&u64::from(r.sector % 20).to_le_bytes());
    mem.write_slice(&raw, GuestAddress(hdr)).ok()?;
    descs.push((hdr, hlen, r.header_writable));
    for s in r.segs.iter().take(4) {
        let len = u32::from(s.sectors % 5) * 512 + u32::from(s.extra % 4);
        let at = lay.alloc(len)?;
        mem.write_slice(&vec![s.fill; len as usize], GuestAddress(at))
            .ok()?;
        descs.push((at, len, data_write != s.wrong_direction));
    }
    if !matches!(r.status, StatusShape::Missing) {
        let at = lay.alloc(1)?;
        let len = u32::from(!matches!(r.status, StatusShape::Empty));
        descs.push((at, len, !matches!(r.status, StatusShape::ReadOnly)));
    }
    let head = lay.next_desc;
    if usize::from(head) + descs.len() > usize::from(QSIZE) {
        return None;
    }
    for (i, (addr, len, write)) in descs.iter().enumerate() {
        let idx = head + i as u16;
        let last = i + 1 == descs.len();
        let flags = if *write { F_WRITE } else { 0 } | if last { 0 } else { F_NEXT };
        put_desc(mem, idx, *addr, *len, flags, idx + 1);
    }
    lay.next_desc += descs.len() as u16;
    Some(Placed { head, descs })
}

/// The chain as the device must read it: header first, status byte last, data between.
struct View<'a> {
    header: (u64, u32, bool),
    data: &'a [(u64, u32, bool)],
    status: u64,
}

/// `None`: the chain has no usable status byte and must be dropped (nothing used).
fn view(p: &Placed) -> Option<View<'_>> {
    let (last, rest) = p.descs.split_last()?;
    let (header, data) = rest.split_first()?;
    (last.2 && last.1 >= 1).then_some(View {
        header: *header,
        data,
        status: last.0,
    })
}

/// What virtio-blk must answer: (status byte, used length).
fn expect(r: &Req, v: &View<'_>, read_only: bool) -> (u8, u32) {
    const FAIL: (u8, u32) = (VIRTIO_BLK_S_IOERR, 1);
    if v.header.2 || v.header.1 < 16 {
        return FAIL;
    }
    let total: u64 = v.data.iter().map(|d| u64::from(d.1)).sum();
    let sector = u64::from(r.sector % 20);
    let in_range = total % SECTOR_SIZE == 0 && sector + total / SECTOR_SIZE <= SECTORS;
    // By the type field on the wire: `Other(0)` is a read.
    match r.kind.code() {
        VIRTIO_BLK_T_IN if v.data.iter().all(|d| d.2) && in_range => {
            (VIRTIO_BLK_S_OK, total as u32 + 1)
        }
        VIRTIO_BLK_T_OUT if !read_only && v.data.iter().all(|d| !d.2) && in_range => {
            (VIRTIO_BLK_S_OK, 1)
        }
        VIRTIO_BLK_T_FLUSH => (VIRTIO_BLK_S_OK, 1),
        VIRTIO_BLK_T_GET_ID => match v.data {
            [d] if d.2 => (VIRTIO_BLK_S_OK, d.1.min(VIRTIO_BLK_ID_BYTES as u32) + 1),
            _ => FAIL,
        },
        VIRTIO_BLK_T_IN | VIRTIO_BLK_T_OUT => FAIL,
        _ => (VIRTIO_BLK_S_UNSUPP, 1),
    }
}

/// Applies a successful request to the disk model and checks what the guest read.
fn check_data(mem: &GuestMemory, r: &Req, v: &View<'_>, model: &mut [u8]) {
    let mut off = usize::from(r.sector % 20) * 512;
    for (addr, len, _) in v.data {
        let len = *len as usize;
        let mut got = vec![0u8; len];
        mem.read_slice(&mut got, GuestAddress(*addr)).expect("data");
        match r.kind.code() {
            VIRTIO_BLK_T_IN => assert_eq!(got, model[off..off + len], "read data differs"),
            VIRTIO_BLK_T_OUT => model[off..off + len].copy_from_slice(&got),
            _ => {}
        }
        off += len;
    }
}

fn structured(fx: &mut Fixture, u: &mut Unstructured<'_>) {
    let Ok(read_only) = bool::arbitrary(u) else {
        return;
    };
    let Ok(reqs) = Vec::<Req>::arbitrary(u) else {
        return;
    };
    let mut lay = Layout {
        next_desc: 0,
        next_addr: AREA,
    };
    let mut placed = Vec::new();
    for r in reqs.iter().take(8) {
        let Some(p) = place(&fx.mem, &mut lay, r) else {
            break;
        };
        placed.push((r, p));
    }
    let heads: Vec<u16> = placed.iter().map(|(_, p)| p.head).collect();
    set_avail(&fx.mem, &heads);
    let dev = if read_only { &mut fx.ro } else { &mut fx.rw };
    let used = serve(dev, &fx.mem);
    assert_eq!(used.len(), placed.len(), "every chain comes back once");
    let mut model = pattern();
    for ((r, p), (id, len)) in placed.iter().zip(&used) {
        assert_eq!(*id, u32::from(p.head), "used ring order");
        let Some(v) = view(p) else {
            assert_eq!(*len, 0, "a dropped chain uses nothing: {r:?}");
            continue;
        };
        let (status, used_len) = expect(r, &v, read_only);
        assert_eq!(*len, used_len, "used length of {r:?}");
        let got: u8 = fx.mem.read_obj(GuestAddress(v.status)).expect("status");
        assert_eq!(got, status, "status of {r:?}");
        if status == VIRTIO_BLK_S_OK {
            check_data(&fx.mem, r, &v, &mut model);
        }
    }
    let mut disk = vec![0u8; DISK];
    fx.disk.read_exact_at(&mut disk, 0).expect("disk");
    assert!(disk == model, "disk content differs from the model");
}

/// Whether a device-writable descriptor of the fuzzed table covers any of the rings
/// (descriptor table, available and used ring, all below the used ring's end).
fn rings_writable(table: &[u8]) -> bool {
    let rings_end = USED + 4 + 8 * u64::from(QSIZE) + 2;
    table.chunks_exact(16).any(|d| {
        let word =
            |r: std::ops::Range<usize>| d[r].iter().rev().fold(0u64, |a, b| a << 8 | u64::from(*b));
        let (addr, len, flags) = (word(0..8), word(8..12), word(12..14) as u16);
        flags & F_WRITE != 0 && len > 0 && addr < rings_end
    })
}

fn raw(fx: &mut Fixture, bytes: &[u8]) {
    let table = bytes.len().min(16 * usize::from(QSIZE));
    fx.mem
        .write_slice(&bytes[..table], GuestAddress(DESC))
        .expect("table");
    let rest = &bytes[table..];
    let n = rest
        .first()
        .map_or(0, |b| usize::from(b % (QSIZE as u8 + 1)));
    let heads: Vec<u16> = (0..n)
        .map(|i| u16::from(rest.get(1 + i).copied().unwrap_or(0)))
        .collect();
    set_avail(&fx.mem, &heads);
    let tail = rest.get(1 + n..).unwrap_or(&[]);
    let area = tail.len().min((MEM - AREA) as usize);
    fx.mem
        .write_slice(&tail[..area], GuestAddress(AREA))
        .expect("area");
    let read_only = bytes.first().is_some_and(|b| b & 2 != 0);
    let dev = if read_only { &mut fx.ro } else { &mut fx.rw };
    let used = serve(dev, &fx.mem);
    // A guest that hands the device its own rings to write scribbles over them: what
    // the used ring says afterwards proves nothing (the device must only survive it).
    if !rings_writable(&bytes[..table]) {
        assert!(used.len() <= heads.len(), "more chains used than offered");
        for (id, _) in &used {
            assert!(*id < u32::from(QSIZE), "used id {id} outside the queue");
        }
    }
    let size = fx.disk.metadata().expect("disk").len();
    assert_eq!(size, DISK as u64, "the disk grew");
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    FIXTURE.with(|fx| {
        let mut fx = fx.borrow_mut();
        fx.disk.write_all_at(&pattern(), 0).expect("disk pattern");
        // All of guest memory starts zeroed, so an input replays the same way alone.
        fx.mem
            .write_slice(&[0u8; MEM as usize], GuestAddress(0))
            .expect("guest memory");
        if mode % 2 == 0 {
            structured(&mut fx, &mut Unstructured::new(rest));
        } else {
            raw(&mut fx, rest);
        }
    });
});
