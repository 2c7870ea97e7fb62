//! One tar entry applied to the root.

use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use tar::EntryType;

use super::{FlattenError, Flattener, LayerState, OPAQUE, WHITEOUT_PREFIX};
use crate::extensions::Pending;
use crate::metadata::{self, Owner};
use crate::path::{entry_path, resolve_in_root, PathError};

impl Flattener {
    fn resolve(
        &self,
        layer: usize,
        rel: &Path,
        follow_last: bool,
    ) -> Result<PathBuf, FlattenError> {
        resolve_in_root(&self.root, rel, follow_last)
            .map_err(|source| FlattenError::Path { layer, source })
    }

    pub(super) fn apply_entry<R: Read>(
        &mut self,
        layer: &mut LayerState,
        entry: &mut tar::Entry<'_, R>,
        pending: Pending,
    ) -> Result<(), FlattenError> {
        let l = layer.index;
        let head = Head::read(entry.header(), pending, l)?;
        let path_err = |source| FlattenError::Path { layer: l, source };
        let raw = Path::new(OsStr::from_bytes(&head.path));
        let Some(rel) = entry_path(raw).map_err(path_err)? else {
            return Ok(()); // the root itself
        };
        let name = rel.file_name().map(OsStrExt::as_bytes).unwrap_or_default();
        let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        if name == OPAQUE.as_bytes() {
            return self.make_opaque(layer, &parent);
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            return self.white_out(l, &rel, &parent, hidden);
        }
        let host = self.resolve(l, &rel, false)?;
        let io_err = |source| FlattenError::Io {
            layer: l,
            path: host.clone(),
            source,
        };
        let owner = &head.owner;
        match head.kind {
            EntryType::Directory => {
                replace(&host, true).map_err(io_err)?;
                if !host.is_dir() {
                    fs::create_dir(&host).map_err(io_err)?;
                }
                self.stats.dirs += 1;
                self.dir_times.push((host.clone(), owner.mtime));
                metadata::apply(&host, owner, false).map_err(io_err)?;
            }
            EntryType::Regular | EntryType::Continuous => {
                self.write_file(l, &host, entry, head.size)?;
                metadata::apply(&host, owner, false).map_err(io_err)?;
            }
            EntryType::Symlink => {
                replace(&host, false).map_err(io_err)?;
                let target = OsStr::from_bytes(head.link.as_deref().unwrap_or_default());
                std::os::unix::fs::symlink(target, &host).map_err(io_err)?;
                self.stats.symlinks += 1;
                metadata::apply(&host, owner, true).map_err(io_err)?;
            }
            EntryType::Link => self.hard_link(l, &rel, &host, head.link.unwrap_or_default())?,
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.stats.skipped_special += 1;
                return Ok(());
            }
            // Volume labels and other types carry nothing a root holds.
            _ => return Ok(()),
        }
        layer.created.insert(host);
        Ok(())
    }

    fn write_file<R: Read>(
        &mut self,
        layer: usize,
        host: &Path,
        entry: &mut tar::Entry<'_, R>,
        size: u64,
    ) -> Result<(), FlattenError> {
        if self.stats.bytes.saturating_add(size) > self.limits.max_bytes {
            return Err(FlattenError::TooLarge {
                limit: self.limits.max_bytes,
            });
        }
        let io_err = |source| FlattenError::Io {
            layer,
            path: host.to_path_buf(),
            source,
        };
        // Removed first, never truncated: the old name may be a hard link to a file
        // that must keep its content.
        replace(host, false).map_err(io_err)?;
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(host)
            .map_err(io_err)?;
        let written = io::copy(&mut entry.take(size), &mut file)
            .map_err(|source| FlattenError::Tar { layer, source })?;
        if written != size {
            let short = io::Error::new(io::ErrorKind::UnexpectedEof, "layer ends inside a file");
            return Err(FlattenError::Tar {
                layer,
                source: short,
            });
        }
        self.stats.files += 1;
        self.stats.bytes += size;
        Ok(())
    }

    fn hard_link(
        &mut self,
        layer: usize,
        rel: &Path,
        host: &Path,
        target: Vec<u8>,
    ) -> Result<(), FlattenError> {
        let refused = || FlattenError::HardLink {
            layer,
            entry: rel.to_path_buf(),
            target: PathBuf::from(OsStr::from_bytes(&target)),
        };
        let target_rel = entry_path(Path::new(OsStr::from_bytes(&target)))
            .map_err(|source| FlattenError::Path { layer, source })?
            .ok_or_else(refused)?;
        let target_host = self.resolve(layer, &target_rel, false)?;
        if !fs::symlink_metadata(&target_host).is_ok_and(|m| m.is_file()) {
            return Err(refused());
        }
        let io_err = |source| FlattenError::Io {
            layer,
            path: host.to_path_buf(),
            source,
        };
        replace(host, false).map_err(io_err)?;
        fs::hard_link(&target_host, host).map_err(io_err)?;
        self.stats.hard_links += 1;
        Ok(())
    }

    /// `.wh.NAME`: NAME goes, whatever it is.
    fn white_out(
        &mut self,
        layer: usize,
        rel: &Path,
        parent: &Path,
        hidden: &[u8],
    ) -> Result<(), FlattenError> {
        if matches!(hidden, b"" | b"." | b"..") {
            let source = PathError::Escapes(rel.to_path_buf());
            return Err(FlattenError::Path { layer, source });
        }
        let target = self.resolve(layer, &parent.join(OsStr::from_bytes(hidden)), false)?;
        remove_any(&target).map_err(|source| FlattenError::Io {
            layer,
            path: target.clone(),
            source,
        })?;
        self.stats.whiteouts += 1;
        Ok(())
    }

    /// `.wh..wh..opq`: the directory keeps only what this layer put in it.
    fn make_opaque(&mut self, layer: &LayerState, dir_rel: &Path) -> Result<(), FlattenError> {
        let dir = self.resolve(layer.index, dir_rel, true)?;
        let io_err = |source| FlattenError::Io {
            layer: layer.index,
            path: dir.clone(),
            source,
        };
        let children = match fs::read_dir(&dir) {
            Ok(c) => c,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_err(e)),
        };
        for child in children {
            let child = child.map_err(io_err)?.path();
            if !layer.created.contains(&child) {
                remove_any(&child).map_err(io_err)?;
            }
        }
        self.stats.opaque_dirs += 1;
        Ok(())
    }
}

