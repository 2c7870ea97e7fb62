//! The list of filesystem and identity steps the jailed child performs between clone and
//! exec, prepared in the parent: the child of a multi-threaded process must not allocate,
//! so every string is a ready `CString` here.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// One step the child performs; failures are reported back by index.
#[derive(Debug)]
pub enum Step {
    Mount {
        source: Option<CString>,
        target: CString,
        fstype: Option<CString>,
        flags: libc::c_ulong,
        data: Option<CString>,
    },
    /// `mkdir`, tolerating EEXIST.
    Mkdir(CString),
    /// Creates an empty file to bind a device node onto.
    Touch(CString),
    Symlink {
        target: CString,
        link: CString,
    },
    /// `chdir(new_root)`, `pivot_root(".", ".")`, detach the old root, `chdir("/")`.
    PivotRoot(CString),
    Hostname(CString),
    LoopbackUp,
    /// `setgroups([])`, `setresgid`, `setresuid`.
    DropIds {
        uid: u32,
        gid: u32,
    },
    /// Drops every capability not in the mask from the bounding set and clears the
    /// ambient set, so a program exec'd as (namespace) root gets only these.
    KeepCaps(u64),
    /// Soft and hard `RLIMIT_NOFILE` (at most the inherited hard limit): a sandbox gets
    /// Lambda's limit, not whatever the supervisor raised its own to.
    LimitFiles(u64),
    NoNewPrivs,
    Seccomp(usize),
    Chdir(CString),
}

/// Errors turning paths and strings into C strings.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("{what} contains a NUL byte")]
    Nul { what: String },
}

pub fn cstr(s: &str) -> Result<CString, PlanError> {
    CString::new(s).map_err(|_| PlanError::Nul {
        what: format!("{s:?}"),
    })
}

pub fn cpath(p: &Path) -> Result<CString, PlanError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| PlanError::Nul {
        what: p.display().to_string(),
    })
}

pub fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> Result<Step, PlanError> {
    Ok(Step::Mount {
        source: source.map(cpath).transpose()?,
        target: cpath(target)?,
        fstype: fstype.map(cstr).transpose()?,
        flags,
        data: data.map(cstr).transpose()?,
    })
}

/// `mkdir -p` of `inside` (absolute, below `root`) as a series of Mkdir steps.
pub fn mkdir_p(root: &Path, inside: &Path, steps: &mut Vec<Step>) -> Result<(), PlanError> {
    let mut cur = root.to_path_buf();
    for comp in inside.components().skip(1) {
        cur.push(comp);
        steps.push(Step::Mkdir(cpath(&cur)?));
    }
    Ok(())
}

/// The per-mount flags of `path`'s filesystem that a bind remount inside a user namespace
/// must keep (the kernel locks them: dropping one fails with EPERM).
pub fn locked_flags(path: &Path) -> libc::c_ulong {
    let Ok(st) = crate::fsinfo::statvfs(path) else {
        return 0;
    };
    let pairs = [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ];
    pairs
        .iter()
        .filter(|(st_flag, _)| st.f_flag & st_flag != 0)
        .fold(0, |acc, (_, ms)| acc | ms)
}

/// Read-only bind of `source` on `target`: a bind, then a remount that sets RDONLY while
/// keeping the locked flags.
pub fn ro_bind(source: &Path, target: &Path, steps: &mut Vec<Step>) -> Result<(), PlanError> {
    steps.push(mount(
        Some(source),
        target,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )?);
    let flags = libc::MS_BIND
        | libc::MS_REMOUNT
        | libc::MS_RDONLY
        | libc::MS_NOSUID
        | libc::MS_NODEV
        | locked_flags(source);
    steps.push(mount(None, target, None, flags, None)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mkdir_p_walks_components() {
        let mut steps = Vec::new();
        mkdir_p(Path::new("/r"), Path::new("/var/task"), &mut steps).unwrap();
        let names: Vec<String> = steps
            .iter()
            .map(|s| match s {
                Step::Mkdir(c) => c.to_string_lossy().into_owned(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(names, vec!["/r/var", "/r/var/task"]);
    }

    #[test]
    fn nul_is_an_error_not_a_panic() {
        assert!(cstr("a\0b").is_err());
    }
}
