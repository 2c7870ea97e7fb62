//! Per-thread syscall allow-lists. Anything else kills the whole process (SIGSYS).
//! Calls whose arguments decide what they can do are allowed only with the arguments
//! the VMM uses: anonymous read-write memory, no executable mappings, private futex
//! operations, `tgkill`/`tkill` with SIGABRT only, the `fcntl` commands, socket
//! flags and ioctls the devices need.

use std::mem::size_of;

use seccompiler::{SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};

/// A syscall and optional argument rules (any rule matching allows the call).
pub type Allow = (i64, Vec<SeccompRule>);

type Rules = Result<Vec<SeccompRule>, seccompiler::BackendError>;

fn cond(arg: u8, value: u64) -> Result<SeccompCondition, seccompiler::BackendError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
}

fn arg_eq(arg: u8, value: u64) -> Result<SeccompRule, seccompiler::BackendError> {
    SeccompRule::new(vec![cond(arg, value)?])
}

/// One rule per allowed value of argument `arg`.
fn arg_in(arg: u8, values: &[u64]) -> Rules {
    values.iter().map(|v| arg_eq(arg, *v)).collect()
}

fn any(nr: libc::c_long) -> Allow {
    (nr, vec![])
}

/// The ioctl request constants are `i32` on musl and `u64` on glibc; all are positive.
fn ioctl_request<T: TryInto<u64>>(request: T) -> u64 {
    request.try_into().unwrap_or(u64::MAX)
}

const PROT_RW: u64 = (libc::PROT_READ | libc::PROT_WRITE) as u64;
const ANON: u64 = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
const FD_NONE: u64 = 0xffff_ffff;

/// Allocators map anonymous read-write memory (glibc arenas first reserve it
/// inaccessible, then open it up with mprotect); nothing is ever executable.
fn memory() -> Result<Vec<Allow>, seccompiler::BackendError> {
    let map = |prot: u64, flags: u64| {
        SeccompRule::new(vec![cond(2, prot)?, cond(3, flags)?, cond(4, FD_NONE)?])
    };
    let noreserve = ANON | libc::MAP_NORESERVE as u64;
    Ok(vec![
        any(libc::SYS_brk),
        (
            libc::SYS_mmap,
            vec![
                map(PROT_RW, ANON)?,
                map(PROT_RW, ANON | libc::MAP_STACK as u64)?,
                map(PROT_RW, noreserve)?,
                map(libc::PROT_NONE as u64, noreserve)?,
                // musl's mallocng reserves without NORESERVE; glibc's shrink_heap
                // maps PROT_NONE over the freed tail of an arena.
                map(libc::PROT_NONE as u64, ANON)?,
                map(libc::PROT_NONE as u64, ANON | libc::MAP_FIXED as u64)?,
            ],
        ),
        any(libc::SYS_munmap),
        (libc::SYS_mprotect, vec![arg_eq(2, PROT_RW)?]),
        (
            libc::SYS_mremap,
            arg_in(3, &[0, libc::MREMAP_MAYMOVE as u64])?,
        ),
        (
            libc::SYS_madvise,
            arg_in(2, &[libc::MADV_DONTNEED as u64, libc::MADV_FREE as u64])?,
        ),
    ])
}

/// Private futex operations (Rust's std locks, musl's and glibc's condition variables).
fn futex() -> Result<Allow, seccompiler::BackendError> {
    const PRIVATE: u64 = libc::FUTEX_PRIVATE_FLAG as u64;
    const REALTIME: u64 = libc::FUTEX_CLOCK_REALTIME as u64;
    let ops = [
        libc::FUTEX_WAIT,
        libc::FUTEX_WAKE,
        libc::FUTEX_REQUEUE,
        libc::FUTEX_CMP_REQUEUE,
        libc::FUTEX_WAIT_BITSET,
        libc::FUTEX_WAKE_BITSET,
    ];
    let mut allowed: Vec<u64> = ops.iter().map(|op| *op as u64 | PRIVATE).collect();
    allowed.push(libc::FUTEX_WAIT_BITSET as u64 | PRIVATE | REALTIME);
    Ok((libc::SYS_futex, arg_in(1, &allowed)?))
}

/// Syscalls every thread needs: memory, locks, logging, clean exit, signals.
fn common() -> Result<Vec<Allow>, seccompiler::BackendError> {
    let mut v = memory()?;
    v.push(futex()?);
    v.extend([
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
        // abort() on a panic: glibc's getpid + gettid + tgkill(pid, tid, SIGABRT),
        // musl's tkill(tid, SIGABRT). Only SIGABRT; which thread cannot be pinned
        // down for tkill, but the jail's pid namespace and unique uid leave the VMM
        // no other target.
        any(libc::SYS_gettid),
        any(libc::SYS_getpid),
        (libc::SYS_tkill, vec![arg_eq(1, libc::SIGABRT as u64)?]),
        (libc::SYS_tgkill, vec![arg_eq(2, libc::SIGABRT as u64)?]),
    ]);
    Ok(v)
}

