//! Parsing and executing one virtio-blk request chain (virtio 1.2, section 5.2.6).
//!
//! Layout: a device-readable 16-byte header, data descriptors, and a device-writable status
//! byte at the end. Anything else is malformed: answered with IOERR when the status byte is
//! usable, otherwise dropped (returned to the guest with 0 bytes written).

use std::fs::File;
use std::os::fd::AsRawFd;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::DescriptorChain;
use vm_memory::bitmap::Bitmap;
use vm_memory::{
    Address, ByteValued, Bytes, GuestAddress, GuestMemory as GuestMemoryTrait, Permissions,
};

use crate::metrics::{add, inc, BlockMetrics};
use chunkstore::wire::ChunkClient;
use chunkstore::ImageReader;

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

/// Where a disk's bytes come from.
pub enum Backing {
    File(File),
    /// A container image: chunks fetched through the chunk link, checked and
    /// decrypted on first use. Read-only.
    Image(Box<ImageDisk>),
}

/// A container image's reader and the bounce buffer its reads go through (one chunk),
/// kept across requests: a fresh one per request would be an mmap and page faults
/// each time.
pub struct ImageDisk {
    pub reader: ImageReader<ChunkClient>,
    pub bounce: Vec<u8>,
}

/// The disk as the request path sees it.
pub struct Disk {
    pub backing: Backing,
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

/// Which way a data descriptor's bytes go.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Transfer {
    DiskToGuest,
    GuestToDisk,
}

/// Moves `len` bytes between the disk at `off` and guest memory at `addr`, in place:
/// one `pread`/`pwrite` per guest memory region the range spans and no bounce buffer
/// (each copy costs dearly when the host itself is a nested or emulated machine).
fn transfer<M: GuestMemoryTrait + ?Sized>(
    mem: &M,
    disk: &File,
    (off, addr, len): (u64, GuestAddress, u32),
    way: Transfer,
) -> Result<(), RequestError> {
    let access = match way {
        Transfer::DiskToGuest => Permissions::Write,
        Transfer::GuestToDisk => Permissions::Read,
    };
    let mut pos = off;
    for slice in mem
        .get_slices(addr, len as usize, access)
        .map_err(guest_err)?
    {
        let slice = slice.map_err(guest_err)?;
        // Plain mmap'd guest RAM: the same pointer serves reads and writes.
        let guard = slice.ptr_guard_mut();
        let mut done = 0usize;
        while done < slice.len() {
            let at =
                libc::off_t::try_from(pos + done as u64).map_err(|_| RequestError::OutOfRange)?;
            let (ptr, rest) = (guard.as_ptr().wrapping_add(done), slice.len() - done);
            // SAFETY: `ptr` points `done` bytes into the `slice.len()` bytes of mapped
            // guest memory behind `guard`, kept mapped while `slice` lives; the kernel
            // touches at most the `rest` bytes that follow. The guest may race on these
            // bytes: that only changes what it or the disk sees, never our memory.
            let n = unsafe {
                match way {
                    Transfer::DiskToGuest => libc::pread(disk.as_raw_fd(), ptr.cast(), rest, at),
                    Transfer::GuestToDisk => libc::pwrite(disk.as_raw_fd(), ptr.cast(), rest, at),
                }
            };
            done += io_progress(n, way)?;
        }
        if way == Transfer::DiskToGuest {
            slice.bitmap().mark_dirty(0, slice.len());
        }
        pos += slice.len() as u64;
    }
    Ok(())
}

/// Reads `len` bytes of an image at `off` into guest memory at `addr`, at most a chunk
/// at a time through one bounce buffer (the guest chooses `len`). A chunk that cannot
/// be fetched or fails its check is an I/O error: the guest never gets wrong bytes.
fn read_image<M: GuestMemoryTrait + ?Sized>(
    mem: &M,
    image: &mut ImageDisk,
    (off, addr, len): (u64, GuestAddress, u32),
) -> Result<(), RequestError> {
    let ImageDisk { reader, bounce } = image;
    let buf = &mut bounce[..];
    let mut done = 0u64;
    while done < u64::from(len) {
        let n = (u64::from(len) - done).min(buf.len() as u64) as usize;
        let got = reader
            .read_at(off + done, &mut buf[..n])
            .map_err(|e| RequestError::Io(e.to_string()))?;
        if got != n {
            return Err(RequestError::Io("read past the end of the image".into()));
        }
        let to = addr.checked_add(done).ok_or(RequestError::GuestMemory)?;
        mem.write_slice(&buf[..n], to).map_err(guest_err)?;
        done += n as u64;
    }
    Ok(())
}

