//! Fuzzes the deployment-package validator (`codestore::zipcheck::validate`) and, for
//! packages it accepts, extraction of the plan it returns.
//!
//! Run: `tests/fuzz.sh supervisor/zip_check`.
//! Input: an even first byte makes the rest the upload as is. An odd one makes the rest
//! describe entries that a real zip writer packs, after which some bytes are overwritten:
//! that gets past the central-directory parser to the name, symlink, size, CRC and ratio
//! checks far more often than random bytes do.
//! Properties: no panic; an accepted plan respects the limits, has only normalised
//! relative paths, no duplicates and nothing below a file or symlink; extracting it into
//! an empty directory succeeds, and every symlink that resolves stays inside it.
#![no_main]

use std::collections::HashMap;
use std::io::{Cursor, Write as _};
use std::path::Path;

use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use supervisor::codestore::extract::extract;
use supervisor::codestore::zipcheck::{validate, EntryKind, ZipLimits, ZipPlan};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

/// A name or link target: `text` repeated `1 + times` times, so that the length
/// limits (255-byte components, 2048-byte paths, 4095-byte targets) are in reach.
#[derive(Arbitrary, Debug)]
struct Stretch {
    text: String,
    times: u8,
}

impl Stretch {
    fn get(&self) -> String {
        let times = 1 + usize::from(self.times);
        let max = 4608 / self.text.len().max(1);
        self.text.repeat(times.min(max.max(1)))
    }
}

#[derive(Arbitrary, Debug)]
enum Entry {
    File {
        name: Stretch,
        chunk: Vec<u8>,
        /// The chunk is written this many times (mod 64): compressible data for the
        /// ratio guard.
        repeat: u8,
        mode: u16,
        deflate: bool,
    },
    Dir {
        name: Stretch,
    },
    Link {
        name: Stretch,
        target: Stretch,
    },
}

#[derive(Arbitrary, Debug)]
struct Package {
    entries: Vec<Entry>,
    /// `(offset, byte)` overwrites of the finished archive: lying headers, bad CRCs.
    patches: Vec<(u16, u8)>,
}

const MAX_ENTRIES: usize = 24;
/// Bytes written per file at most, so one input stays fast.
const MAX_FILE: usize = 64 * 1024;

/// Small size limits, so the size and ratio guards trigger on fuzzer-sized inputs; the
/// symlink target limit is the real one, as it must match what symlink(2) accepts.
fn limits() -> ZipLimits {
    ZipLimits {
        max_zipped: 1 << 20,
        max_unzipped: 1 << 20,
        max_entries: 64,
        max_ratio: 50,
        ratio_min_size: 16 * 1024,
        ..ZipLimits::default()
    }
}

/// Packs `pkg` with the zip writer and applies the patches.
fn build(pkg: &Package) -> Option<Vec<u8>> {
    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    for e in pkg.entries.iter().take(MAX_ENTRIES) {
        // The writer refuses some entries (duplicate names); the package then lacks them.
        let _ = match e {
            Entry::File {
                name,
                chunk,
                repeat,
                mode,
                deflate,
            } => {
                let method = if *deflate {
                    CompressionMethod::Deflated
                } else {
                    CompressionMethod::Stored
                };
                let o = SimpleFileOptions::default()
                    .compression_method(method)
                    .unix_permissions(u32::from(*mode));
                w.start_file(name.get(), o).map(|()| {
                    let mut left = MAX_FILE;
                    for _ in 0..=(repeat % 64) {
                        let n = chunk.len().min(left);
                        if n == 0 || w.write_all(&chunk[..n]).is_err() {
                            break;
                        }
                        left -= n;
                    }
                })
            }
            Entry::Dir { name } => w.add_directory(name.get(), SimpleFileOptions::default()),
            Entry::Link { name, target } => {
                w.add_symlink(name.get(), target.get(), SimpleFileOptions::default())
            }
        };
    }
    let mut zip = w.finish().ok()?.into_inner();
    if !zip.is_empty() {
        for (offset, byte) in &pkg.patches {
            let i = usize::from(*offset) % zip.len();
            zip[i] = *byte;
        }
    }
    Some(zip)
}

