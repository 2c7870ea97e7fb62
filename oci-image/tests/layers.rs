//! Media types and decoders: gzip and zstd layers flatten to the same tree as plain.
mod common;

use std::io::Write;

use common::*;
use oci_image::{Compression, FlattenLimits, Flattener, LayerError};

fn layer() -> Vec<u8> {
    Layer::new()
        .dir("bin/")
        .file("bin/app", &[0x5a; 100_000])
        .symlink("app", "bin/app")
        .bytes()
}

fn flatten_blob(
    root: &std::path::Path,
    media_type: &str,
    blob: &[u8],
) -> std::collections::BTreeMap<String, String> {
    let c = Compression::from_media_type(media_type).unwrap();
    let mut f = Flattener::new(root, FlattenLimits::default()).unwrap();
    f.apply_layer(c.decoder(blob).unwrap()).unwrap();
    f.finish().unwrap();
    snapshot(root)
}

#[test]
fn plain_gzip_and_zstd_layers_give_the_same_tree() {
    let dir = tempfile::tempdir().unwrap();
    let tar = layer();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let zst =
        ruzstd::encoding::compress_to_vec(&tar[..], ruzstd::encoding::CompressionLevel::Fastest);
    let plain = flatten_blob(
        &dir.path().join("p"),
        "application/vnd.oci.image.layer.v1.tar",
        &tar,
    );
    let docker = flatten_blob(
        &dir.path().join("d"),
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        &gz,
    );
    let oci_gz = flatten_blob(
        &dir.path().join("g"),
        "application/vnd.oci.image.layer.v1.tar+gzip",
        &gz,
    );
    let oci_zst = flatten_blob(
        &dir.path().join("z"),
        "application/vnd.oci.image.layer.v1.tar+zstd",
        &zst,
    );
    assert_eq!(plain.len(), 3);
    assert_eq!(plain, docker);
    assert_eq!(plain, oci_gz);
    assert_eq!(plain, oci_zst);
}

#[test]
fn unknown_media_types_and_bad_frames_are_refused() {
    for t in [
        "application/vnd.oci.image.config.v1+json",
        "application/x-tar+bzip2",
        "",
    ] {
        assert!(
            matches!(
                Compression::from_media_type(t),
                Err(LayerError::MediaType(_))
            ),
            "{t}"
        );
    }
    assert!(Compression::Zstd.decoder(&b"not zstd"[..]).is_err());
    // A gzip layer that is not gzip fails when read, as a tar error.
    let dir = tempfile::tempdir().unwrap();
    let mut f = Flattener::new(dir.path().join("r"), FlattenLimits::default()).unwrap();
    let r = f.apply_layer(Compression::Gzip.decoder(&b"not gzip at all"[..]).unwrap());
    assert!(r.is_err());
}
