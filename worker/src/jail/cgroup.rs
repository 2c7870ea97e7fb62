//! cgroup limits for one sandbox: memory, pids and CPU, on cgroup v1 (one hierarchy per
//! controller, as on this host) or v2 (unified), detected from `/proc/self/mountinfo`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Controllers a sandbox is limited by.
const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];
/// CFS period used for CPU quotas (the kernel default).
const CPU_PERIOD_US: u64 = 100_000;

/// Errors creating or driving a sandbox cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no cgroup v1 controller `{0}` and no usable cgroup v2 hierarchy")]
    NoController(&'static str),
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write {value:?} to {path}: {source}")]
    Write {
        path: PathBuf,
        value: String,
        source: io::Error,
    },
    #[error("cannot create cgroup {path}: {source}")]
    Create { path: PathBuf, source: io::Error },
    #[error("invalid cgroup name {0:?}")]
    BadName(String),
}

/// Which cgroup interface the host offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// Resource limits applied to one sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgroupLimits {
    /// Hard memory limit (RSS + page cache + kernel memory charged to the group); no swap.
    pub memory_bytes: u64,
    /// Maximum number of tasks (processes and threads).
    pub pids_max: u32,
    /// CPU quota in thousandths of a core; `None` leaves CPU unlimited.
    pub cpu_millicores: Option<u32>,
}

/// Where the host mounts cgroup hierarchies and where this process sits in them.
#[derive(Debug, Clone)]
pub struct CgroupHost {
    version: CgroupVersion,
    /// v1: one base directory per controller in `CONTROLLERS` order; v2: one entry.
    bases: Vec<PathBuf>,
}

/// One mount line of `/proc/self/mountinfo` that is a cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CgroupMount {
    root: String,
    pub(super) mount_point: PathBuf,
    pub(super) v2: bool,
    /// The mount's own options (`rw,nosuid,...`).
    pub(super) mount_opts: Vec<String>,
    /// The file system's options (`rw,nsdelegate,...`).
    pub(super) super_opts: Vec<String>,
}

