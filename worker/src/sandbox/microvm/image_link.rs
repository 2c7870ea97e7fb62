//! A container image as a microVM's drive: the worker keeps one end of a socket pair
//! and serves the image's chunks on it ([`crate::code::image::LazyImage::serve`]); the
//! monitor inherits the other end as [`launcher::IMAGE_FD`] and reads the image
//! lazily, decrypting each chunk it needs (`vmm --image-drive`).

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::code::image::LazyImage;
use crate::sandbox::SandboxError;
use crate::spec::{FunctionVersionSpec, ImageAccess};

/// The worker's side of one monitor's chunk link: the serving task ends with the
/// sandbox, and the log says how much of the image the sandbox read.
pub(super) struct ImageLink {
    task: tokio::task::JoinHandle<()>,
    served: Arc<AtomicU64>,
    stored: usize,
    id: String,
}

impl Drop for ImageLink {
    fn drop(&mut self) {
        self.task.abort();
        eprintln!(
            "worker: sandbox {}: image chunk link served {} of {} stored chunks",
            self.id,
            self.served.load(Ordering::Relaxed),
            self.stored
        );
    }
}

/// The image a microVM of `spec` reads, when it is a container-image function.
pub(super) fn lazy_image(
    spec: &FunctionVersionSpec,
) -> Result<Option<Arc<LazyImage>>, SandboxError> {
    let Some(image) = &spec.image else {
        return Ok(None);
    };
    match image.ready.as_ref().map(|r| &r.access) {
        Some(ImageAccess::Chunks(lazy)) => Ok(Some(lazy.clone())),
        _ => Err(SandboxError::Start(
            "the container image was not made ready for a microVM".into(),
        )),
    }
}

/// Starts serving `image` and returns the monitor's end of the link.
pub(super) fn start(image: Arc<LazyImage>, id: &str) -> Result<(ImageLink, OwnedFd), SandboxError> {
    let err = |e: std::io::Error| SandboxError::Start(format!("image chunk link: {e}"));
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(err)?;
    ours.set_nonblocking(true).map_err(err)?;
    let ours = tokio::net::UnixStream::from_std(ours).map_err(err)?;
    let served = Arc::new(AtomicU64::new(0));
    let stored = image.stored_chunks();
    let (counter, sandbox) = (served.clone(), id.to_owned());
    let task = tokio::spawn(async move {
        if let Err(e) = image.serve(ours, counter).await {
            eprintln!("worker: sandbox {sandbox}: image chunk link: {e}");
        }
    });
    let link = ImageLink {
        task,
        served,
        stored,
        id: id.to_owned(),
    };
    Ok((link, theirs.into()))
}
