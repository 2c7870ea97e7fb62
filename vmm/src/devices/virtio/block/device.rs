//! The virtio-blk device: configuration, features and queue servicing.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chunkstore::wire::ChunkClient;
use chunkstore::ImageReader;
use virtio_queue::{Queue, QueueState, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::request::{process_chain, Backing, Disk, ImageDisk, SECTOR_SHIFT, VIRTIO_BLK_ID_BYTES};
use crate::devices::virtio::{
    ActivateContext, ActivateError, GuestMemory, VirtioDevice, VirtioInterrupt,
};
use crate::metrics::{inc, BlockMetrics};

pub const VIRTIO_ID_BLOCK: u32 = 2;
pub const VIRTIO_BLK_F_RO: u64 = 1 << 5;
pub const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;
pub const QUEUE_SIZE: u16 = 256;
/// Decrypted chunks an image drive keeps (8 MiB); the guest's page cache holds the rest.
const IMAGE_CACHE_CHUNKS: usize = 16;
/// How long a chunk may take to arrive (a worker host may copy it from its frontend
/// first): past it the guest's read fails instead of hanging.
const IMAGE_LINK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("cannot open drive {path}: {source}")]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("drive {path}: {source}")]
    Metadata {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("drive {0} is not a regular file or block device")]
    NotAFile(PathBuf),
    #[error("activation eventfd: {0}")]
    EventFd(std::io::Error),
    #[error("image drive: {0}")]
    ImageLink(#[from] chunkstore::wire::FetchError),
}

pub(super) struct Active {
    pub mem: GuestMemory,
    pub queue: Queue,
    pub interrupt: Arc<dyn VirtioInterrupt>,
}

pub struct Block {
    pub(super) disk: Disk,
    acked_features: u64,
    avail_features: u64,
    config: [u8; 8],
    pub(super) activate_evt: EventFd,
    /// Kept after a reset so the event handler can still unregister it.
    pub(super) queue_evt: Option<EventFd>,
    pub(super) active: Option<Active>,
    pub metrics: Arc<BlockMetrics>,
}

/// A stable 20-byte id for GET_ID derived from the backing file's device and inode.
fn disk_id(meta: &std::fs::Metadata) -> [u8; VIRTIO_BLK_ID_BYTES] {
    let s = format!("{}{}{}", meta.dev(), meta.rdev(), meta.ino());
    let mut id = [0u8; VIRTIO_BLK_ID_BYTES];
    let n = s.len().min(VIRTIO_BLK_ID_BYTES);
    id[..n].copy_from_slice(&s.as_bytes()[..n]);
    id
}

