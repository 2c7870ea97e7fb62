//! Locating the guest images built by `image-build/build.sh`.

use std::path::{Path, PathBuf};

/// The workspace root (this crate lives in `<root>/tests`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// The folder with the built images: `$LAMBDA_IMAGES_DIR` or `<root>/target/images`.
pub fn images_dir() -> PathBuf {
    std::env::var_os("LAMBDA_IMAGES_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/images"))
}

/// Where `image-build/setup-host.sh` installs helper tools (vhost-device-vsock).
pub fn tools_bin_dir() -> PathBuf {
    workspace_root().join("target/tools/bin")
}

/// The images of one build.
#[derive(Debug, Clone)]
pub struct Images {
    dir: PathBuf,
}

impl Images {
    /// Finds the images folder; an error names what is missing and how to build it.
    pub fn locate() -> Result<Images, String> {
        let dir = images_dir();
        let images = Images { dir };
        for required in [images.bzimage(), images.vmlinux(), images.guest_init()] {
            if !required.exists() {
                return Err(format!(
                    "{} is missing: run image-build/build.sh",
                    required.display()
                ));
            }
        }
        Ok(images)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn bzimage(&self) -> PathBuf {
        self.dir.join("bzImage")
    }

    pub fn vmlinux(&self) -> PathBuf {
        self.dir.join("vmlinux")
    }

    /// The static musl guest-init binary.
    pub fn guest_init(&self) -> PathBuf {
        self.dir.join("guest-init")
    }

    /// The ext4 image of a rootfs variant (`provided` or `python3.11`).
    pub fn rootfs(&self, variant: &str) -> Result<PathBuf, String> {
        let path = self.dir.join(format!("rootfs-{variant}.ext4"));
        path.exists()
            .then_some(path.clone())
            .ok_or_else(|| format!("{} is missing: run image-build/build.sh", path.display()))
    }

    /// The unpacked tree of a rootfs variant, for process sandboxes.
    pub fn rootfs_tree(&self, variant: &str) -> Result<PathBuf, String> {
        let path = self.dir.join(format!("rootfs-{variant}"));
        path.is_dir()
            .then_some(path.clone())
            .ok_or_else(|| format!("{} is missing: run image-build/build.sh", path.display()))
    }
}

/// Decides what a test does when a prerequisite (image, KVM, QEMU) is missing: under CI
/// (`CI` set) it is a failure, elsewhere the test prints a loud SKIPPED line and returns
/// `None`. Use as `let Some(x) = require(..) else { return };`.
pub fn require<T>(what: &str, found: Result<T, String>) -> Option<T> {
    match found {
        Ok(value) => Some(value),
        Err(reason) if std::env::var_os("CI").is_some() => {
            panic!("{what}: prerequisite missing under CI: {reason}")
        }
        Err(reason) => {
            eprintln!("SKIPPED: {what}: {reason}");
            None
        }
    }
}

/// Creates an ext4 image holding `dir`'s files (`mkfs.ext4 -d`: no mounts, no root).
pub fn make_ext4_image(dir: &Path, image: &Path, size_mib: u64) -> Result<(), String> {
    let status = std::process::Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-O",
            "^has_journal",
            "-E",
            "root_owner=0:0",
            "-d",
        ])
        .arg(dir)
        .arg(image)
        .arg(format!("{size_mib}M"))
        .status()
        .map_err(|e| format!("mkfs.ext4: {e} (install e2fsprogs)"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("mkfs.ext4 failed with {status}"))
}