/// Invariants of an accepted plan, independent of how the validator got there.
fn check_plan(plan: &ZipPlan, limits: &ZipLimits) {
    assert!(!plan.entries.is_empty());
    assert!(plan.unzipped_size <= limits.max_unzipped);
    let mut kinds: HashMap<&str, &EntryKind> = HashMap::new();
    let mut file_bytes = 0u64;
    for e in &plan.entries {
        let p = e.path.as_str();
        assert!(!p.starts_with('/') && !p.contains(['\\', '\0']), "{p:?}");
        assert!(p.split('/').all(|c| !matches!(c, "" | "." | "..")), "{p:?}");
        match &e.kind {
            EntryKind::File { size, .. } => file_bytes += size,
            EntryKind::Symlink { target } => {
                assert!(!target.is_empty() && !target.starts_with('/'), "{target:?}")
            }
            EntryKind::Dir => {}
        }
        if let Some(prev) = kinds.insert(p, &e.kind) {
            assert!(
                *prev == EntryKind::Dir && e.kind == EntryKind::Dir,
                "duplicate {p:?}"
            );
        }
    }
    assert!(file_bytes <= plan.unzipped_size);
    for e in &plan.entries {
        let mut ancestor = e.path.as_str();
        while let Some((parent, _)) = ancestor.rsplit_once('/') {
            let kind = kinds.get(parent);
            assert!(
                kind.is_none_or(|k| **k == EntryKind::Dir),
                "{:?} lies below a non-directory",
                e.path
            );
            ancestor = parent;
        }
    }
}

/// Walks `dir` without following symlinks; every link that resolves must stay in `root`.
fn check_links(dir: &Path, root: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in rd.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            if let Ok(real) = path.canonicalize() {
                assert!(real.starts_with(root), "{path:?} resolves to {real:?}");
            }
        } else if meta.is_dir() {
            check_links(&path, root);
        }
    }
}

/// The scratch directory, made once (tmpfs when there is one): extraction runs for
/// every accepted input.
fn scratch() -> &'static Path {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("zip-fuzz-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch directory");
        dir
    })
}

/// An accepted package must extract, and stay inside its directory.
fn check_extraction(zip: &[u8], plan: &ZipPlan) {
    let dest = scratch().join("pkg");
    let _ = std::fs::remove_dir_all(&dest);
    std::fs::create_dir(&dest).expect("extraction directory");
    if let Err(e) = extract(zip, plan, &dest) {
        panic!("a validated package fails to extract: {e}");
    }
    // Only symlinks can point outside; a package without any needs no walk.
    if plan
        .entries
        .iter()
        .any(|e| matches!(e.kind, EntryKind::Symlink { .. }))
    {
        let root = dest.canonicalize().expect("extraction directory");
        check_links(&root, &root);
    }
    let _ = std::fs::remove_dir_all(&dest);
}

/// `ZIP_FUZZ_TRACE=1`: print each verdict (to see what a corpus reaches).
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("ZIP_FUZZ_TRACE").is_some())
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    let zip = if mode % 2 == 0 {
        rest.to_vec()
    } else {
        let Ok(pkg) = Package::arbitrary_take_rest(Unstructured::new(rest)) else {
            return;
        };
        let Some(zip) = build(&pkg) else {
            return;
        };
        zip
    };
    let limits = limits();
    let verdict = validate(&zip, &limits);
    if trace() {
        match &verdict {
            Ok(plan) => eprintln!("zip_check: accepted {} entries", plan.entries.len()),
            Err(e) => eprintln!("zip_check: refused: {e}"),
        }
    }
    if let Ok(plan) = verdict {
        check_plan(&plan, &limits);
        check_extraction(&zip, &plan);
    }
});
