//! Clone-to-exec of one jail: the cgroup, the child's descriptors, the clone into new
//! namespaces, id maps and CPU placement from outside, then the release of the child
//! and its report (an 8-byte step/errno record, or EOF once the exec succeeded).

use super::child::{self, ChildPlan};
use super::process::{self, JailedProcess};
use super::{
    build_plan, cpus, describe_step, io_err, open_null, pipe, write_id_maps, Cgroup, CgroupHost,
    JailCommand, JailConfig, JailError, Stdio,
};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

pub(super) fn spawn_in_run_dir(
    cfg: &JailConfig,
    cmd: JailCommand,
    cgroups: Option<&CgroupHost>,
) -> Result<JailedProcess, JailError> {
    let cgroup = jail_cgroup(cfg, cgroups)?;
    let (sync_r, sync_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let (mut plan, _strings) = build_plan(cfg, &cmd, sync_r.as_raw_fd(), err_w.as_raw_fd())?;
    // Lets the child notice that this process died before releasing it (child::run).
    let parent = process::pidfd_open(std::process::id() as i32).map_err(io_err("pidfd_open"))?;
    plan.parent_pidfd = parent.as_raw_fd();
    let stdio = wire_stdio(&mut plan, &cmd)?;
    let pid = clone_child(&plan)?;
    drop((sync_r, err_w, stdio.child_ends, stdio.null, cmd.fds));

    let [stdout, stderr] = stdio.parent_ends;
    let mut proc = JailedProcess {
        pid,
        pidfd: match process::pidfd_open(pid) {
            Ok(fd) => fd,
            Err(e) => {
                // SAFETY: kill + waitpid on our own just-cloned child.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, std::ptr::null_mut(), 0);
                }
                return Err(io_err("pidfd_open")(e));
            }
        },
        cgroup,
        run_dir: cfg.run_dir.clone(),
        stdout,
        stderr,
        exit: None,
        uid_lease: None,
    };
    // From here, dropping `proc` kills and reaps the child.
    write_id_maps(pid, cfg.host_id_base)?;
    if let Some(cg) = &proc.cgroup {
        cg.attach(pid)?;
    }
    if !cfg.cpus.is_empty() {
        // Before the child runs anything: everything it forks inherits the set. Placement
        // is a hint: if the host's CPU set changed under us, run unplaced.
        if let Err(e) = cpus::set_affinity(pid, &cfg.cpus) {
            eprintln!(
                "worker: jail {pid}: CPU placement {:?} not applied: {e}",
                cfg.cpus
            );
        }
    }
    release_and_await_exec(&mut proc, &plan, sync_w, err_r)?;
    Ok(proc)
}

/// The jail's cgroup, named after its run directory, when limits are asked for.
fn jail_cgroup(
    cfg: &JailConfig,
    cgroups: Option<&CgroupHost>,
) -> Result<Option<Cgroup>, JailError> {
    let (Some(host), Some(limits)) = (cgroups, &cfg.limits) else {
        return Ok(None);
    };
    let name = cfg
        .run_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| JailError::Config("run dir has no UTF-8 name".into()))?;
    Ok(Some(host.create(name, limits)?))
}

/// Descriptors of the child's standard streams: both ends live until the clone.
struct ChildStdio {
    null: OwnedFd,
    /// The child's ends of pipes (closed in the parent after the clone).
    child_ends: Vec<OwnedFd>,
    /// Our ends of stdout/stderr pipes.
    parent_ends: [Option<OwnedFd>; 2],
}

