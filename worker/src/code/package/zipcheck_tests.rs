use std::io::{Cursor, Write as _};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use super::*;

enum E<'a> {
    F(&'a str, &'a [u8], u32),
    D(&'a str),
    L(&'a str, &'a str),
}

fn build(entries: &[E<'_>], method: CompressionMethod) -> Vec<u8> {
    let mut w = ZipWriter::new(Cursor::new(Vec::new()));
    for e in entries {
        match e {
            E::F(name, data, mode) => {
                let o = SimpleFileOptions::default()
                    .compression_method(method)
                    .unix_permissions(*mode);
                w.start_file(*name, o).expect("start");
                w.write_all(data).expect("write");
            }
            E::D(name) => w
                .add_directory(*name, SimpleFileOptions::default())
                .expect("dir"),
            E::L(name, target) => w
                .add_symlink(*name, *target, SimpleFileOptions::default())
                .expect("link"),
        }
    }
    w.finish().expect("finish").into_inner()
}

fn check(entries: &[E<'_>]) -> Result<ZipPlan, ZipError> {
    validate(
        &build(entries, CompressionMethod::Deflated),
        &ZipLimits::default(),
    )
}

#[test]
fn accepts_a_normal_package_and_keeps_exec_bits() {
    let plan = check(&[
        E::F("bootstrap", b"#!/bin/sh\n", 0o755),
        E::D("lib/"),
        E::F("lib/a.py", b"print(1)", 0o644),
        E::F("./lib//b.py", b"x", 0o644),
        E::L("lib/link", "a.py"),
        E::L("up", "lib/../lib/a.py"),
    ])
    .expect("valid");
    let by_path = |p: &str| {
        plan.entries
            .iter()
            .find(|e| e.path == p)
            .map(|e| e.kind.clone())
    };
    assert_eq!(
        by_path("bootstrap"),
        Some(EntryKind::File {
            executable: true,
            size: 10
        })
    );
    assert_eq!(
        by_path("lib/a.py"),
        Some(EntryKind::File {
            executable: false,
            size: 8
        })
    );
    assert!(by_path("lib/b.py").is_some());
    assert_eq!(plan.unzipped_size, 10 + 8 + 1 + 4 + 15);
}

#[test]
fn bootstrap_is_executable_even_without_unix_mode() {
    let plan = check(&[E::F("bootstrap", b"x", 0o644)]).expect("valid");
    assert!(matches!(
        plan.entries[0].kind,
        EntryKind::File {
            executable: true,
            ..
        }
    ));
}

#[test]
fn rejects_traversal_absolute_and_bad_names() {
    assert!(matches!(
        check(&[E::F("../evil", b"x", 0o644)]),
        Err(ZipError::ParentTraversal(_))
    ));
    assert!(matches!(
        check(&[E::F("a/../../evil", b"x", 0o644)]),
        Err(ZipError::ParentTraversal(_))
    ));
    assert!(matches!(
        check(&[E::F("a\\..\\evil", b"x", 0o644)]),
        Err(ZipError::ParentTraversal(_))
    ));
    assert!(matches!(
        check(&[E::F("/etc/passwd", b"x", 0o644)]),
        Err(ZipError::AbsolutePath(_))
    ));
    assert!(matches!(
        check(&[E::F("C:/x", b"x", 0o644)]),
        Err(ZipError::AbsolutePath(_))
    ));
    assert!(matches!(
        check(&[E::F("./", b"x", 0o644)]),
        Err(ZipError::BadName(_))
    ));
}

/// Found by the `zip_check` fuzz target: these passed validation, then extraction
/// failed with ENAMETOOLONG.
#[test]
fn rejects_names_and_link_targets_the_file_system_cannot_hold() {
    let long_part = "a".repeat(MAX_NAME_COMPONENT + 1);
    let r = check(&[E::F(&long_part, b"x", 0o644)]);
    assert!(matches!(r, Err(ZipError::NameTooLong { .. })), "{r:?}");
    let deep = vec!["d".repeat(200); 12].join("/");
    assert!(deep.len() > MAX_ENTRY_PATH);
    let r = check(&[E::F(&deep, b"x", 0o644)]);
    assert!(matches!(r, Err(ZipError::NameTooLong { .. })), "{r:?}");
    // The error quotes only the start of a long name.
    let msg = r.map(|_| ()).unwrap_err().to_string();
    assert!(msg.len() < 300, "{msg}");

    // Right at the limits is fine.
    let part = "b".repeat(MAX_NAME_COMPONENT);
    let at_limit = [part.as_str(); 8].join("/");
    assert!(at_limit.len() <= MAX_ENTRY_PATH);
    assert!(check(&[E::F(&at_limit, b"x", 0o644)]).is_ok());

    // symlink(2) refuses targets of PATH_MAX (4096) bytes.
    let target = "t/".repeat(2048);
    let r = check(&[E::L("l", &target), E::F("t", b"x", 0o644)]);
    assert!(matches!(r, Err(ZipError::Corrupt { .. })), "{r:?}");
    let r = check(&[E::L("l", &target[..4095]), E::D("t/")]);
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn rejects_escaping_symlinks_including_chains() {
    assert!(matches!(
        check(&[E::L("l", "../../etc/passwd")]),
        Err(ZipError::SymlinkEscape(_))
    ));
    assert!(matches!(
        check(&[E::L("l", "/etc/passwd")]),
        Err(ZipError::SymlinkEscape(_))
    ));
    // Each link alone looks harmless lexically; followed, m escapes.
    let chain = check(&[E::D("sub/"), E::L("sub/l", ".."), E::L("m", "sub/l/..")]);
    assert!(matches!(chain, Err(ZipError::SymlinkEscape(ref p)) if p == "m"));
    let looped = check(&[E::L("a", "b"), E::L("b", "a")]);
    assert!(matches!(looped, Err(ZipError::SymlinkEscape(_))));
}

#[test]
fn rejects_a_name_repeated_exactly() {
    let z = crate::code::package::central_dir::tests::raw_zip(&[
        ("bootstrap", b"1"),
        ("bootstrap", b"2"),
    ]);
    assert!(
        matches!(validate(&z, &ZipLimits::default()), Err(ZipError::Duplicate(n)) if n == "bootstrap")
    );
}

#[test]
fn rejects_duplicates_and_entries_below_links() {
    let dup = check(&[E::F("a", b"1", 0o644), E::F("./a", b"2", 0o644)]);
    assert!(matches!(dup, Err(ZipError::Duplicate(_))));
    let under_file = check(&[E::F("a", b"1", 0o644), E::F("a/b", b"2", 0o644)]);
    assert!(matches!(under_file, Err(ZipError::Duplicate(_))));
    let below = check(&[E::D("d/"), E::L("l", "d"), E::F("l/x", b"2", 0o644)]);
    assert!(matches!(below, Err(ZipError::BelowSymlink(_))));
}

#[test]
fn rejects_zip_bombs_and_size_limits() {
    let zeros = vec![0u8; 8 * 1024 * 1024];
    let bomb = check(&[E::F("zeros", &zeros, 0o644)]);
    assert!(matches!(bomb, Err(ZipError::Bomb { .. })), "{bomb:?}");

    let limits = ZipLimits {
        max_unzipped: 1000,
        ..ZipLimits::default()
    };
    let big = build(
        &[E::F("a", &[1u8; 600], 0o644), E::F("b", &[2u8; 600], 0o644)],
        CompressionMethod::Stored,
    );
    assert!(matches!(
        validate(&big, &limits),
        Err(ZipError::UnzippedTooLarge { .. })
    ));

    let limits = ZipLimits {
        max_zipped: 100,
        ..ZipLimits::default()
    };
    assert!(matches!(
        validate(&big, &limits),
        Err(ZipError::ZippedTooLarge { .. })
    ));

    let limits = ZipLimits {
        max_entries: 1,
        ..ZipLimits::default()
    };
    assert!(matches!(
        validate(&big, &limits),
        Err(ZipError::TooManyEntries { .. })
    ));
}

#[test]
fn rejects_garbage_and_corruption() {
    assert!(matches!(
        validate(b"not a zip", &ZipLimits::default()),
        Err(ZipError::NotAZip(_))
    ));
    assert!(matches!(
        validate(b"", &ZipLimits::default()),
        Err(ZipError::NotAZip(_))
    ));
    let mut z = build(
        &[E::F("data.txt", b"HELLO-HELLO-HELLO", 0o644)],
        CompressionMethod::Stored,
    );
    let at = z
        .windows(5)
        .position(|w| w == b"HELLO")
        .expect("stored data");
    z[at] = b'J';
    assert!(matches!(
        validate(&z, &ZipLimits::default()),
        Err(ZipError::Corrupt { .. })
    ));
}

#[test]
fn rejects_overlapping_entries() {
    // Two central-directory records pointing at the same local entry: the
    // core of non-recursive zip bombs.
    let z = build(&[E::F("a", b"payload", 0o644)], CompressionMethod::Stored);
    let cd = z
        .windows(4)
        .rposition(|w| w == b"PK\x01\x02")
        .expect("central dir");
    let eocd = z
        .windows(4)
        .rposition(|w| w == b"PK\x05\x06")
        .expect("eocd");
    let record = z[cd..eocd].to_vec();
    let mut second = record.clone();
    // Rename the copy so it is not a duplicate path ("a" -> "b").
    let name_at = 46;
    second[name_at] = b'b';
    let mut out = z[..eocd].to_vec();
    out.extend_from_slice(&second);
    let mut tail = z[eocd..].to_vec();
    let count = u16::from_le_bytes([tail[8], tail[9]]) + 1;
    tail[8..10].copy_from_slice(&count.to_le_bytes());
    tail[10..12].copy_from_slice(&count.to_le_bytes());
    let size = u32::from_le_bytes([tail[12], tail[13], tail[14], tail[15]]) + record.len() as u32;
    tail[12..16].copy_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&tail);
    let r = validate(&out, &ZipLimits::default());
    assert!(
        matches!(r, Err(ZipError::Overlap(_)) | Err(ZipError::NotAZip(_))),
        "{r:?}"
    );
}

#[test]
fn mutated_archives_never_panic() {
    let base = build(
        &[
            E::F("bootstrap", b"#!/bin/sh\necho hello hello hello\n", 0o755),
            E::D("lib/"),
            E::F("lib/a.txt", &[b'a'; 300], 0o644),
            E::L("lib/l", "a.txt"),
        ],
        CompressionMethod::Deflated,
    );
    let mut x: u32 = 0x1234_5678;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        x as usize
    };
    let mut rejected = 0;
    for _ in 0..3000 {
        let mut z = base.clone();
        for _ in 0..(1 + next() % 4) {
            let i = next() % z.len();
            z[i] = (next() & 0xff) as u8;
        }
        if next() % 8 == 0 {
            z.truncate(next() % z.len());
        }
        if validate(&z, &ZipLimits::default()).is_err() {
            rejected += 1;
        }
    }
    assert!(
        rejected > 100,
        "mutations should mostly be caught (rejected {rejected})"
    );
}
