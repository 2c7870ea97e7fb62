use super::*;

#[test]
fn globs_like_fnmatch() {
    let yes = [
        (
            "pci:v00001AF4d00001041sv*sd*bc*sc*i*",
            "pci:v00001AF4d00001041sv00001AF4sd00001100bc02sc00i00",
        ),
        ("virtio:d00000002v*", "virtio:d00000002v00001AF4"),
        (
            "cpu:type:x86,ven*fam*mod*:feature:*00C2*",
            "cpu:type:x86,ven0002fam0019mod0001:feature:,0000,00C2,0100",
        ),
        ("a?c", "abc"),
        ("x[0-9]y", "x5y"),
        ("x[!0-9]y", "xay"),
        ("*", ""),
    ];
    for (p, t) in yes {
        assert!(glob_match(p.as_bytes(), t.as_bytes()), "{p} vs {t}");
    }
    let no = [
        ("virtio:d00000002v*", "virtio:d00000001v00001AF4"),
        ("a?c", "ac"),
        ("x[0-9]y", "xay"),
        ("x[!0-9]y", "x5y"),
        ("abc", "abcd"),
    ];
    for (p, t) in no {
        assert!(!glob_match(p.as_bytes(), t.as_bytes()), "{p} vs {t}");
    }
}

fn index_dir() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(
        d.path().join("modules.dep"),
        "kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko kernel/fs/mbcache.ko kernel/fs/jbd2/jbd2.ko\n\
         kernel/fs/jbd2/jbd2.ko:\nkernel/fs/mbcache.ko:\nkernel/lib/crc16.ko:\n\
         kernel/drivers/block/virtio_blk.ko:\nkernel/arch/x86/kvm/kvm-amd.ko: kernel/arch/x86/kvm/kvm.ko kernel/drivers/crypto/ccp/ccp.ko\n\
         kernel/arch/x86/kvm/kvm.ko: kernel/virt/lib/irqbypass.ko\nkernel/virt/lib/irqbypass.ko:\nkernel/drivers/crypto/ccp/ccp.ko:\n",
    )
    .unwrap();
    std::fs::write(
        d.path().join("modules.alias"),
        "# Aliases extracted from modules themselves.\nalias virtio:d00000002v* virtio_blk\n\
         alias cpu:type:x86,ven*fam*mod*:feature:*00C2* kvm_amd\n",
    )
    .unwrap();
    std::fs::write(d.path().join("modules.builtin"), "kernel/lib/crc16.ko\n").unwrap();
    std::fs::write(
        d.path().join("modules.softdep"),
        "# Soft dependencies\nsoftdep ext4 pre: crypto-crc32c post: virtio_blk\n",
    )
    .unwrap();
    d
}

#[test]
fn soft_dependencies_and_alias_names_resolve() {
    let d = index_dir();
    let idx = ModuleIndex::load(d.path()).unwrap();
    assert_eq!(
        idx.softdeps["ext4"],
        (
            vec!["crypto-crc32c".to_owned()],
            vec!["virtio_blk".to_owned()]
        )
    );
    assert_eq!(idx.resolve("virtio-blk"), ["virtio_blk"]);
    assert_eq!(idx.resolve("virtio:d00000002v00001AF4"), ["virtio_blk"]);
    assert_eq!(idx.resolve("crc16"), ["crc16"]);
    assert!(idx.resolve("crypto-none").is_empty());
}

#[test]
fn dependencies_load_first_and_builtins_are_skipped() {
    let d = index_dir();
    let idx = ModuleIndex::load(d.path()).unwrap();
    assert_eq!(idx.load_order("ext4").unwrap(), ["jbd2", "mbcache", "ext4"]);
    let kvm = idx.load_order("kvm-amd").unwrap();
    assert_eq!(kvm.last().map(String::as_str), Some("kvm_amd"));
    let pos = |m: &str| kvm.iter().position(|x| x == m).unwrap();
    assert!(pos("irqbypass") < pos("kvm") && pos("kvm") < pos("kvm_amd"));
    assert!(pos("ccp") < pos("kvm_amd"));
    assert!(matches!(
        idx.load_order("nope"),
        Err(ModuleError::Unknown(_))
    ));
    assert_eq!(
        idx.resolve_alias("cpu:type:x86,ven0002fam0019mod0001:feature:,0000,00C2"),
        ["kvm_amd"]
    );
}

#[test]
fn finds_modaliases_in_a_tree() {
    let d = tempfile::tempdir().unwrap();
    let dev = d.path().join("pci0000:00/0000:00:03.0/virtio0");
    std::fs::create_dir_all(&dev).unwrap();
    std::fs::write(dev.join("modalias"), "virtio:d00000002v00001AF4\n").unwrap();
    std::fs::write(d.path().join("pci0000:00/modalias"), "\n").unwrap();
    assert_eq!(modaliases(d.path()), ["virtio:d00000002v00001AF4"]);
}
