//! Boots a guest under QEMU TCG (software emulation), with an optional virtio-vsock
//! device served by `vhost-device-vsock`, for tests that need real guest userspace
//! (this machine's PVM-based KVM cannot run it). See `shared/notes/tcg-vsock-harness.md`.
//!
//! The vsock host side follows Firecracker's hybrid convention: a guest connection to
//! CID 2 port P arrives on the Unix socket `<uds>_P`; the host connects to `<uds>` and
//! writes `CONNECT <port>\n`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::images::tools_bin_dir;

/// The base kernel command line: serial console, read-only root on the first drive,
/// and a triple-fault reset that QEMU's `-no-reboot` turns into an exit.
pub const BASE_CMDLINE: &str = "console=ttyS0 root=/dev/vda ro rootfstype=ext4 reboot=t panic=-1";

/// The guest CID given to the vsock device.
pub const GUEST_CID: u32 = 3;

/// A drive after the root filesystem (`/dev/vdb`, `/dev/vdc`, ...).
#[derive(Debug, Clone)]
pub struct Drive {
    pub path: PathBuf,
    pub read_only: bool,
}

/// How to boot one TCG guest.
#[derive(Debug, Clone)]
pub struct TcgConfig {
    pub kernel: PathBuf,
    pub rootfs: PathBuf,
    pub drives: Vec<Drive>,
    /// Appended to [`BASE_CMDLINE`].
    pub extra_cmdline: String,
    pub mem_mib: u32,
    /// With a vsock device: the hybrid-vsock Unix socket path on the host.
    pub vsock_uds: Option<PathBuf>,
    /// Folder for the vhost-user socket; defaults to a fresh temporary folder.
    pub work_dir: Option<PathBuf>,
}

impl TcgConfig {
    pub fn new(kernel: impl Into<PathBuf>, rootfs: impl Into<PathBuf>) -> TcgConfig {
        TcgConfig {
            kernel: kernel.into(),
            rootfs: rootfs.into(),
            drives: Vec::new(),
            extra_cmdline: String::new(),
            mem_mib: 256,
            vsock_uds: None,
            work_dir: None,
        }
    }

    pub fn drive(mut self, path: impl Into<PathBuf>, read_only: bool) -> TcgConfig {
        self.drives.push(Drive {
            path: path.into(),
            read_only,
        });
        self
    }

    pub fn cmdline(mut self, extra: &str) -> TcgConfig {
        if !self.extra_cmdline.is_empty() {
            self.extra_cmdline.push(' ');
        }
        self.extra_cmdline.push_str(extra);
        self
    }

    pub fn mem_mib(mut self, mib: u32) -> TcgConfig {
        self.mem_mib = mib;
        self
    }

    pub fn vsock(mut self, uds_path: impl Into<PathBuf>) -> TcgConfig {
        self.vsock_uds = Some(uds_path.into());
        self
    }
}

/// Checks that QEMU and (when `vsock` is true) vhost-device-vsock are installed.
pub fn tools_available(vsock: bool) -> Result<(), String> {
    which("qemu-system-x86_64")
        .ok_or("qemu-system-x86_64 not found: apt-get install qemu-system-x86")?;
    if vsock && !vhost_device_vsock().exists() {
        return Err(format!(
            "{} not found: run image-build/setup-host.sh",
            vhost_device_vsock().display()
        ));
    }
    Ok(())
}

fn which(tool: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(tool))
        .find(|p| p.is_file())
}

fn vhost_device_vsock() -> PathBuf {
    tools_bin_dir().join("vhost-device-vsock")
}

/// The console output collected so far, with a condition variable for waiters.
#[derive(Default)]
struct Console {
    text: Mutex<String>,
    changed: Condvar,
}

/// How a guest run ended.
#[derive(Debug)]
pub struct TcgOutcome {
    /// `None` when the guest was killed at the timeout.
    pub status: Option<ExitStatus>,
    pub serial: String,
    pub elapsed: Duration,
}

/// A running TCG guest. Dropping it kills QEMU and the vsock daemon.
pub struct TcgVm {
    qemu: Child,
    vhost: Option<Child>,
    console: Arc<Console>,
    started: Instant,
    _temp: Option<TempDir>,
}

