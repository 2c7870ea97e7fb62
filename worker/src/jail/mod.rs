//! Jailing a process: user, mount, PID, network, IPC and UTS namespaces; an overlay of a
//! read-only rootfs as the root (pivot_root); code read-only at `/var/task`; tmpfs `/tmp`;
//! cgroup limits; seccomp; an unprivileged uid.

pub mod cgroup;
mod child;
pub mod cpus;
pub mod dynmods;
mod layout;
mod plan;
mod process;
pub mod seccomp;
mod spawn;
pub mod uids;

pub use cgroup::{Cgroup, CgroupError, CgroupHost, CgroupLimits, CgroupVersion};
pub use process::{Exit, JailedProcess};
pub use uids::{UidLease, UidLeaseError, UidLeases};

use plan::{cpath, cstr, PlanError, Step};
use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

/// Lambda's sandbox user (`sbx_user1051`).
pub const SANDBOX_UID: u32 = 993;
/// Its group in our rootfs images.
pub const SANDBOX_GID: u32 = 990;
/// What an agent running as the jail's root needs to start the function as
/// `sbx_user1051` and to stop it: CAP_KILL, CAP_SETGID, CAP_SETUID.
pub const AGENT_CAPS: u64 = (1 << CAP_KILL) | (1 << CAP_SETGID) | (1 << CAP_SETUID);
const CAP_KILL: u64 = 5;
const CAP_SETGID: u64 = 6;
const CAP_SETUID: u64 = 7;
/// Size of the uid/gid range mapped into each jail.
pub const ID_RANGE: u32 = 65536;

/// Descriptors a jailed program may hold (soft and hard): Lambda's 1,024.
pub const SANDBOX_NOFILE: u64 = 1024;
/// Host gid of every jail's gid 0 (its other gids map into its leased range). The jail
/// does its bind mounts as its root, so a directory owned by this group with mode 0710
/// lets jails reach the code inside it by name while other host users cannot traverse
/// it. Below the default lease ranges (1,000,000 and up); no range may contain it, and
/// no host user or group may be given it.
pub const JAIL_ROOT_GID: u32 = 999_999;

/// Code being unpacked (files a sandbox will execute) is written under the read side;
/// jails are cloned, and helper programs spawned, under the write side. A cloned child
/// holds copies of all the worker's descriptors until its exec, and a copy of one still
/// open for writing makes another sandbox's exec of that file fail with ETXTBSY.
pub static CLONE_GATE: std::sync::RwLock<()> = std::sync::RwLock::new(());

/// The host gid a jail's `gid` is (see [`write_id_maps`]).
pub fn host_gid(host_id_base: u32, gid: u32) -> u32 {
    if gid == 0 {
        JAIL_ROOT_GID
    } else {
        host_id_base.saturating_add(gid)
    }
}

/// The group code mirrors for jails are given: [`JAIL_ROOT_GID`] for a root process,
/// which alone can start jails; `None` (keep them private) otherwise.
pub fn mirror_group() -> Option<u32> {
    // SAFETY: geteuid has no preconditions.
    (unsafe { libc::geteuid() } == 0).then_some(JAIL_ROOT_GID)
}

/// Whether the host ids `base .. base + len` contain [`JAIL_ROOT_GID`].
pub(crate) fn overlaps_root_gid(base: u32, len: u64) -> bool {
    let gid = u64::from(JAIL_ROOT_GID);
    (u64::from(base)..u64::from(base) + len).contains(&gid)
}

/// Errors starting a jailed process.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    #[error("jail needs root on the host (uid maps and cgroups)")]
    NotRoot,
    #[error("invalid jail configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Seccomp(#[from] seccomp::SeccompError),
    #[error("{what}: {source}")]
    Io { what: String, source: io::Error },
    #[error("jail setup failed at {step}: {source}")]
    Setup { step: String, source: io::Error },
    #[error(
        "the host's root filesystem is the initramfs (rootfs), where pivot_root cannot work: \
         move the root to a tmpfs first (switch_root), as the appliance's init does"
    )]
    RootIsInitramfs,
}

/// Refuses a host on which no jail can start, with the reason, before any sandbox is
/// tried: the kernel's initial "rootfs" can never be unmounted, so `pivot_root` fails
/// with EINVAL for every process whose root it is.
pub fn check_host() -> Result<(), JailError> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(io_err("read mountinfo"))?;
    check_root_mount(&mountinfo)
}

fn check_root_mount(mountinfo: &str) -> Result<(), JailError> {
    // The last mount on "/" is the one in use; its filesystem type follows " - ".
    let top = mountinfo
        .lines()
        .rfind(|l| l.split_whitespace().nth(4) == Some("/"));
    let fstype = top
        .and_then(|l| l.split_once(" - "))
        .and_then(|(_, rest)| rest.split_whitespace().next());
    if fstype == Some("rootfs") {
        return Err(JailError::RootIsInitramfs);
    }
    Ok(())
}

