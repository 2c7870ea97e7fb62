//! A container image mounted from the chunk store (needs root: a loop device and a
//! mount): the tree reads back, nothing is left once the mount goes, and a chunk
//! corrupted at rest fails the mount with an error instead of serving wrong bytes.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use chunkstore::{write_image, ChunkStore, Salt};
use worker::code::image::mount::MountedImage;
use worker::code::image::{ImageError, ImagePackage, ImageRun};

fn stored_image(dir: &Path) -> (Arc<ChunkStore>, ImagePackage) {
    let tree = dir.join("tree");
    std::fs::create_dir_all(tree.join("var/task")).unwrap();
    std::fs::write(tree.join("var/task/app.txt"), b"from the image\n").unwrap();
    std::fs::write(tree.join("big.bin"), vec![7u8; 3 << 20]).unwrap();
    let image = dir.join("image.ext4");
    let out = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-d"])
        .arg(&tree)
        .arg(&image)
        .arg("16M")
        .output()
        .expect("mke2fs (e2fsprogs) is installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let store = Arc::new(ChunkStore::open(dir.join("chunks")).unwrap());
    let file = std::fs::File::open(&image).unwrap();
    let (manifest, _) = write_image(&store, &Salt::from_bytes([3; 32]), file, 1 << 30).unwrap();
    let run = ImageRun {
        cmd: vec!["app".into()],
        ..ImageRun::default()
    };
    (store, ImagePackage { run, manifest })
}

fn mounted(path: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines()
        .any(|l| l.split_whitespace().nth(4) == path.to_str())
}

#[test]
fn image_mounts_read_only_and_goes_away_cleanly() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "this test needs root (loop devices)");
    let dir = tempfile::tempdir().unwrap();
    let (store, package) = stored_image(dir.path());
    let at = dir.path().join("img");
    let image = MountedImage::create(&at, store.clone(), package.clone()).unwrap();
    let root = image.root().to_owned();
    assert!(mounted(&root));
    assert_eq!(
        std::fs::read(root.join("var/task/app.txt")).unwrap(),
        b"from the image\n"
    );
    assert_eq!(
        std::fs::read(root.join("big.bin")).unwrap(),
        vec![7u8; 3 << 20]
    );
    // Read-only, and the plaintext file behind it has no name left.
    assert!(std::fs::write(root.join("new.txt"), b"x").is_err());
    assert!(!at.join("image.ext4").exists());
    drop(image);
    assert!(!mounted(&root) && !at.exists());

    // One stored chunk damaged: the mount fails with the chunk's error and leaves nothing.
    let (id, _) = store.list().unwrap()[0];
    let hex = id.to_hex();
    let chunk = dir.path().join("chunks").join(&hex[..2]).join(&hex);
    let mut bytes = std::fs::read(&chunk).unwrap();
    bytes[100] ^= 1;
    std::fs::write(&chunk, bytes).unwrap();
    let err = MountedImage::create(&at, store, package)
        .err()
        .expect("refused");
    assert!(matches!(err, ImageError::Read(_)), "{err}");
    assert!(!err.is_transient());
    assert!(!mounted(&at.join("root")) && !at.exists());
}
