//! A flattened root as an ext4 image: what a microVM mounts as its root, and what the
//! chunk store cuts into chunks. Built by `mke2fs -d` with its UUID, directory hash seed
//! and clock fixed, then every inode's ctime and atime set to one value (`debugfs`):
//! mke2fs copies each source file's ctime, which no program can choose, and its atime,
//! which its own reading moves. mke2fs (1.47.0 checked) adds each directory's entries
//! in name order (`scandir` with `alphasort`, byte order in the C locale it is run in),
//! so inode numbers and directory blocks do not depend on the order the host's file
//! system lists a directory in. The same tree then gives the same bytes on any host
//! with that e2fsprogs, and an image that changes one file changes few chunks.

use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The clock mke2fs writes and the ctime/atime every inode gets (2023-11-14).
const FIXED_EPOCH: &str = "1700000000";
const FIXED_TIME: &str = "20231114221320";
const UUID: &str = "6c616d62-6461-4c61-8d62-646100000001";
const HASH_SEED: &str = "6c616d62-6461-4c61-8d62-646100000002";
const BLOCK: u64 = 4096;

#[derive(Debug, thiserror::Error)]
pub enum Ext4Error {
    #[error("{tool} could not run: {source}")]
    Spawn {
        tool: &'static str,
        source: std::io::Error,
    },
    #[error("{tool} failed: {stderr}")]
    Failed { tool: &'static str, stderr: String },
    #[error("reading the tree at {path}: {source}")]
    Tree {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("debugfs stats of {0} has no inode counts")]
    Stats(PathBuf),
}

/// What a tree holds: bytes in 4 KiB blocks, and entries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeSize {
    pub blocks: u64,
    pub entries: u64,
}

/// Walks `root` without following symbolic links. A directory counts by its entries as
/// ext4 stores them, never by the size the host's file system reports for it (tmpfs,
/// ext4 and xfs each report another), so the image's size, and with it its layout,
/// is the same on every host.
pub fn tree_size(root: &Path) -> Result<TreeSize, Ext4Error> {
    let mut size = TreeSize::default();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let err = |source| Ext4Error::Tree {
            path: dir.clone(),
            source,
        };
        // `.` and `..`, then one record per entry: 8 bytes and the name, 4-aligned.
        let mut dir_bytes = 24u64;
        for entry in std::fs::read_dir(&dir).map_err(err)? {
            let entry = entry.map_err(err)?;
            let meta = entry.path().symlink_metadata().map_err(err)?;
            size.entries += 1;
            dir_bytes += (8 + entry.file_name().len() as u64).next_multiple_of(4);
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                size.blocks += meta.size().div_ceil(BLOCK);
            }
        }
        size.blocks += dir_bytes.div_ceil(BLOCK);
    }
    Ok(size)
}

fn run(tool: &'static str, cmd: &mut Command) -> Result<String, Ext4Error> {
    let out = cmd
        .output()
        .map_err(|source| Ext4Error::Spawn { tool, source })?;
    if !out.status.success() {
        return Err(Ext4Error::Failed {
            tool,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Writes `tree` as a new ext4 image at `image` (replaced if present), sized for the
/// tree with a quarter spare and room for its inodes, times fixed. Blocking.
pub fn build(tree: &Path, image: &Path) -> Result<TreeSize, Ext4Error> {
    add_mount_points(tree).map_err(|source| Ext4Error::Tree {
        path: tree.to_owned(),
        source,
    })?;
    let size = mke2fs(tree, image)?;
    fix_times(image)?;
    Ok(size)
}

/// Where a microVM's guest mounts its own file systems once the image is its root:
/// created empty (mtime 0) when the image lacks them, as a runtime expects them.
const MOUNT_POINTS: [(&str, u32); 4] = [
    ("proc", 0o555),
    ("sys", 0o555),
    ("dev", 0o755),
    ("tmp", 0o1777),
];

fn add_mount_points(tree: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let root_mtime = tree.metadata()?.modified()?;
    for (name, mode) in MOUNT_POINTS {
        let dir = tree.join(name);
        if dir.symlink_metadata().is_ok() {
            continue;
        }
        std::fs::create_dir(&dir)?;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode))?;
        std::fs::File::open(&dir)?.set_modified(std::time::UNIX_EPOCH)?;
    }
    // New entries moved the root's mtime: back to what the layers gave it.
    std::fs::File::open(tree)?.set_modified(root_mtime)
}

/// [`build`] without the time fix: the image as mke2fs writes it.
pub fn mke2fs(tree: &Path, image: &Path) -> Result<TreeSize, Ext4Error> {
    let size = tree_size(tree)?;
    let inodes = size.entries + size.entries / 8 + 1024;
    // Inode tables (256 bytes each) and metadata come out of the same blocks.
    let kib = (size.blocks + size.blocks / 4) * (BLOCK / 1024) + inodes / 4 + 16384;
    let _ = std::fs::remove_file(image);
    run(
        "mke2fs",
        Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-m", "0"])
            .args(["-O", "^has_journal", "-U", UUID])
            .args(["-E", &format!("root_owner=0:0,hash_seed={HASH_SEED}")])
            .args(["-N", &inodes.to_string(), "-d"])
            .arg(tree)
            .arg(image)
            .arg(format!("{kib}k"))
            .env("E2FSPROGS_FAKE_TIME", FIXED_EPOCH)
            // alphasort compares with strcoll: byte order whatever the host's locale.
            .env("LC_ALL", "C"),
    )?;
    Ok(size)
}

/// Sets the ctime and atime of every used inode (the root and 11 onwards: mke2fs -d
/// allocates them in order).
pub fn fix_times(image: &Path) -> Result<(), Ext4Error> {
    let stats = run(
        "debugfs",
        Command::new("debugfs").args(["-R", "stats"]).arg(image),
    )?;
    let field = |name: &str| {
        stats
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
    };
    let used = field("Inode count:")
        .zip(field("Free inodes:"))
        .map(|(count, free)| count.saturating_sub(free))
        .ok_or_else(|| Ext4Error::Stats(image.to_owned()))?;
    let script = image.with_extension("debugfs");
    let write = |source| Ext4Error::Tree {
        path: script.clone(),
        source,
    };
    let mut file = std::io::BufWriter::new(std::fs::File::create(&script).map_err(write)?);
    for ino in std::iter::once(2).chain(11..=used) {
        writeln!(
            file,
            "sif <{ino}> ctime {FIXED_TIME}\nsif <{ino}> atime {FIXED_TIME}"
        )
        .map_err(write)?;
    }
    file.flush().map_err(write)?;
    drop(file);
    let result = run(
        "debugfs",
        Command::new("debugfs")
            .arg("-w")
            .arg("-f")
            .arg(&script)
            .arg(image)
            .env("E2FSPROGS_FAKE_TIME", FIXED_EPOCH),
    );
    let _ = std::fs::remove_file(&script);
    result.map(|_| ())
}
