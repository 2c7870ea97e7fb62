//! Helpers shared by tests and the bench binary (not used by the VMM itself).

pub mod tiny_guest;
