//! Per-vCPU CPUID: `KVM_GET_SUPPORTED_CPUID` adjusted for APIC ids, the hypervisor bit and
//! a simple topology (one package, `n` cores, one thread per core).

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

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
    fn id_bits_rounds_up() {
        assert_eq!(id_bits(1), 0);
        assert_eq!(id_bits(2), 1);
        assert_eq!(id_bits(3), 2);
        assert_eq!(id_bits(4), 2);
        assert_eq!(id_bits(5), 3);
    }
}