/// Adds stdin (/dev/null), stdout, stderr and the extra descriptors to the plan.
fn wire_stdio(plan: &mut ChildPlan, cmd: &JailCommand) -> Result<ChildStdio, JailError> {
    let null = open_null()?;
    let mut child_ends: Vec<OwnedFd> = Vec::new();
    let mut parent_ends: [Option<OwnedFd>; 2] = [None, None];
    plan.fds.push((null.as_raw_fd(), 0));
    for (i, mode) in [cmd.stdout, cmd.stderr].into_iter().enumerate() {
        let target = i as RawFd + 1;
        match mode.unwrap_or(Stdio::Inherit) {
            Stdio::Inherit => plan.fds.push((target, target)),
            Stdio::Null => plan.fds.push((null.as_raw_fd(), target)),
            Stdio::Pipe => {
                let (r, w) = pipe()?;
                plan.fds.push((w.as_raw_fd(), target));
                child_ends.push(w);
                parent_ends[i] = Some(r);
            }
        }
    }
    for (fd, target) in &cmd.fds {
        if *target < 3 {
            return Err(JailError::Config(format!("extra fd target {target} < 3")));
        }
        plan.fds.push((fd.as_raw_fd(), *target));
    }
    Ok(ChildStdio {
        null,
        child_ends,
        parent_ends,
    })
}

/// Clones the child into new namespaces; it waits for the release byte.
fn clone_child(plan: &ChildPlan) -> Result<i32, JailError> {
    let flags = libc::CLONE_NEWUSER
        | libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWCGROUP;
    // No unpacked code is open for writing while the child takes its copy of the
    // descriptor table (see `CLONE_GATE`).
    let gate = super::CLONE_GATE.write().unwrap_or_else(|p| p.into_inner());
    // SAFETY: a fork-like clone (no CLONE_VM, no new stack): the child gets a copy of the
    // address space and runs only `child::run`, which makes raw system calls on data
    // prepared above and never returns.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid == 0 {
        child::run(plan);
    }
    drop(gate);
    if pid < 0 {
        return Err(io_err("clone")(io::Error::last_os_error()));
    }
    Ok(pid as i32)
}

/// Lets the child run its setup and waits (bounded) for its exec or its failure report.
fn release_and_await_exec(
    proc: &mut JailedProcess,
    plan: &ChildPlan,
    sync_w: OwnedFd,
    err_r: OwnedFd,
) -> Result<(), JailError> {
    let go = [1u8];
    // SAFETY: writing one byte from a stack buffer to our pipe.
    if unsafe { libc::write(sync_w.as_raw_fd(), go.as_ptr().cast(), 1) } != 1 {
        return Err(io_err("release jail child")(io::Error::last_os_error()));
    }
    drop(sync_w);
    // A setup that never finishes must not hang the worker: bound it.
    if !wait_readable(&err_r, SETUP_TIMEOUT_MS) {
        return Err(JailError::Setup {
            step: "setup (timed out)".into(),
            source: io::Error::from(io::ErrorKind::TimedOut),
        });
    }
    let mut report = [0u8; 8];
    let n = read_full(&err_r, &mut report);
    if n == 8 {
        let step = u32::from_ne_bytes([report[0], report[1], report[2], report[3]]);
        let errno = i32::from_ne_bytes([report[4], report[5], report[6], report[7]]);
        let _ = proc.try_wait();
        return Err(JailError::Setup {
            step: describe_step(plan, step),
            source: io::Error::from_raw_os_error(errno),
        });
    }
    // EOF with nothing written: the exec succeeded and closed the CLOEXEC pipe.
    Ok(())
}

/// Bound on clone-to-exec (mounts, pivot_root, seccomp): normally a few milliseconds.
const SETUP_TIMEOUT_MS: i32 = 10_000;

/// Waits until `fd` is readable (data or EOF); false on timeout.
fn wait_readable(fd: &OwnedFd, timeout_ms: i32) -> bool {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    loop {
        // SAFETY: polls one valid pollfd that lives on this stack frame.
        let r = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
        if r >= 0 {
            return r > 0;
        }
        if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            return false;
        }
    }
}

fn read_full(fd: &OwnedFd, buf: &mut [u8]) -> usize {
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: reading into the unfilled tail of `buf`.
        let n = unsafe {
            libc::read(
                fd.as_raw_fd(),
                buf[got..].as_mut_ptr().cast(),
                buf.len() - got,
            )
        };
        if n > 0 {
            got += n as usize;
        } else if n == 0 || io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
    }
    got
}
