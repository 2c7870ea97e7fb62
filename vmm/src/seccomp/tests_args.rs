//! Argument rules of the filters: each refused variant kills the process, and the
//! variant the VMM uses passes. Calls on fd -1 suffice where the filter's decision is
//! the point: seccomp runs before the kernel looks at the descriptor.

use super::tests::{exited_cleanly, in_child_with, in_filtered_child, killed_by_sigsys};
use super::{compile, FilterOptions, ThreadKind};

const BOTH: [ThreadKind; 2] = [ThreadKind::Main, ThreadKind::Vcpu];

/// Ends the child with a status the tests tell apart from a clean exit and SIGSYS.
fn fail() -> ! {
    // SAFETY: terminating the forked child without running parent-owned destructors.
    unsafe { libc::_exit(3) }
}

/// A fresh anonymous read-write page (an allowed mapping).
fn rw_page() -> *mut libc::c_void {
    // SAFETY: an anonymous private mapping chosen by the kernel; touches no memory.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        fail();
    }
    p
}

fn mremap_fixed() {
    let p = rw_page();
    // SAFETY: moves our own page onto a fixed address one page above it, unless the
    // filter kills us first (it should).
    unsafe {
        libc::syscall(
            libc::SYS_mremap,
            p,
            4096usize,
            4096usize,
            libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
            p.cast::<u8>().add(1 << 20),
        )
    };
}

fn mremap_grow_and_resize_in_place() {
    let p = rw_page();
    // SAFETY: remaps our own page; the result is checked and unmapped.
    unsafe {
        let q = libc::mremap(p, 4096, 8192, libc::MREMAP_MAYMOVE);
        if q == libc::MAP_FAILED || libc::mremap(q, 8192, 4096, 0) != q {
            fail();
        }
        libc::munmap(q, 4096);
    }
}

#[test]
fn mremap_may_move_only_where_the_kernel_chooses() {
    for kind in BOTH {
        let st = in_filtered_child(kind, mremap_fixed);
        assert!(killed_by_sigsys(st), "{kind:?}: MREMAP_FIXED: {st:#x}");
        let st = in_filtered_child(kind, mremap_grow_and_resize_in_place);
        assert!(exited_cleanly(st), "{kind:?}: {st:#x}");
    }
}

fn madvise_dontfork() {
    // SAFETY: advice on our own page (the filter should kill us first).
    unsafe { libc::madvise(rw_page(), 4096, libc::MADV_DONTFORK) };
}

fn madvise_give_back() {
    let p = rw_page();
    // SAFETY: advice on our own page, then unmapping it.
    unsafe {
        if libc::madvise(p, 4096, libc::MADV_DONTNEED) != 0
            || libc::madvise(p, 4096, libc::MADV_FREE) != 0
        {
            fail();
        }
        libc::munmap(p, 4096);
    }
}

#[test]
fn madvise_only_gives_memory_back() {
    for kind in BOTH {
        let st = in_filtered_child(kind, madvise_dontfork);
        assert!(killed_by_sigsys(st), "{kind:?}: MADV_DONTFORK: {st:#x}");
        let st = in_filtered_child(kind, madvise_give_back);
        assert!(exited_cleanly(st), "{kind:?}: {st:#x}");
    }
}

/// `fcntl(-1, CMD, ARG)`.
fn fcntl_bad_fd<const CMD: i32, const ARG: u64>() {
    // SAFETY: fcntl on an invalid descriptor: EBADF if the filter lets it through.
    unsafe { libc::syscall(libc::SYS_fcntl, -1, CMD, ARG) };
}

/// F_SETFL O_NONBLOCK on a descriptor of the child's own (an eventfd: the main
/// thread may make those), then checked with F_GETFL.
fn set_nonblocking_on_own_fd() {
    // SAFETY: creates, flags, reads the flags of and closes an eventfd of this child.
    unsafe {
        let fd = libc::eventfd(0, libc::EFD_CLOEXEC);
        if fd < 0 || libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) != 0 {
            fail();
        }
        if libc::fcntl(fd, libc::F_GETFL) & libc::O_NONBLOCK == 0 {
            fail();
        }
        libc::close(fd);
    }
}

const APPEND: u64 = libc::O_APPEND as u64;
const NONBLOCK: u64 = libc::O_NONBLOCK as u64;

