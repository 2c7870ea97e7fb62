//! Describing how a process ended, in the words Lambda uses (Go's `ProcessState`).

use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;

/// `Some("exit status 7")` / `Some("signal: killed")` for a terminated process,
/// `None` for stop/continue notifications.
pub fn describe(status: &WaitStatus) -> Option<String> {
    match *status {
        WaitStatus::Exited(_, code) => Some(format!("exit status {code}")),
        WaitStatus::Signaled(_, sig, _) => Some(format!("signal: {}", signal_name(sig))),
        _ => None,
    }
}

/// The full message for `Runtime.ExitError`.
pub fn runtime_exit_message(description: &str) -> String {
    format!("Runtime exited with error: {description}")
}

fn signal_name(sig: Signal) -> &'static str {
    match sig {
        Signal::SIGKILL => "killed",
        Signal::SIGTERM => "terminated",
        Signal::SIGABRT => "aborted",
        Signal::SIGSEGV => "segmentation fault",
        Signal::SIGBUS => "bus error",
        Signal::SIGFPE => "floating point exception",
        Signal::SIGILL => "illegal instruction",
        Signal::SIGINT => "interrupt",
        Signal::SIGHUP => "hangup",
        Signal::SIGQUIT => "quit",
        Signal::SIGPIPE => "broken pipe",
        Signal::SIGTRAP => "trace/breakpoint trap",
        Signal::SIGSYS => "bad system call",
        Signal::SIGALRM => "alarm clock",
        Signal::SIGUSR1 => "user defined signal 1",
        Signal::SIGUSR2 => "user defined signal 2",
        Signal::SIGXCPU => "CPU time limit exceeded",
        Signal::SIGXFSZ => "file size limit exceeded",
        other => other.as_str(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::unistd::Pid;

    #[test]
    fn matches_lambda_wording() {
        let pid = Pid::from_raw(5);
        assert_eq!(
            describe(&WaitStatus::Exited(pid, 7)).as_deref(),
            Some("exit status 7")
        );
        assert_eq!(
            describe(&WaitStatus::Signaled(pid, Signal::SIGKILL, false)).as_deref(),
            Some("signal: killed")
        );
        assert_eq!(
            runtime_exit_message("exit status 1"),
            "Runtime exited with error: exit status 1"
        );
        assert_eq!(describe(&WaitStatus::StillAlive), None);
    }
}
