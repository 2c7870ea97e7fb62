//! chunk-bench: what a new version of a container image costs the chunk store, and how
//! fast chunks are written and read back.
//!
//! Two versions of a real root tree (`--tree`, e.g. the Python rootfs `image-build`
//! caches in `target/image-work/python3.11-base`) differ only in one application file.
//! Each becomes an ext4 image (`mke2fs -d`, with its UUID, hash seed and clock fixed),
//! and both are cut into one store: the second version's new chunks are what an
//! application update adds. Measured twice: as mke2fs leaves the images, and after
//! every inode's ctime and atime are set to one value (`debugfs`): mke2fs copies each
//! source file's ctime, which no program can choose, and its atime, which mke2fs's own
//! reading of the file moves to the second of the build.
//!
//!   chunk-bench --tree DIR [--out FILE]
//!   chunk-bench --crypto-only [--out FILE]   (sealing and opening in memory only)

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use chunkstore::{write_image, ChunkStore, ImageManifest, ImageReader, Salt, WriteStats};
use serde_json::json;

const MTIME: &str = "@1700000000";

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A copy of `tree` with an application file of `version`, every mtime fixed.
fn version_tree(tree: &Path, at: &Path, version: u8) -> Result<(), String> {
    run(Command::new("cp").arg("-a").arg(tree).arg(at))?;
    let task = at.join("var/task");
    std::fs::create_dir_all(&task).map_err(|e| e.to_string())?;
    let app: String = (0..4000)
        .map(|i| format!("def f{i}(): return {i} * {version}\n"))
        .collect();
    std::fs::write(task.join("app.py"), app).map_err(|e| e.to_string())?;
    run(Command::new("find")
        .arg(at)
        .args(["-exec", "touch", "-h", "-d", MTIME, "{}", "+"]))?;
    Ok(())
}