impl TcgVm {
    /// Starts the vsock daemon (when configured), then QEMU.
    pub fn spawn(config: &TcgConfig) -> Result<TcgVm, String> {
        tools_available(config.vsock_uds.is_some())?;
        let (work_dir, temp) = match &config.work_dir {
            Some(dir) => (dir.clone(), None),
            None => {
                let temp = TempDir::new("tcg")?;
                (temp.path().to_path_buf(), Some(temp))
            }
        };
        let started = Instant::now();
        let mut vhost = None;
        let mut qemu = Command::new("qemu-system-x86_64");
        qemu.args([
            "-M",
            "microvm,x-option-roms=off,rtc=on,acpi=off,memory-backend=mem",
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-smp",
            "1",
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-no-reboot",
            "-serial",
            "stdio",
        ]);
        qemu.arg("-object").arg(format!(
            "memory-backend-memfd,id=mem,size={}M,share=on",
            config.mem_mib
        ));
        qemu.arg("-m").arg(config.mem_mib.to_string());
        qemu.arg("-kernel").arg(&config.kernel);
        qemu.arg("-append")
            .arg(format!("{BASE_CMDLINE} {}", config.extra_cmdline));
        let root = Drive {
            path: config.rootfs.clone(),
            read_only: true,
        };
        for (index, drive) in std::iter::once(&root).chain(&config.drives).enumerate() {
            let ro = if drive.read_only { ",read-only=on" } else { "" };
            qemu.arg("-drive").arg(format!(
                "id=drive{index},file={},format=raw,if=none{ro}",
                drive.path.display()
            ));
            qemu.arg("-device")
                .arg(format!("virtio-blk-device,drive=drive{index}"));
        }
        if let Some(uds) = &config.vsock_uds {
            let socket = work_dir.join("vhost-vsock.sock");
            let child = Command::new(vhost_device_vsock())
                .arg("--guest-cid")
                .arg(GUEST_CID.to_string())
                .arg("--socket")
                .arg(&socket)
                .arg("--uds-path")
                .arg(uds)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .map_err(|e| format!("vhost-device-vsock: {e}"))?;
            vhost = Some(child);
            wait_for_path(&socket, Duration::from_secs(10))?;
            qemu.arg("-chardev")
                .arg(format!("socket,id=vsock0,path={}", socket.display()));
            qemu.args(["-device", "vhost-user-vsock-device,chardev=vsock0"]);
        }
        let mut qemu = qemu
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("qemu-system-x86_64: {e}"))?;
        let console = Arc::new(Console::default());
        if let Some(stdout) = qemu.stdout.take() {
            spawn_reader(stdout, Arc::clone(&console), "");
        }
        if let Some(stderr) = qemu.stderr.take() {
            spawn_reader(stderr, Arc::clone(&console), "qemu: ");
        }
        Ok(TcgVm {
            qemu,
            vhost,
            console,
            started,
            _temp: temp,
        })
    }

    /// The console output so far.
    pub fn serial(&self) -> String {
        self.console
            .text
            .lock()
            .map(|t| t.clone())
            .unwrap_or_default()
    }

    /// Waits until the console shows `needle`; false at the timeout.
    pub fn wait_for_serial(&self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let Ok(mut text) = self.console.text.lock() else {
            return false;
        };
        loop {
            if text.contains(needle) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            text = match self.console.changed.wait_timeout(text, deadline - now) {
                Ok((guard, _)) => guard,
                Err(_) => return false,
            };
        }
    }

    /// Waits for QEMU to exit by itself, killing it at the timeout.
    pub fn wait(mut self, timeout: Duration) -> TcgOutcome {
        let deadline = Instant::now() + timeout;
        let status = loop {
            match self.qemu.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = self.qemu.kill();
                    let _ = self.qemu.wait();
                    break None;
                }
            }
        };
        let elapsed = self.started.elapsed();
        // Give the reader threads a moment to drain the pipes.
        std::thread::sleep(Duration::from_millis(50));
        TcgOutcome {
            status,
            serial: self.serial(),
            elapsed,
        }
    }
}

impl Drop for TcgVm {
    fn drop(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
        if let Some(vhost) = &mut self.vhost {
            let _ = vhost.kill();
            let _ = vhost.wait();
        }
    }
}

fn spawn_reader(
    pipe: impl std::io::Read + Send + 'static,
    console: Arc<Console>,
    prefix: &'static str,
) {
    std::thread::spawn(move || {
        let mut reader = BufReader::new(pipe);
        let mut line = Vec::new();
        while matches!(reader.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            let text = String::from_utf8_lossy(&line).replace('\r', "");
            if let Ok(mut all) = console.text.lock() {
                all.push_str(prefix);
                all.push_str(&text);
            }
            console.changed.notify_all();
            line.clear();
        }
    });
}

fn wait_for_path(path: &Path, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        if Instant::now() >= deadline {
            return Err(format!(
                "{} did not appear within {timeout:?}",
                path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// A temporary folder removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> Result<TempDir, String> {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("{prefix}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(TempDir(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