#[test]
fn fcntl_setfl_only_adds_nonblocking_and_only_on_the_main_thread() {
    let st = in_filtered_child(ThreadKind::Main, fcntl_bad_fd::<{ libc::F_SETFL }, APPEND>);
    assert!(killed_by_sigsys(st), "F_SETFL O_APPEND: {st:#x}");
    let st = in_filtered_child(ThreadKind::Main, set_nonblocking_on_own_fd);
    assert!(exited_cleanly(st), "F_SETFL O_NONBLOCK: {st:#x}");
    let st = in_filtered_child(
        ThreadKind::Vcpu,
        fcntl_bad_fd::<{ libc::F_SETFL }, NONBLOCK>,
    );
    assert!(killed_by_sigsys(st), "vCPU F_SETFL: {st:#x}");
}

#[test]
fn fcntl_commands_outside_the_list_are_killed() {
    for kind in BOTH {
        for f in [
            fcntl_bad_fd::<{ libc::F_SETOWN }, 1>,
            fcntl_bad_fd::<{ libc::F_DUPFD }, 0>,
            fcntl_bad_fd::<{ libc::F_SETLK }, 0>,
            // F_SETFD only ever sets FD_CLOEXEC.
            fcntl_bad_fd::<{ libc::F_SETFD }, 0>,
        ] {
            let st = in_filtered_child(kind, f);
            assert!(killed_by_sigsys(st), "{kind:?}: {st:#x}");
        }
        for f in [
            fcntl_bad_fd::<{ libc::F_GETFD }, 0>,
            fcntl_bad_fd::<{ libc::F_DUPFD_CLOEXEC }, 0>,
            fcntl_bad_fd::<{ libc::F_SETFD }, { libc::FD_CLOEXEC as u64 }>,
        ] {
            let st = in_filtered_child(kind, f);
            assert!(exited_cleanly(st), "{kind:?}: {st:#x}");
        }
    }
}

fn sendmsg() {
    // SAFETY: sendmsg on an invalid descriptor with no message; killed by the filter.
    unsafe { libc::syscall(libc::SYS_sendmsg, -1, std::ptr::null::<libc::msghdr>(), 0) };
}

fn recvmsg() {
    // SAFETY: recvmsg on an invalid descriptor with no message; killed by the filter.
    unsafe { libc::syscall(libc::SYS_recvmsg, -1, std::ptr::null::<libc::msghdr>(), 0) };
}

fn setsockopt() {
    let size: libc::c_int = 1 << 20;
    // SAFETY: setsockopt on an invalid descriptor reading a stack int; killed first.
    unsafe {
        libc::syscall(
            libc::SYS_setsockopt,
            -1,
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            &size as *const libc::c_int,
            std::mem::size_of::<libc::c_int>(),
        )
    };
}

/// What the vsock device does instead: sendto/recvfrom with its flags, getsockopt.
fn socket_calls_the_vmm_makes() {
    let mut buf = [0u8; 4];
    let mut val: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: calls on an invalid descriptor (EBADF) with stack buffers.
    unsafe {
        libc::sendto(
            -1,
            buf.as_ptr().cast(),
            0,
            libc::MSG_NOSIGNAL,
            std::ptr::null(),
            0,
        );
        libc::recvfrom(
            -1,
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        );
        libc::getsockopt(
            -1,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut val as *mut libc::c_int).cast(),
            &mut len,
        );
    }
}

#[test]
fn sendmsg_recvmsg_and_setsockopt_are_killed() {
    for kind in BOTH {
        for f in [sendmsg, recvmsg, setsockopt] {
            let st = in_filtered_child(kind, f);
            assert!(killed_by_sigsys(st), "{kind:?}: {st:#x}");
        }
    }
    let st = in_filtered_child(ThreadKind::Main, socket_calls_the_vmm_makes);
    assert!(exited_cleanly(st), "{st:#x}");
}

// Request numbers written out (`_IOR`/`_IOW(0xae, nr, size)`, kvm_regs 144 bytes,
// kvm_vcpu_events 64), independent of how the filter computes them.
const KVM_RUN: u64 = 0xae80;
const KVM_GET_REGS: u64 = 0x8090_ae81;
const KVM_SET_REGS: u64 = 0x4090_ae82;
const KVM_GET_VCPU_EVENTS: u64 = 0x8040_ae9f;
const KVM_SET_VCPU_EVENTS: u64 = 0x4040_aea0;

