//! Gives each sandbox its own code directory: hard links into the package's template
//! (see [`super::template`]), which is unpacked first if no sandbox holds it now.
//!
//! The directories live under a root that is root-owned, mode 0710 with the jails'
//! root group (see `worker::jail::JAIL_ROOT_GID`), so only jails can traverse it; the
//! files inside are world-readable for the jail's unprivileged users. A sandbox's
//! directory is removed when the sandbox is ([`WithCode`]).

use super::image::mount::MountedImage;
use super::image::{CopyingSource, ImagePackage, RemoteChunks};
use super::package::zipcheck::DataCheck;
use super::package::{self, ZipLimits};
use super::template::{link_tree, Template, Templates};
use super::CodeError;
use crate::sandbox::{BoxFuture, LogLine, LogSink, Reply, Sandbox, SandboxError};
use crate::spec::{ChunkSink, InvokeRequest};
use std::future::Future;
use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Makes per-sandbox code directories under `root`.
#[derive(Clone)]
pub struct Unpacker {
    pub root: PathBuf,
    /// Group of `root` (the jails' root gid), or `None` to keep it private.
    pub group: Option<u32>,
    pub limits: ZipLimits,
    templates: Arc<Templates>,
    images: Arc<Templates<MountedImage>>,
}

/// Numbers templates: one being removed never shares a name with its successor.
static NEXT_TEMPLATE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Unpacker {
    pub fn new(root: PathBuf, group: Option<u32>, limits: ZipLimits) -> Self {
        Self {
            root,
            group,
            limits,
            templates: Arc::default(),
            images: Arc::default(),
        }
    }

    /// A directory for sandbox `id` with the package whose hex digest is `digest_hex`:
    /// hard links to the digest's template, unpacked from what `fetch` returns first if
    /// no sandbox holds one now (concurrent callers wait for that one unpacking).
    pub async fn for_sandbox(
        &self,
        digest_hex: &str,
        id: &str,
        fetch: impl Future<Output = Result<Vec<u8>, CodeError>>,
    ) -> Result<CodeDir, CodeError> {
        let u = self.clone();
        let prepare = async move {
            let zip = fetch.await?;
            Ok(move |p: &Path| u.unpack_into(&zip, p))
        };
        self.shared(&format!("tpl-{digest_hex}"), id, prepare).await
    }

    /// A directory for sandbox `id` with the layers whose hex digests are `digests`
    /// merged in that order ([`super::layers`]); `fetch` returns their packages in the
    /// same order. Shared like code: one merged template per ordered list.
    pub async fn layers_for_sandbox(
        &self,
        digests: &[String],
        id: &str,
        fetch: impl Future<Output = Result<Vec<Vec<u8>>, CodeError>>,
    ) -> Result<CodeDir, CodeError> {
        use sha2::Digest as _;
        let key: String = sha2::Sha256::digest(digests.join(",").as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let u = self.clone();
        let prepare = async move {
            let zips = fetch.await?;
            Ok(move |p: &Path| u.merge_layers(&zips, p))
        };
        self.shared(&format!("tpl-opt-{key}"), &format!("{id}-opt"), prepare)
            .await
    }

    /// The image package whose hex digest is `digest_hex`, mounted read-only for one more
    /// sandbox: the mount its other sandboxes use, or a new one of what `fetch` returns
    /// (its chunks read from `chunks`).
    pub async fn image_for_sandbox(
        &self,
        digest_hex: &str,
        chunks: Arc<chunkstore::ChunkStore>,
        remote: Option<RemoteChunks>,
        fetch: impl Future<Output = Result<Vec<u8>, CodeError>>,
    ) -> Result<CodeDir, CodeError> {
        let slot = self.images.slot(digest_hex);
        let mut live = slot.lock().await;
        if let Some(image) = live.upgrade() {
            return Ok(CodeDir::of_image(image));
        }
        let package = ImagePackage::decode(&fetch.await?)?;
        self.prepare_root()?;
        let n = NEXT_TEMPLATE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = self.root.join(format!("img-{digest_hex}-{n}"));
        let source = CopyingSource::new(
            chunks,
            remote,
            tokio::runtime::Handle::current(),
            package.manifest.stored_ids(),
        );
        let image =
            tokio::task::spawn_blocking(move || MountedImage::create(&dir, source, package))
                .await
                .map_err(|e| CodeError::Unreachable(format!("image task: {e}")))??;
        let image = Arc::new(image);
        *live = Arc::downgrade(&image);
        Ok(CodeDir::of_image(image))
    }

    /// Hard links to the template named `key` in a new directory `name`; the template
    /// is made by what `prepare` returns if no sandbox holds one now.
    async fn shared<F, B>(&self, key: &str, name: &str, prepare: F) -> Result<CodeDir, CodeError>
    where
        F: Future<Output = Result<B, CodeError>>,
        B: FnOnce(&Path) -> Result<(), CodeError> + Send + 'static,
    {
        let template = {
            let slot = self.templates.slot(key);
            let mut live = slot.lock().await;
            match live.upgrade() {
                Some(t) => t,
                None => {
                    let build = prepare.await?;
                    let n = NEXT_TEMPLATE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let dir = in_background(self.root.join(format!("{key}-{n}")), build).await?;
                    let t = Arc::new(Template(dir));
                    *live = Arc::downgrade(&t);
                    t
                }
            }
        };
        let src = template.0.path.clone();
        let mut dir = in_background(self.root.join(name), move |p| link_tree(&src, p)).await?;
        dir.template = Some(template);
        Ok(dir)
    }

    /// Unpacks each layer on its own next to `dest`, merges them into `dest`, and
    /// removes the single ones. Blocking.
    fn merge_layers(&self, zips: &[Vec<u8>], dest: &Path) -> Result<(), CodeError> {
        let singles: Vec<PathBuf> = (0..zips.len())
            .map(|i| dest.with_extension(format!("layer{i}")))
            .collect();
        let result = (|| {
            for (zip, at) in zips.iter().zip(&singles) {
                self.unpack_into(zip, at)?;
            }
            std::fs::DirBuilder::new()
                .mode(0o755)
                .create(dest)
                .map_err(io(dest))?;
            super::layers::merge(&singles, dest)
        })();
        for at in &singles {
            let _ = std::fs::remove_dir_all(at);
        }
        result
    }

    /// Removes whatever an earlier process left under the root (a crash between unpacking
    /// and a sandbox's end). Blocking.
    pub fn clear(&self) -> Result<(), CodeError> {
        // Images an earlier process mounted: unmounted first, or their read-only
        // files would stop the removal.
        if let Ok(entries) = std::fs::read_dir(&self.root) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with("img-") {
                    super::image::mount::unmount(&e.path().join("root"));
                }
            }
        }
        match std::fs::remove_dir_all(&self.root) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&self.root)(e)),
            _ => Ok(()),
        }
    }

    /// Validates `zip` and unpacks it into `root/<sandbox_id>`, without a shared copy.
    /// Blocking.
    #[cfg(test)]
    pub fn unpack(&self, zip: &[u8], sandbox_id: &str) -> Result<PathBuf, CodeError> {
        let dest = self.root.join(sandbox_id);
        self.unpack_into(zip, &dest)?;
        Ok(dest)
    }

    /// Validates `zip` and unpacks it into `dest` (a new directory under the root);
    /// nothing is left there on failure. Blocking.
    fn unpack_into(&self, zip: &[u8], dest: &Path) -> Result<(), CodeError> {
        // The data is checked (CRC-32, sizes) as it is extracted: one decompression.
        let plan = package::zipcheck::validate_with(zip, &self.limits, DataCheck::AtExtraction)?;
        self.prepare_root()?;
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(dest)
            .map_err(io(dest))?;
        if let Err(e) = package::extract(zip, &plan, dest) {
            let _ = std::fs::remove_dir_all(dest);
            return Err(e.into());
        }
        Ok(())
    }

    fn prepare_root(&self) -> Result<(), CodeError> {
        let root = &self.root;
        match std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
        {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => return Err(io(root)(e)),
            _ => {}
        }
        let mode = match self.group {
            Some(gid) => {
                std::os::unix::fs::chown(root, None, Some(gid)).map_err(io(root))?;
                0o710
            }
            None => 0o700,
        };
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(mode)).map_err(io(root))
    }
}

