//! Parsing and executing one virtio-blk request chain (virtio 1.2, section 5.2.6).
//!
//! Layout: a device-readable 16-byte header, data descriptors, and a device-writable status
//! byte at the end. Anything else is malformed: answered with IOERR when the status byte is
//! usable, otherwise dropped (returned to the guest with 0 bytes written).

use std::fs::File;
use std::os::unix::fs::FileExt;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::DescriptorChain;
use vm_memory::{Address, ByteValued, Bytes, GuestAddress, GuestMemory as GuestMemoryTrait};

use crate::metrics::{add, inc, BlockMetrics};

pub const SECTOR_SHIFT: u64 = 9;
pub const SECTOR_SIZE: u64 = 1 << SECTOR_SHIFT;
pub const VIRTIO_BLK_T_IN: u32 = 0;
pub const VIRTIO_BLK_T_OUT: u32 = 1;
pub const VIRTIO_BLK_T_FLUSH: u32 = 4;
pub const VIRTIO_BLK_T_GET_ID: u32 = 8;
pub const VIRTIO_BLK_S_OK: u8 = 0;
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;
pub const VIRTIO_BLK_ID_BYTES: usize = 20;
const HEADER_LEN: u32 = 16;
/// Bounce buffer for copying between the disk file and guest memory.
const CHUNK: usize = 64 * 1024;

#[derive(Clone, Copy, Default)]
#[repr(C)]
struct RequestHeader {
    request_type: u32,
    _reserved: u32,
    sector: u64,
}

// SAFETY: plain C struct of integers without padding (4 + 4 + 8 bytes); any bytes are valid.
unsafe impl ByteValued for RequestHeader {}

/// Why a chain was rejected; only used for logs and tests.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("empty descriptor chain")]
    Empty,
    #[error("descriptor chain loops or exceeds the queue size")]
    Loop,
    #[error("status descriptor is missing, read-only or empty")]
    BadStatus,
    #[error("header descriptor is shorter than 16 bytes or missing")]
    HeaderTooShort,
    #[error("header descriptor is device-writable")]
    HeaderWriteOnly,
    #[error("data descriptor has the wrong direction")]
    DataDirection,
    #[error("data length is not a multiple of 512")]
    UnalignedLength,
    #[error("request beyond the end of the disk")]
    OutOfRange,
    #[error("write to a read-only disk")]
    ReadOnly,
    #[error("guest memory access out of range")]
    GuestMemory,
    #[error("host I/O error: {0}")]
    Io(String),
    #[error("unsupported request type {0}")]
    Unsupported(u32),
}

/// The disk as the request path sees it.
pub struct Disk {
    pub file: File,
    pub capacity_sectors: u64,
    pub read_only: bool,
    pub id: [u8; VIRTIO_BLK_ID_BYTES],
}

/// Outcome of a chain: bytes written to guest memory (for the used ring) and the result.
pub struct Completion {
    pub used_len: u32,
    pub result: Result<(), RequestError>,
}

fn guest_err(_: vm_memory::GuestMemoryError) -> RequestError {
    RequestError::GuestMemory
}

fn copy_disk_to_guest<M: GuestMemoryTrait + ?Sized>(
    mem: &M,
    disk: &File,
    mut disk_off: u64,
    addr: GuestAddress,
    len: u32,
    buf: &mut [u8],
) -> Result<(), RequestError> {
    let mut done = 0usize;
    while done < len as usize {
        let n = (len as usize - done).min(buf.len());
        disk.read_exact_at(&mut buf[..n], disk_off)
            .map_err(|e| RequestError::Io(e.to_string()))?;
        let a = addr
            .checked_add(done as u64)
            .ok_or(RequestError::GuestMemory)?;
        mem.write_slice(&buf[..n], a).map_err(guest_err)?;
        done += n;
        disk_off += n as u64;
    }
    Ok(())
}

fn copy_guest_to_disk<M: GuestMemoryTrait + ?Sized>(
    mem: &M,
    disk: &File,
    mut disk_off: u64,
    addr: GuestAddress,
    len: u32,
    buf: &mut [u8],
) -> Result<(), RequestError> {
    let mut done = 0usize;
    while done < len as usize {
        let n = (len as usize - done).min(buf.len());
        let a = addr
            .checked_add(done as u64)
            .ok_or(RequestError::GuestMemory)?;
        mem.read_slice(&mut buf[..n], a).map_err(guest_err)?;
        disk.write_all_at(&buf[..n], disk_off)
            .map_err(|e| RequestError::Io(e.to_string()))?;
        done += n;
        disk_off += n as u64;
    }
    Ok(())
}

/// Checks direction, alignment and range of the data descriptors; returns the byte offset.
fn check_data(
    data: &[Descriptor],
    write_only: bool,
    sector: u64,
    disk: &Disk,
) -> Result<u64, RequestError> {
    if data.iter().any(|d| d.is_write_only() != write_only) {
        return Err(RequestError::DataDirection);
    }
    let total: u64 = data.iter().map(|d| u64::from(d.len())).sum();
    if total % SECTOR_SIZE != 0 {
        return Err(RequestError::UnalignedLength);
    }
    let end = sector
        .checked_add(total >> SECTOR_SHIFT)
        .ok_or(RequestError::OutOfRange)?;
    if end > disk.capacity_sectors {
        return Err(RequestError::OutOfRange);
    }
    Ok(sector << SECTOR_SHIFT)
}