fn ext4(tree: &Path, image: &Path) -> Result<(), String> {
    oci_image::ext4::mke2fs(tree, image)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// The times as `build` sets them, on an image made without; returns the seconds.
fn fix_times(image: &Path) -> Result<f64, String> {
    let t = Instant::now();
    oci_image::ext4::fix_times(image).map_err(|e| e.to_string())?;
    Ok(t.elapsed().as_secs_f64())
}

fn store_both(
    store: &ChunkStore,
    a: &Path,
    b: &Path,
) -> Result<(WriteStats, WriteStats, f64, ImageManifest), String> {
    let salt = Salt::from_bytes([7; 32]);
    let open = |p: &Path| std::fs::File::open(p).map_err(|e| e.to_string());
    let t = Instant::now();
    let (_, first) = write_image(store, &salt, open(a)?, u64::MAX).map_err(|e| e.to_string())?;
    let secs = t.elapsed().as_secs_f64();
    let (manifest, second) =
        write_image(store, &salt, open(b)?, u64::MAX).map_err(|e| e.to_string())?;
    Ok((first, second, secs, manifest))
}

/// Sequential MB/s over the whole image, then random 4 KiB reads per second; both
/// checked against the image itself.
fn reads(
    store: std::sync::Arc<ChunkStore>,
    manifest: ImageManifest,
    image: &Path,
) -> Result<serde_json::Value, String> {
    let original = std::fs::read(image).map_err(|e| e.to_string())?;
    let mut r = ImageReader::new(store.clone(), manifest.clone(), 8);
    let mut buf = vec![0u8; 1 << 20];
    let t = Instant::now();
    let mut at = 0u64;
    loop {
        let n = r.read_at(at, &mut buf).map_err(|e| e.to_string())?;
        if n == 0 {
            break;
        }
        if buf[..n] != original[at as usize..at as usize + n] {
            return Err(format!("read back differs at {at}"));
        }
        at += n as u64;
    }
    let seq = at as f64 / t.elapsed().as_secs_f64() / 1e6;
    let mut r = ImageReader::new(store, manifest, 8);
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let (count, mut small) = (4000, [0u8; 4096]);
    let t = Instant::now();
    for _ in 0..count {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let off = (x % (original.len() as u64 / 4096)) * 4096;
        r.read_at(off, &mut small).map_err(|e| e.to_string())?;
        if small[..] != original[off as usize..off as usize + 4096] {
            return Err(format!("random read differs at {off}"));
        }
    }
    Ok(json!({
        "sequential_read_mb_per_s": seq,
        "random_4k_reads_per_s": count as f64 / t.elapsed().as_secs_f64(),
        "random_4k_chunks_loaded": r.chunks_loaded(),
    }))
}

/// Sealing and opening alone, in memory, on one core: 64 distinct chunks, seven rounds.
fn crypto() -> Result<serde_json::Value, String> {
    let salt = Salt::from_bytes([9; 32]);
    // Distinct chunks (AES does not care what the bytes are).
    let chunks: Vec<Vec<u8>> = (0..64u32)
        .map(|i| {
            (0..chunkstore::CHUNK_SIZE as u32)
                .map(|j| (j.wrapping_mul(2_654_435_761) >> 13 ^ i) as u8)
                .collect()
        })
        .collect();
    let bytes = (chunks.len() * chunkstore::CHUNK_SIZE) as f64;
    let sealed = chunks
        .iter()
        .map(|c| chunkstore::convergent::seal(&salt, c).map_err(|e| e.to_string()))
        .collect::<Result<Vec<_>, _>>()?;
    let (mut seal, mut open) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        // Each sealed chunk is dropped once written, as `write_image` does.
        let t = Instant::now();
        for c in &chunks {
            let s = chunkstore::convergent::seal(&salt, c).map_err(|e| e.to_string())?;
            std::hint::black_box(s);
        }
        seal.push(bytes / t.elapsed().as_secs_f64() / 1e6);
        let t = Instant::now();
        for s in &sealed {
            chunkstore::convergent::open(&s.id(), s.key(), s.bytes().to_vec())
                .map_err(|e| e.to_string())?;
        }
        open.push(bytes / t.elapsed().as_secs_f64() / 1e6);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok(json!({
        "seal_mb_per_s_one_core": median(&mut seal),
        "open_mb_per_s_one_core": median(&mut open),
        "seal_rounds": seal,
        "open_rounds": open,
        "note": "medians of 7 rounds; seal = keyed BLAKE3 key derivation + AES-256-GCM (aws-lc) + BLAKE3 id; open = BLAKE3 id check + AES-256-GCM, from a copy of the sealed bytes",
    }))
}

fn bench(tree: &Path, work: &Path) -> Result<serde_json::Value, String> {
    std::fs::create_dir_all(work).map_err(|e| e.to_string())?;
    let (v1, v2) = (work.join("v1"), work.join("v2"));
    version_tree(tree, &v1, 1)?;
    version_tree(tree, &v2, 2)?;
    let (i1, i2) = (work.join("v1.ext4"), work.join("v2.ext4"));
    ext4(&v1, &i1)?;
    ext4(&v2, &i2)?;
    let mut out = serde_json::Map::new();
    for fixed in [false, true] {
        let mut fix_secs = 0.0;
        if fixed {
            fix_secs = fix_times(&i1)? + fix_times(&i2)?;
        }
        let dir = work.join(format!("store-{fixed}"));
        let store = std::sync::Arc::new(ChunkStore::open(&dir).map_err(|e| e.to_string())?);
        let (first, second, secs, manifest) = store_both(&store, &i1, &i2)?;
        let mut v = json!({
            "image_bytes": first.bytes,
            "chunks": first.chunks,
            "zero_chunks": first.zero_chunks,
            "first_version_stored_bytes": first.new_bytes_stored,
            "first_version_write_mb_per_s": first.bytes as f64 / secs / 1e6,
            "second_version_new_chunks": second.new_chunks,
            "second_version_new_bytes": second.new_bytes_stored,
            "second_version_new_fraction_of_nonzero": second.new_chunks as f64 / (second.chunks - second.zero_chunks).max(1) as f64,
            "time_fix_seconds_both_images": fix_secs,
        });
        if fixed {
            v["reads"] = reads(store, manifest, &i2)?;
        }
        out.insert(
            if fixed {
                "times_fixed"
            } else {
                "as_mke2fs_writes"
            }
            .into(),
            v,
        );
    }
    out.insert("crypto".into(), crypto()?);
    Ok(
        json!({ "bench": "chunk-bench", "tree": tree, "chunk_size": chunkstore::CHUNK_SIZE, "results": out }),
    )
}

const USAGE: &str = "usage: chunk-bench (--tree DIR | --crypto-only) [--out FILE]";

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut tree, mut out) = (None, PathBuf::from("target/bench/chunk-bench.json"));
    let mut crypto_only = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--tree" => tree = args.next().map(PathBuf::from),
            "--out" => out = args.next().map(PathBuf::from).unwrap_or(out),
            "--crypto-only" => crypto_only = true,
            _ => {
                eprintln!("{USAGE}");
                std::process::exit(2);
            }
        }
    }
    let result = match (tree, crypto_only) {
        (_, true) => {
            crypto().map(|c| json!({ "bench": "chunk-bench", "results": { "crypto": c } }))
        }
        (Some(tree), false) => {
            let work = std::env::temp_dir().join(format!("chunk-bench-{}", std::process::id()));
            let result = bench(&tree, &work);
            if std::env::var_os("CHUNK_BENCH_KEEP").is_none() {
                let _ = std::fs::remove_dir_all(&work);
            }
            result
        }
        (None, false) => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    match result {
        Ok(report) => {
            let text = serde_json::to_string_pretty(&report).unwrap_or_default();
            println!("{text}");
            if let Some(dir) = out.parent() {
                let _ = std::fs::create_dir_all(dir);
            }
            if let Err(e) = std::fs::write(&out, text) {
                eprintln!("chunk-bench: writing {}: {e}", out.display());
                std::process::exit(1);
            }
        }
        Err(e) => {
            eprintln!("chunk-bench: {e}");
            std::process::exit(1);
        }
    }
}
