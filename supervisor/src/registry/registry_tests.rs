use super::*;

pub(super) fn rec(name: &str, version: &str, rev: &str) -> FunctionRecord {
    FunctionRecord {
        snap_start: false,
        name: name.into(),
        version: version.into(),
        runtime: "provided.al2023".into(),
        role: "arn:aws:iam::000000000000:role/r".into(),
        handler: None,
        description: String::new(),
        timeout: 3,
        memory_size: 128,
        environment: Default::default(),
        ephemeral_storage: 512,
        code_sha256: "sha".into(),
        code_size: 1,
        code_object: format!("obj-{name}-{version}"),
        last_modified: "t".into(),
        revision_id: rev.into(),
        unzipped_size: 1,
        layers: Vec::new(),
        image: None,
    }
}

#[test]
fn create_get_conflict_and_reopen() {
    let d = tempfile::tempdir().expect("tempdir");
    let path = d.path().join("r.db");
    {
        let r = Registry::open(&path).expect("open");
        r.create(&rec("a", LATEST, "r1"), None, &Tags::new())
            .expect("create");
        assert!(matches!(
            r.create(&rec("a", LATEST, "r1"), None, &Tags::new()),
            Err(RegistryError::AlreadyExists(_))
        ));
        assert_eq!(
            r.get("a", LATEST).expect("get"),
            Some(rec("a", LATEST, "r1"))
        );
        assert_eq!(r.get("a", "1").expect("get"), None);
        assert_eq!(r.get("a", "bogus").expect("get"), None);
    }
    let r = Registry::open(&path).expect("reopen");
    assert_eq!(
        r.get("a", LATEST).expect("get").map(|x| x.revision_id),
        Some("r1".into())
    );
}

#[test]
fn publish_update_and_revision_checks() {
    let d = tempfile::tempdir().expect("tempdir");
    let r = Registry::open(&d.path().join("r.db")).expect("open");
    r.create(
        &rec("f", LATEST, "r1"),
        Some(&rec("f", "1", "v1")),
        &Tags::new(),
    )
    .expect("create");
    assert_eq!(r.next_version("f").expect("next"), 2);
    assert!(matches!(
        r.update_latest(&rec("f", LATEST, "r2"), "stale"),
        Err(RegistryError::Conflict)
    ));
    r.update_latest(&rec("f", LATEST, "r2"), "r1")
        .expect("update");
    assert!(matches!(
        r.publish(&rec("f", "3", "v3"), "r2"),
        Err(RegistryError::Conflict)
    ));
    r.publish(&rec("f", "2", "v2"), "r2").expect("publish");
    assert_eq!(
        r.latest_published("f").expect("lp").map(|x| x.version),
        Some("2".into())
    );
    let objs = r.delete_version("f", "1").expect("delete v1");
    assert_eq!(objs, vec!["obj-f-1".to_owned()]);
    assert!(matches!(
        r.delete_version("f", "1"),
        Err(RegistryError::NotFound(_))
    ));
    let mut objs = r.delete_function("f").expect("delete");
    objs.sort();
    assert_eq!(objs, vec!["obj-f-$LATEST".to_owned(), "obj-f-2".to_owned()]);
    assert!(r.code_objects().expect("objects").is_empty());
    assert!(matches!(
        r.delete_function("f"),
        Err(RegistryError::NotFound(_))
    ));
}

#[test]
fn pagination_visits_everything_once() {
    let d = tempfile::tempdir().expect("tempdir");
    let r = Registry::open(&d.path().join("r.db")).expect("open");
    for i in 0..7 {
        r.create(
            &rec(&format!("fn{i}"), LATEST, "r"),
            Some(&rec(&format!("fn{i}"), "1", "v")),
            &Tags::new(),
        )
        .expect("create");
    }
    let mut seen = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let page = r.list(false, None, marker.as_deref(), 3).expect("list");
        assert!(page.items.len() <= 3);
        seen.extend(page.items.into_iter().map(|x| x.name));
        match page.next_marker {
            Some(m) => marker = Some(m),
            None => break,
        }
    }
    assert_eq!(seen, (0..7).map(|i| format!("fn{i}")).collect::<Vec<_>>());
    let all = r.list(true, None, None, 100).expect("all");
    assert_eq!(all.items.len(), 14);
    let one = r
        .list(true, Some("fn3"), None, 100)
        .expect("versions of fn3");
    assert_eq!(
        one.items
            .iter()
            .map(|x| x.version.as_str())
            .collect::<Vec<_>>(),
        vec![LATEST, "1"]
    );
    assert!(matches!(
        r.list(false, None, Some("!!"), 3),
        Err(RegistryError::BadMarker)
    ));
}

