//! Fuzzes the virtio-mmio transport register state machine with a real virtio-blk
//! device behind it, as a guest driver pokes it through MMIO exits.
//!
//! Run: `tests/fuzz.sh vmm/mmio_transport`.
//! Input: a program of register reads and writes (known offsets or any, any width),
//! a driver-initialisation macro that reaches DRIVER_OK with fuzzed queue settings,
//! guest memory writes and queue kicks (the event loop serving the device).
//! Properties after every step: no panic; the identification registers never change;
//! the status register only holds states of the virtio 1.2 section 3.1.1 sequence (plus
//! FAILED / DEVICE_NEEDS_RESET); the device is active exactly while DRIVER_OK is set;
//! it never acks a feature it did not offer; status 0 resets everything; the
//! configuration space reads the disk capacity.
#![no_main]

use std::cell::RefCell;
use std::fs::File;
use std::os::fd::FromRawFd;
use std::path::Path;
use std::sync::{Arc, Mutex};

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm::devices::bus::BusDevice;
use vmm::devices::virtio::block::Block;
use vmm::devices::virtio::mmio::transport::*;
use vmm::devices::virtio::mmio::{MmioInterrupt, MmioTransport};
use vmm::devices::virtio::{GuestMemory, VirtioDevice};
use vmm_sys_util::eventfd::EventFd;

const MEM: usize = 0x2_0000;
const DISK_SECTORS: u64 = 8;
const REGS: [u64; 23] = [
    0x000, 0x004, 0x008, 0x00c, 0x010, 0x014, 0x020, 0x024, 0x030, 0x034, 0x038, 0x044, 0x050,
    0x060, 0x064, 0x070, 0x080, 0x084, 0x090, 0x094, 0x0a0, 0x0a4, 0x0fc,
];
const LEGAL_STATES: [u32; 5] = [
    0,
    STATUS_ACKNOWLEDGE,
    STATUS_ACKNOWLEDGE | STATUS_DRIVER,
    STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
    STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
];

struct Fixture {
    mem: GuestMemory,
    disk: File,
}

thread_local! {
    static FIXTURE: RefCell<Fixture> = RefCell::new(Fixture::new());
}

