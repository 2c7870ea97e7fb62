//! Per-vCPU CPUID: `KVM_GET_SUPPORTED_CPUID` adjusted for APIC ids, the hypervisor bit and
//! a simple topology (one package, `n` cores, one thread per core), plus what KVM leaves
//! to the VMM: the TSC-deadline timer bit, the brand string, and hiding XSAVE where the
//! host cannot virtualise it (see `xsave_probe`).

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

/// VM-wide CPUID choices, applied once before the per-vCPU adjustments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuidOptions {
    /// KVM emulates the LAPIC's TSC-deadline mode (`KVM_CAP_TSC_DEADLINE_TIMER`); the
    /// bit is the VMM's to set. With it Linux needs no LAPIC timer calibration, which
    /// under load or nesting fails ("APIC timer disabled due to verification failure").
    pub tsc_deadline: bool,
    /// Offer XSAVE (and AVX, which needs it).
    pub xsave: bool,
}

const ECX_FMA: u32 = 1 << 12;
const ECX_TSC_DEADLINE: u32 = 1 << 24;
const ECX_XSAVE: u32 = 1 << 26;
const ECX_AVX: u32 = 1 << 28;
const ECX_F16C: u32 = 1 << 29;
/// Leaf 7 EBX: AVX2 and the AVX-512 family.
const EBX7_AVX: u32 = (1 << 5)
    | (1 << 16)
    | (1 << 17)
    | (1 << 21)
    | (1 << 26)
    | (1 << 27)
    | (1 << 28)
    | (1 << 30)
    | (1 << 31);
const LEAF_BRAND_FIRST: u32 = 0x8000_0002;
/// Used when the host reports no brand string (some emulated CPUs).
const FALLBACK_BRAND: &str = "lambda-microvm virtual CPU";

/// The host's 48-byte brand string as CPUID returns it (12 registers), or `None`.
pub fn host_brand() -> Option<[u32; 12]> {
    // CPUID exists on every x86_64 CPU (the intrinsic is safe there).
    let max_ext = core::arch::x86_64::__cpuid(0x8000_0000).eax;
    if max_ext < LEAF_BRAND_FIRST + 2 {
        return None;
    }
    let mut out = [0u32; 12];
    for i in 0..3u32 {
        let r = core::arch::x86_64::__cpuid(LEAF_BRAND_FIRST + i);
        out[i as usize * 4..i as usize * 4 + 4].copy_from_slice(&[r.eax, r.ebx, r.ecx, r.edx]);
    }
    out.iter().any(|&w| w != 0).then_some(out)
}

/// `text` as brand-string registers (NUL-padded, at most 47 bytes).
pub fn brand_words(text: &str) -> [u32; 12] {
    let mut bytes = [0u8; 48];
    for (dst, src) in bytes.iter_mut().zip(text.bytes().take(47)) {
        *dst = src;
    }
    let mut out = [0u32; 12];
    for (i, w) in out.iter_mut().enumerate() {
        *w = u32::from_le_bytes([
            bytes[i * 4],
            bytes[i * 4 + 1],
            bytes[i * 4 + 2],
            bytes[i * 4 + 3],
        ]);
    }
    out
}

/// Adds the brand-string leaves KVM left out (it does on some hosts, and Linux then
/// names the CPU after its family, e.g. "Hammer").
fn ensure_brand_leaves(cpuid: &mut CpuId) {
    let has_ext = cpuid
        .as_slice()
        .iter()
        .any(|e| e.function == 0x8000_0000 && e.eax >= LEAF_BRAND_FIRST + 2);
    if !has_ext {
        return;
    }
    for f in LEAF_BRAND_FIRST..LEAF_BRAND_FIRST + 3 {
        if !cpuid.as_slice().iter().any(|e| e.function == f) {
            let entry = kvm_cpuid_entry2 {
                function: f,
                ..Default::default()
            };
            if cpuid.push(entry).is_err() {
                return;
            }
        }
    }
}