#[test]
fn reserved_concurrency_persists_and_dies_with_the_function() {
    let d = tempfile::tempdir().expect("tempdir");
    let path = d.path().join("r.db");
    {
        let r = Registry::open(&path).expect("open");
        assert!(matches!(
            r.set_reserved_concurrency("nope", 3, ReservationBound::NONE),
            Err(RegistryError::NotFound(_))
        ));
        r.create(&rec("a", LATEST, "r1"), None, &Tags::new())
            .expect("create");
        r.set_reserved_concurrency("a", 3, ReservationBound::NONE)
            .expect("set");
        r.set_reserved_concurrency("a", 5, ReservationBound::NONE)
            .expect("overwrite");
    }
    let r = Registry::open(&path).expect("reopen");
    assert_eq!(r.reserved_concurrency("a").expect("get"), Some(5));
    assert_eq!(
        r.all_reserved_concurrency().expect("all").get("a"),
        Some(&5)
    );
    r.delete_reserved_concurrency("a").expect("delete");
    assert_eq!(r.reserved_concurrency("a").expect("get"), None);
    r.set_reserved_concurrency("a", 1, ReservationBound::NONE)
        .expect("set");
    r.delete_function("a").expect("delete fn");
    assert_eq!(r.reserved_concurrency("a").expect("get"), None);
}

fn alias(function: &str, name: &str, version: &str, extra: &[(&str, f64)]) -> AliasRecord {
    AliasRecord {
        function: function.into(),
        name: name.into(),
        function_version: version.into(),
        description: String::new(),
        additional_version_weights: extra.iter().map(|(v, w)| ((*v).to_owned(), *w)).collect(),
        revision_id: format!("rev-{name}-{version}"),
    }
}

#[test]
fn aliases_name_existing_versions_and_pin_them() {
    let d = tempfile::tempdir().expect("tempdir");
    let r = Registry::open(&d.path().join("r.db")).expect("open");
    assert!(matches!(
        r.create_alias(&alias("f", "prod", LATEST, &[])),
        Err(RegistryError::NotFound(_))
    ));
    r.create(
        &rec("f", LATEST, "r1"),
        Some(&rec("f", "1", "r1")),
        &Tags::new(),
    )
    .expect("create");
    r.publish(&rec("f", "2", "r1"), "r1").expect("publish 2");
    assert!(matches!(
        r.create_alias(&alias("f", "prod", "7", &[])),
        Err(RegistryError::NotFound(w)) if w == "f:7"
    ));
    r.create_alias(&alias("f", "prod", "1", &[("2", 0.25)]))
        .expect("alias");
    r.create_alias(&alias("f", "dev", LATEST, &[]))
        .expect("alias");
    assert!(matches!(
        r.create_alias(&alias("f", "prod", "2", &[])),
        Err(RegistryError::AliasExists(_))
    ));
    // Versions an alias routes to cannot be deleted, primary or additional.
    for v in ["1", "2"] {
        assert!(matches!(
            r.delete_version("f", v),
            Err(RegistryError::VersionInUse { aliases, .. }) if aliases == ["prod"]
        ));
    }
    let got = r.get_alias("f", "prod").expect("get").expect("some");
    assert_eq!(got.additional_version_weights.get("2"), Some(&0.25));
    // Update checks the revision it was given.
    let mut moved = alias("f", "prod", "2", &[]);
    assert!(matches!(
        r.update_alias(&moved, Some("stale")),
        Err(RegistryError::Conflict)
    ));
    moved.revision_id = "rev-2".into();
    r.update_alias(&moved, Some(&got.revision_id))
        .expect("update");
    r.delete_version("f", "1")
        .expect("no alias routes to 1 now");
    // Listing: name order, filtered by version, paged.
    let all = r.list_aliases("f", None, None, 1).expect("list");
    assert_eq!(all.items[0].name, "dev");
    let next = r
        .list_aliases("f", None, all.next_marker.as_deref(), 1)
        .expect("page 2");
    assert_eq!(next.items[0].name, "prod");
    assert!(next.next_marker.is_none());
    let on2 = r.list_aliases("f", Some("2"), None, 50).expect("filter");
    assert_eq!(on2.items.len(), 1);
    // Deleting the function deletes its aliases.
    r.delete_function("f").expect("delete");
    r.create(&rec("f", LATEST, "r9"), None, &Tags::new())
        .expect("recreate");
    assert_eq!(r.get_alias("f", "dev").expect("get"), None);
    assert!(matches!(
        r.delete_alias("f", "dev"),
        Err(RegistryError::AliasNotFound(_))
    ));
}

#[test]
fn weighted_alias_picks_by_draw() {
    let a = alias("f", "prod", "1", &[("2", 0.3)]);
    assert_eq!(a.pick(0.0), "2");
    assert_eq!(a.pick(0.299), "2");
    assert_eq!(a.pick(0.3), "1");
    assert_eq!(a.pick(0.999), "1");
    assert_eq!(alias("f", "p", "1", &[]).pick(0.0), "1");
}
