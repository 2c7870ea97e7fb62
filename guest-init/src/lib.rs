//! guest-init: PID 1 inside the microVM guest.
//!
//! As PID 1 it prepares the guest's filesystems, reports how long the boot took and
//! powers the VM off when its work is done. Started as an ordinary process (not PID 1)
//! it skips everything that would touch the host, so tests can run it on the host.

pub mod cmdline;
pub mod mounts;
pub mod power;
pub mod uptime;
