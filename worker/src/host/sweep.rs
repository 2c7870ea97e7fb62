//! Removes the default run dirs (`<temp dir>/lambda-supervisor-<pid>`) of supervisors
//! that ended without cleaning up (kill -9, power loss). Their sandboxes exit on their
//! own once the host side of their socket closes, and the worker removes (and kills
//! anything left in) their cgroups when the backend starts; the files stay until this
//! sweep.
//!
//! A dir is removed only if its name is exactly the pattern, it is a real directory
//! owned by our uid, its pid is not ours and not a live process, and its lock file is
//! not held (a supervisor in another pid namespace sharing the temp dir keeps it).
//! Anything mounted below it is detached first, so removal never reaches into a mount.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use super::lock::{DataDirLock, LockError};

/// Name prefix of the run dirs supervisors create in the temp dir.
pub const RUN_DIR_PREFIX: &str = "lambda-supervisor-";

/// This process's default run dir.
pub fn default_run_dir() -> PathBuf {
    std::env::temp_dir().join(format!("{RUN_DIR_PREFIX}{}", std::process::id()))
}

/// Why a stale-looking dir was left in place.
#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    #[error("unmounting {path}: {source}")]
    Unmount {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("removing {path}: {source}")]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What one sweep did.
#[derive(Debug, Default)]
pub struct Sweep {
    pub removed: Vec<PathBuf>,
    pub failed: Vec<SweepError>,
}