/// Applies the VM-wide choices to the supported table.
pub fn normalize(cpuid: &mut CpuId, opts: CpuidOptions, brand: Option<[u32; 12]>) {
    let brand = brand.unwrap_or_else(|| brand_words(FALLBACK_BRAND));
    ensure_brand_leaves(cpuid);
    for e in cpuid.as_mut_slice() {
        match e.function {
            LEAF_FEATURES => {
                if opts.tsc_deadline {
                    e.ecx |= ECX_TSC_DEADLINE;
                }
                if !opts.xsave {
                    e.ecx &= !(ECX_XSAVE | ECX_AVX | ECX_FMA | ECX_F16C);
                }
            }
            7 if e.index == 0 && !opts.xsave => e.ebx &= !EBX7_AVX,
            f if (LEAF_BRAND_FIRST..LEAF_BRAND_FIRST + 3).contains(&f) => {
                let i = (f - LEAF_BRAND_FIRST) as usize * 4;
                e.eax = brand[i];
                e.ebx = brand[i + 1];
                e.ecx = brand[i + 2];
                e.edx = brand[i + 3];
            }
            _ => {}
        }
    }
}

const LEAF_FEATURES: u32 = 0x1;
const LEAF_CACHE_PARAMS: u32 = 0x4;
const LEAF_THERMAL_POWER: u32 = 0x6;
const LEAF_PERFMON: u32 = 0xa;
const LEAF_EXT_TOPOLOGY: u32 = 0xb;
const LEAF_V2_EXT_TOPOLOGY: u32 = 0x1f;

const ECX_HYPERVISOR: u32 = 1 << 31;
const EDX_HTT: u32 = 1 << 28;
const ECX_EPB: u32 = 1 << 3;
/// CLFLUSH line size in 8-byte units (64 bytes).
const CLFLUSH_SIZE: u32 = 8;

/// Topology level types in leaf 0xb/0x1f ECX[15:8].
const LEVEL_SMT: u32 = 1;
const LEVEL_CORE: u32 = 2;

/// Bits needed to hold `n` distinct ids (the shift width of the core level).
fn id_bits(n: u8) -> u32 {
    if n <= 1 {
        0
    } else {
        u32::BITS - u32::from(n - 1).leading_zeros()
    }
}

fn topology_entry(entry: &mut kvm_cpuid_entry2, apic_id: u8, vcpus: u8) {
    entry.edx = u32::from(apic_id);
    match entry.index {
        0 => {
            entry.eax = 0;
            entry.ebx = 1;
            entry.ecx = (LEVEL_SMT << 8) | entry.index;
        }
        1 => {
            entry.eax = id_bits(vcpus);
            entry.ebx = u32::from(vcpus);
            entry.ecx = (LEVEL_CORE << 8) | entry.index;
        }
        _ => {
            entry.eax = 0;
            entry.ebx = 0;
            entry.ecx = entry.index;
        }
    }
}

fn adjust_entry(entry: &mut kvm_cpuid_entry2, apic_id: u8, vcpus: u8) {
    match entry.function {
        LEAF_FEATURES => {
            entry.ebx = (u32::from(apic_id) << 24) | (CLFLUSH_SIZE << 8);
            entry.ecx |= ECX_HYPERVISOR;
            if vcpus > 1 {
                entry.ebx |= u32::from(vcpus) << 16;
                entry.edx |= EDX_HTT;
            } else {
                entry.edx &= !EDX_HTT;
            }
        }
        LEAF_CACHE_PARAMS => {
            // EAX[31:26] = cores per package - 1; EAX[25:14] = threads sharing this cache - 1.
            let cache_level = (entry.eax >> 5) & 0x7;
            let cores_minus_one = u32::from(vcpus.saturating_sub(1)) & 0x3f;
            let sharing = if cache_level >= 3 { cores_minus_one } else { 0 };
            entry.eax = (entry.eax & 0x3fff) | (cores_minus_one << 26) | (sharing << 14);
        }
        LEAF_THERMAL_POWER => entry.ecx &= !ECX_EPB,
        // No virtual PMU is exposed.
        LEAF_PERFMON => {
            entry.eax = 0;
            entry.ebx = 0;
            entry.ecx = 0;
            entry.edx = 0;
        }
        LEAF_EXT_TOPOLOGY | LEAF_V2_EXT_TOPOLOGY => topology_entry(entry, apic_id, vcpus),
        _ => {}
    }
}

