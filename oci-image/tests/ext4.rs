//! The ext4 image of a flattened root is reproducible: the same layers flattened at
//! different times give the same bytes (what lets the chunk store share an image's
//! chunks with every function made from it).
mod common;

use std::process::Command;

use common::*;
use oci_image::{FlattenLimits, Flattener};

/// Names a directory of `many/` holds: enough that two file systems list them in
/// different orders and report different directory sizes (ext4 in whole blocks, tmpfs
/// by entry), with upper case, `_` and digits, which sort differently by locale.
fn many_names() -> Vec<String> {
    (0..400)
        .map(|i| match i % 4 {
            0 => format!("f{i}"),
            1 => format!("F{i}"),
            2 => format!("_{i}"),
            _ => format!("{i}x"),
        })
        .collect()
}

fn layer() -> Vec<u8> {
    // Directories implied by their entries (`deep/`, `deep/er/`) as well as listed
    // ones, a symbolic link, a hard link and an empty file.
    let mut layer = Layer::new()
        .dir("etc/")
        .file("etc/hostname", b"image\n")
        .file("deep/er/still/file.txt", b"x".repeat(70_000).as_slice())
        .symlink("etc/link", "hostname")
        .hard_link("etc/again", "etc/hostname")
        .file("empty", b"");
    for name in many_names() {
        layer = layer.file(&format!("many/{name}"), name.as_bytes());
    }
    layer.bytes()
}

fn listing(dir: &std::path::Path) -> Vec<std::ffi::OsString> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect()
}

fn image_of(dir: &std::path::Path, name: &str) -> Vec<u8> {
    let root = dir.join(name);
    let mut f = Flattener::new(&root, FlattenLimits::default()).unwrap();
    f.apply_layer(layer().as_slice()).unwrap();
    f.finish().unwrap();
    let image = dir.join(format!("{name}.ext4"));
    oci_image::ext4::build(&root, &image).unwrap();
    std::fs::read(&image).unwrap()
}

fn assert_same_blocks(first: &[u8], second: &[u8]) {
    assert_eq!(first.len(), second.len());
    let differing = first
        .chunks(4096)
        .zip(second.chunks(4096))
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| i)
        .collect::<Vec<_>>();
    assert!(differing.is_empty(), "blocks differ: {differing:?}");
}

#[test]
fn same_layers_same_image_bytes() {
    common::registry::require_tool("mke2fs");
    common::registry::require_tool("debugfs");
    let dir = tempfile::tempdir().unwrap();
    let first = image_of(dir.path(), "a");
    // A second later: any time taken from the clock would show.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = image_of(dir.path(), "b");
    assert_same_blocks(&first, &second);
    let listing = Command::new("debugfs")
        .args(["-R", "ls -l /deep/er/still"])
        .arg(dir.path().join("a.ext4"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&listing.stdout).contains("file.txt"));
}

/// Another host flattens on another file system, which lists directories in another
/// order (ext4 by name hash, tmpfs newest first): the image is still the same.
#[test]
fn same_layers_on_another_file_system_same_image_bytes() {
    common::registry::require_tool("mke2fs");
    common::registry::require_tool("debugfs");
    let shm = std::path::Path::new("/dev/shm");
    assert!(shm.is_dir(), "this test needs a tmpfs at /dev/shm");
    let on_disk = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let in_memory = tempfile::tempdir_in(shm).unwrap();
    let first = image_of(on_disk.path(), "a");
    let second = image_of(in_memory.path(), "a");
    // The premises: the two trees list `many/` in different orders, and report
    // different sizes for it.
    let (a, b) = (
        listing(&on_disk.path().join("a/many")),
        listing(&in_memory.path().join("a/many")),
    );
    assert_eq!(a.len(), many_names().len());
    assert_ne!(
        a, b,
        "both file systems list the directory in the same order"
    );
    let dir_size = |d: &tempfile::TempDir| d.path().join("a/many").metadata().unwrap().len();
    assert_ne!(
        dir_size(&on_disk),
        dir_size(&in_memory),
        "same directory sizes"
    );
    assert_same_blocks(&first, &second);
}