/// Runs `make(path)` on the blocking pool. If it fails, or the caller stops waiting
/// (its invoke was cancelled), whatever it left at `path` is removed once it ends: no
/// plaintext stays behind.
async fn in_background(
    path: PathBuf,
    make: impl FnOnce(&Path) -> Result<(), CodeError> + Send + 'static,
) -> Result<CodeDir, CodeError> {
    let at = path.clone();
    let mut pending = Pending {
        task: Some(tokio::task::spawn_blocking(move || {
            make(&at).inspect_err(|_| {
                let _ = std::fs::remove_dir_all(&at);
            })
        })),
        path,
    };
    let result = match pending.task.as_mut() {
        Some(task) => task.await,
        None => return Err(CodeError::Unreachable("unpack task missing".into())),
    };
    pending.task = None;
    let path = std::mem::take(&mut pending.path);
    result.map_err(|e| CodeError::Io {
        path: path.clone(),
        source: std::io::Error::other(format!("unpack task: {e}")),
    })??;
    Ok(CodeDir::new(path))
}

/// An unpacking whose caller may go away before it ends.
struct Pending {
    task: Option<tokio::task::JoinHandle<Result<(), CodeError>>>,
    path: PathBuf,
}

impl Drop for Pending {
    fn drop(&mut self) {
        let Some(task) = self.task.take() else { return };
        let path = std::mem::take(&mut self.path);
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = task.await;
                let _ = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(path)).await;
            });
        }
    }
}

