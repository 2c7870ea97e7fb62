//! The zero page (`struct boot_params`): setup header, e820 map, command line, initrd.

use linux_loader::loader::bootparam::{boot_params, setup_header};
use vm_memory::{Address, ByteValued, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::arch::x86_64::layout::*;
use crate::devices::virtio::GuestMemory;

const E820_RAM: u32 = 1;
const E820_RESERVED: u32 = 2;
const KERNEL_BOOT_FLAG_MAGIC: u16 = 0xaa55;
const KERNEL_HDR_MAGIC: u32 = 0x5372_6448;
/// "Undefined" boot loader id: we are not a registered loader.
const KERNEL_LOADER_OTHER: u8 = 0xff;
const KERNEL_MIN_ALIGNMENT_BYTES: u32 = 0x0100_0000;
const E820_MAX_ENTRIES: usize = 128;

#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct BootParamsBytes(boot_params);

// SAFETY: boot_params is a C struct of integers and arrays of integers with no padding
// invariants; any byte pattern is a valid value.
unsafe impl ByteValued for BootParamsBytes {}

#[derive(Debug, thiserror::Error)]
pub enum ParamsError {
    #[error("too many e820 entries")]
    E820Full,
    #[error("writing boot_params: {0}")]
    GuestMemory(#[from] vm_memory::GuestMemoryError),
}

/// Initrd placement, if any.
#[derive(Debug, Clone, Copy)]
pub struct InitrdInfo {
    pub addr: GuestAddress,
    pub size: u64,
}

fn add_e820(p: &mut boot_params, addr: u64, size: u64, kind: u32) -> Result<(), ParamsError> {
    let idx = usize::from(p.e820_entries);
    if idx >= E820_MAX_ENTRIES {
        return Err(ParamsError::E820Full);
    }
    p.e820_table[idx].addr = addr;
    p.e820_table[idx].size = size;
    p.e820_table[idx].r#type = kind;
    p.e820_entries += 1;
    Ok(())
}

/// Builds the zero page contents.
pub fn build_boot_params(
    mem: &GuestMemory,
    header: Option<setup_header>,
    cmdline_size: usize,
    initrd: Option<InitrdInfo>,
) -> Result<boot_params, ParamsError> {
    let mut p = boot_params::default();
    if let Some(h) = header {
        p.hdr = h;
    }
    p.hdr.type_of_loader = KERNEL_LOADER_OTHER;
    p.hdr.boot_flag = KERNEL_BOOT_FLAG_MAGIC;
    p.hdr.header = KERNEL_HDR_MAGIC;
    p.hdr.kernel_alignment = KERNEL_MIN_ALIGNMENT_BYTES;
    p.hdr.cmd_line_ptr = CMDLINE_START as u32;
    p.hdr.cmdline_size = cmdline_size as u32;
    if let Some(i) = initrd {
        p.hdr.ramdisk_image = i.addr.raw_value() as u32;
        p.hdr.ramdisk_size = i.size as u32;
    }

    add_e820(&mut p, 0, EBDA_START, E820_RAM)?;
    add_e820(&mut p, EBDA_START, HIMEM_START - EBDA_START, E820_RESERVED)?;
    for region in mem.iter() {
        let start = region.start_addr().raw_value().max(HIMEM_START);
        let end = region.start_addr().raw_value() + region.len();
        if end > start {
            add_e820(&mut p, start, end - start, E820_RAM)?;
        }
    }
    Ok(p)
}

pub fn write_boot_params(mem: &GuestMemory, p: boot_params) -> Result<(), ParamsError> {
    mem.write_obj(BootParamsBytes(p), GuestAddress(ZERO_PAGE_START))?;
    Ok(())
}

/// Highest page-aligned address where an initrd of `size` bytes fits in low RAM, above the
/// kernel. `None` if it does not fit.
pub fn initrd_addr(mem: &GuestMemory, kernel_end: u64, size: u64) -> Option<GuestAddress> {
    let low_end = mem
        .iter()
        .find(|r| r.start_addr().raw_value() == 0)
        .map(|r| r.len())?;
    let addr = low_end.checked_sub(size)? & !0xfff;
    (addr >= kernel_end && addr >= HIMEM_START).then_some(GuestAddress(addr))
}

/// Guest-physical ranges for `mem_bytes` of RAM, split around the MMIO gap.
pub fn memory_ranges(mem_bytes: u64) -> Vec<(GuestAddress, usize)> {
    if mem_bytes <= MMIO_GAP_START {
        vec![(GuestAddress(0), mem_bytes as usize)]
    } else {
        vec![
            (GuestAddress(0), MMIO_GAP_START as usize),
            (
                GuestAddress(MMIO_GAP_END),
                (mem_bytes - MMIO_GAP_START) as usize,
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_split_around_gap() {
        assert_eq!(memory_ranges(128 << 20), vec![(GuestAddress(0), 128 << 20)]);
        let r = memory_ranges(4 << 30);
        assert_eq!(r[0], (GuestAddress(0), MMIO_GAP_START as usize));
        assert_eq!(r[1].0, GuestAddress(1 << 32));
        assert_eq!(r[1].1 as u64, (4u64 << 30) - MMIO_GAP_START);
    }

    #[test]
    fn e820_and_header() {
        let mem = GuestMemory::from_ranges(&memory_ranges(64 << 20)).unwrap();
        let p = build_boot_params(&mem, None, 100, None).unwrap();
        assert_eq!(p.e820_entries, 3);
        assert_eq!({ p.e820_table[0].size }, EBDA_START);
        assert_eq!({ p.e820_table[2].addr }, HIMEM_START);
        assert_eq!({ p.e820_table[2].size }, (64 << 20) - HIMEM_START);
        assert_eq!({ p.hdr.cmd_line_ptr }, CMDLINE_START as u32);
        assert_eq!({ p.hdr.boot_flag }, 0xaa55);
        write_boot_params(&mem, p).unwrap();
    }

    #[test]
    fn initrd_goes_to_top_of_low_memory() {
        let mem = GuestMemory::from_ranges(&memory_ranges(64 << 20)).unwrap();
        let a = initrd_addr(&mem, 0x20_0000, 0x1800).unwrap();
        assert_eq!(a.raw_value(), ((64 << 20) - 0x1800) & !0xfff);
        assert!(initrd_addr(&mem, 0x20_0000, 128 << 20).is_none());
    }
}
