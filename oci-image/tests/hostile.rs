//! Layers that try to reach outside the root, or to exhaust memory or disk: refused
//! with a clear error, and nothing outside the root changes.
mod common;

use std::fs;

use common::*;
use oci_image::{ExtensionError, FlattenError, FlattenLimits, Flattener, PathError};

struct Scene {
    _dir: tempfile::TempDir,
    root: std::path::PathBuf,
    outside: std::path::PathBuf,
}

fn scene() -> Scene {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("keep"), b"host file").unwrap();
    Scene {
        root: dir.path().join("root"),
        outside,
        _dir: dir,
    }
}

fn flatten(root: &std::path::Path, layers: &[Vec<u8>]) -> Result<(), FlattenError> {
    let mut f = Flattener::new(root, FlattenLimits::default())?;
    for l in layers {
        f.apply_layer(&l[..])?;
    }
    f.finish().map(drop)
}

fn assert_outside_untouched(s: &Scene) {
    let names: Vec<_> = fs::read_dir(&s.outside)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["keep"]);
    assert_eq!(fs::read(s.outside.join("keep")).unwrap(), b"host file");
}

#[test]
fn a_parent_component_in_an_entry_name_is_refused() {
    let s = scene();
    for name in ["../outside/evil", "a/../../outside/evil"] {
        let err = flatten(
            &s.root.join(name.len().to_string()),
            &[Layer::new().file(name, b"x").bytes()],
        );
        assert!(
            matches!(
                err,
                Err(FlattenError::Path {
                    source: PathError::Escapes(_),
                    ..
                })
            ),
            "{err:?}"
        );
    }
    assert_outside_untouched(&s);
}

#[test]
fn entries_through_symlinks_land_inside_the_root() {
    let s = scene();
    let outside = s.outside.display().to_string();
    let layer = Layer::new()
        .symlink("abs", &outside)
        .symlink("up", "../../../../../..")
        .file("abs/evil", b"x")
        .file("up/escaped", b"y")
        .file("abs/.wh.keep", b"")
        .symlink("up/keep-link", &format!("{outside}/keep"))
        .bytes();
    flatten(&s.root, &[layer]).unwrap();
    assert_outside_untouched(&s);
    assert_eq!(
        fs::read(s.root.join(outside.trim_start_matches('/')).join("evil")).unwrap(),
        b"x"
    );
    assert_eq!(fs::read(s.root.join("escaped")).unwrap(), b"y");
}

#[test]
fn hard_links_must_name_a_file_already_in_the_image() {
    let s = scene();
    let outside = s.outside.display().to_string();
    let cases = [
        Layer::new().hard_link("h", "../outside/keep").bytes(),
        Layer::new()
            .symlink("l", &format!("{outside}/keep"))
            .hard_link("h", "l")
            .bytes(),
        Layer::new().hard_link("h", "missing").bytes(),
        Layer::new().dir("d/").hard_link("h", "d").bytes(),
    ];
    for (i, layer) in cases.into_iter().enumerate() {
        let err = flatten(&s.root.join(i.to_string()), &[layer]).unwrap_err();
        assert!(
            matches!(
                err,
                FlattenError::HardLink { .. } | FlattenError::Path { .. }
            ),
            "case {i}: {err}"
        );
    }
    assert_outside_untouched(&s);
}

#[test]
fn whiteouts_of_dot_names_are_refused() {
    let s = scene();
    for (i, name) in ["a/.wh.", "a/.wh..", "a/.wh..."].iter().enumerate() {
        let err = flatten(
            &s.root.join(i.to_string()),
            &[Layer::new().file(name, b"").bytes()],
        );
        assert!(
            matches!(err, Err(FlattenError::Path { .. })),
            "{name}: {err:?}"
        );
    }
}

#[test]
fn oversized_extension_headers_and_disagreeing_sizes_are_refused() {
    let s = scene();
    let huge = vec![b'a'; 2 << 20];
    let big_pax = Layer::new()
        .pax_file(&[("comment", &huge)], "f", b"x")
        .bytes();
    let err = flatten(&s.root.join("1"), &[big_pax]).unwrap_err();
    assert!(
        matches!(
            err,
            FlattenError::Extension {
                source: ExtensionError::TooLarge { kind: 'x' },
                ..
            }
        ),
        "{err}"
    );
    let lying = Layer::new()
        .pax_file(&[("size", b"5000")], "f", b"x")
        .bytes();
    let err = flatten(&s.root.join("2"), &[lying]).unwrap_err();
    assert!(
        matches!(
            err,
            FlattenError::Extension {
                source: ExtensionError::SizeMismatch { .. },
                ..
            }
        ),
        "{err}"
    );
    let sparse = Layer::new()
        .pax_file(&[("GNU.sparse.major", b"1")], "f", b"x")
        .bytes();
    let err = flatten(&s.root.join("3"), &[sparse]).unwrap_err();
    assert!(
        matches!(
            err,
            FlattenError::Extension {
                source: ExtensionError::Sparse,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn the_byte_and_entry_limits_hold() {
    let s = scene();
    let layer = Layer::new()
        .file("a", &[1; 3000])
        .file("b", &[2; 3000])
        .bytes();
    let limits = FlattenLimits {
        max_bytes: 5000,
        max_entries: 100,
    };
    let mut f = Flattener::new(s.root.join("1"), limits).unwrap();
    let err = f.apply_layer(&layer[..]).unwrap_err();
    assert!(
        matches!(err, FlattenError::TooLarge { limit: 5000 }),
        "{err}"
    );
    let limits = FlattenLimits {
        max_bytes: 1 << 20,
        max_entries: 1,
    };
    let mut f = Flattener::new(s.root.join("2"), limits).unwrap();
    let err = f.apply_layer(&layer[..]).unwrap_err();
    assert!(
        matches!(err, FlattenError::TooManyEntries { limit: 1 }),
        "{err}"
    );
}

#[test]
fn a_truncated_layer_is_an_error() {
    let s = scene();
    let layer = Layer::new().file("a", &[7; 5000]).bytes();
    let err = flatten(&s.root, &[layer[..2048].to_vec()]).unwrap_err();
    assert!(matches!(err, FlattenError::Tar { .. }), "{err}");
}