pub(super) fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CodeError + '_ {
    move |source| CodeError::Io {
        path: path.to_owned(),
        source,
    }
}

/// A sandbox together with the code directory unpacked for it alone.
pub struct WithCode {
    pub inner: Box<dyn Sandbox>,
    /// Removed when dropped, after the sandbox is (fields drop in order).
    pub code_dir: CodeDir,
}

/// A sandbox's code directory, removed with everything in it when dropped (then the
/// template it links to, if it was the last made from it).
pub struct CodeDir {
    path: PathBuf,
    template: Option<Arc<Template>>,
    /// Goes with this one (a sandbox's merged layers go with its code).
    companion: Option<Box<CodeDir>>,
    /// A shared image mount, unmounted with its last sandbox: nothing to remove here.
    image: Option<Arc<MountedImage>>,
}

impl CodeDir {
    pub fn new(path: PathBuf) -> Self {
        Self {
            path,
            template: None,
            companion: None,
            image: None,
        }
    }

    fn of_image(image: Arc<MountedImage>) -> Self {
        Self {
            path: image.root().to_owned(),
            template: None,
            companion: None,
            image: Some(image),
        }
    }

    /// The mounted image this directory is the root of.
    pub fn image(&self) -> Option<&MountedImage> {
        self.image.as_deref()
    }

    /// Keeps `other` until this directory goes.
    pub fn attach(&mut self, other: CodeDir) {
        self.companion = Some(Box::new(other));
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for CodeDir {
    fn drop(&mut self) {
        if self.image.is_some() {
            return;
        }
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

impl Sandbox for WithCode {
    fn init(&mut self) -> BoxFuture<'_, Result<(), SandboxError>> {
        self.inner.init()
    }
    fn invoke<'a>(
        &'a mut self,
        req: &'a InvokeRequest,
        deadline_ms: u64,
    ) -> BoxFuture<'a, Result<Reply, SandboxError>> {
        self.inner.invoke(req, deadline_ms)
    }
    fn invoke_streaming<'a>(
        &'a mut self,
        req: &'a InvokeRequest,
        deadline_ms: u64,
        chunks: ChunkSink,
    ) -> BoxFuture<'a, Result<Reply, SandboxError>> {
        self.inner.invoke_streaming(req, deadline_ms, chunks)
    }
    fn set_log_sink(&mut self, sink: Arc<dyn LogSink>) {
        self.inner.set_log_sink(sink);
    }
    fn take_logs(&mut self) -> Vec<LogLine> {
        self.inner.take_logs()
    }
    fn max_memory_bytes(&self) -> Option<u64> {
        self.inner.max_memory_bytes()
    }
    fn oom_killed(&self) -> bool {
        self.inner.oom_killed()
    }
    fn console_tail(&self) -> Option<String> {
        self.inner.console_tail()
    }
    fn start_details(&self) -> Option<String> {
        self.inner.start_details()
    }
    fn resume_took(&self) -> Option<Duration> {
        self.inner.resume_took()
    }
    fn is_restored(&self) -> bool {
        self.inner.is_restored()
    }

    fn destroy(self: Box<Self>, grace: Duration) -> BoxFuture<'static, ()> {
        let Self { inner, code_dir } = *self;
        Box::pin(async move {
            inner.destroy(grace).await;
            let _ = tokio::task::spawn_blocking(move || drop(code_dir)).await;
        })
    }
}

#[cfg(test)]
#[path = "unpack_tests.rs"]
mod tests;
