//! The jail really applies each isolation measure: namespaces, read-only filesystems,
//! memory, pids and CPU limits, seccomp, dropped uid.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use worker::jail::{self, CgroupHost, CgroupLimits, Exit, JailCommand, JailConfig, Stdio};

/// Host prerequisites: root (uid maps, cgroups). Fails under CI, skips loudly otherwise.
fn prerequisites_met() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "jail tests need root in CI"
    );
    eprintln!("SKIPPED: jail tests need root");
    false
}

struct Fixture {
    _dirs: Vec<tempfile::TempDir>,
    cfg: JailConfig,
}

fn open_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    // The jail's root is an unprivileged host uid: it must traverse these directories.
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    d
}

/// Names double as cgroup names, so they must differ between parallel tests.
fn unique_name() -> String {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("jail-{}-{n}", std::process::id())
}

/// A rootfs made of the host's /usr (merged-usr layout), so the tests need no image.
fn fixture(limits: Option<CgroupLimits>) -> Fixture {
    let rootfs = open_dir();
    std::fs::create_dir(rootfs.path().join("usr")).unwrap();
    for (link, target) in [
        ("bin", "usr/bin"),
        ("lib", "usr/lib"),
        ("lib64", "usr/lib64"),
        ("sbin", "usr/sbin"),
    ] {
        std::os::unix::fs::symlink(target, rootfs.path().join(link)).unwrap();
    }
    let code = open_dir();
    std::fs::write(code.path().join("handler.sh"), "echo from-code\n").unwrap();
    std::fs::set_permissions(
        code.path().join("handler.sh"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let run = open_dir();
    let cfg = JailConfig {
        rootfs: Some(rootfs.path().to_path_buf()),
        code: Some(code.path().to_path_buf()),
        ro_binds: vec![(PathBuf::from("/usr"), PathBuf::from("/usr"))],
        rw_binds: Vec::new(),
        devices: Vec::new(),
        run_dir: run.path().join(unique_name()),
        tmp_size_mib: 16,
        hostname: "sandbox-test".into(),
        uid: jail::SANDBOX_UID,
        gid: jail::SANDBOX_UID,
        keep_caps: 0,
        host_id_base: 200_000,
        limits,
        seccomp: true,
        loopback_up: true,
        reaper: false,
        cpus: Vec::new(),
    };
    Fixture {
        _dirs: vec![rootfs, code, run],
        cfg,
    }
}

struct Output {
    exit: Exit,
    stdout: String,
    stderr: String,
    oom_kills: u64,
    throttled: u64,
}

fn read_pipe(fd: Option<std::os::fd::OwnedFd>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(fd) = fd {
            let _ = std::fs::File::from(fd).read_to_string(&mut s);
        }
        s
    })
}

fn run_sh(cfg: &JailConfig, script: &str) -> Output {
    let host = cfg
        .limits
        .map(|_| CgroupHost::detect("worker-test").expect("cgroups"));
    let cmd = JailCommand {
        exe: PathBuf::from("/bin/sh"),
        args: vec!["-c".into(), script.into()],
        env: vec![("PATH".into(), "/usr/bin:/bin".into())],
        cwd: PathBuf::from("/var/task"),
        stdout: Some(Stdio::Pipe),
        stderr: Some(Stdio::Pipe),
        fds: Vec::new(),
    };
    let mut p = jail::spawn(cfg, cmd, host.as_ref()).expect("spawn jail");
    // Reads before and after the run exercise the kept-open statistics files.
    let oom_before = p.cgroup().map_or(0, |c| c.oom_kills());
    let out = read_pipe(p.take_stdout());
    let err = read_pipe(p.take_stderr());
    let deadline = Instant::now() + Duration::from_secs(30);
    let exit = loop {
        if let Some(e) = p.try_wait().unwrap() {
            break e;
        }
        assert!(Instant::now() < deadline, "jailed command hung");
        std::thread::sleep(Duration::from_millis(5));
    };
    let oom_kills = p.cgroup().map_or(0, |c| c.oom_kills()) - oom_before;
    let throttled = p.cgroup().map_or(0, |c| c.cpu_throttled_periods());
    drop(p);
    Output {
        exit,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        oom_kills,
        throttled,
    }
}

