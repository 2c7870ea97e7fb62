//! Per-thread syscall allow-lists. Anything else kills the whole process (SIGSYS).

use std::mem::size_of;

use seccompiler::{SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};

/// A syscall and optional argument rules (any rule matching allows the call).
pub type Allow = (i64, Vec<SeccompRule>);

fn arg_eq(arg: u8, value: u64) -> Result<SeccompRule, seccompiler::BackendError> {
    SeccompRule::new(vec![SeccompCondition::new(
        arg,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Eq,
        value,
    )?])
}

fn any(nr: libc::c_long) -> Allow {
    (nr, vec![])
}

/// Syscalls every thread needs: memory allocation, locks, logging, clean exit, signals.
fn common() -> Vec<Allow> {
    vec![
        any(libc::SYS_brk),
        any(libc::SYS_mmap),
        any(libc::SYS_munmap),
        any(libc::SYS_mremap),
        any(libc::SYS_madvise),
        any(libc::SYS_futex),
        any(libc::SYS_write),
        any(libc::SYS_writev),
        any(libc::SYS_read),
        any(libc::SYS_close),
        any(libc::SYS_dup),
        any(libc::SYS_clock_gettime),
        any(libc::SYS_clock_nanosleep),
        any(libc::SYS_nanosleep),
        any(libc::SYS_sched_yield),
        any(libc::SYS_getrandom),
        any(libc::SYS_rt_sigreturn),
        any(libc::SYS_rt_sigprocmask),
        any(libc::SYS_sigaltstack),
        any(libc::SYS_exit),
        any(libc::SYS_exit_group),
        // abort() on a panic: gettid + tgkill(SIGABRT).
        any(libc::SYS_gettid),
        any(libc::SYS_tgkill),
    ]
}

/// vCPU threads: KVM_RUN plus device emulation on MMIO/PIO exits.
pub fn vcpu() -> Result<Vec<Allow>, seccompiler::BackendError> {
    let mut v = common();
    // Besides KVM_RUN: registers and events to report a failing vCPU and to deliver an
    // int3 that PVM's instruction emulator cannot (see Vcpu::pvm_int3_workaround).
    v.push((
        libc::SYS_ioctl,
        vec![
            arg_eq(1, kvm_run_ioctl())?,
            arg_eq(
                1,
                kvm_ioctl(IOC_READ, 0x81, size_of::<kvm_bindings::kvm_regs>()),
            )?,
            arg_eq(
                1,
                kvm_ioctl(IOC_WRITE, 0x82, size_of::<kvm_bindings::kvm_regs>()),
            )?,
            arg_eq(
                1,
                kvm_ioctl(IOC_READ, 0x9f, size_of::<kvm_bindings::kvm_vcpu_events>()),
            )?,
            arg_eq(
                1,
                kvm_ioctl(IOC_WRITE, 0xa0, size_of::<kvm_bindings::kvm_vcpu_events>()),
            )?,
        ],
    ));
    // F_DUPFD_CLOEXEC: cloning queue eventfds when the driver activates a virtio device
    // (musl follows it with F_SETFD FD_CLOEXEC); F_GETFD: std validates an fd before
    // closing it when a vCPU thread ends.
    v.push((
        libc::SYS_fcntl,
        vec![
            arg_eq(1, libc::F_DUPFD_CLOEXEC as u64)?,
            arg_eq(1, libc::F_GETFD as u64)?,
            SeccompRule::new(vec![
                SeccompCondition::new(
                    1,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::Eq,
                    libc::F_SETFD as u64,
                )?,
                SeccompCondition::new(
                    2,
                    SeccompCmpArgLen::Dword,
                    SeccompCmpOp::Eq,
                    libc::FD_CLOEXEC as u64,
                )?,
            ])?,
        ],
    ));
    Ok(v)
}

/// The main thread: event loop, block I/O, serial input, and the vsock device.
pub fn main_thread() -> Result<Vec<Allow>, seccompiler::BackendError> {
    let mut v = common();
    v.extend([
        any(libc::SYS_epoll_wait),
        any(libc::SYS_epoll_pwait),
        any(libc::SYS_epoll_ctl),
        // virtio-blk
        any(libc::SYS_pread64),
        any(libc::SYS_pwrite64),
        any(libc::SYS_preadv),
        any(libc::SYS_pwritev),
        any(libc::SYS_fsync),
        any(libc::SYS_fdatasync),
        any(libc::SYS_lseek),
        any(libc::SYS_fstat),
        any(libc::SYS_newfstatat),
        any(libc::SYS_statx),
        any(libc::SYS_readv),
        // vsock (hybrid Unix-socket backend), requested by the vsock device:
        (libc::SYS_socket, vec![arg_eq(0, libc::AF_UNIX as u64)?]),
        any(libc::SYS_connect),
        any(libc::SYS_accept4),
        any(libc::SYS_recvfrom),
        any(libc::SYS_sendto),
        any(libc::SYS_recvmsg),
        any(libc::SYS_sendmsg),
        any(libc::SYS_shutdown),
        any(libc::SYS_fcntl),
        any(libc::SYS_getsockopt),
        any(libc::SYS_setsockopt),
        any(libc::SYS_unlink),
        any(libc::SYS_unlinkat),
        any(libc::SYS_eventfd2),
        any(libc::SYS_timerfd_settime),
    ]);
    v.push((
        libc::SYS_ioctl,
        vec![
            arg_eq(1, ioctl_request(libc::FIONBIO))?,
            arg_eq(1, ioctl_request(libc::FIONREAD))?,
            arg_eq(1, ioctl_request(libc::TCGETS))?,
        ],
    ));
    Ok(v)
}

/// The ioctl request constants are `i32` on musl and `u64` on glibc; all are positive.
fn ioctl_request<T: TryInto<u64>>(request: T) -> u64 {
    request.try_into().unwrap_or(u64::MAX)
}

const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;

/// `_IOR`/`_IOW(KVMIO, nr, T)`.
fn kvm_ioctl(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | (0xae << 8) | nr
}

/// `KVM_RUN` = `_IO(KVMIO, 0x80)`.
pub fn kvm_run_ioctl() -> u64 {
    const KVMIO: u64 = 0xae;
    (KVMIO << 8) | 0x80
}
