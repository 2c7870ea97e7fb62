//! seccomp-BPF filters, one per thread kind, compiled from the Rust allow-lists in
//! `filters.rs` at startup and installed before any guest code runs.

pub mod filters;

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("building seccomp rules: {0}")]
    Backend(#[from] seccompiler::BackendError),
    #[error("compiling seccomp filter: {0}")]
    Compile(#[from] seccompiler::Error),
    #[error("installing seccomp filter: {0}")]
    Apply(seccompiler::Error),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThreadKind {
    Main,
    Vcpu,
}

/// What a filter allows besides a thread kind's baseline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FilterOptions {
    /// The PVM-only vCPU workaround.
    pub pvm: bool,
    /// Taking snapshots (`--snapshot-state`).
    pub snapshots: bool,
}

/// The filter for `kind` with `opts`.
pub fn compile(kind: ThreadKind, opts: FilterOptions) -> Result<BpfProgram, SeccompError> {
    let allow = match kind {
        ThreadKind::Main => filters::main_thread(opts.snapshots)?,
        ThreadKind::Vcpu => filters::vcpu(opts.pvm, opts.snapshots)?,
    };
    // One syscall may appear in several lists (tkill, ioctl): any matching rule allows
    // it, and an unconditional entry (no rules) stays unconditional.
    let mut rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> = BTreeMap::new();
    for (nr, r) in allow {
        match rules.entry(nr) {
            Entry::Vacant(e) => {
                e.insert(r);
            }
            Entry::Occupied(mut e) if !e.get().is_empty() && !r.is_empty() => e.get_mut().extend(r),
            Entry::Occupied(mut e) => e.get_mut().clear(),
        }
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )?;
    Ok(BpfProgram::try_from(filter)?)
}

/// Installs `prog` on the calling thread only.
pub fn install(prog: &BpfProgram) -> Result<(), SeccompError> {
    seccompiler::apply_filter(prog).map_err(SeccompError::Apply)
}

#[cfg(test)]
mod tests_args;

#[cfg(test)]
mod tests {
    use super::*;

    /// Forks; the child installs `kind`'s filter (non-PVM), then runs `f` and exits 0.
    /// Returns the child's raw wait status.
    pub(super) fn in_filtered_child(kind: ThreadKind, f: fn()) -> i32 {
        in_child_with(&compile(kind, FilterOptions::default()).unwrap(), f)
    }

    /// As [`in_filtered_child`], with a given program.
    pub(super) fn in_child_with(prog: &BpfProgram, f: fn()) -> i32 {
        // SAFETY: the child only calls async-signal-safe code (prctl/seccomp via
        // apply_filter on a pre-built program, raw syscalls, _exit); no allocation happens
        // after fork because `prog` was built before.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = if seccompiler::apply_filter(prog).is_ok() {
                f();
                0
            } else {
                99
            };
            // SAFETY: terminating the forked child without running parent-owned destructors.
            unsafe { libc::_exit(code) };
        }
        let mut status = 0;
        // SAFETY: `pid` is our child; `status` is a valid out pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        assert_eq!(rc, pid);
        status
    }

    fn forbidden_mkdir() {
        // SAFETY: a raw syscall with a static NUL-terminated path; the filter should kill us
        // before it runs.
        unsafe { libc::syscall(libc::SYS_mkdirat, libc::AT_FDCWD, c"/tmp/x".as_ptr(), 0o700) };
    }

    fn allowed_calls() {
        // SAFETY: harmless syscalls on valid arguments.
        unsafe {
            libc::syscall(libc::SYS_getrandom, std::ptr::null_mut::<u8>(), 0usize, 0);
            libc::syscall(libc::SYS_write, 2, c"".as_ptr(), 0usize);
        }
    }

    fn forbidden_ioctl() {
        // SAFETY: TCGETS on stdin with a null pointer; only reached if the filter fails.
        unsafe { libc::syscall(libc::SYS_ioctl, 0, libc::TCGETS, 0usize) };
    }

    fn forbidden_inet_socket() {
        // SAFETY: plain socket(2) call; killed by the filter's argument rule.
        unsafe { libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_STREAM, 0) };
    }

    fn exec_mapping() {
        // SAFETY: an anonymous mapping request; the filter should kill us first.
        unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
    }

    fn rw_mapping_and_private_futex() {
        // SAFETY: an anonymous read-write mapping, then a wake with no waiters on it.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            libc::syscall(
                libc::SYS_futex,
                p,
                libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
                1,
            );
            libc::munmap(p, 4096);
        }
    }

    fn shared_futex() {
        let word = 0u32;
        // SAFETY: a futex wake on a stack word; the filter allows private ones only.
        unsafe { libc::syscall(libc::SYS_futex, &word as *const u32, libc::FUTEX_WAKE, 1) };
    }

    fn tgkill_other_signal() {
        // SAFETY: signals our own thread with SIGUSR1 (default action terminates) unless
        // the filter kills the process first.
        unsafe {
            libc::syscall(
                libc::SYS_tgkill,
                libc::getpid(),
                libc::syscall(libc::SYS_gettid),
                libc::SIGUSR1,
            )
        };
    }

    fn musl_style_reservation() {
        // SAFETY: an inaccessible anonymous reservation, unmapped again.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                1 << 20,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            libc::munmap(p, 1 << 20);
        }
    }

    #[test]
    fn a_panic_aborts_with_sigabrt_not_sigsys() {
        for kind in [ThreadKind::Main, ThreadKind::Vcpu] {
            let st = in_filtered_child(kind, || std::process::abort());
            assert!(
                libc::WIFSIGNALED(st) && libc::WTERMSIG(st) == libc::SIGABRT,
                "{kind:?}: status {st:#x}"
            );
            let st = in_filtered_child(kind, musl_style_reservation);
            assert!(
                libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
                "{kind:?}: {st:#x}"
            );
        }
    }

    #[test]
    fn argument_rules_allow_what_the_vmm_does_and_nothing_more() {
        for kind in [ThreadKind::Main, ThreadKind::Vcpu] {
            for f in [exec_mapping, shared_futex, tgkill_other_signal] {
                let st = in_filtered_child(kind, f);
                assert!(killed_by_sigsys(st), "{kind:?}: status {st:#x}");
            }
            let st = in_filtered_child(kind, rw_mapping_and_private_futex);
            assert!(
                libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
                "{kind:?}: {st:#x}"
            );
        }
    }

    pub(super) fn killed_by_sigsys(status: i32) -> bool {
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS
    }

    pub(super) fn exited_cleanly(status: i32) -> bool {
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0
    }

    #[test]
    fn vcpu_filter_kills_on_forbidden_syscall() {
        let st = in_filtered_child(ThreadKind::Vcpu, forbidden_mkdir);
        assert!(killed_by_sigsys(st), "status {st:#x}");
        let st = in_filtered_child(ThreadKind::Vcpu, forbidden_ioctl);
        assert!(
            killed_by_sigsys(st),
            "non-KVM_RUN ioctl must be killed: {st:#x}"
        );
    }

    #[test]
    fn main_filter_kills_on_forbidden_syscall_and_allows_listed() {
        let st = in_filtered_child(ThreadKind::Main, forbidden_mkdir);
        assert!(killed_by_sigsys(st), "status {st:#x}");
        let st = in_filtered_child(ThreadKind::Main, forbidden_inet_socket);
        assert!(
            killed_by_sigsys(st),
            "AF_INET socket must be killed: {st:#x}"
        );
        let st = in_filtered_child(ThreadKind::Main, allowed_calls);
        assert!(
            libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
            "status {st:#x}"
        );
        let st = in_filtered_child(ThreadKind::Vcpu, allowed_calls);
        assert!(
            libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
            "status {st:#x}"
        );
    }
}