/// Makes way for a new entry at `path`: its parents exist, and what was there is gone
/// unless both it and the new entry are directories (`keep_dir`), which merge.
fn replace(path: &Path, keep_dir: bool) -> io::Result<()> {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent)?;
    }
    match fs::symlink_metadata(path) {
        Ok(m) if keep_dir && m.is_dir() => Ok(()),
        Ok(_) => remove_any(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Removes a file, symlink or whole directory; absent is fine.
fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// An entry's header with the extension entries before it applied.
struct Head {
    kind: EntryType,
    path: Vec<u8>,
    link: Option<Vec<u8>>,
    size: u64,
    owner: Owner,
}

impl Head {
    fn read(header: &tar::Header, pending: Pending, layer: usize) -> Result<Self, FlattenError> {
        let tar_err = |source| FlattenError::Tar { layer, source };
        let size = header.entry_size().map_err(tar_err)?;
        pending
            .check_size(size)
            .map_err(|source| FlattenError::Extension { layer, source })?;
        let or_header = |v: Option<u64>, h: io::Result<u64>| v.map_or(h, Ok).map_err(tar_err);
        Ok(Self {
            kind: header.entry_type(),
            size,
            owner: Owner {
                uid: or_header(pending.uid, header.uid())?,
                gid: or_header(pending.gid, header.gid())?,
                mode: header.mode().map_err(tar_err)?,
                mtime: or_header(pending.mtime, header.mtime())?,
            },
            link: pending
                .link
                .or_else(|| header.link_name_bytes().map(|l| l.into_owned())),
            path: pending
                .path
                .unwrap_or_else(|| header.path_bytes().into_owned()),
        })
    }
}