#[cfg(test)]
mod host_tests {
    use super::*;

    #[test]
    fn gid_0_is_the_shared_root_gid_and_the_rest_the_leased_range() {
        let (uid_map, gid_map) = id_maps(1_000_000);
        assert_eq!(uid_map, "0 1000000 65536\n");
        assert_eq!(gid_map, "0 999999 1\n1 1000001 65535\n");
        assert_eq!(host_gid(1_000_000, 0), JAIL_ROOT_GID);
        assert_eq!(host_gid(1_000_000, SANDBOX_GID), 1_000_000 + SANDBOX_GID);
        assert!(overlaps_root_gid(JAIL_ROOT_GID - 10, 65536));
        assert!(!overlaps_root_gid(JAIL_ROOT_GID + 1, 65536));
        assert!(!overlaps_root_gid(JAIL_ROOT_GID - 65536, 65536));
    }

    #[test]
    fn an_initramfs_root_is_refused_and_a_switched_one_accepted() {
        let initramfs = "1 1 0:2 / / rw - rootfs rootfs rw\n22 1 0:20 / /proc rw - proc proc rw\n";
        assert!(matches!(
            check_root_mount(initramfs),
            Err(JailError::RootIsInitramfs)
        ));
        let switched = "1 1 0:2 / / rw - rootfs rootfs rw\n30 1 0:25 / / rw - tmpfs root rw\n";
        assert!(check_root_mount(switched).is_ok());
        let disk = "25 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n";
        assert!(check_root_mount(disk).is_ok());
    }
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> JailError {
    let what = what.into();
    move |source| JailError::Io { what, source }
}

/// Where the jail's stdout/stderr go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stdio {
    Null,
    Inherit,
    Pipe,
}

/// The filesystem, identity and limits of one jail.
#[derive(Debug, Clone)]
pub struct JailConfig {
    /// The jail's root: an overlay with this unpacked root filesystem as its read-only
    /// lower layer, or, with `None`, an empty tmpfs holding only mount points and the
    /// merged-/usr links (`bin` -> `usr/bin`, ...) for a program that brings its own
    /// files in through binds (the VM monitor).
    pub rootfs: Option<PathBuf>,
    /// Function code, bound read-only at `/var/task`.
    pub code: Option<PathBuf>,
    /// Extra read-only binds (host path, absolute path inside).
    pub ro_binds: Vec<(PathBuf, PathBuf)>,
    /// Writable binds (host path, absolute path inside), e.g. a socket directory.
    pub rw_binds: Vec<(PathBuf, PathBuf)>,
    /// Extra device nodes (host path, name under the jail's /dev), e.g. a `kvm` node the
    /// caller created for the jail's uid.
    pub devices: Vec<(PathBuf, String)>,
    /// Host directory for this jail's mount points; created and removed by the jail.
    pub run_dir: PathBuf,
    pub tmp_size_mib: u32,
    pub hostname: String,
    /// uid/gid the program runs as inside the jail.
    pub uid: u32,
    pub gid: u32,
    /// Capabilities (bit = `CAP_*` number) the program keeps; everything else leaves
    /// the bounding set. Only a program running as the namespace's root has any.
    pub keep_caps: u64,
    /// First host id of the range the jail's ids map to: uid n is host `base + n`, gid n
    /// likewise except gid 0, which is [`JAIL_ROOT_GID`].
    pub host_id_base: u32,
    pub limits: Option<CgroupLimits>,
    pub seccomp: bool,
    pub loopback_up: bool,
    /// Run a minimal reaper as PID 1 and the program as PID 2, so the program behaves as
    /// an ordinary process (guest-init does VM-only setup when it is PID 1).
    pub reaper: bool,
    /// Host CPUs the jail runs on (see `cpus`); empty leaves the affinity alone.
    pub cpus: Vec<usize>,
}

/// The program to run in a jail.
#[derive(Debug, Default)]
pub struct JailCommand {
    /// Path inside the jail.
    pub exe: PathBuf,
    /// argv[1..].
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub stdout: Option<Stdio>,
    pub stderr: Option<Stdio>,
    /// Descriptors handed to the program at the given numbers (3 and up).
    pub fds: Vec<(OwnedFd, RawFd)>,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), JailError> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io_err("pipe2")(io::Error::last_os_error()));
    }
    // SAFETY: both fds are new and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

fn open_null() -> Result<OwnedFd, JailError> {
    fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map(OwnedFd::from)
        .map_err(io_err("open /dev/null"))
}