#[test]
fn namespaces_identity_and_network() {
    if !prerequisites_met() {
        return;
    }
    let f = fixture(None);
    let o = run_sh(
        &f.cfg,
        "echo pid=$$; echo uid=$(id -u) gid=$(id -g); echo host=$(hostname); \
         echo ifaces=$(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | tr '\\n' ,); \
         echo procs=$(ls /proc | grep -c '^[0-9]'); cat /proc/self/uid_map",
    );
    assert_eq!(o.exit, Exit::Code(0), "stderr: {}", o.stderr);
    assert!(o.stdout.contains("pid=1\n"), "{}", o.stdout);
    assert!(o.stdout.contains("uid=993 gid=993\n"), "{}", o.stdout);
    assert!(o.stdout.contains("host=sandbox-test\n"), "{}", o.stdout);
    assert!(o.stdout.contains("ifaces=lo,\n"), "{}", o.stdout);
    // Only the jail's own processes are visible (sh, subshells), not the host's hundreds.
    let procs: u32 = o
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("procs="))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(procs < 6, "{}", o.stdout);
    assert!(o.stdout.contains("200000"), "uid map: {}", o.stdout);
}

#[test]
fn a_jail_gets_lambdas_descriptor_limit_not_the_workers() {
    if !prerequisites_met() {
        return;
    }
    // The supervisor raises its own limit for connections; a sandbox must not inherit it.
    let f = fixture(None);
    let o = run_sh(
        &f.cfg,
        "grep 'Max open files' /proc/self/limits; ulimit -n 4096 || echo refused",
    );
    assert_eq!(o.exit, Exit::Code(0), "stderr: {}", o.stderr);
    let fields: Vec<&str> = o.stdout.split_whitespace().collect();
    assert_eq!(
        fields.get(3..5),
        Some(&["1024", "1024"][..]),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("refused"),
        "the hard limit holds: {}",
        o.stdout
    );
}

