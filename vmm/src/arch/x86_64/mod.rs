//! x86_64 guest setup: memory layout, boot CPU state, MP table, CPUID and MSRs.

pub mod cpuid;
pub mod gdt;
pub mod interrupts;
pub mod layout;
pub mod mptable;
pub mod msr;
pub mod regs;
pub mod xsave_probe;
