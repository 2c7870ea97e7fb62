//! virtio-blk driven through virtio-queue's mock split queue.

use std::io::{Read, Seek, SeekFrom, Write};
use std::sync::atomic::{AtomicU32, Ordering};

use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};

use super::*;
use crate::devices::virtio::block::request::*;

const F_NEXT: u16 = 1;
const F_WRITE: u16 = 2;
const SECTORS: u64 = 16;
const HDR: u64 = 0x10_0000;
const DATA: u64 = 0x11_0000;
const STATUS: u64 = 0x12_0000;

#[derive(Default)]
struct CountingInterrupt(AtomicU32);
impl VirtioInterrupt for CountingInterrupt {
    fn signal_used_queue(&self, _q: u16) -> std::io::Result<()> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn signal_config_change(&self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Harness {
    mem: GuestMemory,
    disk_path: Option<tempfile::TempPath>,
}

/// A disk of numbered sectors, removed when the test drops its path.
fn disk_file() -> (File, tempfile::TempPath) {
    let mut f = tempfile::Builder::new()
        .prefix("vmm-blk-")
        .tempfile()
        .unwrap();
    let content: Vec<u8> = (0..SECTORS * 512).map(|i| (i / 512) as u8).collect();
    f.write_all(&content).unwrap();
    let (file, path) = f.into_parts();
    (file, path)
}

impl Harness {
    fn new() -> Self {
        Harness {
            mem: GuestMemory::from_ranges(&[(GuestAddress(0), 0x100_0000)]).unwrap(),
            disk_path: None,
        }
    }
}

fn desc(addr: u64, len: u32, write: bool, next: Option<u16>) -> RawDescriptor {
    let mut flags = if write { F_WRITE } else { 0 };
    if next.is_some() {
        flags |= F_NEXT;
    }
    RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next.unwrap_or(0)))
}

/// Links `(addr, len, write)` triples into one chain starting at descriptor 0.
fn linear(parts: &[(u64, u32, bool)]) -> Vec<RawDescriptor> {
    parts
        .iter()
        .enumerate()
        .map(|(i, (a, l, w))| {
            let next = (i + 1 < parts.len()).then_some(i as u16 + 1);
            desc(*a, *l, *w, next)
        })
        .collect()
}

struct Outcome {
    status: u8,
    used_len: u32,
    block: Block,
    irqs: u32,
    h: Harness,
}

fn run(read_only: bool, header: Option<(u32, u64)>, descs: Vec<RawDescriptor>) -> Outcome {
    let mut h = Harness::new();
    let (file, path) = disk_file();
    let block = Block::from_file(file, &path, read_only).unwrap();
    h.disk_path = Some(path);
    run_on(block, h, header, descs)
}

fn run_on(
    mut block: Block,
    h: Harness,
    header: Option<(u32, u64)>,
    descs: Vec<RawDescriptor>,
) -> Outcome {
    if let Some((t, sector)) = header {
        h.mem.write_obj(t.to_le(), GuestAddress(HDR)).unwrap();
        h.mem.write_obj(0u32, GuestAddress(HDR + 4)).unwrap();
        h.mem
            .write_obj(sector.to_le(), GuestAddress(HDR + 8))
            .unwrap();
    }
    h.mem.write_obj(0xffu8, GuestAddress(STATUS)).unwrap();
    h.mem
        .write_slice(&[0xab; 0x2000], GuestAddress(DATA))
        .unwrap();
    let vq = MockSplitQueue::new(&h.mem, 16);
    vq.add_desc_chains(&descs, 0).unwrap();
    let irq = Arc::new(CountingInterrupt::default());
    block
        .activate(ActivateContext {
            mem: h.mem.clone(),
            queues: vec![vq.create_queue::<Queue>().unwrap()],
            queue_evts: vec![EventFd::new(libc::EFD_NONBLOCK).unwrap()],
            interrupt: irq.clone(),
        })
        .unwrap();
    block.process_queue();
    let used = vq.used().ring().ref_at(0).unwrap().load();
    assert_eq!(used.id(), 0);
    assert_eq!(vq.used().idx().load(), 1, "exactly one chain must be used");
    let status: u8 = h.mem.read_obj(GuestAddress(STATUS)).unwrap();
    Outcome {
        status,
        used_len: used.len(),
        block,
        irqs: irq.0.load(Ordering::SeqCst),
        h,
    }
}

fn m(o: &Outcome) -> &crate::metrics::BlockMetrics {
    &o.block.metrics
}

