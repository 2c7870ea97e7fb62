//! Layers applied in order: whiteouts, opaque directories, replacement, metadata.
mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;

use common::*;
use oci_image::{FlattenLimits, Flattener};

fn base() -> Vec<u8> {
    Layer::new()
        .dir("etc/")
        .file("etc/passwd", b"root:x:0:0")
        .dir("app/")
        .raw(
            tar::EntryType::Regular,
            "app/run.sh",
            0o4755,
            b"#!/bin/sh\n",
            "",
        )
        .hard_link("app/run2.sh", "app/run.sh")
        .dir("app/lib/")
        .file("app/lib/a.so", b"a")
        .file("app/lib/b.so", b"b")
        .symlink("app/current", "lib")
        .raw(tar::EntryType::Fifo, "app/pipe", 0o644, b"", "")
        .bytes()
}

fn update() -> Vec<u8> {
    Layer::new()
        .file("app/.wh.run.sh", b"")
        .file("app/lib/.wh..wh..opq", b"")
        .file("app/lib/c.so", b"c")
        .file("etc/passwd", b"root:x:0:0\napp:x:1000:1000")
        .file("app/current", b"now a file")
        .bytes()
}

#[test]
fn whiteouts_opaque_directories_and_replacements_apply_in_layer_order() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let mut f = Flattener::new(&root, FlattenLimits::default()).unwrap();
    f.apply_layer(&base()[..]).unwrap();
    f.apply_layer(&update()[..]).unwrap();
    let stats = f.finish().unwrap();

    assert!(!root.join("app/run.sh").exists(), "whited out");
    // The hard link made in the lower layer keeps the content and the set-uid bit.
    assert_eq!(fs::read(root.join("app/run2.sh")).unwrap(), b"#!/bin/sh\n");
    assert_eq!(
        fs::metadata(root.join("app/run2.sh")).unwrap().mode() & 0o7777,
        0o4755
    );
    let mut lib: Vec<_> = fs::read_dir(root.join("app/lib"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    lib.sort();
    assert_eq!(
        lib,
        ["c.so"],
        "the opaque directory keeps only its own layer's entries"
    );
    assert_eq!(
        fs::read(root.join("etc/passwd")).unwrap(),
        b"root:x:0:0\napp:x:1000:1000"
    );
    assert_eq!(fs::read(root.join("app/current")).unwrap(), b"now a file");
    assert!(!root.join("app/pipe").exists(), "FIFOs are not created");
    let m = fs::metadata(root.join("etc/passwd")).unwrap();
    assert_eq!(
        (m.uid(), m.gid(), m.mode() & 0o7777, m.mtime() as u64),
        (1000, 1001, 0o644, MTIME)
    );
    let d = fs::metadata(root.join("app")).unwrap();
    assert_eq!(
        d.mtime() as u64,
        MTIME,
        "directory mtimes are set after all layers"
    );
    assert_eq!(
        (
            stats.layers,
            stats.whiteouts,
            stats.opaque_dirs,
            stats.hard_links,
            stats.skipped_special
        ),
        (2, 1, 1, 1, 1)
    );
    assert_eq!(stats.symlinks, 1);
}

#[test]
fn the_same_layers_flatten_to_the_same_tree() {
    let dir = tempfile::tempdir().unwrap();
    let trees: Vec<_> = (0..2)
        .map(|i| {
            let root = dir.path().join(format!("root{i}"));
            let mut f = Flattener::new(&root, FlattenLimits::default()).unwrap();
            f.apply_layer(&base()[..]).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(1100 * i));
            f.apply_layer(&update()[..]).unwrap();
            f.finish().unwrap();
            snapshot(&root)
        })
        .collect();
    assert!(trees[0].len() > 6, "{:?}", trees[0]);
    assert_eq!(trees[0], trees[1]);
}

#[test]
fn long_names_and_pax_records_name_and_own_the_next_entry() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let long = format!("deep/{}/file.txt", "d".repeat(150));
    let layer = Layer::new()
        .long_file(&long, b"long")
        .pax_file(
            &[
                ("path", b"pax/named.txt"),
                ("uid", b"4242"),
                ("mtime", b"1600000000.5"),
            ],
            "short-name",
            b"pax",
        )
        .bytes();
    let mut f = Flattener::new(&root, FlattenLimits::default()).unwrap();
    f.apply_layer(&layer[..]).unwrap();
    f.finish().unwrap();
    assert_eq!(fs::read(root.join(&long)).unwrap(), b"long");
    let m = fs::metadata(root.join("pax/named.txt")).unwrap();
    assert_eq!((m.uid(), m.mtime()), (4242, 1_600_000_000));
    assert!(!root.join("short-name").exists());
}

#[test]
fn a_root_that_is_not_empty_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("x"), b"").unwrap();
    assert!(Flattener::new(dir.path(), FlattenLimits::default()).is_err());
}
