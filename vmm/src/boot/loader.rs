//! Loads an uncompressed `vmlinux` (ELF) or a `bzImage` into guest memory.
//!
//! ELF headers are validated here before `linux-loader` runs: it does not check the machine
//! type, and we want "does not fit in guest memory" as its own clear error.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{bzimage::BzImage, elf::Elf, KernelLoader};
use vm_memory::{Address, GuestAddress, GuestMemoryBackend};

use crate::arch::x86_64::layout::HIMEM_START;
use crate::devices::virtio::GuestMemory;

const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
const ELFCLASS64: u8 = 2;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;
const EHDR_SIZE: usize = 64;
const PHDR_SIZE: usize = 56;
const MAX_PHDRS: u16 = 64;
/// Offset of the 64-bit entry point from the start of a bzImage's protected-mode code.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;

#[derive(Debug, thiserror::Error)]
pub enum LoaderError {
    #[error("cannot open kernel image {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read kernel image {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("kernel image {0} is neither an ELF vmlinux nor a bzImage")]
    UnknownFormat(PathBuf),
    #[error("kernel image {path} is a 32-bit ELF; a 64-bit x86_64 vmlinux is required")]
    NotElf64 { path: PathBuf },
    #[error("kernel image {path} is an ELF for machine type {machine}, expected x86_64 (62)")]
    WrongMachine { path: PathBuf, machine: u16 },
    #[error("kernel image {path} has a malformed ELF header: {reason}")]
    BadElf { path: PathBuf, reason: &'static str },
    #[error(
        "kernel image {path} needs guest memory up to {end:#x} but the guest has {mem_mib} MiB"
    )]
    TooLarge {
        path: PathBuf,
        end: u64,
        mem_mib: u64,
    },
    #[error("loading kernel image {path}: {source}")]
    Load {
        path: PathBuf,
        source: linux_loader::loader::Error,
    },
}

/// Where the kernel ended up.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    pub entry: GuestAddress,
    pub kernel_end: u64,
    /// Present for a bzImage: its setup header seeds the zero page.
    pub setup_header: Option<setup_header>,
}

/// One PT_LOAD program header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub offset: u64,
    pub paddr: u64,
    pub filesz: u64,
    pub memsz: u64,
}

/// What the ELF headers say about loading the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    pub entry: u64,
    pub segments: Vec<Segment>,
    pub max_end: u64,
}

enum Format {
    Elf(ElfInfo),
    BzImage,
}

fn read_at(file: &mut File, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(offset))?;
    file.read_exact(buf)
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes([b[o], b[o + 1]])
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

/// Checks the ELF header and reads the loadable segments.
fn inspect_elf(
    file: &mut File,
    path: &Path,
    ehdr: &[u8; EHDR_SIZE],
) -> Result<ElfInfo, LoaderError> {
    let bad = |reason| LoaderError::BadElf {
        path: path.to_owned(),
        reason,
    };
    if ehdr[4] != ELFCLASS64 {
        return Err(LoaderError::NotElf64 {
            path: path.to_owned(),
        });
    }
    let machine = u16_at(ehdr, 18);
    if machine != EM_X86_64 {
        return Err(LoaderError::WrongMachine {
            path: path.to_owned(),
            machine,
        });
    }
    let phoff = u64_at(ehdr, 32);
    let phentsize = u16_at(ehdr, 54);
    let phnum = u16_at(ehdr, 56);
    if usize::from(phentsize) != PHDR_SIZE {
        return Err(bad("unexpected program header size"));
    }
    if phnum == 0 || phnum > MAX_PHDRS {
        return Err(bad("unreasonable number of program headers"));
    }
    let mut max_end = 0u64;
    let mut segments = Vec::new();
    for i in 0..u64::from(phnum) {
        let mut ph = [0u8; PHDR_SIZE];
        let off = phoff
            .checked_add(i * PHDR_SIZE as u64)
            .ok_or_else(|| bad("program header offset overflows"))?;
        read_at(file, off, &mut ph).map_err(|_| bad("truncated program headers"))?;
        if u32_at(&ph, 0) != PT_LOAD {
            continue;
        }
        let seg = Segment {
            offset: u64_at(&ph, 8),
            paddr: u64_at(&ph, 24),
            filesz: u64_at(&ph, 32),
            memsz: u64_at(&ph, 40),
        };
        if seg.filesz > seg.memsz {
            return Err(bad("segment file size exceeds its memory size"));
        }
        seg.offset
            .checked_add(seg.filesz)
            .ok_or_else(|| bad("segment file range overflows"))?;
        let end = seg
            .paddr
            .checked_add(seg.memsz)
            .ok_or_else(|| bad("segment address overflows"))?;
        max_end = max_end.max(end);
        segments.push(seg);
    }
    if max_end == 0 {
        return Err(bad("no loadable segments"));
    }
    Ok(ElfInfo {
        entry: u64_at(ehdr, 24),
        segments,
        max_end,
    })
}

fn detect(file: &mut File, path: &Path) -> Result<Format, LoaderError> {
    let read_err = |source| LoaderError::Read {
        path: path.to_owned(),
        source,
    };
    let len = file.metadata().map_err(read_err)?.len();
    if len >= EHDR_SIZE as u64 {
        let mut ehdr = [0u8; EHDR_SIZE];
        read_at(file, 0, &mut ehdr).map_err(read_err)?;
        if ehdr[0..4] == ELF_MAGIC {
            return Ok(Format::Elf(inspect_elf(file, path, &ehdr)?));
        }
    }
    if len >= 0x206 {
        let mut magic = [0u8; 4];
        read_at(file, 0x202, &mut magic).map_err(read_err)?;
        if &magic == b"HdrS" {
            return Ok(Format::BzImage);
        }
    }
    Err(LoaderError::UnknownFormat(path.to_owned()))
}

