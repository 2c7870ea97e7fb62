//! Legacy PC devices: COM1, i8042 (reset only), the boot timer.

pub mod boot_timer;
pub mod i8042;
pub mod serial;
