//! Loading a vmlinux by mapping it. Every whole page of each PT_LOAD is mapped
//! `MAP_PRIVATE` from the file over guest RAM, so the kernel's pages come from the page
//! cache, shared by every VM that boots the same file until a guest writes one (copy on
//! write), instead of being read, copied and their RAM zeroed for each VM. A segment's
//! last partial page is copied; the rest of its memory size is fresh guest RAM, which is
//! already zero.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::loader::{ElfInfo, Segment};
use crate::devices::virtio::GuestMemory;

const PAGE: u64 = 4096;

/// Maps (or copies) every segment of `info` into `mem`. The caller checked that every
/// segment lies in guest RAM above the boot protocol's first MiB.
pub fn load(mem: &GuestMemory, file: &File, info: &ElfInfo) -> io::Result<()> {
    for seg in &info.segments {
        let mapped = map_whole_pages(mem, file, seg)?;
        copy(
            mem,
            file,
            seg.offset + mapped,
            seg.paddr + mapped,
            seg.filesz - mapped,
        )?;
    }
    Ok(())
}

/// Maps the segment's whole pages; returns how many bytes it mapped (0 when the
/// segment's file offset and address do not share a page alignment).
fn map_whole_pages(mem: &GuestMemory, file: &File, seg: &Segment) -> io::Result<u64> {
    let len = seg.filesz / PAGE * PAGE;
    if len == 0 || seg.offset % PAGE != 0 || seg.paddr % PAGE != 0 {
        return Ok(0);
    }
    let Some(region) = mem.find_region(GuestAddress(seg.paddr)) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "segment outside guest RAM",
        ));
    };
    let start_in_region = seg.paddr - region.start_addr().0;
    if start_in_region + len > region.len() {
        return Ok(0);
    }
    let host = mem
        .get_host_address(GuestAddress(seg.paddr))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    // SAFETY: `host..host+len` lies inside one guest RAM mapping owned by `mem` (checked
    // against the region above), and nothing holds a Rust reference into it while the
    // VM is being built; MAP_FIXED replaces exactly those pages with a private mapping
    // of the kernel file, which stays valid for the life of the process like guest RAM.
    let got = unsafe {
        libc::mmap(
            host.cast(),
            len as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_FIXED,
            file.as_raw_fd(),
            seg.offset as libc::off_t,
        )
    };
    if got == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(len)
}

fn copy(mem: &GuestMemory, file: &File, offset: u64, paddr: u64, len: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, offset)?;
    mem.write_slice(&buf, GuestAddress(paddr))
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::boot::loader::load_kernel;

    /// An ELF whose one segment is `pages` pages plus `tail` bytes of a known pattern,
    /// with `bss` more bytes of memory, at 2 MiB.
    fn paged_elf(pages: u64, tail: u64, bss: u64) -> Vec<u8> {
        const OFF: u64 = 0x1000;
        let filesz = pages * PAGE + tail;
        let mut v = vec![0u8; OFF as usize];
        v[..4].copy_from_slice(b"\x7fELF");
        v[4] = 2;
        v[5] = 1;
        v[6] = 1;
        v[16..18].copy_from_slice(&2u16.to_le_bytes());
        v[18..20].copy_from_slice(&62u16.to_le_bytes());
        v[20..24].copy_from_slice(&1u32.to_le_bytes());
        v[24..32].copy_from_slice(&0x20_0000u64.to_le_bytes());
        v[32..40].copy_from_slice(&64u64.to_le_bytes());
        v[52..54].copy_from_slice(&64u16.to_le_bytes());
        v[54..56].copy_from_slice(&56u16.to_le_bytes());
        v[56..58].copy_from_slice(&1u16.to_le_bytes());
        let ph = &mut v[64..120];
        ph[0..4].copy_from_slice(&1u32.to_le_bytes());
        ph[8..16].copy_from_slice(&OFF.to_le_bytes());
        ph[16..24].copy_from_slice(&0x20_0000u64.to_le_bytes());
        ph[24..32].copy_from_slice(&0x20_0000u64.to_le_bytes());
        ph[32..40].copy_from_slice(&filesz.to_le_bytes());
        ph[40..48].copy_from_slice(&(filesz + bss).to_le_bytes());
        v.extend((0..filesz).map(|i| (i * 7 % 251) as u8 + 1));
        // Bytes past the segment in the file must not leak into the guest.
        v.extend([0xee; 64]);
        v
    }

    #[test]
    fn maps_whole_pages_copies_the_tail_and_leaves_bss_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.elf");
        std::fs::write(&path, paged_elf(3, 100, 5000)).unwrap();
        let mem = crate::vstate::memory::create_guest_memory(8).unwrap();
        let k = load_kernel(&mem, &path).unwrap();
        assert_eq!(k.entry, GuestAddress(0x20_0000));
        let mut got = vec![0u8; (3 * PAGE + 100 + 5000) as usize];
        mem.read_slice(&mut got, GuestAddress(0x20_0000)).unwrap();
        for (i, b) in got[..(3 * PAGE + 100) as usize].iter().enumerate() {
            assert_eq!(*b, (i as u64 * 7 % 251) as u8 + 1, "byte {i}");
        }
        assert!(got[(3 * PAGE + 100) as usize..].iter().all(|&b| b == 0));
        // Guest writes stay private: the file is untouched.
        mem.write_obj(0xffu8, GuestAddress(0x20_0000)).unwrap();
        assert_eq!(std::fs::read(&path).unwrap()[0x1000], 1);
    }
}