#[test]
fn an_agent_as_the_jails_root_keeps_only_its_capabilities() {
    if !prerequisites_met() {
        return;
    }
    let mut f = fixture(None);
    f.cfg.uid = 0;
    f.cfg.gid = 0;
    f.cfg.keep_caps = jail::AGENT_CAPS;
    let o = run_sh(
        &f.cfg,
        "echo uid=$(id -u); grep -E '^Cap(Eff|Bnd|Amb):' /proc/self/status;          mount -t tmpfs x /tmp 2>/dev/null && echo mounted;          echo pwn > /etc/hosts 2>/dev/null && echo wrote-etc; true",
    );
    assert_eq!(o.exit, Exit::Code(0), "stderr: {}", o.stderr);
    assert!(
        o.stdout.contains(
            "uid=0
"
        ),
        "{}",
        o.stdout
    );
    // kill, setgid, setuid: bits 5, 6, 7.
    assert!(
        o.stdout.contains("CapEff:\t00000000000000e0\n"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("CapBnd:\t00000000000000e0\n"),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("CapAmb:\t0000000000000000\n"),
        "{}",
        o.stdout
    );
    assert!(
        !o.stdout.contains("mounted") && !o.stdout.contains("wrote-etc"),
        "{}",
        o.stdout
    );
}

#[test]
fn filesystems_are_read_only_except_tmp() {
    if !prerequisites_met() {
        return;
    }
    let f = fixture(None);
    let o = run_sh(
        &f.cfg,
        "cat /var/task/handler.sh; \
         touch /var/task/new 2>/dev/null && echo task-writable; \
         touch /new 2>/dev/null && echo root-writable; \
         touch /usr/new 2>/dev/null && echo usr-writable; \
         echo hi > /tmp/x && cat /tmp/x; \
         test -e /work && echo host-visible; \
         head -c 4 /dev/urandom | wc -c",
    );
    assert_eq!(o.exit, Exit::Code(0), "stderr: {}", o.stderr);
    assert_eq!(o.stdout, "echo from-code\nhi\n4\n");
}

#[test]
fn memory_limit_kills_a_hog() {
    if !prerequisites_met() {
        return;
    }
    let f = fixture(Some(CgroupLimits {
        memory_bytes: 32 << 20,
        pids_max: 64,
        cpu_millicores: None,
    }));
    // `tail -n 1` keeps the whole newline-free input in memory. The hog
    // volunteers as the OOM victim (raising oom_score_adj needs no
    // privilege) so the kernel picks it before the reporting shell.
    let o = run_sh(
        &f.cfg,
        "head -c 200000000 /dev/zero | \
         (echo 1000 > /proc/self/oom_score_adj; exec tail -n 1 >/dev/null); \
         echo status=$?",
    );
    assert!(o.oom_kills >= 1, "no OOM kill: {} {}", o.stdout, o.stderr);
    // cgroup v1 may count the dying hog's memory a moment longer and pick
    // the shell as a second victim; either way the limit held.
    assert!(
        o.stdout.contains("status=137") || (o.oom_kills >= 2 && o.exit == Exit::Signal(9)),
        "stdout {:?} stderr {:?} exit {:?} oom kills {}",
        o.stdout,
        o.stderr,
        o.exit,
        o.oom_kills
    );
}

#[test]
fn pids_limit_stops_fork_bombs() {
    if !prerequisites_met() {
        return;
    }
    let f = fixture(Some(CgroupLimits {
        memory_bytes: 64 << 20,
        pids_max: 6,
        cpu_millicores: None,
    }));
    let o = run_sh(
        &f.cfg,
        "n=0; for i in 1 2 3 4 5 6 7 8 9 10; do sleep 1 & n=$((n+1)); done; echo started",
    );
    assert!(
        o.stderr.to_lowercase().contains("fork"),
        "fork did not fail: out={} err={}",
        o.stdout,
        o.stderr
    );
}

#[test]
fn cpu_quota_throttles() {
    if !prerequisites_met() {
        return;
    }
    let f = fixture(Some(CgroupLimits {
        memory_bytes: 64 << 20,
        pids_max: 16,
        cpu_millicores: Some(50),
    }));
    let o = run_sh(&f.cfg, "timeout 0.5 sh -c 'while :; do :; done'; echo end");
    assert!(o.stdout.contains("end"), "{} {}", o.stdout, o.stderr);
    assert!(o.throttled >= 2, "throttled periods: {}", o.throttled);
}

#[test]
fn seccomp_blocks_namespace_creation() {
    if !prerequisites_met() {
        return;
    }
    let mut f = fixture(None);
    let script = "unshare -U true && echo unshare-ok; exit 0";
    f.cfg.seccomp = false;
    let open = run_sh(&f.cfg, script);
    assert!(
        open.stdout.contains("unshare-ok"),
        "control run: {} {}",
        open.stdout,
        open.stderr
    );
    f.cfg.seccomp = true;
    let closed = run_sh(&f.cfg, script);
    assert!(!closed.stdout.contains("unshare-ok"), "{}", closed.stdout);
    assert!(
        closed.stderr.contains("Operation not permitted"),
        "{}",
        closed.stderr
    );
}

#[test]
fn reaper_runs_the_program_as_pid_2_and_passes_its_status() {
    if !prerequisites_met() {
        return;
    }
    let mut f = fixture(None);
    f.cfg.reaper = true;
    let o = run_sh(&f.cfg, "echo pid=$$; (sleep 0.1 &); exit 7");
    assert_eq!(o.stdout, "pid=2\n");
    assert_eq!(o.exit, Exit::Code(7));
}

#[test]
fn placement_confines_the_program_and_its_children_to_the_given_cpus() {
    if !prerequisites_met() {
        return;
    }
    let own = jail::cpus::own_affinity().unwrap();
    let last = *own.last().unwrap();
    let mut f = fixture(None);
    f.cfg.reaper = true;
    f.cfg.cpus = vec![last];
    // The program (PID 2 under the reaper) and a child it forks.
    let o = run_sh(
        &f.cfg,
        "grep Cpus_allowed_list /proc/self/status; sh -c 'grep Cpus_allowed_list /proc/self/status'",
    );
    assert_eq!(o.exit, Exit::Code(0), "{}", o.stderr);
    let want = format!("Cpus_allowed_list:\t{last}\n");
    assert_eq!(o.stdout, want.repeat(2));
}

#[test]
fn bad_config_is_an_error_not_a_panic() {
    if !prerequisites_met() {
        return;
    }
    let mut f = fixture(None);
    f.cfg.rootfs = Some(Path::new("/nonexistent/rootfs").to_path_buf());
    let cmd = JailCommand {
        exe: PathBuf::from("/bin/true"),
        cwd: PathBuf::from("/"),
        ..Default::default()
    };
    assert!(jail::spawn(&f.cfg, cmd, None).is_err());
    let f = fixture(None);
    let cmd = JailCommand {
        exe: PathBuf::from("/no/such/binary"),
        cwd: PathBuf::from("/"),
        ..Default::default()
    };
    let err = jail::spawn(&f.cfg, cmd, None).unwrap_err();
    assert!(err.to_string().contains("execve"), "{err}");
}

/// Opens `path` read-only as host uid/gid `id` (no supplementary groups), in a child
/// of this process; the error is the child's.
fn open_as(id: u32, path: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::process::CommandExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut cmd = std::process::Command::new("/bin/true");
    cmd.uid(id).gid(id);
    // SAFETY: the closure runs in the forked child, after the id change, and makes only
    // open(2) and close(2) on a string prepared before the fork: no allocation or lock.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(c_path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fd);
            Ok(())
        });
    }
    cmd.status().map(drop)
}

