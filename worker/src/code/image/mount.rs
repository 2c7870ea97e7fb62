//! An image materialised for its sandboxes: the chunks written (zero chunks as holes)
//! into a file under the worker's closed code root, the file mounted read-only through
//! a loop device, and the file's name removed (the device holds it). One mount per
//! image digest, shared by that image's sandboxes, each of which writes only to its own
//! overlay; the last one to go unmounts it, which frees the device and the file.

use super::loopdev;
use super::{ImageError, ImagePackage};
use chunkstore::{ChunkRef, ChunkSource, ImageReader};
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::{DirBuilderExt as _, FileExt as _};
use std::path::{Path, PathBuf};

/// Decrypted chunks kept while writing: the image is read once, in order.
const WRITE_CACHE_CHUNKS: usize = 2;

pub struct MountedImage {
    dir: PathBuf,
    root: PathBuf,
    pub package: ImagePackage,
}

impl MountedImage {
    /// Writes `package`'s image from the chunks `source` gives under `dir` (a new
    /// directory) and mounts it at `dir/root`. Blocking. Nothing is left at `dir` on
    /// failure.
    pub fn create(
        dir: &Path,
        source: impl ChunkSource,
        package: ImagePackage,
    ) -> Result<Self, ImageError> {
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(dir)
            .map_err(ImageError::io(format!("directory {}", dir.display())))?;
        let root = dir.join("root");
        let mounted = Self {
            dir: dir.to_owned(),
            root,
            package,
        };
        // On error `mounted` drops, unmounting (if it got that far) and removing `dir`.
        mounted.materialise(source)?;
        Ok(mounted)
    }

    fn materialise(&self, source: impl ChunkSource) -> Result<(), ImageError> {
        let file_path = self.dir.join("image.ext4");
        let file = std::fs::File::create_new(&file_path)
            .map_err(ImageError::io(format!("file {}", file_path.display())))?;
        let manifest = self.package.manifest.clone();
        file.set_len(manifest.size())
            .map_err(ImageError::io("file size"))?;
        let mut reader = ImageReader::new(source, manifest.clone(), WRITE_CACHE_CHUNKS);
        let mut buf = vec![0u8; chunkstore::CHUNK_SIZE];
        let mut offset = 0u64;
        for chunk in manifest.chunks() {
            let len = chunk.len();
            if matches!(chunk, ChunkRef::Stored { .. }) {
                let got = reader.read_at(offset, &mut buf[..len])?;
                file.write_all_at(&buf[..got], offset)
                    .map_err(ImageError::io("write"))?;
            }
            offset += len as u64;
        }
        drop(file);
        let ro = std::fs::File::open(&file_path).map_err(ImageError::io("reopen"))?;
        let device = loopdev::attach_read_only(&ro).map_err(ImageError::io("loop device"))?;
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&self.root)
            .map_err(ImageError::io("mount point"))?;
        mount_ext4(&device.path, &self.root)?;
        // The device keeps the file; the name is not needed any more.
        std::fs::remove_file(&file_path).map_err(ImageError::io("remove image file"))?;
        Ok(())
    }

    /// The image's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }
}

fn cpath(p: &Path) -> Result<CString, ImageError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| ImageError::Package("path with a NUL byte"))
}

fn mount_ext4(device: &Path, at: &Path) -> Result<(), ImageError> {
    let (source, target) = (cpath(device)?, cpath(at)?);
    let fstype = c"ext4";
    let flags = libc::MS_RDONLY | libc::MS_NODEV | libc::MS_NOSUID;
    // SAFETY: all pointers are NUL-terminated strings alive for the call; no data.
    let r = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            flags,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(ImageError::io(format!("mount {}", at.display()))(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Detaches the mount at `root`, if any. Lazy: a sandbox's overlay still going away
/// must not keep the image mounted (its namespace holds its own reference).
pub(crate) fn unmount(root: &Path) {
    if let Ok(target) = cpath(root) {
        // SAFETY: `target` is a NUL-terminated path alive for the call.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

impl Drop for MountedImage {
    fn drop(&mut self) {
        unmount(&self.root);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