/// Returns the CPUID table for vCPU `apic_id` out of `vcpus`.
pub fn vcpu_cpuid(supported: &CpuId, apic_id: u8, vcpus: u8) -> CpuId {
    let mut cpuid = supported.clone();
    for entry in cpuid.as_mut_slice() {
        adjust_entry(entry, apic_id, vcpus);
    }
    cpuid
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> CpuId {
        let entries = [
            kvm_cpuid_entry2 {
                function: 1,
                ebx: 0xffff_ffff,
                edx: EDX_HTT,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0xb,
                index: 1,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0x4,
                eax: 3 << 5,
                ..Default::default()
            },
        ];
        CpuId::from_entries(&entries).unwrap()
    }

    #[test]
    fn apic_id_hypervisor_bit_and_topology() {
        let c = vcpu_cpuid(&table(), 3, 4);
        let e = c.as_slice();
        assert_eq!(e[0].ebx >> 24, 3);
        assert_eq!((e[0].ebx >> 16) & 0xff, 4);
        assert_ne!(e[0].ecx & ECX_HYPERVISOR, 0);
        assert_ne!(e[0].edx & EDX_HTT, 0);
        assert_eq!(e[1].edx, 3);
        assert_eq!(e[1].eax, 2);
        assert_eq!(e[1].ebx, 4);
        assert_eq!(e[1].ecx >> 8, LEVEL_CORE);
        assert_eq!(e[2].eax >> 26, 3);
        assert_eq!((e[2].eax >> 14) & 0xfff, 3);

        let single = vcpu_cpuid(&table(), 0, 1);
        assert_eq!(single.as_slice()[0].edx & EDX_HTT, 0);
    }

    #[test]
    fn normalize_sets_deadline_brand_and_can_hide_xsave() {
        let mut c = CpuId::from_entries(&[
            kvm_cpuid_entry2 {
                function: 1,
                ecx: ECX_XSAVE | ECX_AVX | ECX_FMA,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 7,
                ebx: (1 << 5) | (1 << 3),
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: LEAF_BRAND_FIRST,
                ..Default::default()
            },
        ])
        .unwrap();
        let on = CpuidOptions {
            tsc_deadline: true,
            xsave: true,
        };
        let mut kept = c.clone();
        normalize(&mut kept, on, None);
        assert_ne!(kept.as_slice()[0].ecx & ECX_TSC_DEADLINE, 0);
        assert_ne!(kept.as_slice()[0].ecx & ECX_XSAVE, 0);
        assert_eq!(&kept.as_slice()[2].eax.to_le_bytes(), b"lamb");
        normalize(
            &mut c,
            CpuidOptions {
                tsc_deadline: false,
                xsave: false,
            },
            Some(brand_words("Host CPU")),
        );
        let e = c.as_slice();
        assert_eq!(
            e[0].ecx & (ECX_XSAVE | ECX_AVX | ECX_FMA | ECX_TSC_DEADLINE),
            0
        );
        assert_eq!(e[1].ebx, 1 << 3, "AVX2 hidden, other leaf-7 bits kept");
        assert_eq!(&e[2].eax.to_le_bytes(), b"Host");
    }

    #[test]
    fn brand_words_pad_and_truncate() {
        let w = brand_words("ab");
        assert_eq!(w[0], u32::from_le_bytes(*b"ab\0\0"));
        assert!(w[1..].iter().all(|&x| x == 0));
        let long = "x".repeat(60);
        let w = brand_words(&long);
        assert_eq!(w[11].to_le_bytes()[3], 0, "always NUL-terminated");
    }

    #[test]
    fn id_bits_rounds_up() {
        assert_eq!(id_bits(1), 0);
        assert_eq!(id_bits(2), 1);
        assert_eq!(id_bits(3), 2);
        assert_eq!(id_bits(4), 2);
        assert_eq!(id_bits(5), 3);
    }
}