#[test]
fn a_code_mirror_reaches_its_jail_and_no_other_host_user() {
    if !prerequisites_met() {
        return;
    }
    // Laid out as the supervisor mirrors code: a root-owned 0710 directory of the jails'
    // root group holding world-readable code dirs and images.
    let outer = open_dir();
    let mirror = outer.path().join("code");
    std::fs::create_dir(&mirror).unwrap();
    std::os::unix::fs::chown(&mirror, Some(0), Some(jail::JAIL_ROOT_GID)).unwrap();
    std::fs::set_permissions(&mirror, std::fs::Permissions::from_mode(0o710)).unwrap();
    let code = mirror.join("abc.00112233445566778899aabbccddeeff");
    std::fs::create_dir(&code).unwrap();
    std::fs::set_permissions(&code, std::fs::Permissions::from_mode(0o755)).unwrap();
    let handler = code.join("handler.sh");
    std::fs::write(&handler, "echo from-mirror\n").unwrap();
    std::fs::set_permissions(&handler, std::fs::Permissions::from_mode(0o644)).unwrap();
    let image = mirror.join("code.ext4.00112233445566778899aabbccddeeff");
    std::fs::write(&image, "image\n").unwrap();
    std::fs::set_permissions(&image, std::fs::Permissions::from_mode(0o644)).unwrap();

    let mut f = fixture(None);
    f.cfg.code = Some(code);
    f.cfg.ro_binds.push((image, PathBuf::from("/vm/code.ext4")));
    let o = run_sh(&f.cfg, "cat /var/task/handler.sh /vm/code.ext4");
    assert_eq!(o.exit, Exit::Code(0), "stderr: {}", o.stderr);
    assert_eq!(o.stdout, "echo from-mirror\nimage\n");

    let denied = open_as(65534, &handler).expect_err("another host user opened the code");
    assert_eq!(denied.raw_os_error(), Some(libc::EACCES), "{denied}");
    // The same user could with the root traversable by all, as it used to be.
    std::fs::set_permissions(&mirror, std::fs::Permissions::from_mode(0o711)).unwrap();
    open_as(65534, &handler).expect("control: open through a 0711 root");
}
