//! End-to-end runs in a real guest: kernel + rootfs under QEMU TCG, guest-init as PID 1
//! connecting to this test over AF_VSOCK (vhost-device-vsock, hybrid convention), the
//! function code on a read-only ext4 drive mounted at /var/task.

use crate::images::{make_ext4_image, workspace_root, Images};
use crate::tcg::{tools_available, TcgConfig, TcgVm, TempDir};
use runtime_api::protocol::{HostConnection, DEFAULT_VSOCK_PORT};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The static fn-rust for the guest (`cargo build -p fn-rust --release --target
/// x86_64-unknown-linux-musl`: tests/run.sh does it under CI, elsewhere it is built
/// here; the musl target comes with the image build's setup).
pub fn fn_rust_musl() -> Result<PathBuf, String> {
    static BUILT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let in_ci = std::env::var_os("CI").is_some();
    BUILT
        .get_or_init(|| {
            if in_ci {
                return Ok(());
            }
            super::binaries::cargo_build(&[
                "-p",
                "fn-rust",
                "--release",
                "--target",
                "x86_64-unknown-linux-musl",
            ])
        })
        .clone()?;
    let path = workspace_root().join("target/x86_64-unknown-linux-musl/release/fn-rust");
    path.is_file()
        .then_some(path.clone())
        .ok_or_else(|| format!("{} is missing after the build", path.display()))
}

/// Everything the TCG tests need, or the reason it is missing. Images built from an
/// older guest-init than the current musl build would not speak this protocol, so
/// they count as missing (rebuild with image-build/build.sh).
pub fn prerequisites(variant: &str) -> Result<(Images, PathBuf), String> {
    let images = Images::locate()?;
    let rootfs = images.rootfs(variant)?;
    tools_available(true)?;
    let built = workspace_root().join("target/x86_64-unknown-linux-musl/release/guest-init");
    if let (Ok(current), Ok(imaged)) = (std::fs::read(&built), std::fs::read(images.guest_init())) {
        if current != imaged {
            return Err(format!(
                "{} differs from {}: the images are stale, run image-build/build.sh",
                images.guest_init().display(),
                built.display()
            ));
        }
    }
    Ok((images, rootfs))
}

/// A booted guest whose guest-init has connected and said Hello.
pub struct TcgGuest {
    pub vm: TcgVm,
    pub conn: HostConnection<UnixStream>,
    /// Wall time from starting QEMU to the accepted connection.
    pub connect_time: Duration,
    _dir: TempDir,
}

/// Builds the function drive from `files` (name, bytes, mode), boots the guest and
/// accepts guest-init's vsock connection.
pub fn boot(
    kernel: &Path,
    rootfs: &Path,
    files: &[(&str, Vec<u8>, u32)],
    timeout: Duration,
) -> Result<TcgGuest, String> {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("gi-tcg")?;
    let code = dir.path().join("code");
    std::fs::create_dir_all(&code).map_err(|e| e.to_string())?;
    let mut total = 0u64;
    for (name, bytes, mode) in files {
        let p = code.join(name);
        std::fs::write(&p, bytes).map_err(|e| format!("{}: {e}", p.display()))?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode))
            .map_err(|e| e.to_string())?;
        total += bytes.len() as u64;
    }
    let image = dir.path().join("code.ext4");
    make_ext4_image(&code, &image, 8 + total / (1024 * 1024) * 2)?;
    let uds = dir.path().join("vm.vsock");
    // The hybrid convention delivers guest connections to port P on `<uds>_P`.
    let port_path = PathBuf::from(format!("{}_{DEFAULT_VSOCK_PORT}", uds.display()));
    let listener =
        UnixListener::bind(&port_path).map_err(|e| format!("bind {}: {e}", port_path.display()))?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let config = TcgConfig::new(kernel, rootfs)
        .drive(&image, true)
        .vsock(&uds)
        .cmdline("quiet");
    let started = Instant::now();
    let vm = TcgVm::spawn(&config)?;
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(format!("accept: {e}")),
        }
        if started.elapsed() > timeout {
            return Err(format!(
                "guest-init did not connect within {timeout:?}; serial:\n{}",
                vm.serial()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    stream.set_nonblocking(false).map_err(|e| e.to_string())?;
    let connect_time = started.elapsed();
    let conn =
        HostConnection::accept(stream, "tcg-test-host").map_err(|e| format!("handshake: {e}"))?;
    Ok(TcgGuest {
        vm,
        conn,
        connect_time,
        _dir: dir,
    })
}
