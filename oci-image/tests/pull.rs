//! Pulling from a real registry: tags pinned to digests, linux/amd64 chosen from an
//! index, layers checked and flattened, and every failure a clear, typed error.
mod common;

use std::fs;
use std::io::Write;

use common::registry::{OciLayout, RegistryServer};
use common::*;
use oci_image::pull::{Credentials, PullLimits};
use oci_image::{PullError, Puller, Registry};
use serde_json::json;

const GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
const ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";

fn gzip(tar: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(tar).unwrap();
    gz.finish().unwrap()
}

fn zstd(tar: &[u8]) -> Vec<u8> {
    ruzstd::encoding::compress_to_vec(tar, ruzstd::encoding::CompressionLevel::Fastest)
}

fn layers(version: &str) -> Vec<(&'static str, Vec<u8>, Vec<u8>)> {
    let base = Layer::new()
        .dir("var/")
        .dir("var/task/")
        .file("var/task/app.py", b"def h(e, c): return e")
        .bytes();
    let top = Layer::new()
        .file("var/task/version", version.as_bytes())
        .file("var/task/.wh.app.py", b"")
        .bytes();
    vec![(GZIP, gzip(&base), base), (ZSTD, zstd(&top), top)]
}

fn run() -> serde_json::Value {
    json!({"Entrypoint": ["/lambda-entrypoint.sh"], "Cmd": ["app.h"], "WorkingDir": "/var/task", "Env": ["A=1"]})
}

fn puller(host: &str, credentials: Credentials) -> Puller {
    let registry = Registry {
        host: host.to_string(),
        plain_http: true,
        credentials,
    };
    Puller::new(vec![registry], PullLimits::default()).unwrap()
}

/// A registry holding one image, `fn/app:v1` (its layout and descriptor returned too).
fn registry_with_app(
    dir: &std::path::Path,
    login: Option<(&str, &str)>,
) -> (RegistryServer, OciLayout, serde_json::Value) {
    let server = RegistryServer::start(&dir.join("r"), login);
    let mut layout = OciLayout::new(&dir.join("layout"));
    let image = layout.image("amd64", &layers("1"), run());
    layout.tag("v1", &image);
    server.push(&layout.dir, "v1", "fn/app", login);
    (server, layout, image)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_tag_is_pinned_to_its_digest_and_the_layers_flatten_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let (server, mut layout, v1) = registry_with_app(dir.path(), None);
    let puller = puller(&server.host, Credentials::Anonymous);
    let rt = runtime();
    let uri = format!("{}/fn/app:v1", server.host);
    let image = rt.block_on(puller.resolve(&uri)).unwrap();
    assert_eq!(image.digest, v1["digest"].as_str().unwrap());
    assert_eq!(
        image.pinned_uri,
        format!("{}/fn/app@{}", server.host, image.digest)
    );
    assert_eq!(image.config.entrypoint, ["/lambda-entrypoint.sh"]);
    assert_eq!(
        (image.config.cmd.clone(), image.config.working_dir.clone()),
        (vec!["app.h".to_string()], Some("/var/task".into()))
    );
    assert_eq!(image.layers.len(), 2);

    // The tag moves; the pinned image does not.
    let v2 = layout.image("amd64", &layers("2"), run());
    layout.tag("v1", &v2);
    server.push(&layout.dir, "v1", "fn/app", None);
    let root = dir.path().join("root");
    let stats = rt
        .block_on(puller.pull_into(&image, &dir.path().join("staging"), &root))
        .unwrap();
    assert_eq!(fs::read(root.join("var/task/version")).unwrap(), b"1");
    assert!(
        !root.join("var/task/app.py").exists(),
        "whited out by the top layer"
    );
    assert_eq!((stats.layers, stats.whiteouts), (2, 1));
    assert_eq!(
        fs::read_dir(dir.path().join("staging")).unwrap().count(),
        0,
        "staged blobs are removed"
    );
    let moved = rt.block_on(puller.resolve(&uri)).unwrap();
    assert_eq!(moved.digest, v2["digest"].as_str().unwrap());
}

