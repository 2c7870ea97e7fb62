//! The jail's filesystem: an overlay of the read-only rootfs as root, the code at
//! `/var/task`, extra binds, tmpfs `/tmp`, proc, a minimal `/dev`, then pivot_root.

use super::plan::{cpath, cstr, mkdir_p, mount, ro_bind, Step};
use super::{JailConfig, JailError};
use std::path::{Path, PathBuf};

/// Device nodes bound into the jail's `/dev`.
const DEVICES: [&str; 5] = ["null", "zero", "full", "random", "urandom"];

/// Rejects characters that overlayfs's option string cannot carry.
fn overlay_safe(p: &Path) -> Result<String, JailError> {
    let s = p
        .to_str()
        .ok_or_else(|| JailError::Config(format!("non-UTF-8 path {}", p.display())))?;
    if s.contains([',', ':', '\\']) || !p.is_absolute() {
        return Err(JailError::Config(format!(
            "path {s:?} must be absolute without ',', ':' or '\\'"
        )));
    }
    Ok(s.to_string())
}

pub(super) fn filesystem_steps(cfg: &JailConfig) -> Result<Vec<Step>, JailError> {
    let root = cfg.run_dir.join("root");
    let scratch = cfg.run_dir.join("scratch");
    // The clone child still holds the host's ids (unmapped in its namespace): switch to
    // the namespace's root, i.e. the unprivileged host base id, before touching files.
    let mut s = vec![Step::DropIds { uid: 0, gid: 0 }];
    s.push(mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )?);
    s.push(mount(
        Some(Path::new("tmpfs")),
        &scratch,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some("mode=0755,size=16m"),
    )?);
    root_steps(cfg, &root, &scratch, &mut s)?;
    for dir in ["/proc", "/dev", "/tmp", "/var/task"] {
        mkdir_p(&root, Path::new(dir), &mut s)?;
    }
    if let Some(code) = &cfg.code {
        ro_bind(code, &root.join("var/task"), &mut s)?;
    }
    bind_steps(cfg, &root, &mut s)?;
    let tmp_opts = format!("size={}m,mode=1777", cfg.tmp_size_mib);
    s.push(mount(
        Some(Path::new("tmpfs")),
        &root.join("tmp"),
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some(&tmp_opts),
    )?);
    s.push(mount(
        Some(Path::new("proc")),
        &root.join("proc"),
        Some("proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )?);
    // The kernel command line is the host's, and an appliance's may carry its
    // credentials: the sandbox sees an empty one.
    let empty = scratch.join("empty");
    s.push(Step::Touch(cpath(&empty)?));
    ro_bind(&empty, &root.join("proc/cmdline"), &mut s)?;
    dev_steps(&root, &cfg.devices, &mut s)?;
    s.push(mount(
        None,
        &root,
        None,
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
        None,
    )?);
    s.push(Step::PivotRoot(cpath(&root)?));
    Ok(s)
}

/// The extra binds, read-only then read-write, each at a checked path inside `root`.
fn bind_steps(cfg: &JailConfig, root: &Path, s: &mut Vec<Step>) -> Result<(), JailError> {
    let binds = cfg.ro_binds.iter().map(|b| (b, true));
    for ((host, inside), read_only) in binds.chain(cfg.rw_binds.iter().map(|b| (b, false))) {
        if !inside.is_absolute() || inside.components().any(|c| c.as_os_str() == "..") {
            return Err(JailError::Config(format!(
                "bad bind target {}",
                inside.display()
            )));
        }
        let target = root.join(inside.strip_prefix("/").unwrap_or(inside));
        if host.is_dir() {
            mkdir_p(root, inside, s)?;
        } else {
            if let Some(parent) = inside.parent() {
                mkdir_p(root, parent, s)?;
            }
            s.push(Step::Touch(cpath(&target)?));
        }
        if read_only {
            ro_bind(host, &target, s)?;
        } else {
            s.push(mount(
                Some(host),
                &target,
                None,
                libc::MS_BIND | libc::MS_REC,
                None,
            )?);
        }
    }
    Ok(())
}

/// The jail's root at `root`: an overlay of the rootfs (writes go to the scratch
/// tmpfs), or a small tmpfs with the merged-/usr links.
fn root_steps(
    cfg: &JailConfig,
    root: &Path,
    scratch: &Path,
    s: &mut Vec<Step>,
) -> Result<(), JailError> {
    let Some(rootfs) = &cfg.rootfs else {
        s.push(mount(
            Some(Path::new("tmpfs")),
            root,
            Some("tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
            Some("mode=0755,size=64k"),
        )?);
        mkdir_p(root, Path::new("/usr"), s)?;
        for link in ["bin", "lib", "lib64", "sbin"] {
            s.push(Step::Symlink {
                target: cstr(&format!("usr/{link}"))?,
                link: cpath(&root.join(link))?,
            });
        }
        return Ok(());
    };
    s.push(Step::Mkdir(cpath(&scratch.join("upper"))?));
    s.push(Step::Mkdir(cpath(&scratch.join("work"))?));
    // userxattr: the mount happens in the jail's user namespace, where the trusted.*
    // xattrs overlayfs uses by default cannot be set (the kernel would log "failed to
    // set xattr on upper" for every sandbox).
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},userxattr",
        overlay_safe(rootfs)?,
        overlay_safe(&scratch.join("upper"))?,
        overlay_safe(&scratch.join("work"))?
    );
    s.push(mount(
        Some(Path::new("overlay")),
        root,
        Some("overlay"),
        0,
        Some(&opts),
    )?);
    Ok(())
}

/// A minimal `/dev`: a small tmpfs with the host's harmless character devices bound in.
fn dev_steps(root: &Path, extra: &[(PathBuf, String)], s: &mut Vec<Step>) -> Result<(), JailError> {
    let dev = root.join("dev");
    s.push(mount(
        Some(Path::new("tmpfs")),
        &dev,
        Some("tmpfs"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some("mode=0755,size=64k"),
    )?);
    let standard = DEVICES
        .iter()
        .map(|n| (Path::new("/dev").join(n), n.to_string()));
    for (host, name) in standard.chain(extra.iter().cloned()) {
        if name.is_empty() || name.contains('/') || name == ".." {
            return Err(JailError::Config(format!("bad device name {name:?}")));
        }
        let target = dev.join(&name);
        s.push(Step::Touch(cpath(&target)?));
        s.push(mount(Some(&host), &target, None, libc::MS_BIND, None)?);
    }
    for (link, target) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        s.push(Step::Symlink {
            target: cstr(target)?,
            link: cpath(&dev.join(link))?,
        });
    }
    Ok(())
}
