//! Stage 2: the boot steps, then PID 1's loop: start services, reap children, and on a
//! shutdown request stop everything in order and power off (or reboot).

use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::boot::{self, DATA_MOUNT};
use crate::console::{attach_console, log};
use crate::power::{self, Halt};
use crate::service::{reap_all, Service};
use crate::settings::Settings;

/// Time everything left after the supervisor gets between SIGTERM and SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(3);

fn handled_signals() -> SigSet {
    let mut set = SigSet::empty();
    for s in [
        Signal::SIGCHLD,
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGUSR1,
        Signal::SIGUSR2,
        Signal::SIGPWR,
    ] {
        set.add(s);
    }
    set
}

fn shell_service(tty: &str) -> Service {
    let path = format!("/dev/{tty}");
    Service::new(&format!("shell on {tty}"), move || {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)?;
        let mut c = std::process::Command::new(crate::net::BUSYBOX);
        c.args(["setsid", "-c", crate::net::BUSYBOX, "sh", "-l"])
            .stdin(f.try_clone()?)
            .stdout(f.try_clone()?)
            .stderr(f)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin")
            .env("HOME", "/root")
            .env("TERM", "vt100");
        Ok(c)
    })
}

struct Init {
    settings: Settings,
    services: Vec<Service>,
    /// Index of the supervisor in `services`, when it runs.
    supervisor: Option<usize>,
    signals: SignalFd,
    wake: OwnedFd,
}

/// Stage 2. Never returns.
pub fn run() -> ! {
    crate::mounts::mount_all();
    attach_console();
    log(format!(
        "lambda-microvm appliance {} starting",
        env!("CARGO_PKG_VERSION")
    ));
    let set = handled_signals();
    if let Err(e) = set.thread_block() {
        log(format!("blocking signals: {e}"));
    }
    let signals = match SignalFd::with_flags(&set, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK) {
        Ok(s) => s,
        Err(e) => {
            log(format!(
                "signalfd: {e}; the appliance cannot be stopped cleanly"
            ));
            power::halt(Halt::PowerOff)
        }
    };
    power::route_ctrl_alt_del_to_init();
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let settings = Settings::from_cmdline(&cmdline).unwrap_or_else(|e| {
        log(format!("kernel command line: {e}; using the defaults"));
        Settings::default()
    });
    if let Err(e) = nix::unistd::sethostname(&settings.hostname) {
        log(format!("hostname: {e}"));
    }
    boot::load_modules(&settings);
    let mut services: Vec<Service> = settings.shell.iter().map(|t| shell_service(t)).collect();
    services.extend(boot::network(&settings));
    let (wake_r, wake_w) = match nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC) {
        Ok(p) => p,
        Err(e) => {
            log(format!("pipe: {e}"));
            power::halt(Halt::PowerOff)
        }
    };
    let buttons = power::watch_power_buttons(&wake_w);
    log(format!(
        "power: {buttons} power button(s) watched; SIGTERM powers off, Ctrl-Alt-Del reboots"
    ));
    let supervisor = match boot::data_disk(&settings) {
        Ok(()) => {
            if settings.role != crate::role::Role::Embedded {
                let id = settings.node_id.as_ref().unwrap_or(&settings.hostname);
                log(format!("role: {} {id}", settings.role.as_str()));
            }
            let s = settings.clone();
            services.push(Service::new("supervisor", move || {
                Ok(crate::supervisor::command(&s, Path::new(DATA_MOUNT)))
            }));
            Some(services.len() - 1)
        }
        Err(e) => {
            log(format!("data: {e}"));
            log("not starting the supervisor without its data disk (lambda.data=none runs with state in RAM)");
            None
        }
    };
    let mut init = Init {
        settings,
        services,
        supervisor,
        signals,
        wake: wake_r,
    };
    let how = init.serve();
    init.shutdown(how)
}

