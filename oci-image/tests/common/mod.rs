//! Layers built byte by byte for the flattening tests, including names no well-behaved
//! tar writer would produce.
#![allow(dead_code)]

pub mod registry;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use tar::{EntryType, Header};

pub struct Layer {
    builder: tar::Builder<Vec<u8>>,
}

pub const MTIME: u64 = 1_700_000_000;

impl Layer {
    pub fn new() -> Self {
        Self {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    /// An entry whose name and link name are written raw (no checks), GNU format.
    pub fn raw(mut self, kind: EntryType, name: &str, mode: u32, data: &[u8], link: &str) -> Self {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(1000);
        h.set_gid(1001);
        h.set_mtime(MTIME);
        h.set_size(data.len() as u64);
        let old = h.as_old_mut();
        old.name = [0; 100];
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        old.linkname = [0; 100];
        old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        h.set_cksum();
        self.builder.append(&h, data).unwrap();
        self
    }

    pub fn dir(self, name: &str) -> Self {
        self.raw(EntryType::Directory, name, 0o755, b"", "")
    }

    pub fn file(self, name: &str, data: &[u8]) -> Self {
        self.raw(EntryType::Regular, name, 0o644, data, "")
    }

    pub fn symlink(self, name: &str, target: &str) -> Self {
        self.raw(EntryType::Symlink, name, 0o777, b"", target)
    }

    pub fn hard_link(self, name: &str, target: &str) -> Self {
        self.raw(EntryType::Link, name, 0o644, b"", target)
    }

    /// A file with a name over 100 bytes, as tar writers store it (GNU long name).
    pub fn long_file(mut self, name: &str, data: &[u8]) -> Self {
        let mut h = Header::new_gnu();
        h.set_mode(0o600);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h.set_size(data.len() as u64);
        self.builder.append_data(&mut h, name, data).unwrap();
        self
    }

    /// A PAX extended header with `records` (key, value) before a file.
    pub fn pax_file(mut self, records: &[(&str, &[u8])], name: &str, data: &[u8]) -> Self {
        self.builder
            .append_pax_extensions(records.iter().map(|(k, v)| (*k, *v)))
            .unwrap();
        self.file(name, data)
    }

    pub fn bytes(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }
}

/// Everything about a tree that flattening decides: per path, kind, mode, owner,
/// mtime, and the content or link target.
pub fn snapshot(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, String>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let m = fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let what = if m.is_symlink() {
            format!("link -> {}", fs::read_link(&p).unwrap().display())
        } else if m.is_dir() {
            walk(root, &p, out);
            "dir".to_string()
        } else {
            format!("file {:?}", String::from_utf8_lossy(&fs::read(&p).unwrap()))
        };
        let mode = if m.is_symlink() { 0 } else { m.mode() & 0o7777 };
        out.insert(
            rel,
            format!(
                "{what} mode {mode:o} {}:{} mtime {}",
                m.uid(),
                m.gid(),
                m.mtime()
            ),
        );
    }
}
