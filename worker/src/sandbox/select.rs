//! `--isolation microvm|process|auto`: auto picks microvm only when the host's KVM can
//! run guest userspace (not PVM, /dev/kvm usable), and says why in one log line.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    MicroVm,
    Process,
    Auto,
}

#[derive(Debug, thiserror::Error)]
#[error("invalid isolation {0:?}: expected microvm, process or auto")]
pub struct ParseIsolationError(String);

impl FromStr for Isolation {
    type Err = ParseIsolationError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "microvm" => Ok(Isolation::MicroVm),
            "process" => Ok(Isolation::Process),
            "auto" => Ok(Isolation::Auto),
            other => Err(ParseIsolationError(other.to_string())),
        }
    }
}

/// Whether this host's KVM can run a real guest, and why (not).
pub fn kvm_can_run_guests(sys_module: &Path, dev_kvm: &Path) -> (bool, String) {
    if sys_module.join("kvm_pvm").exists() {
        return (
            false,
            "KVM is PVM (nested, no VMX): guest userspace cannot run".into(),
        );
    }
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(dev_kvm)
    {
        Ok(f) => f,
        Err(e) => return (false, format!("{} unusable: {e}", dev_kvm.display())),
    };
    const KVM_GET_API_VERSION: libc::c_ulong = 0xAE00;
    // SAFETY: KVM_GET_API_VERSION takes no argument and only returns an int.
    let v = unsafe { libc::ioctl(file.as_raw_fd(), KVM_GET_API_VERSION, 0) };
    if v == 12 {
        (
            true,
            format!("{} is usable (KVM API 12)", dev_kvm.display()),
        )
    } else {
        (
            false,
            format!("{} returned KVM API version {v}", dev_kvm.display()),
        )
    }
}

/// Resolves `auto` and returns the concrete choice with the reason for the log line.
pub fn resolve(requested: Isolation) -> (Isolation, String) {
    match requested {
        Isolation::Auto => {
            let (ok, why) = kvm_can_run_guests(Path::new("/sys/module"), Path::new("/dev/kvm"));
            if ok {
                (
                    Isolation::MicroVm,
                    format!("isolation auto: microvm ({why})"),
                )
            } else {
                (
                    Isolation::Process,
                    format!("isolation auto: process ({why})"),
                )
            }
        }
        other => (
            other,
            format!("isolation {other:?} (requested)").to_lowercase(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!("auto".parse::<Isolation>().unwrap(), Isolation::Auto);
        assert_eq!("process".parse::<Isolation>().unwrap(), Isolation::Process);
        assert_eq!("microvm".parse::<Isolation>().unwrap(), Isolation::MicroVm);
        assert!("vm".parse::<Isolation>().is_err());
    }

    #[test]
    fn pvm_means_process() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("kvm_pvm")).unwrap();
        let (ok, why) = kvm_can_run_guests(dir.path(), Path::new("/dev/kvm"));
        assert!(!ok);
        assert!(why.contains("PVM"));
    }

    #[test]
    fn missing_dev_kvm_means_process() {
        let dir = tempfile::tempdir().unwrap();
        let (ok, why) = kvm_can_run_guests(dir.path(), &dir.path().join("kvm"));
        assert!(!ok);
        assert!(why.contains("unusable"), "{why}");
    }
}

/// What a host needs to build either backend.
#[derive(Debug, Clone)]
pub struct BackendSetup {
    /// Output of `image-build` (kernel, rootfs dirs and images, guest-init).
    pub images_dir: std::path::PathBuf,
    /// Per-sandbox scratch space (under the data dir).
    pub run_root: std::path::PathBuf,
    /// Our VMM binary; the guest kernel is `images_dir/vmlinux`.
    pub vmm_binary: std::path::PathBuf,
}

/// Builds the backend for `requested`, resolving `auto`; returns it with the one-line
/// reason for the choice, which the caller logs.
pub fn build_backend(
    requested: Isolation,
    setup: &BackendSetup,
) -> Result<(std::sync::Arc<dyn super::Backend>, String), super::SandboxError> {
    let (choice, why) = resolve(requested);
    let backend: std::sync::Arc<dyn super::Backend> = match choice {
        Isolation::MicroVm => {
            let launcher = super::launcher::Launcher {
                vmm: setup.vmm_binary.clone(),
                kernel: setup.images_dir.join("vmlinux"),
            };
            let cfg = super::microvm::MicroVmConfig::from_images_dir(
                &setup.images_dir,
                setup.run_root.clone(),
                launcher,
            );
            std::sync::Arc::new(super::microvm::MicroVmBackend::new(cfg)?)
        }
        Isolation::Process | Isolation::Auto => {
            let cfg = super::process::ProcessConfig::from_images_dir(
                &setup.images_dir,
                setup.run_root.clone(),
            );
            std::sync::Arc::new(super::process::ProcessBackend::new(cfg)?)
        }
    };
    Ok((backend, why))
}

#[cfg(test)]
mod build_tests {
    use super::*;

    #[test]
    fn missing_images_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let setup = BackendSetup {
            images_dir: dir.path().join("no-images"),
            run_root: dir.path().join("run"),
            vmm_binary: dir.path().join("vmm"),
        };
        match build_backend(Isolation::Process, &setup) {
            Err(e) => assert!(e.to_string().contains("guest-init"), "{e}"),
            Ok(_) => panic!("expected an error without images"),
        }
    }
}
