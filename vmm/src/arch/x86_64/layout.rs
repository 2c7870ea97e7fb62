//! Guest physical memory layout (all addresses are guest-physical).
//!
//! ```text
//! 0x0000_0500  GDT (4 entries)          0x0000_0520  IDT (one null entry)
//! 0x0000_7000  boot_params (zero page)  0x0000_8ff0  initial stack pointer
//! 0x0000_9000  PML4, 0xa000 PDPT, 0xb000..0xf000 four page directories (4 GiB identity map)
//! 0x0002_0000  kernel command line (2 KiB)
//! 0x0009_fc00  EBDA: MP floating pointer + MP config table
//! 0x0010_0000  high memory: kernel, initrd (at the top of low RAM)
//! 0xd000_0000  MMIO gap start: boot timer (4 KiB), then virtio-mmio devices (4 KiB each)
//! 0xfec0_0000  IOAPIC, 0xfee0_0000 LAPIC (in-kernel)
//! 0xfffb_c000  KVM identity map page, 0xfffb_d000 KVM TSS (3 pages)
//! 0x1_0000_0000 RAM above the gap when the guest has more than 3.25 GiB
//! ```

pub const GDT_ADDR: u64 = 0x500;
pub const IDT_ADDR: u64 = 0x520;
pub const ZERO_PAGE_START: u64 = 0x7000;
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
pub const PML4_START: u64 = 0x9000;
pub const PDPTE_START: u64 = 0xa000;
pub const PDE_START: u64 = 0xb000;
/// Number of 1 GiB page directories mapped at boot (identity map of the low 4 GiB, so the
/// MMIO gap is reachable before the kernel installs its own tables).
pub const PDE_COUNT: u64 = 4;
pub const CMDLINE_START: u64 = 0x20000;
/// x86 COMMAND_LINE_SIZE in Linux.
pub const CMDLINE_MAX_SIZE: usize = 2048;
pub const EBDA_START: u64 = 0x9fc00;
pub const MPTABLE_START: u64 = EBDA_START;
pub const HIMEM_START: u64 = 0x10_0000;

pub const MMIO_GAP_START: u64 = 0xd000_0000;
pub const MMIO_GAP_END: u64 = 1 << 32;

pub const KVM_IDENTITY_MAP_ADDRESS: u64 = 0xfffb_c000;
pub const KVM_TSS_ADDRESS: u64 = 0xfffb_d000;

pub const IOAPIC_ADDR: u64 = 0xfec0_0000;
pub const LAPIC_ADDR: u64 = 0xfee0_0000;

/// Boot-timer device: the guest writes [`BOOT_TIMER_MAGIC`] to offset 0.
pub const BOOT_TIMER_ADDR: u64 = MMIO_GAP_START;
pub const BOOT_TIMER_SIZE: u64 = 0x1000;
pub const BOOT_TIMER_MAGIC: u8 = 123;

/// First virtio-mmio device window; device `i` lives at `VIRTIO_MMIO_BASE + i * VIRTIO_MMIO_SIZE`.
pub const VIRTIO_MMIO_BASE: u64 = MMIO_GAP_START + BOOT_TIMER_SIZE;
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;

/// Legacy ISA IRQs.
pub const I8042_IRQ: u32 = 1;
pub const SERIAL_IRQ: u32 = 4;
/// Virtio-mmio devices take IRQs from here up to [`VIRTIO_IRQ_MAX`].
pub const VIRTIO_IRQ_BASE: u32 = 5;
pub const VIRTIO_IRQ_MAX: u32 = 23;

pub const COM1_PORT: u16 = 0x3f8;
pub const I8042_PORT: u16 = 0x60;

/// Upper bound on vCPUs: the MP table has to fit in the EBDA (1 KiB).
pub const MAX_VCPUS: u8 = 32;