impl Init {
    /// Runs until a shutdown request; returns what to do at the end.
    fn serve(&mut self) -> Halt {
        loop {
            let now = Instant::now();
            for s in &mut self.services {
                s.start_if_due(now);
            }
            let next = self.services.iter().filter_map(Service::due).min();
            let timeout = next
                .map(|t| t.saturating_duration_since(Instant::now()))
                .unwrap_or(Duration::from_secs(60))
                .min(Duration::from_secs(60));
            match self.wait(timeout, true) {
                Some(how) => return how,
                None => continue,
            }
        }
    }

    /// Waits for a signal or the power button; reaps children. Returns a shutdown request.
    fn wait(&mut self, timeout: Duration, respawn: bool) -> Option<Halt> {
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [
            PollFd::new(self.signals.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.wake.as_fd(), PollFlags::POLLIN),
        ];
        if poll(&mut fds, PollTimeout::from(ms)).is_err() {
            return None;
        }
        let (sig_ready, button) = (
            fds[0].revents().is_some_and(|r| !r.is_empty()),
            fds[1].revents().is_some_and(|r| !r.is_empty()),
        );
        let mut request = None;
        if button {
            let mut buf = [0u8; 64];
            // SAFETY: reads into a stack buffer from our own pipe.
            unsafe { libc::read(self.wake.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            log("power button pressed");
            request = Some(Halt::PowerOff);
        }
        if sig_ready {
            while let Ok(Some(info)) = self.signals.read_signal() {
                match Signal::try_from(info.ssi_signo as i32) {
                    Ok(Signal::SIGCHLD) => {}
                    Ok(Signal::SIGINT) => {
                        log("Ctrl-Alt-Del (SIGINT): rebooting");
                        request = Some(Halt::Reboot);
                    }
                    Ok(Signal::SIGHUP) => {}
                    Ok(sig) => {
                        log(format!("{sig}: powering off"));
                        request = request.or(Some(Halt::PowerOff));
                    }
                    Err(_) => {}
                }
            }
        }
        let now = Instant::now();
        for (pid, status) in reap_all() {
            for s in &mut self.services {
                if s.reaped(pid, &status, now, respawn) {
                    break;
                }
            }
        }
        request
    }

    fn supervisor_running(&self) -> bool {
        self.supervisor
            .and_then(|i| self.services.get(i))
            .is_some_and(|s| s.pid().is_some())
    }

    /// Stops the supervisor (which drains in-flight invokes and stops its sandboxes),
    /// then everything else, syncs and unmounts the data disk, and halts.
    fn shutdown(&mut self, how: Halt) -> ! {
        let deadline = Instant::now() + self.settings.stop_timeout;
        if let Some(sup) = self.supervisor.and_then(|i| self.services.get(i)) {
            log(format!(
                "stopping the supervisor (up to {:?} for in-flight invokes)",
                self.settings.stop_timeout
            ));
            sup.signal(Signal::SIGTERM);
        }
        while self.supervisor_running() && Instant::now() < deadline {
            self.wait(Duration::from_millis(200), false);
        }
        if self.supervisor_running() {
            log("the supervisor did not stop in time: killing it");
        }
        self.kill_everything();
        boot_release_data();
        log(format!("{how:?}"));
        power::halt(how)
    }

    fn kill_everything(&mut self) {
        let all = nix::unistd::Pid::from_raw(-1);
        let _ = nix::sys::signal::kill(all, Signal::SIGTERM);
        let end = Instant::now() + KILL_GRACE;
        while Instant::now() < end && has_children() {
            self.wait(Duration::from_millis(100), false);
        }
        let _ = nix::sys::signal::kill(all, Signal::SIGKILL);
        while has_children() {
            self.wait(Duration::from_millis(50), false);
        }
    }
}

fn has_children() -> bool {
    use nix::sys::wait::{waitid, Id, WaitPidFlag};
    // WNOWAIT|WNOHANG: asks whether any child exists without reaping it.
    !matches!(
        waitid(
            Id::All,
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG | WaitPidFlag::WNOWAIT
        ),
        Err(nix::Error::ECHILD)
    )
}

fn boot_release_data() {
    if Path::new(DATA_MOUNT).exists() {
        crate::mounts::release_data(DATA_MOUNT);
        log("data disk synced and unmounted");
    }
}