impl Block {
    pub fn new(path: &Path, read_only: bool) -> Result<Self, BlockError> {
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|source| BlockError::Open {
                path: path.to_owned(),
                source,
            })?;
        Self::from_file(file, path, read_only)
    }

    pub fn from_file(file: File, path: &Path, read_only: bool) -> Result<Self, BlockError> {
        let meta_err = |source| BlockError::Metadata {
            path: path.to_owned(),
            source,
        };
        let meta = file.metadata().map_err(meta_err)?;
        if meta.is_dir() {
            return Err(BlockError::NotAFile(path.to_owned()));
        }
        // Block devices report size 0 in metadata; seek to the end instead.
        let size = {
            use std::io::Seek;
            let mut f = &file;
            f.seek(std::io::SeekFrom::End(0)).map_err(meta_err)?
        };
        let capacity_sectors = size >> SECTOR_SHIFT;
        if size % (1 << SECTOR_SHIFT) != 0 {
            log::warn!(
                "drive {}: size is not a multiple of 512; the last {} bytes are not visible",
                path.display(),
                size % (1 << SECTOR_SHIFT)
            );
        }
        Self::with_disk(Disk {
            backing: Backing::File(file),
            capacity_sectors,
            read_only,
            id: disk_id(&meta),
        })
    }

    /// A read-only drive of the container image behind the chunk link `stream`: the
    /// worker sends the image's manifest first, then chunks as the guest reads them.
    pub fn from_image_link(stream: UnixStream) -> Result<Self, BlockError> {
        // Before the seccomp filter: chunks are decrypted on the event loop later.
        chunkstore::convergent::init();
        stream
            .set_read_timeout(Some(IMAGE_LINK_TIMEOUT))
            .map_err(|e| BlockError::ImageLink(e.into()))?;
        let (client, manifest) = ChunkClient::start(stream)?;
        let capacity_sectors = manifest.size() >> SECTOR_SHIFT;
        let mut id = [0u8; VIRTIO_BLK_ID_BYTES];
        id[..12].copy_from_slice(b"lambda-image");
        Self::with_disk(Disk {
            backing: Backing::Image(Box::new(ImageDisk {
                reader: ImageReader::new(client, manifest, IMAGE_CACHE_CHUNKS),
                bounce: vec![0u8; chunkstore::CHUNK_SIZE],
            })),
            capacity_sectors,
            read_only: true,
            id,
        })
    }

    fn with_disk(disk: Disk) -> Result<Self, BlockError> {
        let mut avail_features = VIRTIO_BLK_F_FLUSH;
        if disk.read_only {
            avail_features |= VIRTIO_BLK_F_RO;
        }
        Ok(Self {
            config: disk.capacity_sectors.to_le_bytes(),
            disk,
            acked_features: 0,
            avail_features,
            activate_evt: EventFd::new(libc::EFD_NONBLOCK).map_err(BlockError::EventFd)?,
            queue_evt: None,
            active: None,
            metrics: Arc::new(BlockMetrics::default()),
        })
    }

    pub fn capacity_sectors(&self) -> u64 {
        self.disk.capacity_sectors
    }

    pub fn acked_features(&self) -> u64 {
        self.acked_features
    }

    /// Serves every available chain; signals the guest once if anything was used.
    pub fn process_queue(&mut self) {
        let Some(active) = self.active.as_mut() else {
            return;
        };
        let mut used_any = false;
        while let Some(chain) = active.queue.pop_descriptor_chain(&active.mem) {
            let head = chain.head_index();
            let done = process_chain(chain, &mut self.disk, &self.metrics);
            if let Err(e) = &done.result {
                crate::rl_log!(warn, "virtio-blk: request {head}: {e}");
            }
            if let Err(e) = active.queue.add_used(&active.mem, head, done.used_len) {
                inc(&self.metrics.queue_errors);
                crate::rl_log!(warn, "virtio-blk: add_used({head}): {e:?}");
            }
            used_any = true;
        }
        if used_any {
            let notify = active.queue.needs_notification(&active.mem).unwrap_or(true);
            if notify {
                if let Err(e) = active.interrupt.signal_used_queue(0) {
                    crate::rl_log!(warn, "virtio-blk: interrupt: {e}");
                }
            }
        }
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn avail_features(&self) -> u64 {
        self.avail_features
    }

    fn set_acked_features(&mut self, acked: u64) {
        self.acked_features = acked & self.avail_features;
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let idx = offset.saturating_add(i as u64);
            *b = usize::try_from(idx)
                .ok()
                .and_then(|i| self.config.get(i))
                .copied()
                .unwrap_or(0);
        }
    }

    fn write_config(&mut self, _offset: u64, _data: &[u8]) {
        crate::rl_log!(
            warn,
            "virtio-blk: guest wrote to the read-only config space"
        );
    }

    fn activate(&mut self, mut ctx: ActivateContext) -> Result<(), ActivateError> {
        if self.active.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        if ctx.queues.len() != 1 || ctx.queue_evts.len() != 1 {
            return Err(ActivateError::QueueCount {
                expected: 1,
                got: ctx.queues.len(),
            });
        }
        let queue = ctx.queues.remove(0);
        let queue_evt = ctx.queue_evts.remove(0);
        // The handler swaps the registered queue eventfd when it sees the activation event.
        self.queue_evt = Some(queue_evt);
        self.active = Some(Active {
            mem: ctx.mem,
            queue,
            interrupt: ctx.interrupt,
        });
        self.activate_evt.write(1).map_err(ActivateError::EventFd)
    }

    fn reset(&mut self) -> Option<Vec<EventFd>> {
        self.active = None;
        self.acked_features = 0;
        let evt = self.queue_evt.as_ref()?.try_clone().ok()?;
        Some(vec![evt])
    }

    fn is_activated(&self) -> bool {
        self.active.is_some()
    }

    fn queue_states(&self) -> Vec<QueueState> {
        self.active.iter().map(|a| a.queue.state()).collect()
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
