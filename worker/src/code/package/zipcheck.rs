//! Validation of uploaded deployment packages before anything is stored.
//!
//! Produces a [`ZipPlan`]: the exact list of directories, files and symlinks
//! that extraction will create. Every entry's data is decompressed once here
//! (into a counting sink), so lying size headers, bad CRCs and zip bombs are
//! caught at upload time, not when a sandbox is being prepared.

use std::collections::{BTreeMap, VecDeque};
use std::io::{Cursor, Read};

use zip::ZipArchive;

use super::central_dir::Mismatch;

/// Longest path component Linux file systems accept (NAME_MAX).
pub const MAX_NAME_COMPONENT: usize = 255;
/// Longest normalised entry path. Extraction prefixes the sandbox's code directory,
/// and the whole must stay under PATH_MAX (4096) or it fails with ENAMETOOLONG long
/// after the upload was accepted.
pub const MAX_ENTRY_PATH: usize = 2048;

/// Lambda's documented limits plus our zip-bomb guards.
#[derive(Debug, Clone)]
pub struct ZipLimits {
    pub max_zipped: u64,
    pub max_unzipped: u64,
    pub max_entries: usize,
    /// Largest tolerated uncompressed/compressed ratio for one entry...
    pub max_ratio: u64,
    /// ...once the entry is at least this large.
    pub ratio_min_size: u64,
    pub max_symlink_target: u64,
}

impl Default for ZipLimits {
    fn default() -> Self {
        Self {
            max_zipped: 50 * 1024 * 1024,
            max_unzipped: 262_144_000,
            max_entries: 20_000,
            max_ratio: 250,
            ratio_min_size: 1024 * 1024,
            // symlink(2) takes a NUL-terminated target shorter than PATH_MAX (4096).
            max_symlink_target: 4095,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ZipError {
    #[error("Zipped size {size} bytes exceeds the limit of {limit} bytes")]
    ZippedTooLarge { size: u64, limit: u64 },
    #[error(
        "Could not unzip uploaded file. Please check your file, then try to upload again. ({0})"
    )]
    NotAZip(String),
    #[error("Deployment package has {count} entries; the limit is {limit}")]
    TooManyEntries { count: usize, limit: usize },
    #[error("Unzipped size must be smaller than {limit} bytes")]
    UnzippedTooLarge { limit: u64 },
    #[error("Zip entry '{0}' has an absolute path")]
    AbsolutePath(String),
    #[error("Zip entry '{0}' contains a '..' path component")]
    ParentTraversal(String),
    #[error("Zip entry name {0:?} is invalid")]
    BadName(String),
    #[error(
        "Zip entry name '{prefix}...' is too long ({len} bytes; at most {MAX_ENTRY_PATH}, \
         and {MAX_NAME_COMPONENT} per path component)"
    )]
    NameTooLong { prefix: String, len: usize },
    #[error("Zip entry '{0}' appears more than once or conflicts with another entry")]
    Duplicate(String),
    #[error("Zip entry '{0}' is encrypted")]
    Encrypted(String),
    #[error("Zip entry '{0}' is a symlink pointing outside the package")]
    SymlinkEscape(String),
    #[error("Zip entry '{0}' lies below a symlink")]
    BelowSymlink(String),
    #[error(
        "Zip entry '{name}' has a compression ratio of {ratio}:1 (zip bomb guard: limit {limit}:1)"
    )]
    Bomb {
        name: String,
        ratio: u64,
        limit: u64,
    },
    #[error("Zip entries overlap in the archive (zip bomb guard): '{0}'")]
    Overlap(String),
    #[error("Zip entry '{0}' does not match its declared size")]
    SizeMismatch(String),
    #[error("Zip entry '{name}' is corrupt: {reason}")]
    Corrupt { name: String, reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File { executable: bool, size: u64 },
    Symlink { target: String },
}

#[derive(Debug, Clone)]
pub struct PlannedEntry {
    /// Index in the archive's central directory.
    pub index: usize,
    /// Normalised relative path, `/`-separated, no `.`/`..`/empty parts.
    pub path: String,
    pub kind: EntryKind,
}

#[derive(Debug, Clone)]
pub struct ZipPlan {
    pub entries: Vec<PlannedEntry>,
    pub unzipped_size: u64,
}

