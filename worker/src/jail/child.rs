//! Code that runs in the cloned child between `clone` and `execve`.
//!
//! The parent is multi-threaded, so this side may only make raw system calls: no
//! allocation, no locks, no Rust I/O, and no libc wrappers that coordinate threads
//! (fork, set*id). Every failure is reported as (step index, errno) on
//! the error pipe and the child exits with 127.

use super::plan::Step;
use seccompiler::sock_filter;
use std::ffi::CString;
use std::os::fd::RawFd;
use std::ptr;

/// Index reported for failures outside `steps` (waiting, fd setup, exec).
pub const STEP_SYNC: u32 = u32::MAX;
pub const STEP_FDS: u32 = u32::MAX - 1;
pub const STEP_EXEC: u32 = u32::MAX - 2;

/// Everything the child needs, prepared by the parent.
pub struct ChildPlan {
    pub steps: Vec<Step>,
    pub seccomp: Vec<Vec<sock_filter>>,
    pub exe: CString,
    pub argv: Vec<*const libc::c_char>,
    pub envp: Vec<*const libc::c_char>,
    /// (source fd, target fd) pairs; everything else above stderr is closed at exec.
    pub fds: Vec<(RawFd, RawFd)>,
    /// Read end the parent writes one byte to once uid maps and cgroups are set.
    pub sync_fd: RawFd,
    /// Write end (CLOEXEC) for the failure report.
    pub err_fd: RawFd,
    /// pidfd (CLOEXEC) of the worker process; negative for none.
    pub parent_pidfd: RawFd,
    /// Run a minimal init as PID 1 that reaps orphans, with the program as its child.
    pub reaper: bool,
}

/// `struct sock_fprog` for `PR_SET_SECCOMP`.
#[repr(C)]
struct SockFprog {
    len: libc::c_ushort,
    filter: *const sock_filter,
}

fn fail(plan: &ChildPlan, step: u32) -> ! {
    // SAFETY: errno location is always valid for the calling thread.
    let errno = unsafe { *libc::__errno_location() };
    let mut buf = [0u8; 8];
    buf[..4].copy_from_slice(&step.to_ne_bytes());
    buf[4..].copy_from_slice(&errno.to_ne_bytes());
    // SAFETY: buf is valid for 8 bytes; err_fd is our pipe's write end.
    unsafe {
        libc::write(plan.err_fd, buf.as_ptr().cast(), buf.len());
        libc::_exit(127)
    }
}

fn opt_ptr(c: &Option<CString>) -> *const libc::c_char {
    c.as_ref().map_or(ptr::null(), |c| c.as_ptr())
}

/// Runs one step; returns false (errno set) on failure.
fn run_step(step: &Step, plan: &ChildPlan) -> bool {
    // SAFETY: in every arm, each pointer comes from a live CString (or buffer) owned by
    // `plan`, which outlives the call; the system calls only read them.
    unsafe {
        match step {
            Step::Mount {
                source,
                target,
                fstype,
                flags,
                data,
            } => {
                libc::mount(
                    opt_ptr(source),
                    target.as_ptr(),
                    opt_ptr(fstype),
                    *flags,
                    opt_ptr(data).cast(),
                ) == 0
            }
            Step::Mkdir(p) => {
                libc::mkdir(p.as_ptr(), 0o755) == 0 || *libc::__errno_location() == libc::EEXIST
            }
            Step::Touch(p) => {
                let fd = libc::open(
                    p.as_ptr(),
                    libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                    0o644,
                );
                fd >= 0 && libc::close(fd) == 0
            }
            Step::Symlink { target, link } => libc::symlink(target.as_ptr(), link.as_ptr()) == 0,
            Step::PivotRoot(root) => {
                let dot = c".".as_ptr();
                libc::chdir(root.as_ptr()) == 0
                    && libc::syscall(libc::SYS_pivot_root, dot, dot) == 0
                    && libc::umount2(dot, libc::MNT_DETACH) == 0
                    && libc::chdir(c"/".as_ptr()) == 0
            }
            Step::Hostname(h) => libc::sethostname(h.as_ptr(), h.as_bytes().len()) == 0,
            Step::LoopbackUp => loopback_up(),
            // Raw system calls: glibc's set*id wrappers signal every thread it believes
            // exists (copied from the parent) and wait for them forever.
            Step::DropIds { uid, gid } => {
                libc::syscall(libc::SYS_setgroups, 0usize, ptr::null::<libc::gid_t>()) == 0
                    && libc::syscall(libc::SYS_setresgid, *gid, *gid, *gid) == 0
                    && libc::syscall(libc::SYS_setresuid, *uid, *uid, *uid) == 0
            }
            Step::KeepCaps(mask) => keep_caps(*mask),
            Step::LimitFiles(n) => {
                // Never above the inherited hard limit: raising it would need privilege.
                let mut lim = libc::rlimit {
                    rlim_cur: 0,
                    rlim_max: 0,
                };
                libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && {
                    let n = (*n).min(lim.rlim_max);
                    lim = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0
                }
            }
            Step::NoNewPrivs => libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0,
            Step::Seccomp(i) => {
                let Some(prog) = plan.seccomp.get(*i) else {
                    return false;
                };
                let fprog = SockFprog {
                    len: prog.len() as libc::c_ushort,
                    filter: prog.as_ptr(),
                };
                libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &fprog as *const SockFprog,
                    0,
                    0,
                ) == 0
            }
            Step::Chdir(p) => libc::chdir(p.as_ptr()) == 0,
        }
    }
}

