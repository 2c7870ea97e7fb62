//! Intel MultiProcessor Specification 1.4 table, so the guest finds its CPUs and the
//! IOAPIC without ACPI. Built as little-endian bytes; layout per the MP spec.

use vm_memory::{Bytes, GuestAddress};

use super::layout::{IOAPIC_ADDR, LAPIC_ADDR, MPTABLE_START};
use crate::devices::virtio::GuestMemory;

const MPC_SPEC: u8 = 4;
const APIC_VERSION: u8 = 0x14;
const IOAPIC_VERSION: u8 = 0x11;
const CPU_ENABLED: u8 = 1;
const CPU_BOOTPROCESSOR: u8 = 2;
const CPU_STEPPING: u32 = 0x600;
const CPU_FEATURE_APIC: u32 = 0x200;
const CPU_FEATURE_FPU: u32 = 0x001;
const MP_IRQ_SOURCE_TYPES_INT: u8 = 0;
const MP_IRQ_SOURCE_TYPES_NMI: u8 = 1;
const MP_IRQ_SOURCE_TYPES_EXTINT: u8 = 3;
const IOAPIC_PINS: u8 = 24;
/// Room between the EBDA start and the 640 KiB boundary.
const MPTABLE_MAX_SIZE: usize = 0x400;

#[derive(Debug, thiserror::Error)]
pub enum MptableError {
    #[error("MP table for {0} vCPUs does not fit in the EBDA")]
    TooLarge(u8),
    #[error("writing the MP table: {0}")]
    GuestMemory(#[from] vm_memory::GuestMemoryError),
}

fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |acc, b| acc.wrapping_add(*b))
        .wrapping_neg()
}

fn processor_entry(out: &mut Vec<u8>, apic_id: u8) {
    out.push(0); // MP_PROCESSOR
    out.push(apic_id);
    out.push(APIC_VERSION);
    let flags = CPU_ENABLED | if apic_id == 0 { CPU_BOOTPROCESSOR } else { 0 };
    out.push(flags);
    out.extend_from_slice(&CPU_STEPPING.to_le_bytes());
    out.extend_from_slice(&(CPU_FEATURE_APIC | CPU_FEATURE_FPU).to_le_bytes());
    out.extend_from_slice(&[0u8; 8]);
}

fn interrupt_entry(out: &mut Vec<u8>, kind: u8, irq_type: u8, src_irq: u8, dst: u8, dst_pin: u8) {
    out.push(kind);
    out.push(irq_type);
    out.extend_from_slice(&0u16.to_le_bytes()); // conforming polarity and trigger
    out.push(0); // source bus id
    out.push(src_irq);
    out.push(dst);
    out.push(dst_pin);
}

/// Builds the floating pointer and configuration table for `vcpus` CPUs at `base`.
pub fn build(vcpus: u8, base: u64) -> Result<Vec<u8>, MptableError> {
    let ioapic_id = vcpus.checked_add(1).ok_or(MptableError::TooLarge(vcpus))?;
    let table_addr = base + 16;

    let mut entries = Vec::new();
    for id in 0..vcpus {
        processor_entry(&mut entries, id);
    }
    entries.extend_from_slice(&[1, 0]); // MP_BUS, id 0
    entries.extend_from_slice(b"ISA   ");
    entries.push(2); // MP_IOAPIC
    entries.push(ioapic_id);
    entries.push(IOAPIC_VERSION);
    entries.push(1); // enabled
    entries.extend_from_slice(&(IOAPIC_ADDR as u32).to_le_bytes());
    for irq in 0..IOAPIC_PINS {
        interrupt_entry(
            &mut entries,
            3,
            MP_IRQ_SOURCE_TYPES_INT,
            irq,
            ioapic_id,
            irq,
        );
    }
    interrupt_entry(&mut entries, 4, MP_IRQ_SOURCE_TYPES_EXTINT, 0, 0, 0);
    interrupt_entry(&mut entries, 4, MP_IRQ_SOURCE_TYPES_NMI, 0, 0xff, 1);
    let entry_count = 2 + u16::from(vcpus) + 1 + 1 + u16::from(IOAPIC_PINS);

    let mut header = Vec::with_capacity(44);
    header.extend_from_slice(b"PCMP");
    let length = 44 + entries.len();
    header.extend_from_slice(&(length as u16).to_le_bytes());
    header.push(MPC_SPEC);
    header.push(0); // checksum, patched below
    header.extend_from_slice(b"LAMBDAVM");
    header.extend_from_slice(b"MICROVM     ");
    header.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    header.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    header.extend_from_slice(&entry_count.to_le_bytes());
    header.extend_from_slice(&(LAPIC_ADDR as u32).to_le_bytes());
    header.extend_from_slice(&0u32.to_le_bytes()); // extended table length + checksum + reserved

    let mut table = header;
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    let mut fp = Vec::with_capacity(16);
    fp.extend_from_slice(b"_MP_");
    fp.extend_from_slice(&(table_addr as u32).to_le_bytes());
    fp.push(1); // length in 16-byte units
    fp.push(MPC_SPEC);
    fp.push(0); // checksum
    fp.extend_from_slice(&[0u8; 5]); // no default configuration, no IMCR
    fp[10] = checksum(&fp);

    fp.extend_from_slice(&table);
    if fp.len() > MPTABLE_MAX_SIZE {
        return Err(MptableError::TooLarge(vcpus));
    }
    Ok(fp)
}

pub fn setup_mptable(mem: &GuestMemory, vcpus: u8) -> Result<(), MptableError> {
    let bytes = build(vcpus, MPTABLE_START)?;
    mem.write_slice(&bytes, GuestAddress(MPTABLE_START))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |a, x| a.wrapping_add(*x))
    }

    #[test]
    fn checksums_and_counts() {
        let t = build(4, MPTABLE_START).unwrap();
        assert_eq!(&t[0..4], b"_MP_");
        assert_eq!(sum(&t[0..16]), 0);
        let table = &t[16..];
        assert_eq!(&table[0..4], b"PCMP");
        let len = u16::from_le_bytes([table[4], table[5]]) as usize;
        assert_eq!(len, table.len());
        assert_eq!(sum(table), 0);
        let count = u16::from_le_bytes([table[34], table[35]]);
        assert_eq!(count, 4 + 1 + 1 + 24 + 2);
        // First processor entry is the BSP.
        assert_eq!(table[44], 0);
        assert_eq!(table[47], CPU_ENABLED | CPU_BOOTPROCESSOR);
    }

    #[test]
    fn max_vcpus_fit() {
        assert!(build(crate::arch::x86_64::layout::MAX_VCPUS, MPTABLE_START).is_ok());
    }
}
