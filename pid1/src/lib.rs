//! Helpers shared by our two PID 1 programs: `guest-init` (inside each microVM) and
//! `appliance-init` (on the appliance host). Both read the kernel command line and
//! bring network interfaces up before anything else runs.

pub mod cmdline;
pub mod netif;
