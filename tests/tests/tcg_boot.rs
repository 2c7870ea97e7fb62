//! Boots the built kernel and rootfs images under QEMU TCG and checks that guest-init
//! runs as PID 1 and powers the VM off by itself.

use std::time::Duration;

use integration_tests::images::{require, Images};
use integration_tests::tcg::{tools_available, TcgConfig, TcgVm};

const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

fn boot(variant: &str, extra_cmdline: &str) -> Option<integration_tests::tcg::TcgOutcome> {
    let images = require("TCG boot", Images::locate())?;
    let rootfs = require("TCG boot", images.rootfs(variant))?;
    require("TCG boot", tools_available(false))?;
    let config = TcgConfig::new(images.bzimage(), rootfs).cmdline(extra_cmdline);
    let vm = TcgVm::spawn(&config).expect("start QEMU");
    let outcome = vm.wait(BOOT_TIMEOUT);
    eprintln!(
        "--- serial ({variant}, {:?}) ---\n{}",
        outcome.elapsed, outcome.serial
    );
    Some(outcome)
}

#[test]
fn provided_rootfs_boots_to_guest_init_and_powers_off() {
    let Some(outcome) = boot("provided", "quiet") else {
        return;
    };
    assert!(
        outcome.status.is_some(),
        "QEMU did not exit by itself within {BOOT_TIMEOUT:?}"
    );
    let banner = outcome
        .serial
        .lines()
        .find(|l| l.starts_with("guest-init ") && l.contains(" ready: pid=1 "))
        .expect("guest-init banner as PID 1 on the console");
    assert!(banner.contains("boot-to-init="), "banner: {banner}");
    assert!(
        !outcome.serial.contains("Kernel panic"),
        "the guest panicked instead of resetting"
    );
}

#[test]
fn provided_rootfs_has_the_lambda_layout_and_tools() {
    let check = "for d in /var/task /opt /var/runtime /tmp /proc/self /sys/kernel /dev/null; do \
                 test -e $d || echo MISSING $d; done; \
                 grep -q sbx_user1051 /etc/passwd || echo MISSING user; \
                 curl --version | head -1; \
                 touch /ro-test 2>/dev/null && echo ROOT-WRITABLE; \
                 touch /tmp/ok && echo TMP-WRITABLE; \
                 grep -q ' /tmp tmpfs ' /proc/mounts && echo TMP-IS-TMPFS";
    let Some(outcome) = boot("provided", &format!("quiet gi.exec=\"{check}\"")) else {
        return;
    };
    let serial = &outcome.serial;
    // The command line itself is echoed, so look for whole output lines.
    let has_line = |prefix: &str| serial.lines().any(|l| l.starts_with(prefix));
    assert!(!has_line("MISSING"), "layout incomplete:\n{serial}");
    assert!(
        has_line("curl 7.") || has_line("curl 8."),
        "curl does not run in the guest"
    );
    assert!(!has_line("ROOT-WRITABLE"), "root must be read-only");
    assert!(has_line("TMP-WRITABLE") && has_line("TMP-IS-TMPFS"));
    assert!(serial.contains("guest-init: exec status: 0"));
}

#[test]
fn python_rootfs_imports_awslambdaric() {
    // No double quotes: they delimit the kernel command line parameter.
    let cmd = "PYTHONPATH=/var/runtime python3 -c 'import sys, awslambdaric; \
               print(sys.version_info[:2], awslambdaric.__name__, 42 * 2)'";
    let Some(outcome) = boot("python3.11", &format!("quiet gi.exec=\"{cmd}\"")) else {
        return;
    };
    assert!(outcome.status.is_some(), "QEMU did not exit by itself");
    assert!(
        outcome
            .serial
            .lines()
            .any(|l| l.trim() == "(3, 11) awslambdaric 84"),
        "awslambdaric did not import"
    );
    assert!(outcome.serial.contains("guest-init: exec status: 0"));
}
