//! Does this host's KVM track the guest's XCR0? KVM computes CPUID leaf 0xD (the XSAVE
//! area size) from the XCR0 the guest set with XSETBV, which it intercepts. Some nested
//! setups do not pass that intercept on (QEMU TCG emulating SVM for an L1 KVM): the
//! guest's XSETBV then never reaches KVM, CPUID keeps reporting the legacy 576-byte
//! area, and Linux warns "XSAVE consistency problem" and falls back. The probe runs the
//! sequence once in a throwaway one-page VM: XSETBV(x87|SSE|AVX), CPUID(0xD, 0), HLT,
//! and compares EBX with the size the enabled components need.

use kvm_bindings::{kvm_userspace_memory_region, CpuId};
use kvm_ioctls::{Kvm, VcpuExit};

/// Guest-physical address of the probe code (the VM has one page at 0x1000).
const CODE_GPA: u64 = 0x1000;
const PAGE: usize = 0x1000;
const LEGACY_AREA: u32 = 576;
const XCR0_X87_SSE_AVX: u64 = 0b111;
const CR4_OSXSAVE: u64 = 1 << 18;

/// Real-mode code: xor ecx,ecx; mov eax,7; xor edx,edx; xsetbv; mov eax,0xd;
/// xor ecx,ecx; cpuid; hlt.
const CODE: [u8; 28] = [
    0x66, 0x31, 0xC9, 0x66, 0xB8, 0x07, 0x00, 0x00, 0x00, 0x66, 0x31, 0xD2, 0x0F, 0x01, 0xD1, 0x66,
    0xB8, 0x0D, 0x00, 0x00, 0x00, 0x66, 0x31, 0xC9, 0x0F, 0xA2, 0xF4, 0x90,
];

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error("probe VM: {0}")]
    Kvm(#[from] kvm_ioctls::Error),
    #[error("probe VM memory: {0}")]
    Mmap(std::io::Error),
    #[error("probe VM stopped with {0} instead of HLT")]
    Exit(String),
}

/// Bytes the XSAVE area needs for the components in `xcr0`, from CPUID leaf 0xD.
pub fn xsave_size_for(cpuid: &CpuId, xcr0: u64) -> u32 {
    cpuid
        .as_slice()
        .iter()
        .filter(|e| e.function == 0xd && (2..63).contains(&e.index) && xcr0 & (1 << e.index) != 0)
        .map(|e| e.ebx + e.eax)
        .fold(LEGACY_AREA, u32::max)
}

/// The XCR0 the probe sets: x87, SSE and AVX when the host offers AVX.
fn probe_xcr0(supported: &CpuId) -> u64 {
    let offered = supported
        .as_slice()
        .iter()
        .find(|e| e.function == 0xd && e.index == 0)
        .map_or(0, |e| u64::from(e.eax));
    offered & XCR0_X87_SSE_AVX
}

/// How QEMU's TCG names its CPUs (`-cpu max` and friends) in the brand string.
const QEMU_TCG_BRAND: &str = "QEMU TCG CPU";

/// The brand-string registers (CPUID 0x8000_0002..=0x8000_0004) as text. Read from
/// the host's own CPUID: KVM leaves these leaves out of its supported table on some
/// hosts.
fn brand_text(words: &[u32; 12]) -> String {
    let bytes: Vec<u8> = words.iter().flat_map(|w| w.to_le_bytes()).collect();
    String::from_utf8_lossy(&bytes)
        .trim_matches(|c: char| c == '\0' || c.is_whitespace())
        .to_owned()
}

/// `Ok(true)` when KVM reflects the guest's XCR0 in CPUID (the normal case), `Ok(false)`
/// when it does not. A host without AVX cannot show the problem: `Ok(true)`.
pub fn xcr0_tracked(kvm: &Kvm, supported: &CpuId) -> Result<bool, ProbeError> {
    let brand = super::cpuid::host_brand()
        .map(|w| brand_text(&w))
        .unwrap_or_default();
    if brand.contains(QEMU_TCG_BRAND) {
        // Known not to: and the probe's real-mode VM has been seen to wedge a vCPU
        // of such an L1 (soft lockup), so it is not run there at all.
        log::warn!("host CPU is {brand:?} (emulated SVM): XSAVE off without probing");
        return Ok(false);
    }
    let xcr0 = probe_xcr0(supported);
    let expected = xsave_size_for(supported, xcr0);
    if xcr0 != XCR0_X87_SSE_AVX || expected <= LEGACY_AREA {
        return Ok(true);
    }
    let reported = run_probe(kvm, supported)?;
    log::debug!(
        "xsave probe: CPUID(0xD).EBX = {reported} after XSETBV({xcr0:#x}), expected {expected}"
    );
    Ok(reported == expected)
}

