//! guest-init entry point.

use guest_init::agent::{self, Outcome};
use guest_init::config::{Config, Role, USAGE};
use guest_init::link::Link;
use guest_init::{cmdline, mounts, net, power, transport, uptime};
use std::process::Command;

/// Size of the `/tmp` tmpfs. Lambda's default ephemeral storage is 512 MiB.
const TMP_SIZE: &str = "size=512m,mode=1777";

/// Kernel command line parameter holding a debug command for `/bin/sh -c`.
const DEBUG_EXEC_PARAM: &str = "gi.exec";

fn main() {
    // PID 1 of a jail is told so; PID 1 without that flag is a microVM's init.
    let jailed = std::env::args().any(|a| a == "--jail-init");
    let in_vm = std::process::id() == 1 && !jailed;
    if in_vm {
        if let Err(e) = mounts::mount_base(TMP_SIZE) {
            eprintln!("guest-init: {e}");
        }
        if let Err(e) = net::loopback_up() {
            eprintln!("guest-init: bring up lo: {e}");
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

    let status = if in_vm {
        let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
        match cmdline::value_of(&cmdline, DEBUG_EXEC_PARAM) {
            Some(cmd) => run_debug_command(&cmd),
            None => run_guest(&cmdline),
        }
    } else {
        run_host_process()
    };

    if in_vm {
        power::power_off();
    }
    std::process::exit(status);
}

/// PID 1: mount the function code and layers, then serve the host over vsock.
fn run_guest(cmdline: &str) -> i32 {
    let mut config = Config::guest_defaults();
    if let Err(e) = config.apply_cmdline(cmdline) {
        eprintln!("guest-init: kernel command line: {e}");
        return 2;
    }
    if let Some(dev) = &config.image_device {
        // Without its image the function cannot run: the host sees the VM end.
        if let Err(e) = mounts::enter_image(dev) {
            eprintln!("guest-init: {e}");
            return 1;
        }
    }
    for (device, target) in [
        (&config.task_device, &config.task_root),
        (&config.opt_device, &config.opt_dir),
    ] {
        if let Some(dev) = device {
            if let Err(e) = mounts::mount_drive(dev, target) {
                eprintln!("guest-init: {e}");
            }
        }
    }
    serve(config, Role::Vm)
}

/// Host process (or PID 1 of a jail): flags choose the transport; without one, just
/// report readiness.
fn run_host_process() -> i32 {
    let mut config = Config::host_defaults();
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return 0;
    }
    match config.apply_args(args) {
        Ok(true) => {
            let role = if config.jail_init && std::process::id() == 1 {
                Role::JailInit
            } else {
                Role::Process
            };
            serve(config, role)
        }
        Ok(false) => 0,
        Err(e) => {
            eprintln!("guest-init: {e}\n{USAGE}");
            2
        }
    }
}

fn serve(config: Config, role: Role) -> i32 {
    let stream = match transport::connect(&config.transport, config.connect_timeout) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("guest-init: {e}");
            return 1;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("guest-init: tokio runtime: {e}");
            return 1;
        }
    };
    // The link's reader registers with the runtime, so it starts inside it.
    let link = match rt.block_on(async { Link::start(stream) }) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("guest-init: {e}");
            return 1;
        }
    };
    match rt.block_on(agent::run(config, link, role)) {
        Ok(Outcome::Shutdown) => 0,
        Ok(Outcome::HostLost(reason)) => {
            eprintln!("guest-init: host connection lost: {reason}");
            1
        }
        Err(e) => {
            eprintln!("guest-init: {e}");
            1
        }
    }
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