/// Splits and checks an entry name; returns the normalised relative path.
fn normalise_name(raw: &str) -> Result<String, ZipError> {
    if raw.is_empty() || raw.contains('\0') {
        return Err(ZipError::BadName(raw.to_owned()));
    }
    if raw.starts_with('/') || raw.starts_with('\\') {
        return Err(ZipError::AbsolutePath(raw.to_owned()));
    }
    let mut parts = Vec::new();
    for (i, part) in raw.split(['/', '\\']).enumerate() {
        match part {
            "" | "." => {}
            ".." => return Err(ZipError::ParentTraversal(raw.to_owned())),
            p if i == 0 && p.len() == 2 && p.ends_with(':') => {
                return Err(ZipError::AbsolutePath(raw.to_owned()))
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return Err(ZipError::BadName(raw.to_owned()));
    }
    let path = parts.join("/");
    if path.len() > MAX_ENTRY_PATH || parts.iter().any(|p| p.len() > MAX_NAME_COMPONENT) {
        // The name can be 64 KiB long: quote only its start.
        let prefix: String = raw.chars().take(64).collect();
        return Err(ZipError::NameTooLong {
            prefix,
            len: raw.len(),
        });
    }
    Ok(path)
}

fn corrupt(name: &str, e: impl std::fmt::Display) -> ZipError {
    ZipError::Corrupt {
        name: name.to_owned(),
        reason: e.to_string(),
    }
}

/// Whether validation reads every file's data (checking its CRC-32 and size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataCheck {
    /// Decompress every file now: an upload is refused before it is stored.
    Now,
    /// Leave it to [`super::extract::extract`], which reads each file to its end (the
    /// CRC-32 check) and refuses a size other than the declared one: one decompression
    /// instead of two when the package is unpacked right after.
    AtExtraction,
}

/// Validates `zip` against `limits` (reading every file's data) and returns the
/// extraction plan.
pub fn validate(zip: &[u8], limits: &ZipLimits) -> Result<ZipPlan, ZipError> {
    validate_with(zip, limits, DataCheck::Now)
}

/// [`validate`], with the file data checked now or at extraction.
pub fn validate_with(zip: &[u8], limits: &ZipLimits, data: DataCheck) -> Result<ZipPlan, ZipError> {
    let size = zip.len() as u64;
    if size > limits.max_zipped {
        return Err(ZipError::ZippedTooLarge {
            size,
            limit: limits.max_zipped,
        });
    }
    let mut archive =
        ZipArchive::new(Cursor::new(zip)).map_err(|e| ZipError::NotAZip(e.to_string()))?;
    if archive.len() > limits.max_entries {
        return Err(ZipError::TooManyEntries {
            count: archive.len(),
            limit: limits.max_entries,
        });
    }
    if archive.is_empty() {
        return Err(ZipError::NotAZip("the archive has no entries".into()));
    }
    // The zip crate keeps one entry per name: a repeated name must be caught here.
    match super::central_dir::verify(zip, archive.len()) {
        Ok(()) => {}
        Err(Mismatch::Repeated(name)) => return Err(ZipError::Duplicate(name)),
        Err(Mismatch::Unreadable { listed, read }) => {
            return Err(ZipError::NotAZip(match listed {
                Some(n) => format!("the central directory lists {n} entries, {read} are readable"),
                None => "the central directory cannot be read".into(),
            }))
        }
    }

    let mut entries = Vec::with_capacity(archive.len());
    let mut ranges = Vec::with_capacity(archive.len());
    let mut total: u64 = 0;
    for index in 0..archive.len() {
        let mut file = archive
            .by_index(index)
            .map_err(|e| ZipError::NotAZip(e.to_string()))?;
        let raw = file.name().to_owned();
        if file.encrypted() {
            return Err(ZipError::Encrypted(raw));
        }
        let path = normalise_name(&raw)?;
        ranges.push((
            file.header_start(),
            file.data_start().saturating_add(file.compressed_size()),
            raw.clone(),
        ));
        let mode = file.unix_mode().unwrap_or(0);
        let is_link = mode & 0o170_000 == 0o120_000;
        let declared = file.size();
        total = total.saturating_add(declared);
        if total > limits.max_unzipped {
            return Err(ZipError::UnzippedTooLarge {
                limit: limits.max_unzipped,
            });
        }
        let compressed = file.compressed_size().max(1);
        if declared >= limits.ratio_min_size && declared / compressed > limits.max_ratio {
            return Err(ZipError::Bomb {
                name: raw,
                ratio: declared / compressed,
                limit: limits.max_ratio,
            });
        }
        let kind = if file.is_dir() && !is_link {
            EntryKind::Dir
        } else if is_link {
            if declared > limits.max_symlink_target {
                return Err(corrupt(&raw, "symlink target too long"));
            }
            let mut target = String::new();
            (&mut file)
                .take(limits.max_symlink_target + 1)
                .read_to_string(&mut target)
                .map_err(|e| corrupt(&raw, e))?;
            // The data may be longer than the entry declared.
            if target.len() as u64 > limits.max_symlink_target {
                return Err(corrupt(&raw, "symlink target too long"));
            }
            if target.is_empty() || target.contains('\0') {
                return Err(corrupt(&raw, "empty or invalid symlink target"));
            }
            EntryKind::Symlink { target }
        } else {
            if data == DataCheck::Now {
                check_data(&mut file, declared, &raw)?;
            }
            let executable = mode & 0o111 != 0 || path == "bootstrap";
            EntryKind::File {
                executable,
                size: declared,
            }
        };
        entries.push(PlannedEntry { index, path, kind });
    }
    check_overlaps(&mut ranges)?;
    check_tree(&entries)?;
    Ok(ZipPlan {
        entries,
        unzipped_size: total,
    })
}

/// Reads a file to its end, which makes the zip crate verify the CRC-32, and checks
/// its size against the declared one.
fn check_data(file: &mut impl Read, declared: u64, name: &str) -> Result<(), ZipError> {
    let actual = std::io::copy(&mut file.take(declared + 1), &mut std::io::sink())
        .map_err(|e| corrupt(name, e))?;
    if actual != declared {
        return Err(ZipError::SizeMismatch(name.to_owned()));
    }
    Ok(())
}

/// Entries whose local header + data ranges overlap are the signature of a
/// non-recursive zip bomb (one compressed stream referenced many times).
fn check_overlaps(ranges: &mut [(u64, u64, String)]) -> Result<(), ZipError> {
    ranges.sort_by_key(|r| r.0);
    for pair in ranges.windows(2) {
        if pair[1].0 < pair[0].1 {
            return Err(ZipError::Overlap(pair[1].2.clone()));
        }
    }
    Ok(())
}

/// Checks duplicates, file/dir conflicts, entries below symlinks and symlink
/// targets (resolved against the planned tree, following links like the
/// kernel would).
fn check_tree(entries: &[PlannedEntry]) -> Result<(), ZipError> {
    let mut map: BTreeMap<&str, &EntryKind> = BTreeMap::new();
    for e in entries {
        if let Some(prev) = map.insert(e.path.as_str(), &e.kind) {
            // A repeated directory entry is harmless; anything else is not.
            if !(prev == &EntryKind::Dir && e.kind == EntryKind::Dir) {
                return Err(ZipError::Duplicate(e.path.clone()));
            }
        }
    }
    for e in entries {
        let mut ancestor = e.path.as_str();
        while let Some((parent, _)) = ancestor.rsplit_once('/') {
            match map.get(parent) {
                Some(EntryKind::Symlink { .. }) => {
                    return Err(ZipError::BelowSymlink(e.path.clone()))
                }
                Some(EntryKind::File { .. }) => return Err(ZipError::Duplicate(e.path.clone())),
                _ => {}
            }
            ancestor = parent;
        }
        if let EntryKind::Symlink { target } = &e.kind {
            if !link_stays_inside(&map, &e.path, target) {
                return Err(ZipError::SymlinkEscape(e.path.clone()));
            }
        }
    }
    Ok(())
}

fn link_stays_inside(map: &BTreeMap<&str, &EntryKind>, link: &str, target: &str) -> bool {
    const MAX_HOPS: usize = 40;
    let mut cur: Vec<String> = link.split('/').map(str::to_owned).collect();
    cur.pop();
    let mut pending: VecDeque<String> = VecDeque::new();
    let mut hops = 0;
    let push_target = |pending: &mut VecDeque<String>, t: &str| -> bool {
        if t.starts_with('/') {
            return false;
        }
        for (i, c) in t.split('/').enumerate() {
            pending.insert(i, c.to_owned());
        }
        true
    };
    if !push_target(&mut pending, target) {
        return false;
    }
    while let Some(c) = pending.pop_front() {
        match c.as_str() {
            "" | "." => {}
            ".." => {
                if cur.pop().is_none() {
                    return false;
                }
            }
            name => {
                cur.push(name.to_owned());
                if let Some(EntryKind::Symlink { target: next }) = map.get(cur.join("/").as_str()) {
                    hops += 1;
                    if hops > MAX_HOPS {
                        return false;
                    }
                    cur.pop();
                    if !push_target(&mut pending, next) {
                        return false;
                    }
                }
            }
        }
    }
    true
}

#[cfg(test)]
#[path = "zipcheck_tests.rs"]
mod tests;