fn execute<M: GuestMemoryTrait + ?Sized>(
    mem: &M,
    hdr: RequestHeader,
    data: &[Descriptor],
    disk: &mut Disk,
    metrics: &BlockMetrics,
) -> Result<u32, RequestError> {
    let mut buf = vec![0u8; CHUNK];
    match hdr.request_type {
        VIRTIO_BLK_T_IN => {
            let mut off = check_data(data, true, hdr.sector, disk)?;
            let mut written = 0u32;
            for d in data {
                copy_disk_to_guest(mem, &disk.file, off, d.addr(), d.len(), &mut buf)?;
                off += u64::from(d.len());
                written += d.len();
            }
            inc(&metrics.read_count);
            add(&metrics.read_bytes, u64::from(written));
            Ok(written)
        }
        VIRTIO_BLK_T_OUT => {
            if disk.read_only {
                inc(&metrics.read_only_violations);
                return Err(RequestError::ReadOnly);
            }
            let mut off = check_data(data, false, hdr.sector, disk)?;
            for d in data {
                copy_guest_to_disk(mem, &disk.file, off, d.addr(), d.len(), &mut buf)?;
                off += u64::from(d.len());
                add(&metrics.write_bytes, u64::from(d.len()));
            }
            inc(&metrics.write_count);
            Ok(0)
        }
        VIRTIO_BLK_T_FLUSH => {
            if !disk.read_only {
                disk.file
                    .sync_data()
                    .map_err(|e| RequestError::Io(e.to_string()))?;
            }
            inc(&metrics.flush_count);
            Ok(0)
        }
        VIRTIO_BLK_T_GET_ID => {
            let d = match data {
                [d] if d.is_write_only() => d,
                _ => return Err(RequestError::DataDirection),
            };
            let n = (d.len() as usize).min(VIRTIO_BLK_ID_BYTES);
            mem.write_slice(&disk.id[..n], d.addr())
                .map_err(guest_err)?;
            inc(&metrics.get_id_count);
            Ok(n as u32)
        }
        other => Err(RequestError::Unsupported(other)),
    }
}

fn parse_header<M: GuestMemoryTrait + ?Sized>(
    mem: &M,
    head: &Descriptor,
) -> Result<RequestHeader, RequestError> {
    if head.is_write_only() {
        return Err(RequestError::HeaderWriteOnly);
    }
    if head.len() < HEADER_LEN {
        return Err(RequestError::HeaderTooShort);
    }
    let hdr: RequestHeader = mem.read_obj(head.addr()).map_err(guest_err)?;
    Ok(RequestHeader {
        request_type: u32::from_le(hdr.request_type),
        _reserved: 0,
        sector: u64::from_le(hdr.sector),
    })
}

/// Handles one chain end to end, including writing the status byte.
pub fn process_chain<M>(
    chain: DescriptorChain<M>,
    disk: &mut Disk,
    metrics: &BlockMetrics,
) -> Completion
where
    M: std::ops::Deref + Clone,
    M::Target: GuestMemoryTrait,
{
    let mem = chain.memory();
    let descs: Vec<Descriptor> = chain.clone().collect();
    let drop = |e| {
        inc(&metrics.malformed_chains);
        inc(&metrics.dropped_chains);
        Completion {
            used_len: 0,
            result: Err(e),
        }
    };
    let (Some(head), Some(status)) = (descs.first(), descs.last()) else {
        return drop(RequestError::Empty);
    };
    if status.has_next() {
        // The iterator stopped on its TTL: the chain loops or is longer than the queue.
        return drop(RequestError::Loop);
    }
    if descs.len() < 2 || !status.is_write_only() || status.len() < 1 {
        return drop(RequestError::BadStatus);
    }
    let result = parse_header(mem, head)
        .and_then(|hdr| execute(mem, hdr, &descs[1..descs.len() - 1], disk, metrics));
    let (code, data_len) = match &result {
        Ok(n) => (VIRTIO_BLK_S_OK, *n),
        Err(RequestError::Unsupported(_)) => {
            inc(&metrics.unsupported);
            (VIRTIO_BLK_S_UNSUPP, 0)
        }
        Err(RequestError::Io(_)) | Err(RequestError::ReadOnly) => {
            inc(&metrics.io_errors);
            (VIRTIO_BLK_S_IOERR, 0)
        }
        Err(_) => {
            inc(&metrics.malformed_chains);
            (VIRTIO_BLK_S_IOERR, 0)
        }
    };
    if mem.write_obj(code, status.addr()).is_err() {
        return drop(RequestError::GuestMemory);
    }
    Completion {
        used_len: data_len + 1,
        result: result.map(|_| ()),
    }
}