impl Fixture {
    fn new() -> Self {
        // SAFETY: memfd_create with a NUL-terminated name; the new fd is owned by the
        // File below alone.
        let fd = unsafe { libc::memfd_create(c"mmio-fuzz".as_ptr(), 0) };
        assert!(fd >= 0, "memfd_create");
        // SAFETY: `fd` was just created and is not owned elsewhere.
        let disk = unsafe { File::from_raw_fd(fd) };
        disk.set_len(DISK_SECTORS * 512).expect("disk size");
        Self {
            mem: GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).expect("memory"),
            disk,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Offset {
    Known(u8),
    Config(u8),
    Any(u16),
}

impl Offset {
    fn get(&self) -> u64 {
        match self {
            Offset::Known(i) => REGS[usize::from(*i) % REGS.len()],
            Offset::Config(o) => CONFIG_SPACE + u64::from(*o % 16),
            Offset::Any(o) => u64::from(*o) % 0x200,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Read {
        at: Offset,
        width: u8,
    },
    Write {
        at: Offset,
        width: u8,
        value: u32,
    },
    /// The Linux driver's probe sequence up to DRIVER_OK, with these queue settings.
    Init {
        features_lo: u32,
        size: u16,
        desc: u16,
        avail: u16,
        used: u16,
    },
    /// Guest memory write (queue structures, descriptors, buffers).
    Mem {
        addr: u16,
        bytes: Vec<u8>,
    },
    /// The event loop serves the device's queue.
    Kick,
}

fn width(w: u8) -> usize {
    [4, 4, 4, 1, 2, 8, 0, 3][usize::from(w % 8)]
}

fn write32(t: &mut MmioTransport, offset: u64, v: u32) {
    t.write(offset, &v.to_le_bytes());
}

fn read32(t: &mut MmioTransport, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(offset, &mut b);
    u32::from_le_bytes(b)
}

fn init(t: &mut MmioTransport, features_lo: u32, size: u16, addrs: [u16; 3]) {
    write32(t, 0x070, 0);
    write32(t, 0x070, STATUS_ACKNOWLEDGE);
    write32(t, 0x070, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    write32(t, 0x024, 1);
    write32(t, 0x020, 1); // VIRTIO_F_VERSION_1, bit 32
    write32(t, 0x024, 0);
    write32(t, 0x020, features_lo);
    write32(
        t,
        0x070,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
    );
    write32(t, 0x030, 0);
    write32(t, 0x038, u32::from(size));
    for (reg, a) in [0x080, 0x090, 0x0a0].into_iter().zip(addrs) {
        // Mostly inside guest memory and suitably aligned; sometimes not.
        write32(t, reg, u32::from(a) * 8);
        write32(t, reg + 4, 0);
    }
    write32(t, 0x044, 1);
    let all = STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK;
    write32(t, 0x070, all);
}

fn check(t: &mut MmioTransport, blk: &Mutex<Block>) {
    assert_eq!(read32(t, 0x000), 0x7472_6976, "magic");
    assert_eq!(read32(t, 0x004), 2, "version");
    assert_eq!(read32(t, 0x008), 2, "device id");
    let status = t.status();
    let base = status & !(STATUS_FAILED | STATUS_DEVICE_NEEDS_RESET);
    assert!(LEGAL_STATES.contains(&base), "status {status:#x}");
    let dev = blk.lock().expect("block");
    assert_eq!(
        dev.is_activated(),
        status & STATUS_DRIVER_OK != 0,
        "active without DRIVER_OK or the reverse (status {status:#x})"
    );
    assert_eq!(
        dev.acked_features() & !dev.avail_features(),
        0,
        "acked unoffered"
    );
    let mut cap = [0u8; 8];
    dev.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), DISK_SECTORS, "capacity");
}

fn step(t: &mut MmioTransport, blk: &Mutex<Block>, mem: &GuestMemory, op: &Op) {
    match op {
        Op::Read { at, width: w } => {
            let mut buf = vec![0u8; width(*w)];
            t.read(at.get(), &mut buf);
        }
        Op::Write {
            at,
            width: w,
            value,
        } => {
            let bytes = u64::from(*value).to_le_bytes();
            let offset = at.get();
            t.write(offset, &bytes[..width(*w)]);
            if offset == 0x070 && width(*w) == 4 && *value == 0 {
                assert_eq!(t.status(), 0, "reset leaves status");
                assert_eq!(t.interrupt().status(), 0, "reset leaves an interrupt");
            }
        }
        Op::Init {
            features_lo,
            size,
            desc,
            avail,
            used,
        } => {
            init(t, *features_lo, *size, [*desc, *avail, *used]);
        }
        Op::Mem { addr, bytes } => {
            let n = bytes.len().min(512);
            let _ = mem.write_slice(&bytes[..n], GuestAddress(u64::from(*addr)));
        }
        Op::Kick => blk.lock().expect("block").process_queue(),
    }
}

fuzz_target!(|ops: Vec<Op>| {
    FIXTURE.with(|fx| {
        let fx = fx.borrow();
        fx.mem
            .write_slice(&[0u8; MEM], GuestAddress(0))
            .expect("guest memory");
        let file = fx.disk.try_clone().expect("dup disk");
        let blk = Arc::new(Mutex::new(
            Block::from_file(file, Path::new("memfd:mmio-fuzz"), false).expect("block"),
        ));
        let irq = EventFd::new(libc::EFD_NONBLOCK).expect("eventfd");
        let interrupt = Arc::new(MmioInterrupt::new(irq));
        let dev: Arc<Mutex<dyn VirtioDevice>> = blk.clone();
        let mut t = MmioTransport::new(fx.mem.clone(), dev, interrupt).expect("transport");
        for op in ops.iter().take(64) {
            step(&mut t, &blk, &fx.mem, op);
            check(&mut t, &blk);
        }
    });
});