/// `ioctl(-1, REQ, 0)`.
fn ioctl_bad_fd<const REQ: u64>() {
    // SAFETY: an ioctl on an invalid descriptor: EBADF if the filter lets it through.
    unsafe { libc::syscall(libc::SYS_ioctl, -1, REQ, 0usize) };
}

#[test]
fn pvm_vcpu_ioctls_pass_only_the_pvm_filter() {
    let plain = compile(ThreadKind::Vcpu, FilterOptions::default()).unwrap();
    let pvm = compile(
        ThreadKind::Vcpu,
        FilterOptions {
            pvm: true,
            snapshots: false,
        },
    )
    .unwrap();
    for f in [
        ioctl_bad_fd::<KVM_SET_REGS>,
        ioctl_bad_fd::<KVM_GET_VCPU_EVENTS>,
        ioctl_bad_fd::<KVM_SET_VCPU_EVENTS>,
    ] {
        let st = in_child_with(&plain, f);
        assert!(killed_by_sigsys(st), "non-PVM: {st:#x}");
        let st = in_child_with(&pvm, f);
        assert!(exited_cleanly(st), "PVM: {st:#x}");
    }
    for f in [ioctl_bad_fd::<KVM_RUN>, ioctl_bad_fd::<KVM_GET_REGS>] {
        for prog in [&plain, &pvm] {
            let st = in_child_with(prog, f);
            assert!(exited_cleanly(st), "{st:#x}");
        }
    }
}

/// `_IOR(KVMIO, 0xa4, struct kvm_xsave)`: KVM_GET_XSAVE.
const KVM_GET_XSAVE: u64 = 0x9000_aea4;
/// `_IOW(KVMIO, 0xa5, struct kvm_xsave)`: KVM_SET_XSAVE.
const KVM_SET_XSAVE: u64 = 0x5000_aea5;

#[test]
fn snapshot_reads_pass_only_with_snapshots_and_writes_never() {
    let with = FilterOptions {
        pvm: false,
        snapshots: true,
    };
    let plain = compile(ThreadKind::Vcpu, FilterOptions::default()).unwrap();
    let snap = compile(ThreadKind::Vcpu, with).unwrap();
    let st = in_child_with(&plain, ioctl_bad_fd::<KVM_GET_XSAVE>);
    assert!(killed_by_sigsys(st), "without snapshots: {st:#x}");
    let st = in_child_with(&snap, ioctl_bad_fd::<KVM_GET_XSAVE>);
    assert!(exited_cleanly(st), "with snapshots: {st:#x}");
    let st = in_child_with(&snap, ioctl_bad_fd::<KVM_SET_XSAVE>);
    assert!(
        killed_by_sigsys(st),
        "a state write on a snapshotting vCPU: {st:#x}"
    );
}

fn tgkill_self(sig: i32) {
    // SAFETY: the test ignored `sig` before forking, so delivering it has no effect.
    unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), libc::gettid(), sig) };
}

fn kick_self() {
    tgkill_self(crate::vstate::pause::kick_signal());
}

fn sigusr2_self() {
    tgkill_self(libc::SIGUSR2);
}

#[test]
fn main_thread_kicks_vcpus_only_when_snapshotting_and_only_with_the_kick_signal() {
    let with = FilterOptions {
        pvm: false,
        snapshots: true,
    };
    let plain = compile(ThreadKind::Main, FilterOptions::default()).unwrap();
    let snap = compile(ThreadKind::Main, with).unwrap();
    // Ignored here, inherited by the children: the filter, not the signal, decides.
    // SAFETY: setting the disposition of two signals this test binary does not use.
    unsafe {
        libc::signal(crate::vstate::pause::kick_signal(), libc::SIG_IGN);
        libc::signal(libc::SIGUSR2, libc::SIG_IGN);
    }
    assert!(killed_by_sigsys(in_child_with(&plain, kick_self)));
    assert!(exited_cleanly(in_child_with(&snap, kick_self)));
    assert!(killed_by_sigsys(in_child_with(&snap, sigusr2_self)));
}
