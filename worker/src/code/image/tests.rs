use super::*;
use chunkstore::{ChunkId, ChunkKey, ChunkRef};

fn run() -> ImageRun {
    ImageRun {
        entrypoint: vec![
            "/usr/bin/python3".into(),
            "-m".into(),
            "awslambdaric".into(),
        ],
        cmd: vec!["app.handler".into()],
        working_dir: Some("/var/task".into()),
        env: vec![
            "PATH=/usr/local/bin:/usr/bin".into(),
            "EMPTY=".into(),
            "junk".into(),
        ],
        image: "127.0.0.1:5000/fn@sha256:00".into(),
    }
}

fn package() -> ImagePackage {
    let manifest = ImageManifest::new(vec![
        ChunkRef::Stored {
            id: ChunkId([1; 32]),
            key: ChunkKey::from_bytes([2; 32]),
            len: 512 << 10,
        },
        ChunkRef::Zeros { len: 100 },
    ])
    .unwrap();
    ImagePackage {
        run: run(),
        manifest,
    }
}

#[test]
fn package_round_trips_and_refuses_damage() {
    let p = package();
    let bytes = p.encode();
    assert_eq!(ImagePackage::decode(&bytes).unwrap(), p);
    assert!(matches!(
        ImagePackage::decode(b"PK\x03\x04rest"),
        Err(ImageError::Package(_))
    ));
    for cut in [9, 12, 40, bytes.len() - 1] {
        assert!(ImagePackage::decode(&bytes[..cut]).is_err(), "cut at {cut}");
    }
    let mut huge = bytes.clone();
    huge[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(
        ImagePackage::decode(&huge),
        Err(ImageError::Package(_))
    ));
}

#[test]
fn image_config_overrides_each_part() {
    let r = run();
    let plain = r.command(&ImageOverrides::default());
    assert_eq!(
        plain.argv,
        ["/usr/bin/python3", "-m", "awslambdaric", "app.handler"]
    );
    assert_eq!(plain.working_dir, "/var/task");
    assert_eq!(plain.handler, "app.handler");
    assert_eq!(
        plain.env,
        [
            ("PATH".to_string(), "/usr/local/bin:/usr/bin".to_string()),
            ("EMPTY".to_string(), String::new())
        ]
    );
    let cmd_only = r.command(&ImageOverrides {
        command: Some(vec!["other.handler".into()]),
        ..Default::default()
    });
    assert_eq!(cmd_only.argv.last().unwrap(), "other.handler");
    assert_eq!(cmd_only.handler, "other.handler");
    let all = r.command(&ImageOverrides {
        entry_point: Some(vec!["/bin/sh".into(), "-c".into()]),
        command: Some(vec!["exec /var/task/run".into()]),
        working_directory: Some("/tmp".into()),
    });
    assert_eq!(all.argv, ["/bin/sh", "-c", "exec /var/task/run"]);
    assert_eq!(all.working_dir, "/tmp");
    let bare = ImageRun::default().command(&ImageOverrides::default());
    assert_eq!((bare.argv.len(), bare.working_dir.as_str()), (0, "/"));
}
