//! The VM description, from the command line or a Firecracker-style JSON file.

pub mod cli;
pub mod firecracker_json;

use std::path::PathBuf;

use crate::arch::x86_64::layout::MAX_VCPUS;

pub const DEFAULT_MEM_MIB: u64 = 128;
pub const DEFAULT_SERIAL_CAP: u64 = 64 << 20;
/// Largest guest supported: 1 TiB (keeps size arithmetic far from overflow).
pub const MAX_MEM_MIB: u64 = 1 << 20;

/// What a drive's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriveBacking {
    /// A host file or block device.
    File(PathBuf),
    /// A container image read lazily through an inherited chunk link
    /// (`chunkstore::wire`) to the worker; always read-only.
    ImageLink(i32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriveConfig {
    pub backing: DriveBacking,
    pub read_only: bool,
    pub is_root: bool,
    pub partuuid: Option<String>,
}

impl DriveConfig {
    fn link_fd(&self) -> Option<i32> {
        match self.backing {
            DriveBacking::ImageLink(fd) => Some(fd),
            DriveBacking::File(_) => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SerialOutConfig {
    Stdout,
    File { path: PathBuf, cap: u64 },
}

/// Whether the guest gets XSAVE (and AVX).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XsaveMode {
    /// Probe the host once at start (`arch::x86_64::xsave_probe`): off only where KVM
    /// cannot track the guest's XCR0.
    #[default]
    Auto,
    On,
    Off,
}

impl std::str::FromStr for XsaveMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            _ => Err("expected auto, on or off".into()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockConfig {
    pub cid: u64,
    pub uds_path: PathBuf,
}

/// Where SIGUSR1 writes a snapshot (`--snapshot-state`, `--snapshot-mem`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotConfig {
    pub state: PathBuf,
    pub mem: PathBuf,
    /// Stop the VM once the snapshot is written (`--snapshot-exit`) instead of resuming.
    pub exit_after: bool,
}

/// The snapshot a VM resumes from (`--restore-state`, `--restore-mem`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreConfig {
    pub state: PathBuf,
    pub mem: PathBuf,
    /// Read the whole memory file once to check its BLAKE3 before mapping it. Off
    /// (`--restore-lazy`) for callers that keep the file where nothing else can write
    /// it: pages then load only when the guest touches them.
    pub verify_mem: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmConfig {
    /// Empty when the VM resumes from a snapshot (`restore`).
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    /// `None`: use the default command line.
    pub cmdline: Option<String>,
    pub drives: Vec<DriveConfig>,
    pub vcpus: u8,
    pub mem_mib: u64,
    pub serial_out: SerialOutConfig,
    pub serial_stdin: bool,
    pub vsock: Option<VsockConfig>,
    /// Where to write the exit metrics report (one JSON line) besides the log.
    pub metrics_path: Option<PathBuf>,
    pub log_level: log::LevelFilter,
    pub seccomp: bool,
    /// An already open `/dev/kvm` inherited from the parent (`--kvm-fd`), so a jailed
    /// VMM needs no device node in its jail.
    pub kvm_fd: Option<i32>,
    pub xsave: XsaveMode,
    pub snapshot: Option<SnapshotConfig>,
    /// Resume from this snapshot instead of booting: memory, vCPUs and device state come
    /// from it; drives, vsock and serial output from this configuration.
    pub restore: Option<RestoreConfig>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Usage(String),
    #[error("missing required option {0}")]
    Missing(&'static str),
    #[error("invalid value {value:?} for {option}: {reason}")]
    Invalid {
        option: &'static str,
        value: String,
        reason: String,
    },
    #[error("{what} {path} does not exist or is not readable: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("config file {path}: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    #[error(transparent)]
    Log(#[from] crate::logger::LevelError),
}

fn check_readable(what: &'static str, path: &PathBuf) -> Result<(), ConfigError> {
    let err = |source| ConfigError::File {
        what,
        path: path.clone(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(err)?;
    if meta.is_dir() {
        return Err(err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "is a directory",
        )));
    }
    std::fs::File::open(path).map(|_| ()).map_err(err)
}

/// The status of descriptor `fd` inherited for `option`, which must be above stderr.
fn inherited_fd(option: &'static str, fd: i32) -> Result<libc::stat, ConfigError> {
    if fd < 3 {
        return Err(bad_fd(option, fd, "must be 3 or above"));
    }
    // SAFETY: fstat only writes into the zeroed stat buffer it is given.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: see above; an fd that is not open makes fstat fail with EBADF.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        let e = std::io::Error::last_os_error().to_string();
        return Err(bad_fd(option, fd, &e));
    }
    Ok(st)
}

fn bad_fd(option: &'static str, fd: i32, reason: &str) -> ConfigError {
    ConfigError::Invalid {
        option,
        value: fd.to_string(),
        reason: reason.to_owned(),
    }
}

/// `--image-drive` must name an open socket.
fn check_socket_fd(fd: i32) -> Result<(), ConfigError> {
    let st = inherited_fd("image-drive", fd)?;
    if st.st_mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(bad_fd("image-drive", fd, "not an open socket"));
    }
    Ok(())
}

/// `--kvm-fd` must name an open `/dev/kvm` (character device 10:232).
fn check_kvm_fd(fd: i32) -> Result<(), ConfigError> {
    let st = inherited_fd("kvm-fd", fd)?;
    let is_kvm = st.st_mode & libc::S_IFMT == libc::S_IFCHR
        && libc::major(st.st_rdev) == 10
        && libc::minor(st.st_rdev) == 232;
    if !is_kvm {
        return Err(bad_fd("kvm-fd", fd, "not an open /dev/kvm"));
    }
    Ok(())
}

impl VmConfig {
    /// Checks what can be checked without touching KVM.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.drives.iter().filter(|d| d.is_root).count() > 1 {
            return Err(ConfigError::Usage("more than one root drive".into()));
        }
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(ConfigError::Invalid {
                option: "vcpus",
                value: self.vcpus.to_string(),
                reason: format!("must be between 1 and {MAX_VCPUS}"),
            });
        }
        if self.mem_mib == 0 || self.mem_mib > MAX_MEM_MIB {
            return Err(ConfigError::Invalid {
                option: "mem-mib",
                value: self.mem_mib.to_string(),
                reason: format!("must be between 1 and {MAX_MEM_MIB}"),
            });
        }
        if let Some(v) = &self.vsock {
            if v.cid < 3 || v.cid > u64::from(u32::MAX) {
                return Err(ConfigError::Invalid {
                    option: "vsock-cid",
                    value: v.cid.to_string(),
                    reason: "guest CIDs start at 3 and fit in 32 bits".into(),
                });
            }
        }
        if let Some(fd) = self.kvm_fd {
            check_kvm_fd(fd)?;
        }
        // Each inherited descriptor is owned by exactly one user.
        let mut fds: Vec<i32> = self
            .drives
            .iter()
            .filter_map(DriveConfig::link_fd)
            .collect();
        fds.extend(self.kvm_fd);
        fds.sort_unstable();
        if let Some(w) = fds.windows(2).find(|w| w[0] == w[1]) {
            return Err(ConfigError::Usage(format!(
                "descriptor {} is given for two uses",
                w[0]
            )));
        }
        // Files last: a bad number is reported even when paths are also wrong.
        match &self.restore {
            Some(r) => {
                check_readable("snapshot state", &r.state)?;
                check_readable("snapshot memory", &r.mem)?;
            }
            None => check_readable("kernel image", &self.kernel)?,
        }
        if let Some(i) = &self.initrd {
            check_readable("initrd", i)?;
        }
        for d in &self.drives {
            match &d.backing {
                DriveBacking::File(path) => {
                    check_readable(if d.is_root { "rootfs" } else { "drive" }, path)?
                }
                DriveBacking::ImageLink(fd) => check_socket_fd(*fd)?,
            }
        }
        Ok(())
    }
}
