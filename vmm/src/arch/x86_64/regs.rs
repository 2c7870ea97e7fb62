//! Initial vCPU register state for the 64-bit Linux boot protocol.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
use kvm_ioctls::VcpuFd;
use vm_memory::{Bytes, GuestAddress};

use super::gdt::{boot_gdt, kvm_segment_from_gdt};
use super::layout::*;
use crate::devices::virtio::GuestMemory;

const X86_CR0_PE: u64 = 1 << 0;
const X86_CR0_PG: u64 = 1 << 31;
const X86_CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

#[derive(Debug, thiserror::Error)]
pub enum RegsError {
    #[error("writing boot page tables or GDT to guest memory: {0}")]
    GuestMemory(#[from] vm_memory::GuestMemoryError),
    #[error("KVM_SET_REGS: {0}")]
    SetRegs(kvm_ioctls::Error),
    #[error("KVM_GET_SREGS: {0}")]
    GetSregs(kvm_ioctls::Error),
    #[error("KVM_SET_SREGS: {0}")]
    SetSregs(kvm_ioctls::Error),
    #[error("KVM_SET_FPU: {0}")]
    SetFpu(kvm_ioctls::Error),
}

/// General-purpose registers: entry point, boot stack and `rsi` = boot_params.
pub fn setup_regs(vcpu: &VcpuFd, entry: u64) -> Result<(), RegsError> {
    let regs = kvm_regs {
        rflags: 0x2,
        rip: entry,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rsi: ZERO_PAGE_START,
        ..Default::default()
    };
    vcpu.set_regs(&regs).map_err(RegsError::SetRegs)
}

/// x87/SSE defaults the kernel expects (FCW = 0x37f, MXCSR = 0x1f80).
pub fn setup_fpu(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let fpu = kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    };
    vcpu.set_fpu(&fpu).map_err(RegsError::SetFpu)
}

/// Writes the GDT, IDT and identity page tables to guest memory (once per VM).
pub fn write_boot_tables(mem: &GuestMemory) -> Result<(), RegsError> {
    for (i, entry) in boot_gdt().iter().enumerate() {
        mem.write_obj(*entry, GuestAddress(GDT_ADDR + i as u64 * 8))?;
    }
    mem.write_obj(0u64, GuestAddress(IDT_ADDR))?;
    // 4 GiB identity map with 2 MiB pages: PML4[0] -> PDPT, PDPT[i] -> PD i.
    mem.write_obj(PDPTE_START | 0x03, GuestAddress(PML4_START))?;
    for i in 0..PDE_COUNT {
        let pd = PDE_START + i * 0x1000;
        mem.write_obj(pd | 0x03, GuestAddress(PDPTE_START + i * 8))?;
        for j in 0..512u64 {
            let page = ((i * 512 + j) << 21) | 0x83;
            mem.write_obj(page, GuestAddress(pd + j * 8))?;
        }
    }
    Ok(())
}

/// Segment, control and descriptor-table registers for long mode with paging on.
pub fn setup_sregs(vcpu: &VcpuFd) -> Result<(), RegsError> {
    let mut sregs: kvm_sregs = vcpu.get_sregs().map_err(RegsError::GetSregs)?;
    let gdt = boot_gdt();
    let code = kvm_segment_from_gdt(gdt[1], 1);
    let data = kvm_segment_from_gdt(gdt[2], 2);
    let tss = kvm_segment_from_gdt(gdt[3], 3);

    sregs.gdt.base = GDT_ADDR;
    sregs.gdt.limit = (std::mem::size_of_val(&gdt) - 1) as u16;
    sregs.idt.base = IDT_ADDR;
    sregs.idt.limit = (std::mem::size_of::<u64>() - 1) as u16;
    sregs.cs = code;
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = tss;

    sregs.cr0 |= X86_CR0_PE | X86_CR0_PG;
    sregs.cr3 = PML4_START;
    sregs.cr4 |= X86_CR4_PAE;
    sregs.efer |= EFER_LME | EFER_LMA;
    vcpu.set_sregs(&sregs).map_err(RegsError::SetSregs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tables_identity_map_4g() {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        write_boot_tables(&mem).unwrap();
        let pml4: u64 = mem.read_obj(GuestAddress(PML4_START)).unwrap();
        assert_eq!(pml4, PDPTE_START | 3);
        let pdpt3: u64 = mem.read_obj(GuestAddress(PDPTE_START + 24)).unwrap();
        assert_eq!(pdpt3, (PDE_START + 0x3000) | 3);
        // Last 2 MiB page of the 4th GiB maps 0xffe0_0000.
        let last: u64 = mem
            .read_obj(GuestAddress(PDE_START + 0x3000 + 511 * 8))
            .unwrap();
        assert_eq!(last, 0xffe0_0000 | 0x83);
        let gdt1: u64 = mem.read_obj(GuestAddress(GDT_ADDR + 8)).unwrap();
        assert_eq!(gdt1, boot_gdt()[1]);
    }
}
