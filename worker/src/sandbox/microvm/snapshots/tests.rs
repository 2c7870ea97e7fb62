use super::sealed_file::{open_file, seal_file, SealError, CHUNK};
use super::*;
use std::os::unix::fs::{FileExt, MetadataExt};

fn key(name: &str, version: &str, revision: &str) -> SnapshotKey {
    SnapshotKey {
        name: name.into(),
        version: version.into(),
        revision: revision.into(),
        memory_mib: 128,
        base: "0123456789abcdef0123".into(),
    }
}

fn vault_settings(dir: &Path, key: u8) -> VaultSettings {
    VaultSettings {
        dir: dir.to_owned(),
        key: zeroize::Zeroizing::new([key; 32]),
        // The host's free space is not under test (CI disks may be fuller).
        bounds: VaultBounds {
            max_bytes: DEFAULT_VAULT_BYTES,
            keep_free_percent: 0,
        },
    }
}

/// What a vmm leaves in the scratch folder, plus a code image elsewhere.
fn take(store: &SnapshotStore, id: &str, code: &Path) -> DirGuard {
    let out = store.scratch(id).unwrap();
    std::fs::write(out.0.join("state"), b"state").unwrap();
    std::fs::write(out.0.join("mem"), b"memory").unwrap();
    std::fs::write(code, b"code image").unwrap();
    out
}

fn store_taken(
    store: &SnapshotStore,
    k: &SnapshotKey,
    id: &str,
    code: Option<&Path>,
) -> Arc<Snapshot> {
    let scratch_code = store.root.join(format!("{id}-code"));
    let out = take(store, id, &scratch_code);
    let taken = Taken {
        written: &out.0,
        code: code.map(|_| scratch_code.as_path()),
        opt: None,
    };
    store.store(k.clone(), taken).unwrap()
}

#[test]
fn snapshots_are_filed_readable_by_jails_replaced_by_revision_and_forgotten() {
    let run = tempfile::tempdir().unwrap();
    let store = SnapshotStore::new(run.path(), None).unwrap();
    let k1 = key("f", "1", "rev-a");
    let snap = store_taken(&store, &k1, "sb-1", Some(Path::new("code")));
    assert_eq!(std::fs::read(&snap.mem).unwrap(), b"memory");
    assert_eq!(
        std::fs::read(snap.code.as_ref().unwrap()).unwrap(),
        b"code image"
    );
    assert!(snap.opt.is_none());
    let dir = std::fs::metadata(snap.state.parent().unwrap()).unwrap();
    assert_eq!(
        (dir.uid(), dir.gid(), dir.mode() & 0o777),
        (0, crate::jail::JAIL_ROOT_GID, 0o710)
    );
    assert_eq!(std::fs::metadata(&snap.mem).unwrap().mode() & 0o777, 0o644);
    assert!(store.get(&k1).is_some());

    // A new revision of the same version replaces it; another version stays.
    let k2 = key("f", "1", "rev-b");
    store_taken(&store, &k2, "sb-2", None);
    assert!(store.get(&k1).is_none() && store.get(&k2).is_some());
    let k3 = key("f", "2", "rev-c");
    store_taken(&store, &k3, "sb-3", None);
    // The files of a replaced copy go once nothing holds them.
    let folder = snap.state.parent().unwrap().to_owned();
    drop(snap);
    assert!(!folder.exists());

    store.forget_function("f", Some("2"));
    assert!(store.get(&k3).is_none() && store.get(&k2).is_some());
    store.forget_function("f", None);
    assert!(store.get(&k2).is_none());
}

#[test]
fn key_folder_names_keep_to_safe_characters() {
    let k = key("my-fn_1", "12", "5b2a/../x y");
    assert_eq!(
        k.folder_name(),
        "my-fn_1.12.5b2a____x_y.128.0123456789abcdef"
    );
}

/// A file with data in its first chunk, a hole, a chunk of zeros written out, and a
/// short last chunk: `(path, bytes)`.
fn sparse_file(dir: &Path) -> (PathBuf, Vec<u8>) {
    let path = dir.join("mem");
    let len = 5 * CHUNK as u64 + 1000;
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(len).unwrap();
    f.write_all_at(b"first page", 10).unwrap();
    f.write_all_at(&vec![0u8; CHUNK], 2 * CHUNK as u64).unwrap();
    f.write_all_at(b"tail", len - 4).unwrap();
    (path.clone(), std::fs::read(&path).unwrap())
}