pub(super) fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let pre: Vec<&str> = pre.split(' ').collect();
            let mut post = post.split(' ');
            let fstype = post.next()?;
            let _source = post.next()?;
            let super_opts = post.next().unwrap_or("");
            if fstype != "cgroup" && fstype != "cgroup2" {
                return None;
            }
            Some(CgroupMount {
                root: (*pre.get(3)?).to_string(),
                mount_point: PathBuf::from(unescape_mount_path(pre.get(4)?)),
                v2: fstype == "cgroup2",
                mount_opts: pre.get(5)?.split(',').map(str::to_string).collect(),
                super_opts: super_opts.split(',').map(str::to_string).collect(),
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as octal (`\040`).
fn unescape_mount_path(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
        if let (b'\\', Some(d)) = (bytes[i], octal) {
            let v = d.iter().fold(0u32, |acc, b| acc * 8 + u32::from(b - b'0'));
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Finds this process's path in the hierarchy holding `controller` (v1) or the unified one
/// (`controller` = None) from `/proc/self/cgroup`.
fn own_path(proc_cgroup: &str, controller: Option<&str>) -> Option<String> {
    proc_cgroup.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let _id = parts.next()?;
        let ctrls = parts.next()?;
        let path = parts.next()?;
        let hit = match controller {
            None => ctrls.is_empty(),
            Some(c) => ctrls.split(',').any(|x| x == c),
        };
        hit.then(|| path.to_string())
    })
}

/// Joins a mount point with this process's cgroup path, relative to the mount's root.
fn join_own(mount: &CgroupMount, own: &str) -> PathBuf {
    let rel = own.strip_prefix(mount.root.as_str()).unwrap_or(own);
    let rel = rel.trim_start_matches('/');
    if rel.is_empty() {
        mount.mount_point.clone()
    } else {
        mount.mount_point.join(rel)
    }
}

impl CgroupHost {
    /// Detects the cgroup layout. Sandboxes go under `<own cgroup>/<group>` so the
    /// worker's own limits also bound its sandboxes.
    pub fn detect(group: &str) -> Result<Self, CgroupError> {
        let mountinfo = read("/proc/self/mountinfo")?;
        let proc_cgroup = read("/proc/self/cgroup")?;
        Self::from_tables(&mountinfo, &proc_cgroup, group)
    }

    fn from_tables(mountinfo: &str, proc_cgroup: &str, group: &str) -> Result<Self, CgroupError> {
        validate_name(group)?;
        let mounts = parse_mountinfo(mountinfo);
        let v1_for = |c: &str| {
            mounts
                .iter()
                .find(|m| !m.v2 && m.super_opts.iter().any(|o| o == c))
        };
        if CONTROLLERS.iter().all(|c| v1_for(c).is_some()) {
            let mut bases = Vec::new();
            for c in CONTROLLERS {
                let m = v1_for(c).ok_or(CgroupError::NoController(c))?;
                let own = own_path(proc_cgroup, Some(c)).unwrap_or_else(|| "/".into());
                bases.push(join_own(m, &own).join(group));
            }
            return Ok(Self {
                version: CgroupVersion::V1,
                bases,
            });
        }
        let unified = mounts
            .iter()
            .find(|m| m.v2)
            .ok_or(CgroupError::NoController("memory"))?;
        let own = own_path(proc_cgroup, None).unwrap_or_else(|| "/".into());
        Ok(Self {
            version: CgroupVersion::V2,
            bases: vec![join_own(unified, &own).join(group)],
        })
    }

    pub fn version(&self) -> CgroupVersion {
        self.version
    }

    /// Names of the sandbox cgroups that currently exist under this group.
    pub fn sandbox_names(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(&self.bases[0]) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect()
    }

    /// Removes sandbox cgroups left by a worker process that no longer exists (named
    /// `sb-<pid>-<n>`), killing anything still inside. Returns how many were removed.
    pub fn remove_stale(&self) -> usize {
        let mut removed = 0;
        for name in self.sandbox_names() {
            if !stale_owner(&name) {
                continue;
            }
            let mut cg = Cgroup {
                version: self.version,
                dirs: self.bases.iter().map(|b| b.join(&name)).collect(),
                stats: StatFiles::default(),
                memory_limit: 0,
            };
            cg.remove();
            removed += 1;
        }
        removed
    }

    /// Memory charged to this process's own cgroup and everything below it: the
    /// sandboxes' groups, and what the kernel charged to this process for them (a
    /// sandbox's first task and its namespaces are made before it joins its group).
    /// `None` in a root cgroup, which has no such figure.
    pub fn own_memory_current(&self) -> Option<u64> {
        let file = match self.version {
            CgroupVersion::V1 => "memory.usage_in_bytes",
            CgroupVersion::V2 => "memory.current",
        };
        read(self.bases[0].parent()?.join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Memory currently charged to all sandboxes under this group.
    pub fn group_memory_current(&self) -> Option<u64> {
        let file = match self.version {
            CgroupVersion::V1 => "memory.usage_in_bytes",
            CgroupVersion::V2 => "memory.current",
        };
        read(self.bases[0].join(file)).ok()?.trim().parse().ok()
    }

    /// Creates the cgroup `name` for one sandbox and applies `limits`.
    pub fn create(&self, name: &str, limits: &CgroupLimits) -> Result<Cgroup, CgroupError> {
        validate_name(name)?;
        let cg = Cgroup {
            version: self.version,
            dirs: self.bases.iter().map(|b| b.join(name)).collect(),
            stats: StatFiles::default(),
            memory_limit: limits.memory_bytes,
        };
        if self.version == CgroupVersion::V2 {
            for base in &self.bases {
                enable_v2_controllers(base)?;
            }
        }
        for dir in &cg.dirs {
            fs::create_dir_all(dir).map_err(|source| CgroupError::Create {
                path: dir.clone(),
                source,
            })?;
        }
        // On error `cg` is dropped, which removes the directories.
        cg.apply(limits)?;
        Ok(cg)
    }
}

/// Enables memory, pids and cpu for the children of `base`, creating it if needed.
fn enable_v2_controllers(base: &Path) -> Result<(), CgroupError> {
    fs::create_dir_all(base).map_err(|source| CgroupError::Create {
        path: base.to_path_buf(),
        source,
    })?;
    if let Some(parent) = base.parent() {
        // The parent must delegate the controllers to `base` first; ignore failures
        // when they already are (the write is idempotent).
        let _ = write(&parent.join("cgroup.subtree_control"), "+memory +pids +cpu");
    }
    write(&base.join("cgroup.subtree_control"), "+memory +pids +cpu")
}

/// Whether a `sb-<pid>-<n>` name belongs to a process that is gone.
pub fn stale_owner(name: &str) -> bool {
    let pid = name
        .strip_prefix("sb-")
        .and_then(|rest| rest.split('-').next())
        .and_then(|p| p.parse::<u32>().ok());
    match pid {
        Some(pid) => pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists(),
        None => false,
    }
}

fn validate_name(name: &str) -> Result<(), CgroupError> {
    let ok = !name.is_empty()
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(CgroupError::BadName(name.to_string()))
    }
}

/// One sandbox's cgroup (one directory per v1 controller, or one v2 directory).
#[derive(Debug)]
pub struct Cgroup {
    version: CgroupVersion,
    dirs: Vec<PathBuf>,
    stats: StatFiles,
    /// The memory limit applied at creation.
    memory_limit: u64,
}

/// How close to its limit a group's peak must come before an OOM kill is possible:
/// charges are batched per CPU (64 pages) and a huge page is charged at once, so a
/// failed charge leaves the peak that far below the limit at most.
const OOM_SLACK: u64 = 8 << 20;

/// Statistics files read after every invoke.
#[derive(Debug, Clone, Copy)]
enum StatFile {
    Peak,
    Oom,
}

/// Kept open after first use and read with `pread` at offset 0 (cgroup files regenerate
/// their content on each read from the start): one system call per read instead of three.
#[derive(Debug, Default)]
struct StatFiles {
    peak: std::sync::OnceLock<Option<fs::File>>,
    oom: std::sync::OnceLock<Option<fs::File>>,
}

impl StatFiles {
    fn read<'b>(&self, which: StatFile, cg: &Cgroup, buf: &'b mut [u8]) -> Option<&'b str> {
        use std::os::unix::fs::FileExt;
        let (cell, name) = match (which, cg.version) {
            (StatFile::Peak, CgroupVersion::V1) => (&self.peak, "memory.max_usage_in_bytes"),
            (StatFile::Peak, CgroupVersion::V2) => (&self.peak, "memory.peak"),
            (StatFile::Oom, CgroupVersion::V1) => (&self.oom, "memory.oom_control"),
            (StatFile::Oom, CgroupVersion::V2) => (&self.oom, "memory.events"),
        };
        let file = cell
            .get_or_init(|| fs::File::open(cg.dir("memory").join(name)).ok())
            .as_ref()?;
        let n = file.read_at(buf, 0).ok()?;
        std::str::from_utf8(&buf[..n]).ok()
    }
}

impl Cgroup {
    fn dir(&self, controller: &str) -> &Path {
        match self.version {
            CgroupVersion::V2 => &self.dirs[0],
            CgroupVersion::V1 => {
                let idx = CONTROLLERS
                    .iter()
                    .position(|c| *c == controller)
                    .unwrap_or(0);
                &self.dirs[idx]
            }
        }
    }

    fn apply(&self, limits: &CgroupLimits) -> Result<(), CgroupError> {
        let mem = limits.memory_bytes.to_string();
        let pids = limits.pids_max.to_string();
        match self.version {
            CgroupVersion::V1 => {
                let m = self.dir("memory");
                write(&m.join("memory.limit_in_bytes"), &mem)?;
                // memsw only exists with swap accounting; it must be >= the memory limit.
                let memsw = m.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    write(&memsw, &mem)?;
                }
                write(&self.dir("pids").join("pids.max"), &pids)?;
                let cpu = self.dir("cpu");
                write(&cpu.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
                let quota = limits
                    .cpu_millicores
                    .map_or("-1".to_string(), |mc| cpu_quota_us(mc).to_string());
                write(&cpu.join("cpu.cfs_quota_us"), &quota)?;
            }
            CgroupVersion::V2 => {
                let d = &self.dirs[0];
                write(&d.join("memory.max"), &mem)?;
                let swap = d.join("memory.swap.max");
                if swap.exists() {
                    write(&swap, "0")?;
                }
                // Kill the whole sandbox on OOM rather than one random process.
                let _ = write(&d.join("memory.oom.group"), "1");
                write(&d.join("pids.max"), &pids)?;
                let max = limits.cpu_millicores.map_or("max".to_string(), |mc| {
                    format!("{} {CPU_PERIOD_US}", cpu_quota_us(mc))
                });
                write(&d.join("cpu.max"), &max)?;
            }
        }
        Ok(())
    }

    /// Moves process `pid` (and its future children) into this cgroup.
    pub fn attach(&self, pid: i32) -> Result<(), CgroupError> {
        let mut seen: Vec<&Path> = Vec::new();
        for dir in &self.dirs {
            if !seen.contains(&dir.as_path()) {
                write(&dir.join("cgroup.procs"), &pid.to_string())?;
                seen.push(dir);
            }
        }
        Ok(())
    }

    /// Peak memory use in bytes since creation.
    pub fn memory_peak(&self) -> Option<u64> {
        let mut buf = [0u8; 64];
        let text = self.stats.read(StatFile::Peak, self, &mut buf)?;
        text.trim().parse().ok()
    }

    /// Current memory use in bytes.
    pub fn memory_current(&self) -> Option<u64> {
        let file = match self.version {
            CgroupVersion::V1 => "memory.usage_in_bytes",
            CgroupVersion::V2 => "memory.current",
        };
        read(self.dir("memory").join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Number of processes the kernel's OOM killer killed in this cgroup. The kernel's
    /// counter is read only once the group's peak use came within [`OOM_SLACK`] of its
    /// limit: no OOM kill happens further below it, and the peak is the smaller file
    /// (this runs after every invoke).
    pub fn oom_kills(&self) -> u64 {
        let far_below_limit = self
            .memory_peak()
            .is_some_and(|peak| peak.saturating_add(OOM_SLACK) < self.memory_limit);
        if far_below_limit {
            return 0;
        }
        let mut buf = [0u8; 512];
        self.stats
            .read(StatFile::Oom, self, &mut buf)
            .and_then(|t| {
                t.lines().find_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    (k == "oom_kill").then(|| v.trim().parse().ok())?
                })
            })
            .unwrap_or(0)
    }

    /// How many CFS periods the group was throttled in (`nr_throttled` of `cpu.stat`).
    pub fn cpu_throttled_periods(&self) -> u64 {
        read(self.dir("cpu").join("cpu.stat"))
            .ok()
            .and_then(|t| {
                t.lines().find_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    (k == "nr_throttled").then(|| v.trim().parse().ok())?
                })
            })
            .unwrap_or(0)
    }

    /// Pids currently in the cgroup (host pid namespace).
    pub fn pids(&self) -> Vec<i32> {
        read(self.dir("pids").join("cgroup.procs"))
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Sends SIGKILL to every process in the cgroup.
    pub fn kill_all(&self) {
        if self.version == CgroupVersion::V2
            && write(&self.dirs[0].join("cgroup.kill"), "1").is_ok()
        {
            return;
        }
        for pid in self.pids() {
            // SAFETY: kill(2) has no memory-safety preconditions; a stale pid at worst
            // hits nothing (pids in our cgroup are our sandbox's descendants).
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    /// Kills what is left and removes the directories, retrying briefly while the kernel
    /// finishes tearing down exited tasks.
    pub fn remove(&mut self) {
        // Open statistics files would keep the cgroup's directory busy.
        self.stats = StatFiles::default();
        self.kill_all();
        for dir in &self.dirs {
            for _ in 0..50 {
                match fs::remove_dir(dir) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        }
    }

    pub fn version(&self) -> CgroupVersion {
        self.version
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        self.remove();
    }
}

fn cpu_quota_us(millicores: u32) -> u64 {
    // The kernel rejects quotas below 1 ms.
    (u64::from(millicores) * CPU_PERIOD_US / 1000).max(1000)
}

fn read(path: impl AsRef<Path>) -> Result<String, CgroupError> {
    let path = path.as_ref();
    fs::read_to_string(path).map_err(|source| CgroupError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_path_buf(),
        value: value.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const V1_MOUNTINFO: &str = "\
30 25 0:26 / /sys/fs/cgroup rw - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 30 0:29 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
35 30 0:31 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const V1_SELF: &str = "8:pids:/\n4:memory:/process_api/abc\n1:cpu:/\n0::/\n";

    #[test]
    fn detects_v1_per_controller_paths() {
        let host = CgroupHost::from_tables(V1_MOUNTINFO, V1_SELF, "lw").unwrap();
        assert_eq!(host.version(), CgroupVersion::V1);
        assert_eq!(
            host.bases,
            vec![
                PathBuf::from("/sys/fs/cgroup/memory/process_api/abc/lw"),
                PathBuf::from("/sys/fs/cgroup/pids/lw"),
                PathBuf::from("/sys/fs/cgroup/cpu/lw"),
            ]
        );
    }

    #[test]
    fn detects_v2_unified() {
        let mi = "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let host = CgroupHost::from_tables(mi, "0::/user.slice/x\n", "lw").unwrap();
        assert_eq!(host.version(), CgroupVersion::V2);
        assert_eq!(
            host.bases,
            vec![PathBuf::from("/sys/fs/cgroup/user.slice/x/lw")]
        );
    }

    #[test]
    fn container_cgroup_root_is_stripped() {
        let mi = "30 25 0:26 /docker/abc /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let host = CgroupHost::from_tables(mi, "0::/docker/abc/inner\n", "lw").unwrap();
        assert_eq!(host.bases, vec![PathBuf::from("/sys/fs/cgroup/inner/lw")]);
    }

    #[test]
    fn no_cgroups_is_an_error() {
        let mi = "30 25 0:26 / / rw - ext4 /dev/vda rw\n";
        assert!(CgroupHost::from_tables(mi, "", "lw").is_err());
    }

    #[test]
    fn rejects_path_like_names() {
        let host = CgroupHost::from_tables(V1_MOUNTINFO, V1_SELF, "lw").unwrap();
        let limits = CgroupLimits {
            memory_bytes: 1 << 20,
            pids_max: 4,
            cpu_millicores: None,
        };
        assert!(matches!(
            host.create("../x", &limits),
            Err(CgroupError::BadName(_))
        ));
        assert!(CgroupHost::from_tables(V1_MOUNTINFO, V1_SELF, "a/b").is_err());
    }

    #[test]
    fn stale_owner_needs_a_dead_pid() {
        assert!(!stale_owner(&format!("sb-{}-0", std::process::id())));
        assert!(!stale_owner("sb-1-0"));
        assert!(stale_owner("sb-4000000000-3"));
        assert!(!stale_owner("other"));
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape_mount_path(r"/a\040b"), "/a b");
        assert_eq!(unescape_mount_path("/plain"), "/plain");
    }

    #[test]
    fn quota_has_floor() {
        assert_eq!(cpu_quota_us(500), 50_000);
        assert_eq!(cpu_quota_us(1), 1000);
    }
}

/// `MemAvailable` of /proc/meminfo in KiB.
pub fn mem_available_kib() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_mem_available(&text)
}

fn parse_mem_available(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[cfg(test)]
mod meminfo_tests {
    use super::*;

    #[test]
    fn reads_mem_available() {
        let text = "MemTotal:  24000000 kB\nMemFree: 100 kB\nMemAvailable:   12345 kB\n";
        assert_eq!(parse_mem_available(text), Some(12345));
        assert_eq!(parse_mem_available("MemTotal: 1 kB\n"), None);
        assert!(mem_available_kib().is_some_and(|k| k > 0));
    }
}