fn run_probe(kvm: &Kvm, supported: &CpuId) -> Result<u32, ProbeError> {
    // The page is mapped before the VM exists, so it is unmapped only after the VM that
    // references it is gone (locals drop in reverse order, on every return path).
    let page = Page::new()?;
    let host = page.0;
    let vm = kvm.create_vm()?;
    // Intel without unrestricted guest emulates real mode and needs a TSS.
    vm.set_tss_address(0xfffb_d000)?;
    // SAFETY: `host` is a fresh writable mapping of PAGE bytes and CODE is shorter.
    unsafe { std::ptr::copy_nonoverlapping(CODE.as_ptr(), host.cast::<u8>(), CODE.len()) };
    let region = kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: CODE_GPA,
        memory_size: PAGE as u64,
        userspace_addr: host as u64,
        flags: 0,
    };
    // SAFETY: the region is the live mapping owned by `page`, which outlives the VM.
    unsafe { vm.set_user_memory_region(region)? };
    let mut vcpu = vm.create_vcpu(0)?;
    vcpu.set_cpuid2(supported)?;
    let mut sregs = vcpu.get_sregs()?;
    sregs.cs.base = 0;
    sregs.cs.selector = 0;
    sregs.cr4 |= CR4_OSXSAVE;
    vcpu.set_sregs(&sregs)?;
    let mut regs = vcpu.get_regs()?;
    regs.rip = CODE_GPA;
    regs.rflags = 2;
    vcpu.set_regs(&regs)?;
    let exit = match vcpu.run()? {
        VcpuExit::Hlt => None,
        other => Some(format!("{other:?}")),
    };
    if let Some(e) = exit {
        return Err(ProbeError::Exit(e));
    }
    Ok(vcpu.get_regs()?.rbx as u32)
}

/// The probe VM's one page of memory, unmapped on drop.
struct Page(*mut libc::c_void);

impl Page {
    fn new() -> Result<Self, ProbeError> {
        // SAFETY: an anonymous private mapping with no address hint; the result is
        // checked before use.
        let host = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if host == libc::MAP_FAILED {
            return Err(ProbeError::Mmap(std::io::Error::last_os_error()));
        }
        Ok(Self(host))
    }
}

impl Drop for Page {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the page mapped in run_probe, after the VM is gone.
        unsafe { libc::munmap(self.0, PAGE) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvm_bindings::kvm_cpuid_entry2;

    fn leaf(index: u32, eax: u32, ebx: u32) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function: 0xd,
            index,
            eax,
            ebx,
            ..Default::default()
        }
    }

    #[test]
    fn the_brand_string_names_a_qemu_tcg_host() {
        use crate::arch::x86_64::cpuid::brand_words;
        let tcg = brand_text(&brand_words("QEMU TCG CPU version 2.5+"));
        assert_eq!(tcg, "QEMU TCG CPU version 2.5+");
        assert!(tcg.contains(QEMU_TCG_BRAND));
        let real = brand_text(&brand_words("  AMD EPYC 7R13 Processor"));
        assert_eq!(real, "AMD EPYC 7R13 Processor");
        assert!(!real.contains(QEMU_TCG_BRAND));
        assert_eq!(brand_text(&[0; 12]), "");
    }

    #[test]
    fn sizes_follow_the_enabled_components() {
        let c = CpuId::from_entries(&[leaf(0, 0x2e7, 2696), leaf(2, 256, 576), leaf(5, 64, 1088)])
            .unwrap();
        assert_eq!(xsave_size_for(&c, 0b11), 576);
        assert_eq!(xsave_size_for(&c, 0b111), 832);
        assert_eq!(xsave_size_for(&c, 0b100111), 1152);
        assert_eq!(probe_xcr0(&c), 0b111);
        let no_avx = CpuId::from_entries(&[leaf(0, 0b11, 576)]).unwrap();
        assert_eq!(probe_xcr0(&no_avx), 0b11);
    }
}
