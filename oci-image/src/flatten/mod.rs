//! Applies an image's layers, bottom first, to one directory tree: regular files,
//! directories, symlinks and hard links with their owner, mode and mtime; a
//! `.wh.NAME` entry deletes NAME from the layers below, a `.wh..wh..opq` entry empties
//! its directory of what the layers below put there. Device nodes and FIFOs are
//! skipped (a sandbox gets its own `/dev`). Every path goes through [`crate::path`],
//! so nothing is created, deleted or linked outside the root.
//!
//! The same layers give the same tree: owners, modes and mtimes come from the layers
//! only, directory mtimes are set once all layers are applied.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::extensions::{ExtensionError, Pending};
use crate::metadata;
use crate::path::PathError;

const OPAQUE: &str = ".wh..wh..opq";
const WHITEOUT_PREFIX: &str = ".wh.";

#[derive(Debug, Clone, Copy)]
pub struct FlattenLimits {
    /// Bytes of file content in the flattened image (Lambda's limit is 10 GiB).
    pub max_bytes: u64,
    /// Tar entries over all layers.
    pub max_entries: u64,
}

impl Default for FlattenLimits {
    fn default() -> Self {
        Self {
            max_bytes: 10 << 30,
            max_entries: 1_000_000,
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct FlattenStats {
    pub layers: u64,
    pub entries: u64,
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hard_links: u64,
    pub whiteouts: u64,
    pub opaque_dirs: u64,
    /// Device nodes and FIFOs, not created.
    pub skipped_special: u64,
    /// Bytes written to regular files (content replaced by a later layer counts twice).
    pub bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum FlattenError {
    #[error("layer {layer}: {source}")]
    Path { layer: usize, source: PathError },
    #[error("layer {layer}: {source}")]
    Extension {
        layer: usize,
        source: ExtensionError,
    },
    #[error("layer {layer}: not a readable tar archive: {source}")]
    Tar { layer: usize, source: io::Error },
    #[error("the image's files are over the {limit}-byte limit")]
    TooLarge { limit: u64 },
    #[error("the image has more than {limit} tar entries")]
    TooManyEntries { limit: u64 },
    #[error("layer {layer}: hard link {entry:?} -> {target:?}: the target is not a regular file already in the image")]
    HardLink {
        layer: usize,
        entry: PathBuf,
        target: PathBuf,
    },
    #[error("layer {layer}: writing {path:?}: {source}")]
    Io {
        layer: usize,
        path: PathBuf,
        source: io::Error,
    },
}

pub struct Flattener {
    root: PathBuf,
    limits: FlattenLimits,
    stats: FlattenStats,
    /// Directories and the mtimes their entries gave them, set last.
    dir_times: Vec<(PathBuf, u64)>,
}

/// One layer's progress: what it created (an opaque marker keeps those) and the
/// extension entries waiting for the entry they describe.
struct LayerState {
    index: usize,
    created: HashSet<PathBuf>,
    pending: Pending,
}

impl Flattener {
    /// Flattens into `root`, which is created and must be empty.
    pub fn new(root: impl Into<PathBuf>, limits: FlattenLimits) -> Result<Self, FlattenError> {
        let root = root.into();
        let io = |source| FlattenError::Io {
            layer: 0,
            path: root.clone(),
            source,
        };
        fs::create_dir_all(&root).map_err(io)?;
        if fs::read_dir(&root).map_err(io)?.next().is_some() {
            return Err(io(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "the flattening root is not empty",
            )));
        }
        Ok(Self {
            root,
            limits,
            stats: FlattenStats::default(),
            dir_times: Vec::new(),
        })
    }

    pub fn stats(&self) -> FlattenStats {
        self.stats
    }

    /// Applies the next layer's (decompressed) tar stream.
    pub fn apply_layer(&mut self, tar_stream: impl Read) -> Result<(), FlattenError> {
        let mut layer = LayerState {
            index: self.stats.layers as usize,
            created: HashSet::new(),
            pending: Pending::default(),
        };
        let tar_err = |source| FlattenError::Tar {
            layer: layer.index,
            source,
        };
        let mut archive = tar::Archive::new(tar_stream);
        let entries = archive.entries().map_err(tar_err)?.raw(true);
        for entry in entries {
            let mut entry = entry.map_err(|source| FlattenError::Tar {
                layer: layer.index,
                source,
            })?;
            self.stats.entries += 1;
            if self.stats.entries > self.limits.max_entries {
                return Err(FlattenError::TooManyEntries {
                    limit: self.limits.max_entries,
                });
            }
            let kind = entry.header().entry_type().as_byte();
            let is_extension = layer.pending.absorb(kind, &mut entry).map_err(|source| {
                FlattenError::Extension {
                    layer: layer.index,
                    source,
                }
            })?;
            if !is_extension {
                let pending = std::mem::take(&mut layer.pending);
                self.apply_entry(&mut layer, &mut entry, pending)?;
            }
        }
        self.stats.layers += 1;
        Ok(())
    }

    /// Sets directory mtimes (deepest first, so setting one does not disturb another)
    /// and returns what the layers added up to.
    pub fn finish(mut self) -> Result<FlattenStats, FlattenError> {
        let implied = self.implied_dirs()?;
        self.dir_times.extend(implied.into_iter().map(|d| (d, 0)));
        self.dir_times
            .sort_by_key(|(p, _)| std::cmp::Reverse(p.components().count()));
        for (dir, mtime) in &self.dir_times {
            if fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir()) {
                metadata::set_mtime(dir, *mtime).map_err(|source| FlattenError::Io {
                    layer: self.stats.layers as usize,
                    path: dir.clone(),
                    source,
                })?;
            }
        }
        Ok(self.stats)
    }

    /// The directories no layer listed (the root, and parents made for an entry): they
    /// get the Unix epoch as mtime rather than the time of this flattening, so the same
    /// layers always give the same tree.
    fn implied_dirs(&self) -> Result<Vec<PathBuf>, FlattenError> {
        let explicit: HashSet<&Path> = self.dir_times.iter().map(|(p, _)| p.as_path()).collect();
        let mut implied = Vec::new();
        let mut pending = vec![self.root.clone()];
        while let Some(dir) = pending.pop() {
            let io = |source| FlattenError::Io {
                layer: self.stats.layers as usize,
                path: dir.clone(),
                source,
            };
            for entry in fs::read_dir(&dir).map_err(io)? {
                let entry = entry.map_err(io)?;
                if entry.file_type().map_err(io)?.is_dir() {
                    pending.push(entry.path());
                }
            }
            if !explicit.contains(dir.as_path()) {
                implied.push(dir);
            }
        }
        Ok(implied)
    }
}

mod entry;
