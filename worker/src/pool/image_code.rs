//! The code of a container-image function for one more sandbox: the image package
//! fetched like any package, and the image written and mounted (or the mount its other
//! sandboxes use), a worker host copying the chunks it lacks from the frontend as it
//! writes; or, for a microVM, the package alone, whose chunks the sandbox's monitor
//! reads lazily.

use super::CodeSupply;
use crate::code::image::{ImagePackage, LazyImage, RemoteChunks};
use crate::code::unpack::CodeDir;
use crate::code::{digest_hex, CodeError, CodeRef};
use crate::spec::{FunctionVersionSpec, ImageSpec};

impl CodeSupply {
    fn chunk_store(&self) -> Result<std::sync::Arc<chunkstore::ChunkStore>, CodeError> {
        self.chunks.clone().ok_or_else(|| {
            CodeError::Unreachable("this worker has no chunk store for images".to_owned())
        })
    }

    /// Where this host copies the chunks of `code` it lacks from (a worker host's
    /// frontend); `None` where the store holds every chunk.
    fn remote_chunks(&self, code: &CodeRef) -> Option<RemoteChunks> {
        self.chunk_fetch.clone().map(|fetch| RemoteChunks {
            fetch,
            source: code.source.clone(),
        })
    }

    pub(super) async fn mount_image(
        &self,
        spec: &FunctionVersionSpec,
        image: &ImageSpec,
        code: &CodeRef,
    ) -> Result<(FunctionVersionSpec, CodeDir), CodeError> {
        let chunks = self.chunk_store()?;
        let digest = digest_hex(&code.sha256)?;
        let dir = self
            .unpacker
            .image_for_sandbox(&digest, chunks, self.remote_chunks(code), self.fetch(code))
            .await?;
        let mut mounted = spec.clone();
        mounted.image = Some(image.mounted_at(&dir));
        Ok((mounted, dir))
    }

    /// The image served chunk by chunk to a microVM's monitor: only the package is
    /// fetched now; a worker host copies each chunk it lacks when the guest reads it.
    pub(super) async fn lazy_image(
        &self,
        spec: &FunctionVersionSpec,
        image: &ImageSpec,
        code: &CodeRef,
    ) -> Result<FunctionVersionSpec, CodeError> {
        let chunks = self.chunk_store()?;
        let package = ImagePackage::decode(&self.fetch(code).await?)?;
        let lazy = std::sync::Arc::new(LazyImage::new(package, chunks, self.remote_chunks(code)));
        let mut ready = spec.clone();
        ready.image = Some(image.served_from(lazy));
        Ok(ready)
    }
}