fn get(c: &std::sync::atomic::AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

fn std_chain(data_len: u32, data_write: bool) -> Vec<RawDescriptor> {
    linear(&[
        (HDR, 16, false),
        (DATA, data_len, data_write),
        (STATUS, 1, true),
    ])
}

fn disk_bytes(o: &Outcome) -> Vec<u8> {
    let mut f = File::open(o.h.disk_path.as_ref().expect("a disk")).unwrap();
    let mut v = Vec::new();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.read_to_end(&mut v).unwrap();
    v
}

#[test]
fn read_two_sectors() {
    let o = run(false, Some((VIRTIO_BLK_T_IN, 3)), std_chain(1024, true));
    assert_eq!(o.status, VIRTIO_BLK_S_OK);
    assert_eq!(o.used_len, 1025);
    let mut buf = vec![0u8; 1024];
    o.h.mem.read_slice(&mut buf, GuestAddress(DATA)).unwrap();
    assert!(buf[..512].iter().all(|b| *b == 3));
    assert!(buf[512..].iter().all(|b| *b == 4));
    assert_eq!(get(&m(&o).read_count), 1);
    assert_eq!(get(&m(&o).read_bytes), 1024);
    assert_eq!(o.irqs, 1);
}

#[test]
fn read_scattered_buffers() {
    let descs = linear(&[
        (HDR, 16, false),
        (DATA, 512, true),
        (DATA + 0x1000, 512, true),
        (STATUS, 1, true),
    ]);
    let o = run(false, Some((VIRTIO_BLK_T_IN, 0)), descs);
    assert_eq!(o.status, VIRTIO_BLK_S_OK);
    assert_eq!(o.used_len, 1025);
    let b: u8 = o.h.mem.read_obj(GuestAddress(DATA + 0x1000)).unwrap();
    assert_eq!(b, 1);
}

#[test]
fn write_then_disk_changes() {
    let mut o = run(false, Some((VIRTIO_BLK_T_OUT, 2)), std_chain(512, false));
    assert_eq!(o.status, VIRTIO_BLK_S_OK);
    assert_eq!(o.used_len, 1);
    assert!(disk_bytes(&o)[1024..1536].iter().all(|b| *b == 0xab));
    assert!(disk_bytes(&o)[1536..2048].iter().all(|b| *b == 3));
    assert_eq!(get(&m(&o).write_count), 1);
    assert_eq!(get(&m(&o).write_bytes), 512);
    o.block.reset();
}

#[test]
fn flush_and_get_id() {
    let o = run(
        false,
        Some((VIRTIO_BLK_T_FLUSH, 0)),
        linear(&[(HDR, 16, false), (STATUS, 1, true)]),
    );
    assert_eq!(o.status, VIRTIO_BLK_S_OK);
    assert_eq!(get(&m(&o).flush_count), 1);

    let o = run(false, Some((VIRTIO_BLK_T_GET_ID, 0)), std_chain(20, true));
    assert_eq!(o.status, VIRTIO_BLK_S_OK);
    assert_eq!(o.used_len, 21);
    let mut id = [0u8; 20];
    o.h.mem.read_slice(&mut id, GuestAddress(DATA)).unwrap();
    assert_eq!(id, o.block.disk.id);
    assert_ne!(id, [0u8; 20]);
}

#[test]
fn read_only_rejects_writes() {
    let o = run(true, Some((VIRTIO_BLK_T_OUT, 0)), std_chain(512, false));
    assert_eq!(o.status, VIRTIO_BLK_S_IOERR);
    assert_eq!(o.used_len, 1);
    assert_eq!(get(&m(&o).read_only_violations), 1);
    assert!(disk_bytes(&o)[..512].iter().all(|b| *b == 0));
    assert_ne!(o.block.avail_features() & VIRTIO_BLK_F_RO, 0);
    // Reads still work on a read-only disk.
    let o = run(true, Some((VIRTIO_BLK_T_IN, 1)), std_chain(512, true));
    assert_eq!(o.status, VIRTIO_BLK_S_OK);
}

#[test]
fn unsupported_type() {
    let o = run(false, Some((99, 0)), std_chain(512, true));
    assert_eq!(o.status, VIRTIO_BLK_S_UNSUPP);
    assert_eq!(get(&m(&o).unsupported), 1);
}

fn assert_ioerr_malformed(o: &Outcome) {
    assert_eq!(o.status, VIRTIO_BLK_S_IOERR);
    assert_eq!(o.used_len, 1);
    assert_eq!(get(&m(o).malformed_chains), 1);
    assert_eq!(get(&m(o).dropped_chains), 0);
}

fn assert_dropped(o: &Outcome) {
    assert_eq!(o.used_len, 0);
    assert_eq!(get(&m(o).malformed_chains), 1);
    assert_eq!(get(&m(o).dropped_chains), 1);
}

#[test]
fn malformed_write_only_header() {
    let descs = linear(&[(HDR, 16, true), (DATA, 512, true), (STATUS, 1, true)]);
    assert_ioerr_malformed(&run(false, Some((VIRTIO_BLK_T_IN, 0)), descs));
}

#[test]
fn malformed_short_header() {
    let descs = linear(&[(HDR, 8, false), (DATA, 512, true), (STATUS, 1, true)]);
    assert_ioerr_malformed(&run(false, Some((VIRTIO_BLK_T_IN, 0)), descs));
}

#[test]
fn malformed_data_direction() {
    assert_ioerr_malformed(&run(
        false,
        Some((VIRTIO_BLK_T_IN, 0)),
        std_chain(512, false),
    ));
    assert_ioerr_malformed(&run(
        false,
        Some((VIRTIO_BLK_T_OUT, 0)),
        std_chain(512, true),
    ));
}

#[test]
fn malformed_unaligned_length() {
    assert_ioerr_malformed(&run(
        false,
        Some((VIRTIO_BLK_T_IN, 0)),
        std_chain(100, true),
    ));
}

#[test]
fn malformed_out_of_range_sector() {
    assert_ioerr_malformed(&run(
        false,
        Some((VIRTIO_BLK_T_IN, SECTORS)),
        std_chain(512, true),
    ));
    assert_ioerr_malformed(&run(
        false,
        Some((VIRTIO_BLK_T_IN, u64::MAX)),
        std_chain(512, true),
    ));
}

#[test]
fn malformed_data_address_outside_memory() {
    let descs = linear(&[
        (HDR, 16, false),
        (0x4000_0000, 512, true),
        (STATUS, 1, true),
    ]);
    assert_ioerr_malformed(&run(false, Some((VIRTIO_BLK_T_IN, 0)), descs));
    let descs = linear(&[
        (HDR, 16, false),
        (0xfff_fe00, 0x1000, true),
        (STATUS, 1, true),
    ]);
    assert_ioerr_malformed(&run(false, Some((VIRTIO_BLK_T_IN, 0)), descs));
}

#[test]
fn malformed_header_address_outside_memory() {
    let descs = linear(&[
        (0x4000_0000, 16, false),
        (DATA, 512, true),
        (STATUS, 1, true),
    ]);
    assert_ioerr_malformed(&run(false, None, descs));
}

#[test]
fn dropped_read_only_status() {
    let descs = linear(&[(HDR, 16, false), (DATA, 512, true), (STATUS, 1, false)]);
    let o = run(false, Some((VIRTIO_BLK_T_IN, 0)), descs);
    assert_dropped(&o);
    assert_eq!(
        o.status, 0xff,
        "a read-only status byte must not be written"
    );
}

#[test]
fn dropped_status_outside_memory() {
    let descs = linear(&[(HDR, 16, false), (DATA, 512, true), (0x4000_0000, 1, true)]);
    assert_dropped(&run(false, Some((VIRTIO_BLK_T_IN, 0)), descs));
}

#[test]
fn dropped_single_descriptor() {
    let descs = linear(&[(STATUS, 1, true)]);
    assert_dropped(&run(false, Some((VIRTIO_BLK_T_IN, 0)), descs));
}

#[test]
fn dropped_loop() {
    let descs = vec![
        desc(HDR, 16, false, Some(1)),
        desc(DATA, 512, true, Some(0)),
    ];
    let o = run(false, Some((VIRTIO_BLK_T_IN, 0)), descs);
    assert_dropped(&o);
}

#[test]
fn config_space_reports_capacity() {
    let (file, path) = disk_file();
    let b = Block::from_file(file, &path, false).unwrap();
    let mut cap = [0u8; 8];
    b.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), SECTORS);
    let mut beyond = [0xffu8; 4];
    b.read_config(6, &mut beyond);
    assert_eq!(beyond, [0, 0, 0, 0]);
    b.read_config(u64::MAX, &mut beyond);
    assert_eq!(beyond, [0, 0, 0, 0]);
    assert_eq!(b.device_type(), VIRTIO_ID_BLOCK);
}

#[test]
fn missing_drive_is_an_error() {
    let Err(e) = Block::new(Path::new("/nonexistent/disk.img"), false) else {
        panic!("opening a missing drive must fail")
    };
    assert!(e.to_string().contains("/nonexistent/disk.img"));
}

#[path = "image_tests.rs"]
mod image_tests;
