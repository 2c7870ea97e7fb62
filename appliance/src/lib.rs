//! `appliance-init`: PID 1 of the appliance host. It leaves the initramfs for a tmpfs
//! root, mounts the API filesystems and cgroup2, loads the kernel modules the hardware
//! asks for, brings up networking, prepares the persistent data disk and runs
//! `supervisor serve` with microVM isolation, restarting it if it dies. The ACPI power
//! button, SIGTERM or Ctrl-Alt-Del stop it cleanly: in-flight invokes finish, sandboxes
//! stop, the data disk is synced and unmounted, then the machine powers off or reboots.

pub mod boot;
pub mod console;
pub mod datadisk;
pub mod init;
pub mod modules;
pub mod mounts;
pub mod net;
pub mod power;
pub mod role;
pub mod service;
pub mod settings;
pub mod supervisor;
pub mod switch_root;