#[test]
fn an_index_gives_its_amd64_image_and_other_platforms_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let server = RegistryServer::start(&dir.path().join("r"), None);
    let mut layout = OciLayout::new(&dir.path().join("layout"));
    let amd = layout.image("amd64", &layers("amd"), run());
    let arm = layout.image("arm64", &layers("arm"), run());
    let multi = layout.index(&[arm.clone(), amd.clone()]);
    let arm_only = layout.index(std::slice::from_ref(&arm));
    layout.tag("multi", &multi);
    layout.tag("armidx", &arm_only);
    layout.tag("arm", &arm);
    for t in ["multi", "armidx", "arm"] {
        server.push(&layout.dir, t, "fn/plat", None);
    }
    let puller = puller(&server.host, Credentials::Anonymous);
    let rt = runtime();
    let image = rt
        .block_on(puller.resolve(&format!("{}/fn/plat:multi", server.host)))
        .unwrap();
    assert_eq!(image.digest, amd["digest"].as_str().unwrap());
    let err = rt
        .block_on(puller.resolve(&format!("{}/fn/plat:armidx", server.host)))
        .unwrap_err();
    assert!(matches!(err, PullError::NoAmd64 { .. }), "{err}");
    assert!(err.to_string().contains("linux/arm64"), "{err}");
    let err = rt
        .block_on(puller.resolve(&format!("{}/fn/plat:arm", server.host)))
        .unwrap_err();
    assert!(matches!(err, PullError::Config(_)), "{err}");
}

#[test]
fn unknown_images_registries_and_uris_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let server = RegistryServer::start(&dir.path().join("r"), None);
    let puller = puller(&server.host, Credentials::Anonymous);
    let rt = runtime();
    let err = rt
        .block_on(puller.resolve(&format!("{}/fn/none:v1", server.host)))
        .unwrap_err();
    assert!(matches!(err, PullError::NotFound(_)), "{err}");
    let err = rt
        .block_on(puller.resolve("other.example:5000/fn/app:v1"))
        .unwrap_err();
    assert!(matches!(err, PullError::UnknownRegistry(_)), "{err}");
    for uri in [
        format!("{}/fn/app", server.host),
        "app:v1".to_string(),
        format!("{}/FN/app:v1", server.host),
    ] {
        let err = rt.block_on(puller.resolve(&uri)).unwrap_err();
        assert!(matches!(err, PullError::Uri(_)), "{uri}: {err}");
    }
    // A configured registry that is down: transient, so a retry may succeed.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let err = rt
        .block_on(puller_for_down(&closed).resolve(&format!("{closed}/fn/app:v1")))
        .unwrap_err();
    assert!(
        matches!(err, PullError::Unreachable { .. }) && err.is_transient(),
        "{err}"
    );
}

fn puller_for_down(host: &str) -> Puller {
    puller(host, Credentials::Anonymous)
}

#[test]
fn wrong_credentials_are_refused_and_right_ones_pull() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _, _) = registry_with_app(dir.path(), Some(("fn", "s3cret")));
    let rt = runtime();
    let uri = format!("{}/fn/app:v1", server.host);
    let basic = |p: &str| Credentials::Basic {
        username: "fn".into(),
        password: p.into(),
    };
    let err = rt
        .block_on(puller(&server.host, basic("wrong")).resolve(&uri))
        .unwrap_err();
    assert!(matches!(err, PullError::Unauthorized(_)), "{err}");
    let err = rt
        .block_on(puller(&server.host, Credentials::Anonymous).resolve(&uri))
        .unwrap_err();
    assert!(matches!(err, PullError::Unauthorized(_)), "{err}");
    let ok = puller(&server.host, basic("s3cret"));
    let image = rt.block_on(ok.resolve(&uri)).unwrap();
    rt.block_on(ok.pull_into(&image, &dir.path().join("s"), &dir.path().join("root")))
        .unwrap();
    assert_eq!(
        fs::read(dir.path().join("root/var/task/version")).unwrap(),
        b"1"
    );
}

#[test]
fn a_layer_that_does_not_match_its_digest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _, _) = registry_with_app(dir.path(), None);
    let puller = puller(&server.host, Credentials::Anonymous);
    let rt = runtime();
    let image = rt
        .block_on(puller.resolve(&format!("{}/fn/app:v1", server.host)))
        .unwrap();
    // The registry's stored copy of the top layer is corrupted (same length).
    let blob = server.blob_file(&image.layers[1].digest);
    let mut bytes = fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    fs::write(&blob, bytes).unwrap();
    let err = rt
        .block_on(puller.pull_into(&image, &dir.path().join("s"), &dir.path().join("root")))
        .unwrap_err();
    assert!(matches!(err, PullError::Digest { .. }), "{err}");
    assert!(!err.is_transient());
}
