//! PID 1's messages: one line each on the console (stderr is /dev/console).

use std::io::Write as _;

pub fn log(msg: impl AsRef<str>) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "appliance-init: {}", msg.as_ref());
}

/// Reopens stdin, stdout and stderr on `/dev/console` (after `/dev` is mounted, or when
/// the kernel started us without it).
pub fn attach_console() {
    use std::os::fd::AsRawFd as _;
    let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    else {
        return;
    };
    for target in 0..3 {
        // SAFETY: dup2 onto the standard descriptors from a file we just opened; the
        // source stays valid for the duration of the call.
        unsafe { libc::dup2(f.as_raw_fd(), target) };
    }
}
