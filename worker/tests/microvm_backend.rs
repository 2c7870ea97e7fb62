//! The microVM backend end to end with the QEMU TCG launcher (this host's PVM KVM
//! cannot run guest userspace): jailed QEMU + vhost-device-vsock, guest-init as the
//! guest's init, the shell bootstrap as the function, hybrid vsock to the worker.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use worker::sandbox::launcher::LauncherKind;
use worker::sandbox::microvm::{MicroVmBackend, MicroVmConfig};
use worker::sandbox::rootfs::RootfsMap;
use worker::{FunctionVersionSpec, InvokeRequest, InvokeResult, Worker, WorkerConfig};

const BOOTSTRAP: &str = r#"#!/bin/sh
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
while true; do
  HEADERS="$(mktemp)"
  EVENT=$(curl -sS -D "$HEADERS" "$API/invocation/next")
  ID=$(grep -i Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
  rm -f "$HEADERS"
  echo "vm got $EVENT"
  curl -sS -X POST "$API/invocation/$ID/response" -d "{\"vm\":$EVENT}" >/dev/null
done
"#;

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.is_file())
}

/// The provided rootfs with the guest-init under test as /sbin/init, as an ext4 image.
fn rootfs_image(dir: &Path) -> PathBuf {
    let tree = dir.join("tree");
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(images_dir().join("rootfs-provided"))
        .arg(&tree)
        .status()
        .expect("cp");
    assert!(status.success());
    let init = tree.join("sbin/init");
    let _ = std::fs::remove_file(&init);
    std::fs::copy(guest_init_bin(), &init).expect("copy guest-init");
    let image = dir.join("rootfs.ext4");
    let status = std::process::Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&tree)
        .arg(&image)
        .arg("200M")
        .status()
        .expect("mkfs.ext4");
    assert!(status.success());
    image
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shell_function_in_a_tcg_microvm() {
    let vhost = workspace_root().join("target/tools/bin/vhost-device-vsock");
    let qemu = which("qemu-system-x86_64");
    let ok = require(is_root(), "microvm tests need root")
        && require(
            qemu.is_some(),
            "qemu-system-x86_64 missing (apt-get install qemu-system-x86)",
        )
        && require(
            vhost.is_file(),
            "vhost-device-vsock missing (image-build/setup-host.sh)",
        )
        && require(
            images_dir().join("bzImage").is_file(),
            "bzImage missing (image-build)",
        )
        && require(
            images_dir().join("rootfs-provided").is_dir(),
            "rootfs-provided missing",
        )
        && require(guest_init_bin().is_file(), "guest-init missing")
        && require(
            which("mkfs.ext4").is_some(),
            "mkfs.ext4 missing (e2fsprogs)",
        );
    if !ok {
        return;
    }
    let work = open_dir();
    let image = rootfs_image(work.path());
    let code = open_dir();
    write_exec(&code.path().join("bootstrap"), BOOTSTRAP);
    let launcher = LauncherKind::QemuTcg {
        qemu: qemu.unwrap_or_default(),
        vhost_device_vsock: vhost,
        kernel: images_dir().join("bzImage"),
    };
    let mut cfg = MicroVmConfig::from_images_dir(&images_dir(), work.path().join("run"), launcher);
    cfg.rootfs_images = RootfsMap::new().with("provided", &image);
    cfg.cgroup_group = "worker-test-microvm".into();
    let backend = MicroVmBackend::new(cfg).expect("backend");
    let worker = Worker::new(
        Arc::new(backend),
        WorkerConfig {
            init_timeout: Duration::from_secs(60),
            ..Default::default()
        },
    );
    let spec = FunctionVersionSpec {
        name: "vm-echo".into(),
        version: "$LATEST".into(),
        code_dir: Some(code.path().to_path_buf()),
        code_image: None,
        runtime: "provided.al2023".into(),
        handler: "echo".into(),
        memory_mib: 128,
        timeout: Duration::from_secs(30),
        env: vec![],
        reserved_concurrency: None,
        revision: String::new(),
    };
    let req = |id: &str, p: &str| InvokeRequest {
        request_id: id.into(),
        payload: p.as_bytes().to_vec(),
        ..Default::default()
    };
    let first = worker
        .invoke(&spec, req("vm-1", "1"))
        .await
        .expect("invoke");
    assert_eq!(
        first.result,
        InvokeResult::Success(br#"{"vm":1}"#.to_vec()),
        "{}",
        first.logs
    );
    assert!(first.report.init_duration.is_some());
    let second = worker
        .invoke(&spec, req("vm-2", "2"))
        .await
        .expect("invoke");
    assert_eq!(
        second.result,
        InvokeResult::Success(br#"{"vm":2}"#.to_vec()),
        "{}",
        second.logs
    );
    assert!(second.report.init_duration.is_none());
    assert!(second.logs.contains("vm got 2"), "{}", second.logs);
    worker.shutdown_idle();
    tokio::time::sleep(Duration::from_secs(2)).await;
}
