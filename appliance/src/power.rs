//! Shutdown requests and the final power-off: the ACPI power button (an input device
//! the `button` driver creates), signals to PID 1, and `reboot(2)`.

use std::io::Read as _;
use std::os::fd::{AsRawFd as _, OwnedFd};
use std::path::{Path, PathBuf};

use crate::console::log;

/// What the machine does once everything has stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    PowerOff,
    Reboot,
}

const EV_KEY: u16 = 1;
const KEY_POWER: u16 = 116;
/// `struct input_event` on x86_64: a 16-byte timeval, type, code, value.
const INPUT_EVENT_LEN: usize = 24;

/// Whether one `input_event` record is a press of the power key.
pub fn is_power_press(ev: &[u8; INPUT_EVENT_LEN]) -> bool {
    let kind = u16::from_ne_bytes([ev[16], ev[17]]);
    let code = u16::from_ne_bytes([ev[18], ev[19]]);
    let value = i32::from_ne_bytes([ev[20], ev[21], ev[22], ev[23]]);
    kind == EV_KEY && code == KEY_POWER && value == 1
}

/// `/dev/input/eventN` of every input device named "Power Button".
pub fn power_buttons(sys_class_input: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(sys_class_input)
        .map(|d| d.flatten().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|e| e.file_name().to_string_lossy().starts_with("event"))
        .filter(|e| {
            std::fs::read_to_string(e.path().join("device/name"))
                .is_ok_and(|n| n.trim() == "Power Button")
        })
        .map(|e| Path::new("/dev/input").join(e.file_name()))
        .collect();
    out.sort();
    out
}

/// Starts one thread per power button; each writes a byte to `wake` on a press.
pub fn watch_power_buttons(wake: &OwnedFd) -> usize {
    let buttons = power_buttons(Path::new("/sys/class/input"));
    for dev in &buttons {
        let Ok(mut f) = std::fs::File::open(dev) else {
            log(format!("cannot open {}", dev.display()));
            continue;
        };
        let Ok(wake) = wake.try_clone() else { continue };
        let dev = dev.clone();
        let spawned = std::thread::Builder::new()
            .name("power-button".into())
            .spawn(move || {
                let mut ev = [0u8; INPUT_EVENT_LEN];
                while f.read_exact(&mut ev).is_ok() {
                    if is_power_press(&ev) {
                        // SAFETY: writes one byte from a stack buffer to our own pipe.
                        unsafe { libc::write(wake.as_raw_fd(), [1u8].as_ptr().cast(), 1) };
                    }
                }
                log(format!("{}: stopped reading", dev.display()));
            });
        if let Err(e) = spawned {
            log(format!("power button thread: {e}"));
        }
    }
    buttons.len()
}

/// Ctrl-Alt-Del sends SIGINT to PID 1 instead of resetting the machine at once.
pub fn route_ctrl_alt_del_to_init() {
    if let Err(e) = nix::sys::reboot::set_cad_enabled(false) {
        log(format!("disabling immediate Ctrl-Alt-Del: {e}"));
    }
}

/// Flushes the filesystems and ends the machine. PID 1 must never exit, so on failure
/// it sleeps forever.
pub fn halt(how: Halt) -> ! {
    nix::unistd::sync();
    let mode = match how {
        Halt::PowerOff => nix::sys::reboot::RebootMode::RB_POWER_OFF,
        Halt::Reboot => nix::sys::reboot::RebootMode::RB_AUTOBOOT,
    };
    let err = match nix::sys::reboot::reboot(mode) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    log(format!("reboot({how:?}) failed: {err}"));
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u16, code: u16, value: i32) -> [u8; INPUT_EVENT_LEN] {
        let mut ev = [0u8; INPUT_EVENT_LEN];
        ev[16..18].copy_from_slice(&kind.to_ne_bytes());
        ev[18..20].copy_from_slice(&code.to_ne_bytes());
        ev[20..24].copy_from_slice(&value.to_ne_bytes());
        ev
    }

    #[test]
    fn only_a_power_key_press_counts() {
        assert!(is_power_press(&event(EV_KEY, KEY_POWER, 1)));
        assert!(!is_power_press(&event(EV_KEY, KEY_POWER, 0)));
        assert!(!is_power_press(&event(EV_KEY, 30, 1)));
        assert!(!is_power_press(&event(0, KEY_POWER, 1)));
    }

    #[test]
    fn finds_buttons_by_name() {
        let d = tempfile::tempdir().unwrap();
        for (ev, name) in [
            ("event0", "AT Translated Set 2 keyboard"),
            ("event1", "Power Button"),
        ] {
            std::fs::create_dir_all(d.path().join(ev).join("device")).unwrap();
            std::fs::write(d.path().join(ev).join("device/name"), format!("{name}\n")).unwrap();
        }
        assert_eq!(
            power_buttons(d.path()),
            [PathBuf::from("/dev/input/event1")]
        );
    }
}
