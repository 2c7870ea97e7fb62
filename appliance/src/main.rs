//! appliance-init entry point: stage 1 leaves the initramfs, stage 2 runs the appliance;
//! invoked as `modprobe` it is the kernel's module loader helper.

use appliance::console::{attach_console, log};
use appliance::switch_root::{switch_to_tmpfs, SWITCHED};

fn main() {
    let argv0 = std::env::args().next().unwrap_or_default();
    if argv0.rsplit('/').next() == Some("modprobe") {
        // The kernel's module loader helper (/sbin/modprobe is a link to this binary).
        std::process::exit(appliance::modules::modprobe_main(std::env::args().skip(1)));
    }
    if std::process::id() != 1 {
        eprintln!(
            "appliance-init: this is the appliance's PID 1; it does nothing as a normal process"
        );
        std::process::exit(2);
    }
    if std::env::args().nth(1).as_deref() != Some(SWITCHED) {
        attach_console();
        let err = switch_to_tmpfs();
        log(format!(
            "cannot leave the initramfs ({err}); continuing on it: sandboxes will not start"
        ));
    }
    appliance::init::run()
}