fn build_plan(
    cfg: &JailConfig,
    cmd: &JailCommand,
    sync_fd: RawFd,
    err_fd: RawFd,
) -> Result<(child::ChildPlan, Vec<CString>), JailError> {
    let mut steps = layout::filesystem_steps(cfg)?;
    steps.push(Step::Hostname(cstr(&cfg.hostname)?));
    if cfg.loopback_up {
        steps.push(Step::LoopbackUp);
    }
    // While still the namespace's root (CAP_SETPCAP): the bounding set limits what the
    // program gets at exec; the capabilities held now still allow the id change.
    steps.push(Step::KeepCaps(cfg.keep_caps));
    steps.push(Step::DropIds {
        uid: cfg.uid,
        gid: cfg.gid,
    });
    steps.push(Step::LimitFiles(SANDBOX_NOFILE));
    steps.push(Step::NoNewPrivs);
    let seccomp = if cfg.seccomp {
        seccomp::build()?.programs
    } else {
        Vec::new()
    };
    for i in 0..seccomp.len() {
        steps.push(Step::Seccomp(i));
    }
    steps.push(Step::Chdir(cpath(&cmd.cwd)?));

    // The strings must outlive the pointer arrays: they are returned alongside.
    let mut strings = vec![cpath(&cmd.exe)?];
    for a in &cmd.args {
        strings.push(cstr(a)?);
    }
    let argc = strings.len();
    for (k, v) in &cmd.env {
        if k.contains('=') {
            return Err(JailError::Config(format!("env name {k:?} contains '='")));
        }
        strings.push(cstr(&format!("{k}={v}"))?);
    }
    let ptrs: Vec<*const libc::c_char> = strings.iter().map(|c| c.as_ptr()).collect();
    let mut argv = ptrs[..argc].to_vec();
    argv.push(std::ptr::null());
    let mut envp = ptrs[argc..].to_vec();
    envp.push(std::ptr::null());
    let plan = child::ChildPlan {
        steps,
        seccomp,
        exe: cpath(&cmd.exe)?,
        argv,
        envp,
        fds: Vec::new(),
        sync_fd,
        err_fd,
        parent_pidfd: -1,
        reaper: cfg.reaper,
    };
    Ok((plan, strings))
}

fn describe_step(plan: &child::ChildPlan, idx: u32) -> String {
    match idx {
        child::STEP_SYNC => "waiting for the parent".into(),
        child::STEP_FDS => "descriptor setup".into(),
        child::STEP_EXEC => format!("execve {:?}", plan.exe),
        i => plan
            .steps
            .get(i as usize)
            .map_or_else(|| format!("step {i}"), |s| format!("{s:?}")),
    }
}

/// uid n is host `base + n`; gid 0 is the shared [`JAIL_ROOT_GID`] (what the jail's
/// setup, running as its root, reaches code mirrors through) and gid n > 0 `base + n`.
fn id_maps(base: u32) -> (String, String) {
    let uid_map = format!("0 {base} {ID_RANGE}\n");
    let gid_map = format!(
        "0 {JAIL_ROOT_GID} 1\n1 {} {}\n",
        u64::from(base) + 1,
        ID_RANGE - 1
    );
    (uid_map, gid_map)
}

fn write_id_maps(pid: i32, base: u32) -> Result<(), JailError> {
    let (uid_map, gid_map) = id_maps(base);
    for (file, map) in [("uid_map", uid_map), ("gid_map", gid_map)] {
        let path = format!("/proc/{pid}/{file}");
        fs::write(&path, map).map_err(io_err(format!("write {path}")))?;
    }
    Ok(())
}

/// Starts `cmd` in a new jail described by `cfg`. Blocks for the few milliseconds the
/// jail setup takes (call it from a blocking thread in async code).
pub fn spawn(
    cfg: &JailConfig,
    cmd: JailCommand,
    cgroups: Option<&CgroupHost>,
) -> Result<JailedProcess, JailError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(JailError::NotRoot);
    }
    if cfg.uid >= ID_RANGE || cfg.gid >= ID_RANGE {
        return Err(JailError::Config("uid/gid must be below 65536".into()));
    }
    if overlaps_root_gid(cfg.host_id_base, u64::from(ID_RANGE)) {
        return Err(JailError::Config(format!(
            "host id range from {} contains the jails' root gid {JAIL_ROOT_GID}",
            cfg.host_id_base
        )));
    }
    if let Some(rootfs) = cfg.rootfs.as_ref().filter(|r| !r.is_dir()) {
        return Err(JailError::Config(format!(
            "rootfs {} is not a directory",
            rootfs.display()
        )));
    }
    if let Some(code) = &cfg.code {
        if !code.is_dir() {
            return Err(JailError::Config(format!(
                "code {} is not a directory",
                code.display()
            )));
        }
    }
    for sub in ["root", "scratch"] {
        fs::create_dir_all(cfg.run_dir.join(sub)).map_err(io_err("create run dir"))?;
    }
    let result = spawn::spawn_in_run_dir(cfg, cmd, cgroups);
    if result.is_err() {
        process::remove_run_dir(&cfg.run_dir);
    }
    result
}
