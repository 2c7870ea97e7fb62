//! Guest RAM in a snapshot's memory file: the regions of `boot::params::memory_ranges`
//! back to back, all-zero pages left as holes. A restore maps the file `MAP_PRIVATE`:
//! pages load on first touch from the page cache, which every VM restored from the same
//! file shares until one writes a page.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;

use vm_memory::mmap::{GuestRegionMmap, MmapRegion};

use crate::boot::params::memory_ranges;
use crate::devices::virtio::GuestMemory;
use crate::vstate::memory::region_host_ranges;

const PAGE: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum MemoryFileError {
    #[error("writing the memory file: {0}")]
    Write(std::io::Error),
    #[error("reading the memory file: {0}")]
    Read(std::io::Error),
    #[error("memory file holds {found} bytes, the snapshot's {mib} MiB guest needs {expected}")]
    Size { found: u64, expected: u64, mib: u64 },
    #[error("memory file checksum mismatch: the file was modified")]
    Checksum,
    #[error("mapping the memory file: {0}")]
    Map(std::io::Error),
    #[error("guest memory layout: {0}")]
    Layout(String),
}

fn is_zero(page: &[u8]) -> bool {
    let (head, words, tail) = {
        // SAFETY: any byte pattern is a valid u64; align_to only reinterprets the aligned
        // middle of the slice and returns the unaligned ends as bytes.
        unsafe { page.align_to::<u64>() }
    };
    head.iter().all(|&b| b == 0) && words.iter().all(|&w| w == 0) && tail.iter().all(|&b| b == 0)
}

/// Writes the non-zero pages of `bytes` at `base` in `file`.
fn write_nonzero(file: &File, bytes: &[u8], base: u64) -> std::io::Result<()> {
    let mut run_start: Option<usize> = None;
    for (i, page) in bytes.chunks(PAGE).enumerate() {
        let at = i * PAGE;
        match (is_zero(page), run_start) {
            (false, None) => run_start = Some(at),
            (true, Some(start)) => {
                file.write_all_at(&bytes[start..at], base + start as u64)?;
                run_start = None;
            }
            _ => {}
        }
    }
    if let Some(start) = run_start {
        file.write_all_at(&bytes[start..], base + start as u64)?;
    }
    Ok(())
}

/// Writes guest RAM to `file` (replacing what it held); returns the BLAKE3 of the
/// file's contents. The vCPUs are paused and this is the event-loop thread, the only
/// other writer of guest memory, so nothing changes it meanwhile.
pub fn write(mem: &GuestMemory, file: &File) -> Result<[u8; 32], MemoryFileError> {
    let ranges = region_host_ranges(mem);
    let total: u64 = ranges.iter().map(|(_, len, _)| len).sum();
    file.set_len(0).map_err(MemoryFileError::Write)?;
    file.set_len(total).map_err(MemoryFileError::Write)?;
    let mut hasher = blake3::Hasher::new();
    let mut offset = 0u64;
    for (_, len, host) in ranges {
        // SAFETY: `host..host+len` is one live region of guest RAM owned by `mem`, which
        // outlives this borrow; nothing writes it meanwhile (see above).
        let bytes = unsafe { std::slice::from_raw_parts(host as *const u8, len as usize) };
        hasher.update(bytes);
        write_nonzero(file, bytes, offset).map_err(MemoryFileError::Write)?;
        offset += len;
    }
    file.sync_data().map_err(MemoryFileError::Write)?;
    Ok(*hasher.finalize().as_bytes())
}

/// Reads the whole file once to check it against `expected`; the pages it reads stay in
/// the page cache, where the mapping then finds them.
fn verify(file: &File, expected: &[u8; 32]) -> Result<(), MemoryFileError> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut offset = 0u64;
    loop {
        let n = file
            .read_at(&mut buf, offset)
            .map_err(MemoryFileError::Read)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        offset += n as u64;
    }
    if hasher.finalize().as_bytes() != expected {
        return Err(MemoryFileError::Checksum);
    }
    Ok(())
}