/// The pid in a `lambda-supervisor-<pid>` name; None for anything else.
fn owner_pid(name: &std::ffi::OsStr) -> Option<u32> {
    let digits = name.to_str()?.strip_prefix(RUN_DIR_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Sweeps `parent` (the temp dir) for run dirs of supervisors that are gone.
pub fn sweep_stale_run_dirs(parent: &Path) -> Sweep {
    let mut sweep = Sweep::default();
    let Ok(entries) = std::fs::read_dir(parent) else {
        return sweep;
    };
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    for entry in entries.flatten() {
        let Some(pid) = owner_pid(&entry.file_name()) else {
            continue;
        };
        let path = entry.path();
        // symlink_metadata: a symlink named like a run dir is never followed.
        let owned_dir = std::fs::symlink_metadata(&path)
            .is_ok_and(|m| m.file_type().is_dir() && m.uid() == uid);
        if !owned_dir || pid == std::process::id() || process_alive(pid) {
            continue;
        }
        let _lock = match DataDirLock::acquire(&path) {
            Err(LockError::Busy(_)) => continue,
            other => other.ok(),
        };
        match remove_run_dir(&path) {
            Ok(()) => sweep.removed.push(path),
            Err(e) => sweep.failed.push(e),
        }
    }
    sweep
}

fn remove_run_dir(dir: &Path) -> Result<(), SweepError> {
    // thread-self: the calling thread's mount namespace, which is the one removal uses.
    let mountinfo = std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap_or_default();
    let mut below = mounts_below(&mountinfo, dir);
    // Deepest first, so a parent mount never hides a child one.
    below.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for m in below {
        detach(&m)?;
    }
    std::fs::remove_dir_all(dir).map_err(|source| SweepError::Remove {
        path: dir.to_owned(),
        source,
    })
}

/// Mount points at or below `dir` in a `/proc/self/mountinfo` text.
fn mounts_below(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_octal(p)))
        .filter(|p| p.starts_with(dir))
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let code = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], code) {
            (b'\\', Some(d)) => {
                let v = d.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn detach(mount_point: &Path) -> Result<(), SweepError> {
    let err = |source| SweepError::Unmount {
        path: mount_point.to_owned(),
        source,
    };
    let c = CString::new(mount_point.as_os_str().as_bytes())
        .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    // SAFETY: `c` is a NUL-terminated path that outlives the call; umount2 only reads it.
    let rc = unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW) };
    if rc == 0 {
        Ok(())
    } else {
        Err(err(std::io::Error::last_os_error()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_pattern_names_an_owner() {
        let pid = |s: &str| owner_pid(std::ffi::OsStr::new(s));
        assert_eq!(pid("lambda-supervisor-123"), Some(123));
        assert_eq!(pid("lambda-supervisor-"), None);
        assert_eq!(pid("lambda-supervisor-12x"), None);
        assert_eq!(pid("lambda-supervisor-+12"), None);
        assert_eq!(pid("lambda-supervisor-12.old"), None);
        assert_eq!(pid("xlambda-supervisor-12"), None);
    }

    #[test]
    fn finds_mounts_at_and_below_a_dir() {
        let info = "\
22 1 0:21 / /tmp rw - tmpfs tmpfs rw
40 22 0:50 / /tmp/lambda-supervisor-9/sb-9-0/root rw - overlay overlay rw
41 22 0:51 / /tmp/lambda-supervisor-9\\040x rw - tmpfs tmpfs rw
42 22 0:52 / /tmp/lambda-supervisor-90 rw - tmpfs tmpfs rw
";
        let dir = Path::new("/tmp/lambda-supervisor-9");
        assert_eq!(
            mounts_below(info, dir),
            vec![PathBuf::from("/tmp/lambda-supervisor-9/sb-9-0/root")]
        );
        assert_eq!(
            mounts_below(info, Path::new("/tmp/lambda-supervisor-9 x")),
            vec![PathBuf::from("/tmp/lambda-supervisor-9 x")]
        );
    }

    /// A pid that is not running: past the kernel's pid_max.
    const DEAD_PID: u32 = 4_194_305;

    #[test]
    fn removes_dead_owners_dirs_and_keeps_the_rest() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dead = tmp.path().join(format!("{RUN_DIR_PREFIX}{DEAD_PID}"));
        std::fs::create_dir_all(dead.join("sb-1-0/root")).expect("mkdir");
        std::fs::write(dead.join("sb-1-0.sock"), b"").expect("file");
        let mine = tmp
            .path()
            .join(format!("{RUN_DIR_PREFIX}{}", std::process::id()));
        std::fs::create_dir(&mine).expect("mkdir");
        // pid 1 is always alive.
        let live = tmp.path().join(format!("{RUN_DIR_PREFIX}1"));
        std::fs::create_dir(&live).expect("mkdir");
        let other = tmp.path().join(format!("{RUN_DIR_PREFIX}{DEAD_PID}.keep"));
        std::fs::create_dir(&other).expect("mkdir");
        let link = tmp.path().join(format!("{RUN_DIR_PREFIX}{}", DEAD_PID + 1));
        std::os::unix::fs::symlink(&other, &link).expect("symlink");
        // Dead pid in our namespace, but its lock is held (another pid namespace).
        let locked = tmp.path().join(format!("{RUN_DIR_PREFIX}{}", DEAD_PID + 2));
        std::fs::create_dir(&locked).expect("mkdir");
        let held = DataDirLock::acquire(&locked).expect("lock");

        let sweep = sweep_stale_run_dirs(tmp.path());
        assert!(sweep.failed.is_empty(), "{:?}", sweep.failed);
        assert_eq!(sweep.removed, vec![dead.clone()]);
        assert!(!dead.exists());
        for kept in [&mine, &live, &other, &locked] {
            assert!(kept.is_dir(), "{} was removed", kept.display());
        }
        assert!(std::fs::symlink_metadata(&link).is_ok(), "symlink kept");
        drop(held);
        // A child another test forks while the lock's descriptor is open shares it until
        // it execs (the descriptor is close-on-exec), and with it the flock: give that
        // moment time to pass.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let removed = loop {
            let removed = sweep_stale_run_dirs(tmp.path()).removed;
            if !removed.is_empty() || std::time::Instant::now() > deadline {
                break removed;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert_eq!(removed, vec![locked]);
    }

    fn mount(source: &str, target: &Path, fstype: &str, flags: libc::c_ulong) -> bool {
        let src = CString::new(source).expect("cstr");
        let dst = CString::new(target.as_os_str().as_bytes()).expect("cstr");
        let fs = CString::new(fstype).expect("cstr");
        // SAFETY: all three are NUL-terminated strings that outlive the call; no data.
        unsafe {
            libc::mount(
                src.as_ptr(),
                dst.as_ptr(),
                fs.as_ptr(),
                flags,
                std::ptr::null(),
            ) == 0
        }
    }

    #[test]
    fn detaches_mounts_before_removing_and_never_deletes_through_them() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            println!("SKIPPED: mounting needs root");
            return;
        }
        // A private mount namespace for this test thread only, so nothing leaks to the
        // host even if an assertion fails.
        // SAFETY: unshare(CLONE_NEWNS) affects only the calling thread's namespaces.
        assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNS) }, 0);
        assert!(mount(
            "none",
            Path::new("/"),
            "",
            libc::MS_REC | libc::MS_PRIVATE
        ));
        let tmp = tempfile::tempdir().expect("tempdir");
        let precious = tmp.path().join("precious");
        std::fs::create_dir(&precious).expect("mkdir");
        std::fs::write(precious.join("keep.txt"), b"keep").expect("write");
        let dead = tmp.path().join(format!("{RUN_DIR_PREFIX}{DEAD_PID}"));
        let bind = dead.join("code/abc");
        let scratch = dead.join("sb-1-0/root");
        std::fs::create_dir_all(&bind).expect("mkdir");
        std::fs::create_dir_all(&scratch).expect("mkdir");
        assert!(mount(
            precious.to_str().expect("utf8"),
            &bind,
            "",
            libc::MS_BIND
        ));
        assert!(mount("tmpfs", &scratch, "tmpfs", 0));
        std::fs::create_dir(scratch.join("sub")).expect("mkdir");
        assert!(mount("tmpfs", &scratch.join("sub"), "tmpfs", 0));

        let sweep = sweep_stale_run_dirs(tmp.path());
        assert!(sweep.failed.is_empty(), "{:?}", sweep.failed);
        assert_eq!(sweep.removed, vec![dead.clone()]);
        assert!(!dead.exists());
        let info = std::fs::read_to_string("/proc/thread-self/mountinfo").expect("mountinfo");
        assert!(mounts_below(&info, &dead).is_empty(), "mounts left: {info}");
        assert_eq!(
            std::fs::read(precious.join("keep.txt")).expect("bind source intact"),
            b"keep"
        );
    }
}