/// Highest guest-physical address backed by RAM, plus one.
pub fn mem_end(mem: &GuestMemory) -> u64 {
    mem.last_addr().raw_value() + 1
}

pub fn load_kernel(mem: &GuestMemory, path: &Path) -> Result<LoadedKernel, LoaderError> {
    let mut file = File::open(path).map_err(|source| LoaderError::Open {
        path: path.to_owned(),
        source,
    })?;
    let format = detect(&mut file, path)?;
    let mem_mib = mem
        .iter()
        .map(vm_memory::GuestMemoryRegion::len)
        .sum::<u64>()
        >> 20;
    let too_large = |end| LoaderError::TooLarge {
        path: path.to_owned(),
        end,
        mem_mib,
    };
    let load_err = |source| LoaderError::Load {
        path: path.to_owned(),
        source,
    };
    match format {
        Format::Elf(info) => {
            if !mem.address_in_range(GuestAddress(info.max_end.saturating_sub(1))) {
                return Err(too_large(info.max_end));
            }
            if info.segments.iter().any(|s| s.paddr < HIMEM_START) || info.entry < HIMEM_START {
                // Below 1 MiB is the boot protocol's; linux-loader explains the refusal.
                let res = Elf::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START)))
                    .map_err(load_err)?;
                return Ok(LoadedKernel {
                    entry: res.kernel_load,
                    kernel_end: res.kernel_end,
                    setup_header: None,
                });
            }
            super::elf_map::load(mem, &file, &info).map_err(|source| LoaderError::Read {
                path: path.to_owned(),
                source,
            })?;
            Ok(LoadedKernel {
                entry: GuestAddress(info.entry),
                kernel_end: info.max_end,
                setup_header: None,
            })
        }
        Format::BzImage => {
            // The protected-mode part lands at 1 MiB; a bzImage is never larger than that part.
            let needed = res_end_hint(path);
            if needed > mem_end(mem) {
                return Err(too_large(needed));
            }
            let res = BzImage::load(mem, None, &mut file, Some(GuestAddress(HIMEM_START)))
                .map_err(load_err)?;
            if res.kernel_end > mem_end(mem) {
                return Err(too_large(res.kernel_end));
            }
            Ok(LoadedKernel {
                entry: GuestAddress(res.kernel_load.raw_value() + BZIMAGE_64BIT_ENTRY_OFFSET),
                kernel_end: res.kernel_end,
                setup_header: res.setup_header,
            })
        }
    }
}

/// Upper bound of guest memory a bzImage occupies once loaded at 1 MiB.
fn res_end_hint(path: &Path) -> u64 {
    std::fs::metadata(path)
        .map(|m| HIMEM_START + m.len())
        .unwrap_or(HIMEM_START)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::tiny_guest::{elf_image, TinyProgram};

    /// A file holding `bytes`, removed when the test drops it.
    fn write_tmp(name: &str, bytes: &[u8]) -> tempfile::TempPath {
        let mut f = tempfile::Builder::new().prefix(name).tempfile().unwrap();
        std::io::Write::write_all(&mut f, bytes).unwrap();
        f.into_temp_path()
    }

    fn mem(mib: usize) -> GuestMemory {
        GuestMemory::from_ranges(&[(GuestAddress(0), mib << 20)]).unwrap()
    }

    #[test]
    fn loads_tiny_elf() {
        let img = elf_image(&TinyProgram::new().serial_str("hi").reset().code(), 62);
        let p = write_tmp("ok.elf", &img);
        let k = load_kernel(&mem(4), &p).unwrap();
        assert!(k.entry.raw_value() >= HIMEM_START);
        assert!(k.setup_header.is_none());
    }

    #[test]
    fn rejects_wrong_machine() {
        let img = elf_image(&[0xf4], 183);
        let p = write_tmp("arm.elf", &img);
        let e = load_kernel(&mem(4), &p).unwrap_err();
        assert!(
            matches!(e, LoaderError::WrongMachine { machine: 183, .. }),
            "{e}"
        );
    }

    #[test]
    fn rejects_kernel_beyond_memory() {
        let img = elf_image(&[0xf4], 62);
        let p = write_tmp("big.elf", &img);
        let e = load_kernel(&mem(1), &p).unwrap_err();
        assert!(matches!(e, LoaderError::TooLarge { .. }), "{e}");
    }

    #[test]
    fn rejects_garbage_and_missing() {
        let p = write_tmp("garbage", &[0u8; 4096]);
        assert!(matches!(
            load_kernel(&mem(4), &p).unwrap_err(),
            LoaderError::UnknownFormat(_)
        ));
        let e = load_kernel(&mem(4), Path::new("/nonexistent/vmlinux")).unwrap_err();
        assert!(matches!(e, LoaderError::Open { .. }));
        let mut trunc = elf_image(&[0xf4], 62);
        trunc.truncate(70);
        let p = write_tmp("trunc.elf", &trunc);
        assert!(matches!(
            load_kernel(&mem(4), &p).unwrap_err(),
            LoaderError::BadElf { .. }
        ));
    }
}