/// Moves one data descriptor's bytes from the disk into guest memory.
fn read_into_guest<M: GuestMemoryTrait + ?Sized>(
    mem: &M,
    backing: &mut Backing,
    at: (u64, GuestAddress, u32),
) -> Result<(), RequestError> {
    match backing {
        Backing::File(file) => transfer(mem, file, at, Transfer::DiskToGuest),
        Backing::Image(image) => read_image(mem, image, at),
    }
}

/// Bytes a `pread`/`pwrite` moved; an interrupted call moved none and is retried.
fn io_progress(n: isize, way: Transfer) -> Result<usize, RequestError> {
    match n {
        0 if way == Transfer::DiskToGuest => Err(RequestError::Io(
            "read past the end of the disk file".into(),
        )),
        0 => Err(RequestError::Io("the disk file took no more bytes".into())),
        n if n > 0 => Ok(n as usize),
        _ => {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                Ok(0)
            } else {
                Err(RequestError::Io(e.to_string()))
            }
        }
    }
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
    match hdr.request_type {
        VIRTIO_BLK_T_IN => {
            let mut off = check_data(data, true, hdr.sector, disk)?;
            let mut written = 0u32;
            for d in data {
                read_into_guest(mem, &mut disk.backing, (off, d.addr(), d.len()))?;
                off += u64::from(d.len());
                written += d.len();
            }
            inc(&metrics.read_count);
            add(&metrics.read_bytes, u64::from(written));
            Ok(written)
        }
        VIRTIO_BLK_T_OUT => {
            let file = match (&disk.backing, disk.read_only) {
                (Backing::File(file), false) => file,
                _ => {
                    inc(&metrics.read_only_violations);
                    return Err(RequestError::ReadOnly);
                }
            };
            let mut off = check_data(data, false, hdr.sector, disk)?;
            for d in data {
                transfer(mem, file, (off, d.addr(), d.len()), Transfer::GuestToDisk)?;
                off += u64::from(d.len());
                add(&metrics.write_bytes, u64::from(d.len()));
            }
            inc(&metrics.write_count);
            Ok(0)
        }
        VIRTIO_BLK_T_FLUSH => {
            if let (Backing::File(file), false) = (&disk.backing, disk.read_only) {
                file.sync_data()
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;
    use vm_memory::GuestMemoryMmap;

    /// Guest RAM as two adjacent regions, a 100 KiB buffer straddling their border
    /// (past the old 64 KiB bounce chunk too), and a disk of numbered bytes.
    fn straddling() -> (GuestMemoryMmap<()>, GuestAddress, File, Vec<u8>) {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[
            (GuestAddress(0), 0x10_0000),
            (GuestAddress(0x10_0000), 0x10_0000),
        ])
        .expect("memory");
        let content: Vec<u8> = (0..400 * 1024u32).map(|i| (i % 251) as u8).collect();
        let path = std::env::temp_dir().join(format!(
            "vmm-blk-request-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let mut disk = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .expect("disk");
        std::fs::remove_file(&path).expect("unlink");
        disk.write_all(&content).expect("fill");
        (mem, GuestAddress(0x10_0000 - 40 * 1024), disk, content)
    }

    #[test]
    fn a_read_lands_in_guest_memory_across_regions() {
        let (mem, addr, disk, content) = straddling();
        transfer(&mem, &disk, (4096, addr, 100 * 1024), Transfer::DiskToGuest).expect("read");
        let mut got = vec![0u8; 100 * 1024];
        mem.read_slice(&mut got, addr).expect("guest");
        assert!(got == content[4096..4096 + 100 * 1024], "bytes differ");
    }

    #[test]
    fn a_write_takes_guest_memory_across_regions() {
        let (mem, addr, disk, mut content) = straddling();
        let data: Vec<u8> = (0..100 * 1024u32).map(|i| (i % 13) as u8 + 1).collect();
        mem.write_slice(&data, addr).expect("guest");
        transfer(&mem, &disk, (8192, addr, 100 * 1024), Transfer::GuestToDisk).expect("write");
        content[8192..8192 + 100 * 1024].copy_from_slice(&data);
        let mut got = vec![0u8; content.len()];
        std::os::unix::fs::FileExt::read_exact_at(&disk, &mut got, 0).expect("disk");
        assert!(got == content, "disk differs");
    }

    #[test]
    fn reading_past_the_files_end_or_guest_memory_is_an_error() {
        let (mem, addr, disk, _) = straddling();
        let end = 400 * 1024 - 512;
        assert!(matches!(
            transfer(&mem, &disk, (end, addr, 1024), Transfer::DiskToGuest),
            Err(RequestError::Io(_))
        ));
        assert_eq!(
            transfer(
                &mem,
                &disk,
                (0, GuestAddress(0x20_0000 - 512), 1024),
                Transfer::DiskToGuest
            ),
            Err(RequestError::GuestMemory)
        );
    }
}
