//! The filesystems PID 1 mounts before anything else runs.

use nix::mount::{mount, MsFlags};
use nix::unistd::{chdir, chroot};
use std::path::Path;

/// One filesystem PID 1 mounts.
struct MountSpec {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: MsFlags,
    data: Option<&'static str>,
}

/// Errors while preparing the guest's filesystems.
#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mount {fstype} on {target}: {source}")]
    Mount {
        fstype: &'static str,
        target: &'static str,
        source: nix::Error,
    },
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// The base mounts: the root filesystem is read-only, so every writable place is a tmpfs.
fn base_mounts(tmp_size: &'static str) -> [MountSpec; 4] {
    [
        MountSpec {
            source: "proc",
            target: "/proc",
            fstype: "proc",
            flags: NOSUID_NODEV_NOEXEC,
            data: None,
        },
        MountSpec {
            source: "sysfs",
            target: "/sys",
            fstype: "sysfs",
            flags: NOSUID_NODEV_NOEXEC,
            data: None,
        },
        MountSpec {
            source: "devtmpfs",
            target: "/dev",
            fstype: "devtmpfs",
            flags: MsFlags::MS_NOSUID,
            data: Some("mode=0755"),
        },
        MountSpec {
            source: "tmpfs",
            target: "/tmp",
            fstype: "tmpfs",
            flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
            data: Some(tmp_size),
        },
    ]
}

/// Mounts proc, sys, dev and a size-limited tmpfs on `/tmp`.
///
/// A filesystem that is already mounted (the kernel may mount devtmpfs itself with
/// `CONFIG_DEVTMPFS_MOUNT`) is not an error.
pub fn mount_base(tmp_size: &'static str) -> Result<(), MountError> {
    for spec in base_mounts(tmp_size) {
        if spec.fstype == "devtmpfs" && Path::new("/dev/null").exists() {
            continue;
        }
        mount(
            Some(spec.source),
            spec.target,
            Some(spec.fstype),
            spec.flags,
            spec.data,
        )
        .map_err(|source| MountError::Mount {
            fstype: spec.fstype,
            target: spec.target,
            source,
        })?;
    }
    Ok(())
}

/// Errors mounting a function-code or layer drive.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error("mount {device} on {target}: {source}")]
    Mount {
        device: String,
        target: String,
        source: nix::Error,
    },
}

/// Mounts a read-only ext4 drive (function code at /var/task, layers at /opt).
/// A missing device is not an error: the VM may simply have no such drive.
pub fn mount_drive(device: &Path, target: &Path) -> Result<bool, DriveError> {
    if !device.exists() {
        return Ok(false);
    }
    mount(
        Some(device),
        target,
        Some("ext4"),
        MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
        None::<&str>,
    )
    .map_err(|source| DriveError::Mount {
        device: device.display().to_string(),
        target: target.display().to_string(),
        source,
    })?;
    Ok(true)
}

/// Errors making a container image the root.
#[derive(Debug, thiserror::Error)]
pub enum ImageRootError {
    #[error("container image: mount {device} on {IMAGE_ROOT}: {source}")]
    Mount { device: String, source: nix::Error },
    #[error("container image has no {0} directory to mount on")]
    NoMountPoint(&'static str),
    #[error("container image: {step}: {source}")]
    Switch {
        step: &'static str,
        source: nix::Error,
    },
}

/// Where the image is mounted before it becomes the root (a directory of our rootfs).
const IMAGE_ROOT: &str = "/mnt";

/// The guest's own file systems, moved into the image (`mount_base` made them).
const MOVED: [&str; 4] = ["/proc", "/sys", "/dev", "/tmp"];

/// Makes the container image on `device` the root of everything guest-init starts,
/// as on Lambda: the image read-only, with the guest's /proc, /sys, /dev and /tmp
/// moved into it. guest-init itself was loaded from our rootfs and needs nothing
/// from it after this. The image must have those four directories (our image builder
/// adds any an image lacks).
pub fn enter_image(device: &Path) -> Result<(), ImageRootError> {
    mount(
        Some(device),
        IMAGE_ROOT,
        Some("ext4"),
        MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
        None::<&str>,
    )
    .map_err(|source| ImageRootError::Mount {
        device: device.display().to_string(),
        source,
    })?;
    for dir in MOVED {
        let target = format!("{IMAGE_ROOT}{dir}");
        if !Path::new(&target).is_dir() {
            return Err(ImageRootError::NoMountPoint(dir));
        }
        mount(
            Some(dir),
            target.as_str(),
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .map_err(|source| ImageRootError::Switch {
            step: "move mount",
            source,
        })?;
    }
    let step = |step| move |source| ImageRootError::Switch { step, source };
    chdir(IMAGE_ROOT).map_err(step("chdir"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(step("move the image to /"))?;
    chroot(".").map_err(step("chroot"))?;
    chdir("/").map_err(step("chdir /"))
}
