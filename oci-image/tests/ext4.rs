//! The ext4 image of a flattened root is reproducible: the same layers flattened at
//! different times give the same bytes (what lets the chunk store share an image's
//! chunks with every function made from it).
mod common;

use std::process::Command;

use common::*;
use oci_image::{FlattenLimits, Flattener};

fn layer() -> Vec<u8> {
    // Directories implied by their entries (`deep/`, `deep/er/`) as well as listed
    // ones, a symbolic link, a hard link and an empty file.
    Layer::new()
        .dir("etc/")
        .file("etc/hostname", b"image\n")
        .file("deep/er/still/file.txt", b"x".repeat(70_000).as_slice())
        .symlink("etc/link", "hostname")
        .hard_link("etc/again", "etc/hostname")
        .file("empty", b"")
        .bytes()
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

#[test]
fn same_layers_same_image_bytes() {
    common::registry::require_tool("mke2fs");
    common::registry::require_tool("debugfs");
    let dir = tempfile::tempdir().unwrap();
    let first = image_of(dir.path(), "a");
    // A second later: any time taken from the clock would show.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let second = image_of(dir.path(), "b");
    assert_eq!(first.len(), second.len());
    let differing = first
        .chunks(4096)
        .zip(second.chunks(4096))
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(i, _)| i)
        .collect::<Vec<_>>();
    assert!(differing.is_empty(), "blocks differ: {differing:?}");
    let listing = Command::new("debugfs")
        .args(["-R", "ls -l /deep/er/still"])
        .arg(dir.path().join("a.ext4"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&listing.stdout).contains("file.txt"));
}
