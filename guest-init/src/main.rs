//! guest-init entry point.

use guest_init::{cmdline, mounts, power, uptime};
use std::process::Command;

/// Size of the `/tmp` tmpfs. Lambda's default ephemeral storage is 512 MiB.
const TMP_SIZE: &str = "size=512m,mode=1777";

/// Kernel command line parameter holding a debug command for `/bin/sh -c`.
const DEBUG_EXEC_PARAM: &str = "gi.exec";

fn main() {
    let is_pid1 = std::process::id() == 1;
    if is_pid1 {
        if let Err(e) = mounts::mount_base(TMP_SIZE) {
            eprintln!("guest-init: {e}");
        }
    }
    let since_boot = uptime::since_kernel_start()
        .map(|d| format!("{:.3} s", d.as_secs_f64()))
        .unwrap_or_else(|| "unknown".to_string());
    println!(
        "guest-init {} ready: pid={} boot-to-init={}",
        env!("CARGO_PKG_VERSION"),
        std::process::id(),
        since_boot
    );

    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let status = match cmdline::value_of(&cmdline, DEBUG_EXEC_PARAM) {
        Some(cmd) if is_pid1 => run_debug_command(&cmd),
        _ => 0,
    };

    if is_pid1 {
        power::power_off();
    }
    std::process::exit(status);
}

/// Runs a debug command from the kernel command line and reports its exit status.
fn run_debug_command(cmd: &str) -> i32 {
    println!("guest-init: exec: {cmd}");
    match Command::new("/bin/sh").arg("-c").arg(cmd).status() {
        Ok(status) => {
            let code = status.code().unwrap_or(-1);
            println!("guest-init: exec status: {code}");
            code
        }
        Err(e) => {
            println!("guest-init: exec failed: {e}");
            -1
        }
    }
}