#[test]
fn a_sealed_file_opens_to_the_same_bytes_keeping_holes_and_storing_only_data() {
    let d = tempfile::tempdir().unwrap();
    let (src, bytes) = sparse_file(d.path());
    let key = VaultKey::new(&[7; 32]);
    let sealed = d.path().join("mem.sealed");
    let size = seal_file(&key, b"ctx", &src, &sealed).unwrap();
    assert_eq!(size, std::fs::metadata(&sealed).unwrap().len());
    // Two chunks hold data: the sealed file is about two chunks, not six.
    assert!(size < 2 * CHUNK as u64 + 4096, "{size}");
    assert!(!std::fs::read(&sealed)
        .unwrap()
        .windows(10)
        .any(|w| w == b"first page"));
    let out = d.path().join("mem.open");
    assert_eq!(
        open_file(&key, b"ctx", &sealed, &out).unwrap(),
        bytes.len() as u64
    );
    assert_eq!(std::fs::read(&out).unwrap(), bytes);
    // Only what was stored takes blocks.
    assert!(std::fs::metadata(&out).unwrap().blocks() * 512 <= 2 * CHUNK as u64 + 8192);
}

fn refused(key: &VaultKey, ctx: &[u8], sealed: &Path, out: &Path) -> String {
    match open_file(key, ctx, sealed, out) {
        Err(e @ SealError::NotAuthentic(..)) => {
            assert!(!out.exists(), "nothing unauthenticated is left behind");
            e.to_string()
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn a_sealed_file_refuses_tampering_truncation_another_key_or_slot() {
    let d = tempfile::tempdir().unwrap();
    let (src, _) = sparse_file(d.path());
    let key = VaultKey::new(&[7; 32]);
    let sealed = d.path().join("mem.sealed");
    seal_file(&key, b"ctx", &src, &sealed).unwrap();
    let good = std::fs::read(&sealed).unwrap();
    let out = d.path().join("out");
    let bad = d.path().join("bad");

    assert!(refused(&VaultKey::new(&[8; 32]), b"ctx", &sealed, &out).contains("unwrap"));
    assert!(refused(&key, b"other slot", &sealed, &out).contains("unwrap"));
    // A flipped byte in the first record's ciphertext.
    let mut flipped = good.clone();
    flipped[100] ^= 1;
    std::fs::write(&bad, &flipped).unwrap();
    assert!(refused(&key, b"ctx", &bad, &out).contains("authentication"));
    // Cut short, or the trailer gone.
    for cut in [good.len() - 1, good.len() - 28, 20] {
        std::fs::write(&bad, &good[..cut]).unwrap();
        refused(&key, b"ctx", &bad, &out);
    }
    // The first record dropped: the next one is read with the wrong nonce.
    let header = 8 + 8 + 60;
    let first = header + 12 + CHUNK + 16;
    let dropped = [&good[..header], &good[first..]].concat();
    std::fs::write(&bad, &dropped).unwrap();
    refused(&key, b"ctx", &bad, &out);
    // Bytes appended after the trailer.
    std::fs::write(&bad, [&good[..], b"x"].concat()).unwrap();
    assert!(refused(&key, b"ctx", &bad, &out).contains("after the trailer"));
}

#[test]
fn the_vault_keeps_snapshots_across_a_restart_under_the_same_key_only() {
    let run = tempfile::tempdir().unwrap();
    let vault_dir = run.path().join("vault");
    let k = key("f", "1", "rev-a");
    {
        let store = SnapshotStore::new(run.path(), Some(&vault_settings(&vault_dir, 1))).unwrap();
        let snap = store_taken(&store, &k, "sb-1", Some(Path::new("code")));
        store.seal(&k, &snap).unwrap();
        assert_eq!(store.vault_held().unwrap().0, 1);
    }
    // A new process with the same key: the snapshot opens, checked, as a new copy.
    let store = SnapshotStore::new(run.path(), Some(&vault_settings(&vault_dir, 1))).unwrap();
    assert!(store.get(&k).is_none());
    let snap = store.open_sealed(&k).unwrap().expect("in the vault");
    assert_eq!(std::fs::read(&snap.mem).unwrap(), b"memory");
    assert_eq!(
        std::fs::read(snap.code.as_ref().unwrap()).unwrap(),
        b"code image"
    );
    assert!(snap.opt.is_none());
    assert_eq!(
        std::fs::metadata(&snap.state).unwrap().mode() & 0o777,
        0o644
    );
    assert!(store.get(&k).is_some());
    // Another revision of the version is not it.
    assert!(store
        .open_sealed(&key("f", "1", "rev-b"))
        .unwrap()
        .is_none());
    drop(store);

    // Another key cannot open it: the vault removes what it cannot read.
    let store = SnapshotStore::new(run.path(), Some(&vault_settings(&vault_dir, 2))).unwrap();
    assert_eq!(store.vault_held(), Some((0, 0)));
    assert_eq!(std::fs::read_dir(&vault_dir).unwrap().count(), 0);
}

#[test]
fn sealing_that_would_eat_the_kept_free_share_is_refused_and_files_nothing() {
    let run = tempfile::tempdir().unwrap();
    let vault_dir = run.path().join("vault");
    let mut settings = vault_settings(&vault_dir, 1);
    // No file system keeps all of itself free: every sealing must be refused.
    settings.bounds.keep_free_percent = 100;
    let k = key("f", "1", "rev-a");
    let store = SnapshotStore::new(run.path(), Some(&settings)).unwrap();
    let snap = store_taken(&store, &k, "sb-1", None);
    let err = store.seal(&k, &snap).unwrap_err();
    assert!(matches!(err, VaultError::NoRoom { .. }), "{err:?}");
    assert_eq!(store.vault_held(), Some((0, 0)));
    assert_eq!(std::fs::read_dir(&vault_dir).unwrap().count(), 0);
}

#[test]
fn a_tampered_sealed_snapshot_is_refused_and_dropped() {
    let run = tempfile::tempdir().unwrap();
    let vault_dir = run.path().join("vault");
    let settings = vault_settings(&vault_dir, 1);
    let k = key("f", "1", "rev-a");
    let store = SnapshotStore::new(run.path(), Some(&settings)).unwrap();
    let snap = store_taken(&store, &k, "sb-1", None);
    store.seal(&k, &snap).unwrap();
    drop(snap);
    store.forget_function("g", None);
    let mem = vault_dir.join(k.folder_name()).join("mem");
    let mut bytes = std::fs::read(&mem).unwrap();
    let at = bytes.len() - 20;
    bytes[at] ^= 0x40;
    std::fs::write(&mem, bytes).unwrap();
    let fresh = SnapshotStore::new(&run.path().join("run2"), Some(&settings)).unwrap();
    assert!(fresh.open_sealed(&k).is_err());
    assert_eq!(fresh.vault_held().unwrap().0, 0, "dropped from the vault");
    assert!(fresh.open_sealed(&k).unwrap().is_none());
}

#[test]
fn forgetting_a_version_removes_its_sealed_copy_and_a_late_seal_is_not_filed() {
    let run = tempfile::tempdir().unwrap();
    let vault_dir = run.path().join("vault");
    let store = SnapshotStore::new(run.path(), Some(&vault_settings(&vault_dir, 1))).unwrap();
    let (k1, k2) = (key("f", "1", "a"), key("f", "2", "b"));
    for (k, id) in [(&k1, "sb-1"), (&k2, "sb-2")] {
        let snap = store_taken(&store, k, id, None);
        store.seal(k, &snap).unwrap();
    }
    store.forget_function("f", Some("1"));
    assert_eq!(store.vault_held().unwrap().0, 1);
    assert!(store.open_sealed(&k1).unwrap().is_none());
    // Sealing a copy that was forgotten meanwhile files nothing.
    let k3 = key("f", "3", "c");
    let snap = store_taken(&store, &k3, "sb-3", None);
    store.forget(&k3);
    store.seal(&k3, &snap).unwrap();
    assert_eq!(store.vault_held().unwrap().0, 1);
    let named = |d: &Path| {
        std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
            .count()
    };
    assert_eq!(named(&vault_dir), 1, "only the one filed");
    // An evicted plaintext copy is still filed: only forgets stop a seal.
    let k4 = key("g", "1", "d");
    let snap = store_taken(&store, &k4, "sb-4", None);
    store.lock().clear();
    store.seal(&k4, &snap).unwrap();
    assert!(store.vault_held().unwrap().0 == 2 && named(&vault_dir) == 2);
    // A new revision of a version replaces its sealed copy too.
    let k5 = key("g", "1", "e");
    let snap = store_taken(&store, &k5, "sb-5", None);
    store.seal(&k5, &snap).unwrap();
    assert_eq!(store.vault_held().unwrap().0, 2);
    assert!(store.open_sealed(&k4).unwrap().is_none());
}

#[tokio::test]
async fn one_version_taking_its_snapshot_does_not_hold_up_another() {
    let run = tempfile::tempdir().unwrap();
    let store = SnapshotStore::new(run.path(), None).unwrap();
    let (a, b) = (key("f", "1", "a"), key("g", "1", "b"));
    let gate_a = store.gate(&a);
    let _taking_a = gate_a.lock().await;
    assert!(store.gate(&a).try_lock().is_err(), "the same version waits");
    assert!(
        store.gate(&b).try_lock().is_ok(),
        "another version goes ahead"
    );
    drop(_taking_a);
    drop(gate_a);
    // Gates nobody holds are dropped.
    store.gate(&b);
    assert_eq!(store.taking.lock().unwrap().len(), 1);
}

#[test]
fn the_base_fingerprint_follows_digests_not_the_time_files_were_unpacked() {
    let d = tempfile::tempdir().unwrap();
    let (listed, small) = (d.path().join("rootfs.ext4"), d.path().join("vmm"));
    std::fs::write(&listed, b"image").unwrap();
    std::fs::write(&small, b"binary").unwrap();
    let manifest = |digest: &str| {
        let m = format!(
            r#"{{"images": [{{"file": "rootfs.ext4", "size": 5, "sha256": "{digest}"}}]}}"#
        );
        std::fs::write(d.path().join("manifest.json"), m).unwrap();
    };
    manifest("aa");
    let digests = DigestCache::default();
    let fp = || base_fingerprint(&[small.clone(), listed.clone()], &digests).unwrap();
    let first = fp();
    // Neither file's mtime matters (an appliance unpacks them afresh at boot)...
    let touch = |p: &Path, secs: u64| {
        let t = std::fs::FileTimes::new()
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
        std::fs::File::options()
            .write(true)
            .open(p)
            .unwrap()
            .set_times(t)
            .unwrap();
    };
    touch(&listed, 1_000_000);
    touch(&small, 1_000_000);
    assert_eq!(fp(), first);
    // ...the listed file's manifest digest does, and the small file's contents.
    manifest("bb");
    let second = fp();
    assert_ne!(second, first);
    std::fs::write(&small, b"BINARY").unwrap();
    touch(&small, 2_000_000);
    assert_ne!(fp(), second);
}

#[test]
fn files_of_two_sealings_of_one_snapshot_do_not_open_together() {
    let run = tempfile::tempdir().unwrap();
    let vault_dir = run.path().join("vault");
    let settings = vault_settings(&vault_dir, 1);
    let store = SnapshotStore::new(run.path(), Some(&settings)).unwrap();
    let k = key("f", "1", "a");
    let mem = vault_dir.join(k.folder_name()).join("mem");
    let snap = store_taken(&store, &k, "sb-1", None);
    store.seal(&k, &snap).unwrap();
    let older = std::fs::read(&mem).unwrap();
    let snap = store_taken(&store, &k, "sb-2", None);
    store.seal(&k, &snap).unwrap();
    std::fs::write(&mem, older).unwrap();
    let fresh = SnapshotStore::new(&run.path().join("run2"), Some(&settings)).unwrap();
    match fresh.open_sealed(&k) {
        Err(e) => assert!(e.is_not_authentic(), "{e}"),
        Ok(_) => panic!("a file of another sealing opened"),
    }
}

#[test]
fn the_vault_removes_what_a_crash_left_when_it_opens() {
    let run = tempfile::tempdir().unwrap();
    let vault_dir = run.path().join("vault");
    let settings = vault_settings(&vault_dir, 1);
    let k = key("f", "1", "a");
    {
        let store = SnapshotStore::new(run.path(), Some(&settings)).unwrap();
        let snap = store_taken(&store, &k, "sb-1", None);
        store.seal(&k, &snap).unwrap();
    }
    for leftover in [".tmp-f.1.a-0011", ".trash-f.1.a-22", "not-a-snapshot"] {
        std::fs::create_dir_all(vault_dir.join(leftover).join("x")).unwrap();
    }
    std::fs::write(vault_dir.join("stray-file"), b"?").unwrap();
    let store = SnapshotStore::new(run.path(), Some(&settings)).unwrap();
    let left: Vec<String> = std::fs::read_dir(&vault_dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec![k.folder_name()]);
    assert!(store.open_sealed(&k).unwrap().is_some());
}