/// Maps `file` as the guest RAM of a `mem_mib` MiB guest, copy-on-write, after checking
/// its size and, given `expected`, its checksum.
pub fn map(
    file: &File,
    mem_mib: u64,
    expected: Option<&[u8; 32]>,
) -> Result<GuestMemory, MemoryFileError> {
    let want = mem_mib << 20;
    let found = file.metadata().map_err(MemoryFileError::Read)?.len();
    if found != want {
        return Err(MemoryFileError::Size {
            found,
            expected: want,
            mib: mem_mib,
        });
    }
    if let Some(sum) = expected {
        verify(file, sum)?;
    }
    let mut offset = 0u64;
    let mut regions = Vec::new();
    for (guest, len) in memory_ranges(want) {
        regions.push(map_region(file, offset, len, guest)?);
        offset += len as u64;
    }
    GuestMemory::from_regions(regions).map_err(|e| MemoryFileError::Layout(e.to_string()))
}

fn map_region(
    file: &File,
    offset: u64,
    len: usize,
    guest: vm_memory::GuestAddress,
) -> Result<GuestRegionMmap<()>, MemoryFileError> {
    let prot = libc::PROT_READ | libc::PROT_WRITE;
    let flags = libc::MAP_PRIVATE | libc::MAP_NORESERVE;
    // SAFETY: a new private mapping of an open file at a page-aligned offset (regions
    // are whole MiB); the result is checked. Writes go to private copies, never the file.
    let raw = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            flags,
            file.as_raw_fd(),
            offset as libc::off_t,
        )
    };
    if raw == libc::MAP_FAILED {
        return Err(MemoryFileError::Map(std::io::Error::last_os_error()));
    }
    // SAFETY: `raw..raw+len` is the mapping just made with `prot` and `flags`; as for
    // booted guests it is never unmapped (one VM per process, RAM lives as long as it).
    let region = unsafe { MmapRegion::build_raw(raw.cast::<u8>(), len, prot, flags) }
        .map_err(|e| MemoryFileError::Layout(e.to_string()))?;
    GuestRegionMmap::new(region, guest)
        .ok_or_else(|| MemoryFileError::Layout(format!("region at {guest:?} overflows")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress};

    fn tmp(name: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("vmm-memfile-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&d);
        d
    }

    #[test]
    fn round_trip_keeps_bytes_leaves_holes_and_writes_stay_private() {
        let mem = crate::vstate::memory::create_guest_memory(4).unwrap();
        mem.write_obj(0xdead_beef_u32, GuestAddress(0x1000))
            .unwrap();
        mem.write_obj(0x5au8, GuestAddress((4 << 20) - 1)).unwrap();
        let path = tmp("rt");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(&path)
            .unwrap();
        let sum = write(&mem, &f).unwrap();
        use std::os::unix::fs::MetadataExt;
        let meta = f.metadata().unwrap();
        assert_eq!(meta.len(), 4 << 20);
        assert!(
            meta.blocks() * 512 < 1 << 20,
            "zero pages are holes: {}",
            meta.blocks()
        );

        let restored = map(&f, 4, Some(&sum)).unwrap();
        assert_eq!(
            restored.read_obj::<u32>(GuestAddress(0x1000)).unwrap(),
            0xdead_beef
        );
        assert_eq!(
            restored
                .read_obj::<u8>(GuestAddress((4 << 20) - 1))
                .unwrap(),
            0x5a
        );
        restored.write_obj(7u32, GuestAddress(0x1000)).unwrap();
        let again = map(&f, 4, Some(&sum)).unwrap();
        assert_eq!(
            again.read_obj::<u32>(GuestAddress(0x1000)).unwrap(),
            0xdead_beef
        );

        assert!(matches!(
            map(&f, 8, None),
            Err(MemoryFileError::Size { .. })
        ));
        f.write_all_at(&[1], 0x2000).unwrap();
        assert!(matches!(
            map(&f, 4, Some(&sum)),
            Err(MemoryFileError::Checksum)
        ));
        // Unchecked, the change shows: the caller vouched for the file.
        let lazy = map(&f, 4, None).unwrap();
        assert_eq!(lazy.read_obj::<u8>(GuestAddress(0x2000)).unwrap(), 1);
        let _ = std::fs::remove_file(&path);
    }
}