/// Drops from the bounding set every capability outside `mask` (up to the kernel's last
/// one, where PR_CAPBSET_DROP answers EINVAL) and clears the ambient set.
fn keep_caps(mask: u64) -> bool {
    for cap in 0..64u64 {
        if mask & (1 << cap) != 0 {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) } != 0 {
            // SAFETY: errno location is always valid for the calling thread.
            if unsafe { *libc::__errno_location() } == libc::EINVAL {
                break;
            }
            return false;
        }
    }
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        ) == 0
    }
}

/// Sets IFF_UP on `lo` in the new network namespace.
fn loopback_up() -> bool {
    // SAFETY: ifreq is plain old data; zeroed is valid. The ioctls read and write only
    // within it, and the socket fd is closed before returning.
    unsafe {
        let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if sock < 0 {
            return false;
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        let ok = libc::ioctl(sock, libc::SIOCGIFFLAGS as _, &mut req) == 0 && {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(sock, libc::SIOCSIFFLAGS as _, &req) == 0
        };
        libc::close(sock);
        ok
    }
}

/// Moves the planned fds into place. Sources are first copied above every target so a
/// source numbered like another target is not clobbered.
fn setup_fds(plan: &ChildPlan) -> bool {
    const HIGH: RawFd = 512;
    let mut tmp = [0 as RawFd; 8];
    if plan.fds.len() > tmp.len() {
        return false;
    }
    for (i, (src, _)) in plan.fds.iter().enumerate() {
        // SAFETY: fcntl on an fd we own; F_DUPFD_CLOEXEC allocates a new one.
        let fd = unsafe { libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, HIGH) };
        if fd < 0 {
            return false;
        }
        tmp[i] = fd;
    }
    for (i, (_, target)) in plan.fds.iter().enumerate() {
        // SAFETY: dup2 onto a small target number; the result has no CLOEXEC flag.
        if unsafe { libc::dup2(tmp[i], *target) } < 0 {
            return false;
        }
    }
    let first_free = plan
        .fds
        .iter()
        .map(|(_, t)| *t + 1)
        .max()
        .unwrap_or(3)
        .max(3);
    // SAFETY: marks every other fd close-on-exec (the error pipe must stay open until
    // exec, which CLOEXEC gives); no memory is involved.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first_free as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        ) == 0
    }
}

/// PID 1 of the jail: holds no descriptors (so the program's pipes and sockets see EOF
/// when it dies), reaps every orphan, and exits with the program's status, which takes
/// the whole PID namespace down with it.
fn reap_until(main: libc::pid_t) -> ! {
    // SAFETY: closing our own descriptors; nothing in this process uses them any more.
    unsafe { libc::syscall(libc::SYS_close_range, 0u32, libc::c_uint::MAX, 0u32) };
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid out pointer.
        let r = unsafe { libc::waitpid(-1, &mut status, 0) };
        if r == main {
            let code = if libc::WIFSIGNALED(status) {
                128 + libc::WTERMSIG(status)
            } else {
                libc::WEXITSTATUS(status)
            };
            // SAFETY: _exit never returns and needs no cleanup.
            unsafe { libc::_exit(code) };
        }
        // SAFETY: errno location is valid for this thread.
        if r < 0 && unsafe { *libc::__errno_location() } == libc::ECHILD {
            // SAFETY: as above.
            unsafe { libc::_exit(127) };
        }
    }
}

/// Waits for the parent's go byte; false if the worker process died first. EOF on the
/// sync pipe alone cannot tell: a jail cloned concurrently by another thread holds a
/// copy of its write end until it execs, so after a kill -9 two such children would wait
/// for each other forever, holding copies of the worker's sockets that keep running
/// sandboxes from seeing their host go away.
fn wait_for_go(plan: &ChildPlan) -> bool {
    let mut fds = [
        libc::pollfd {
            fd: plan.sync_fd,
            events: libc::POLLIN,
            revents: 0,
        },
        // poll ignores a negative fd.
        libc::pollfd {
            fd: plan.parent_pidfd,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        // SAFETY: polls the two pollfds of this stack frame.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
        // SAFETY: errno location is always valid for the calling thread.
        if r < 0 && unsafe { *libc::__errno_location() } == libc::EINTR {
            continue;
        }
        if r < 0 || fds[0].revents != 0 {
            let mut byte = 0u8;
            // SAFETY: reading one byte into a stack variable.
            return unsafe { libc::read(plan.sync_fd, (&mut byte as *mut u8).cast(), 1) } == 1;
        }
        if fds[1].revents != 0 {
            return false;
        }
    }
}

/// The child's whole life: wait for the parent, set up, exec. Never returns.
pub fn run(plan: &ChildPlan) -> ! {
    if !wait_for_go(plan) {
        fail(plan, STEP_SYNC);
    }
    for (i, step) in plan.steps.iter().enumerate() {
        if !run_step(step, plan) {
            fail(plan, i as u32);
        }
    }
    if !setup_fds(plan) {
        fail(plan, STEP_FDS);
    }
    if plan.reaper {
        // A raw fork-like clone: glibc's fork() would run its atfork handlers and take
        // malloc locks that another thread of the worker may have held when we were
        // cloned, deadlocking forever.
        // SAFETY: no CLONE_VM and no new stack: the child gets a copy of this
        // single-threaded process and continues below with raw system calls only.
        let pid = unsafe {
            libc::syscall(
                libc::SYS_clone,
                libc::SIGCHLD as libc::c_ulong,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        } as libc::pid_t;
        if pid < 0 {
            fail(plan, STEP_EXEC);
        }
        if pid > 0 {
            reap_until(pid);
        }
    }
    // SAFETY: exe, argv and envp are NUL-terminated and their arrays null-terminated,
    // all owned by `plan`.
    unsafe { libc::execve(plan.exe.as_ptr(), plan.argv.as_ptr(), plan.envp.as_ptr()) };
    fail(plan, STEP_EXEC)
}
