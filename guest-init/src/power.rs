//! Powering the VM off.

use nix::sys::reboot::{reboot, RebootMode};

/// Flushes filesystems and resets the machine.
///
/// `RB_AUTOBOOT` with the kernel's `reboot=k` (our VMM) pulses the i8042 reset line,
/// and with `reboot=t` (QEMU with `-no-reboot`) triple-faults: either way the monitor
/// sees the guest end and exits. `RB_POWER_OFF` would need ACPI, which the guest lacks.
pub fn power_off() -> ! {
    nix::unistd::sync();
    let err = match reboot(RebootMode::RB_AUTOBOOT) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    eprintln!("guest-init: reboot failed: {err}");
    // PID 1 must not exit: the kernel would panic. Sleep until the monitor kills the VM.
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