/// `fcntl` commands, each with the argument it is used with where it has one.
fn fcntl(setfl: bool) -> Result<Allow, seccompiler::BackendError> {
    let mut rules = vec![
        arg_eq(1, libc::F_DUPFD_CLOEXEC as u64)?,
        arg_eq(1, libc::F_GETFD as u64)?,
        // musl follows F_DUPFD_CLOEXEC with F_SETFD FD_CLOEXEC.
        SeccompRule::new(vec![
            cond(1, libc::F_SETFD as u64)?,
            cond(2, libc::FD_CLOEXEC as u64)?,
        ])?,
    ];
    if setfl {
        // set_nonblocking on some libcs: F_GETFL, then F_SETFL with O_NONBLOCK added.
        rules.push(arg_eq(1, libc::F_GETFL as u64)?);
        rules.push(SeccompRule::new(vec![
            cond(1, libc::F_SETFL as u64)?,
            SeccompCondition::new(
                2,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::MaskedEq(libc::O_NONBLOCK as u64),
                libc::O_NONBLOCK as u64,
            )?,
        ])?);
    }
    Ok((libc::SYS_fcntl, rules))
}

/// vCPU threads: KVM_RUN plus device emulation on MMIO/PIO exits, and KVM_GET_REGS to
/// name the guest RIP of a failing vCPU. On PVM hosts also the ioctls of the int3
/// workaround (`Vcpu::pvm_int3_workaround`), which writes registers and events.
pub fn vcpu(pvm: bool, snapshots: bool) -> Result<Vec<Allow>, seccompiler::BackendError> {
    let mut v = common()?;
    let mut ioctls = vec![
        arg_eq(1, kvm_run_ioctl())?,
        arg_eq(
            1,
            kvm_ioctl(IOC_READ, 0x81, size_of::<kvm_bindings::kvm_regs>()),
        )?,
    ];
    if pvm {
        ioctls.extend([
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
        ]);
    }
    if snapshots {
        ioctls.extend(vcpu_state_reads()?);
    }
    v.push((libc::SYS_ioctl, ioctls));
    // F_DUPFD_CLOEXEC: cloning queue eventfds when the driver activates a virtio device;
    // F_GETFD: std validates an fd before closing it when a vCPU thread ends.
    v.push(fcntl(false)?);
    Ok(v)
}

/// The reads of `vstate::vcpu_state::save`, done by each vCPU on its own thread when
/// paused for a snapshot; every one only copies state out of KVM.
fn vcpu_state_reads() -> Rules {
    use kvm_bindings::*;
    use size_of as s;
    let reads = [
        kvm_ioctl(IOC_READ, 0x83, s::<kvm_sregs>()),
        kvm_ioctl(IOC_READ | IOC_WRITE, 0x88, s::<kvm_msrs>()),
        kvm_ioctl(IOC_READ, 0x8e, s::<kvm_lapic_state>()),
        kvm_ioctl(IOC_READ | IOC_WRITE, 0x91, s::<kvm_cpuid2>()),
        kvm_ioctl(IOC_READ, 0x98, s::<kvm_mp_state>()),
        kvm_ioctl(IOC_READ, 0x9f, s::<kvm_vcpu_events>()),
        kvm_ioctl(IOC_READ, 0xa1, s::<kvm_debugregs>()),
        kvm_ioctl(IOC_READ, 0xa4, s::<kvm_xsave>()),
        kvm_ioctl(IOC_READ, 0xa6, s::<kvm_xcrs>()),
        // KVM_GET_TSC_KHZ = _IO(KVMIO, 0xa3)
        kvm_ioctl(0, 0xa3, 0),
    ];
    arg_in(1, &reads)
}

/// What the main thread adds when it may take a snapshot: kicking vCPU threads out of
/// KVM_RUN (the kick signal only), the VM-wide reads of `vstate::vm_state::save`, and
/// sizing the memory file opened at start.
fn snapshot_main() -> Result<Vec<Allow>, seccompiler::BackendError> {
    use kvm_bindings::*;
    let kick = crate::vstate::pause::kick_signal() as u64;
    Ok(vec![
        (libc::SYS_tkill, vec![arg_eq(1, kick)?]),
        (libc::SYS_tgkill, vec![arg_eq(2, kick)?]),
        any(libc::SYS_ftruncate),
        (
            libc::SYS_ioctl,
            arg_in(
                1,
                &[
                    kvm_ioctl(IOC_READ | IOC_WRITE, 0x62, size_of::<kvm_irqchip>()),
                    kvm_ioctl(IOC_READ, 0x7c, size_of::<kvm_clock_data>()),
                    kvm_ioctl(IOC_READ, 0x9f, size_of::<kvm_pit_state2>()),
                ],
            )?,
        ),
    ])
}

/// The main thread: event loop, block I/O, serial input, and the vsock device; with
/// `snapshots`, what taking one needs.
pub fn main_thread(snapshots: bool) -> Result<Vec<Allow>, seccompiler::BackendError> {
    let mut v = common()?;
    let send_flags = [
        0,
        libc::MSG_NOSIGNAL as u64,
        (libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) as u64,
    ];
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
        (
            libc::SYS_recvfrom,
            arg_in(3, &[0, libc::MSG_DONTWAIT as u64])?,
        ),
        (libc::SYS_sendto, arg_in(3, &send_flags)?),
        any(libc::SYS_shutdown),
        any(libc::SYS_getsockopt),
        any(libc::SYS_unlink),
        any(libc::SYS_unlinkat),
        any(libc::SYS_eventfd2),
        any(libc::SYS_timerfd_settime),
    ]);
    v.push(fcntl(true)?);
    v.push((
        libc::SYS_ioctl,
        vec![
            arg_eq(1, ioctl_request(libc::FIONBIO))?,
            arg_eq(1, ioctl_request(libc::FIONREAD))?,
            arg_eq(1, ioctl_request(libc::TCGETS))?,
        ],
    ));
    if snapshots {
        v.extend(snapshot_main()?);
    }
    Ok(v)
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
