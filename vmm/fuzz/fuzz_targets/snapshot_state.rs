//! Fuzzes what a snapshot restore reads before the guest runs: the state file decoder
//! and a virtio-mmio transport resumed from fuzzed saved state with a real virtio-blk
//! device behind it.
//!
//! Run: `tests/fuzz.sh vmm/snapshot_state`.
//! Input: raw bytes for the decoder; a state document whose encoding gets one byte
//! changed (or none); a transport state to resume, then register accesses.
//! Properties: no panic; the decoder refuses the raw bytes unless they are a valid
//! document of this vmm on this CPU; an encoded document round-trips and any changed
//! byte is refused; a resumed transport is active exactly when its saved status says
//! the driver had it running and its rings fit guest memory, and refuses a saved state
//! of another device type or queue count.
#![no_main]

use std::fs::File;
use std::os::fd::FromRawFd;
use std::path::Path;
use std::sync::{Arc, Mutex};

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm::devices::bus::BusDevice;
use vmm::devices::legacy::i8042::I8042State;
use vmm::devices::legacy::serial::SerialSnapshot;
use vmm::devices::virtio::block::Block;
use vmm::devices::virtio::mmio::transport::*;
use vmm::devices::virtio::mmio::{MmioInterrupt, MmioTransport};
use vmm::devices::virtio::{GuestMemory, VirtioDevice};
use vmm::snapshot::format::{self, FormatError, SnapshotDocument};
use vmm::snapshot::MicroVmState;
use vmm::vstate::vm_state::VmState;
use vmm_sys_util::eventfd::EventFd;

const MEM: usize = 0x2_0000;

#[derive(Arbitrary, Debug)]
struct Queue {
    max_size: u16,
    next_avail: u16,
    next_used: u16,
    event_idx_enabled: bool,
    size: u16,
    ready: bool,
    desc_table: u32,
    avail_ring: u32,
    used_ring: u32,
}

#[derive(Arbitrary, Debug)]
struct Input {
    raw: Vec<u8>,
    flip: Option<(u16, u8)>,
    device_type: Option<u32>,
    status: u8,
    driver_features: u64,
    queue_sel: u32,
    interrupt_status: u32,
    queues: Vec<Queue>,
    reads: Vec<u8>,
}

fn transport_state(i: &Input) -> TransportState {
    TransportState {
        device_type: i.device_type.unwrap_or(2),
        status: u32::from(i.status),
        driver_features: i.driver_features,
        device_features_sel: 0,
        driver_features_sel: 0,
        queue_sel: i.queue_sel,
        config_generation: 0,
        interrupt_status: i.interrupt_status,
        queues: i
            .queues
            .iter()
            .take(4)
            .map(|q| QueueSnapshot {
                max_size: q.max_size,
                next_avail: q.next_avail,
                next_used: q.next_used,
                event_idx_enabled: q.event_idx_enabled,
                size: q.size,
                ready: q.ready,
                desc_table: u64::from(q.desc_table),
                avail_ring: u64::from(q.avail_ring),
                used_ring: u64::from(q.used_ring),
            })
            .collect(),
    }
}

fn document(t: TransportState) -> SnapshotDocument {
    SnapshotDocument::here(MicroVmState {
        mem_mib: 1,
        memory_blake3: [0; 32],
        vm: VmState {
            irqchips: vec![Default::default(); 3],
            pit: Default::default(),
            clock: Default::default(),
            host_realtime_ns: 0,
        },
        vcpus: Vec::new(),
        serial: SerialSnapshot {
            baud_divisor_low: 12,
            baud_divisor_high: 0,
            interrupt_enable: 0,
            interrupt_identification: 1,
            line_control: 3,
            line_status: 0x60,
            modem_control: 8,
            modem_status: 0,
            scratch: 0,
            in_buffer: Vec::new(),
        },
        i8042: I8042State {
            ctr: 0,
            status: 0,
            pending_cmd: None,
            outbuf: Vec::new(),
        },
        virtio: vec![t],
    })
}

/// Encodes, changes one byte (maybe), decodes: equal back, or refused.
fn round_trip(i: &Input) {
    let bytes = format::encode(&document(transport_state(i))).expect("encode");
    let Some((at, xor)) = i.flip.filter(|(_, x)| *x != 0) else {
        let back = format::decode(&bytes).expect("a document this vmm wrote decodes");
        assert_eq!(back.state.virtio, vec![transport_state(i)]);
        return;
    };
    let mut bad = bytes;
    let at = usize::from(at) % bad.len();
    bad[at] ^= xor;
    let err = format::decode(&bad).expect_err("a changed byte is refused");
    assert!(
        matches!(
            err,
            FormatError::Checksum | FormatError::BadMagic | FormatError::FormatVersion { .. }
        ),
        "{err}"
    );
}

fn resume(i: &Input) {
    // SAFETY: memfd_create with a NUL-terminated name; the fd is owned by `disk` alone.
    let fd = unsafe { libc::memfd_create(c"snap-fuzz".as_ptr(), 0) };
    assert!(fd >= 0, "memfd_create");
    // SAFETY: `fd` was just created and is not owned elsewhere.
    let disk = unsafe { File::from_raw_fd(fd) };
    disk.set_len(4096).expect("disk size");
    let mem: GuestMemory = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), MEM)]).expect("mem");
    let blk = Arc::new(Mutex::new(
        Block::from_file(disk, Path::new("memfd:snap-fuzz"), false).expect("block"),
    ));
    let irq = EventFd::new(libc::EFD_NONBLOCK).expect("eventfd");
    let dev: Arc<Mutex<dyn VirtioDevice>> = blk.clone();
    let mut t = MmioTransport::new(mem, dev, Arc::new(MmioInterrupt::new(irq))).expect("t");
    let state = transport_state(i);
    let result = t.restore(&state);
    let matches_device = state.device_type == 2 && state.queues.len() == 1;
    if !matches_device {
        assert!(result.is_err(), "a foreign device's state was taken: {state:?}");
    }
    let running = state.status & STATUS_DRIVER_OK != 0 && state.status & STATUS_DEVICE_NEEDS_RESET == 0;
    let active = blk.lock().unwrap().is_activated();
    if result.is_ok() {
        assert_eq!(active, running, "{state:?}");
    } else {
        assert!(!active, "a refused state left the device active: {state:?}");
    }
    for off in i.reads.iter().take(32) {
        let mut data = [0u8; 4];
        t.read(u64::from(*off & 0xfc), &mut data);
    }
    t.write(0x070, &0u32.to_le_bytes());
    assert!(!blk.lock().unwrap().is_activated(), "status 0 resets");
}

fuzz_target!(|i: Input| {
    if let Ok(doc) = format::decode(&i.raw) {
        let again = format::encode(&doc).expect("encode");
        format::decode(&again).expect("a decoded document re-encodes");
    }
    round_trip(&i);
    resume(&i);
});
