//! VM launchers for the microVM backend, chosen by configuration: our `vmm` (default),
//! or QEMU TCG with `vhost-device-vsock` (for hosts whose KVM cannot run guest
//! userspace, and for tests). Either way the launcher runs inside the sandbox's jail and
//! the guest's vsock is exposed with the hybrid convention on `VSOCK_UDS`.

use std::path::{Path, PathBuf};

/// Paths as the launcher sees them inside the jail.
pub const KERNEL: &str = "/vm/kernel";
pub const ROOTFS: &str = "/vm/rootfs.ext4";
pub const CODE: &str = "/vm/code.ext4";
pub const VSOCK_DIR: &str = "/run/vm";
pub const VSOCK_UDS: &str = "/run/vm/vm.vsock";
/// The guest's CID.
pub const GUEST_CID: u32 = 3;
/// Descriptor number of the open `/dev/kvm` the worker hands our `vmm` (`--kvm-fd`).
pub const KVM_FD: i32 = 3;

/// Kernel command line shared by all launchers: read-only root, guest-init as init.
pub const BASE_CMDLINE: &str = "console=ttyS0 root=/dev/vda ro rootfstype=ext4 panic=-1 quiet";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LauncherKind {
    /// Our `vmm` binary (host path).
    Vmm { binary: PathBuf, kernel: PathBuf },
    /// `qemu-system-x86_64 -accel tcg` plus `vhost-device-vsock` (host paths).
    QemuTcg {
        qemu: PathBuf,
        vhost_device_vsock: PathBuf,
        kernel: PathBuf,
    },
}

/// One VM to start.
#[derive(Debug, Clone)]
pub struct VmShape {
    pub mem_mib: u32,
    pub vcpus: u32,
    /// Appended to [`BASE_CMDLINE`].
    pub extra_cmdline: String,
}

/// The program the jail runs, and the host files it needs inside.
#[derive(Debug, Clone)]
pub struct LaunchPlan {
    pub exe: PathBuf,
    pub args: Vec<String>,
    /// (host path, inside path) read-only binds beyond kernel and drives.
    pub binds: Vec<(PathBuf, PathBuf)>,
    /// Host kernel image bound at [`KERNEL`].
    pub kernel: PathBuf,
    /// The monitor gets an open `/dev/kvm` as [`KVM_FD`].
    pub needs_kvm: bool,
}

impl LauncherKind {
    pub fn name(&self) -> &'static str {
        match self {
            LauncherKind::Vmm { .. } => "vmm",
            LauncherKind::QemuTcg { .. } => "qemu-tcg",
        }
    }

    pub fn plan(&self, vm: &VmShape) -> LaunchPlan {
        match self {
            LauncherKind::Vmm { binary, kernel } => {
                let cmdline = format!("{BASE_CMDLINE} reboot=k {}", vm.extra_cmdline);
                let args = ["--kernel", KERNEL, "--rootfs", ROOTFS, "--rootfs-read-only"]
                    .iter()
                    .map(|s| s.to_string())
                    .chain([
                        "--drive".into(),
                        format!("{CODE},ro"),
                        "--mem-mib".into(),
                        vm.mem_mib.to_string(),
                        "--vcpus".into(),
                        vm.vcpus.to_string(),
                        "--cmdline".into(),
                        cmdline.trim().to_string(),
                        "--vsock-cid".into(),
                        GUEST_CID.to_string(),
                        "--vsock-uds".into(),
                        VSOCK_UDS.into(),
                        "--serial-out".into(),
                        "-".into(),
                        "--kvm-fd".into(),
                        KVM_FD.to_string(),
                    ])
                    .collect();
                LaunchPlan {
                    exe: PathBuf::from("/vm/vmm"),
                    args,
                    binds: vec![(binary.clone(), PathBuf::from("/vm/vmm"))],
                    kernel: kernel.clone(),
                    needs_kvm: true,
                }
            }
            LauncherKind::QemuTcg {
                qemu,
                vhost_device_vsock,
                kernel,
            } => LaunchPlan {
                exe: PathBuf::from("/bin/sh"),
                args: vec!["-c".into(), qemu_script(vm, qemu)],
                binds: vec![(
                    vhost_device_vsock.clone(),
                    PathBuf::from("/vm/vhost-device-vsock"),
                )],
                kernel: kernel.clone(),
                needs_kvm: false,
            },
        }
    }
}

/// Starts the vsock daemon, waits for its vhost-user socket, then execs QEMU (the
/// settings measured in shared/notes/tcg-vsock-harness.md).
fn qemu_script(vm: &VmShape, qemu: &Path) -> String {
    let cmdline = format!("{BASE_CMDLINE} reboot=t {}", vm.extra_cmdline);
    format!(
        "/vm/vhost-device-vsock --guest-cid {GUEST_CID} --socket /tmp/vhost.sock --uds-path {VSOCK_UDS} >/dev/null & \
         i=0; while [ ! -S /tmp/vhost.sock ] && [ $i -lt 500 ]; do sleep 0.01; i=$((i+1)); done; \
         exec {qemu} -M microvm,x-option-roms=off,rtc=on,acpi=off,memory-backend=mem \
         -object memory-backend-memfd,id=mem,size={mem}M,share=on -accel tcg -cpu max -m {mem} \
         -smp {cpus} -nodefaults -no-user-config -nographic -no-reboot -serial stdio \
         -kernel {KERNEL} -append '{cmdline}' \
         -drive id=rootfs,file={ROOTFS},format=raw,if=none,read-only=on -device virtio-blk-device,drive=rootfs \
         -drive id=code,file={CODE},format=raw,if=none,read-only=on -device virtio-blk-device,drive=code \
         -chardev socket,id=vsock0,path=/tmp/vhost.sock -device vhost-user-vsock-device,chardev=vsock0",
        qemu = qemu.display(),
        mem = vm.mem_mib,
        cpus = vm.vcpus,
        cmdline = cmdline.trim(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmm_plan_uses_jail_paths() {
        let k = LauncherKind::Vmm {
            binary: "/host/vmm".into(),
            kernel: "/host/vmlinux".into(),
        };
        let p = k.plan(&VmShape {
            mem_mib: 256,
            vcpus: 1,
            extra_cmdline: "gi.port=9000".into(),
        });
        assert_eq!(p.exe, PathBuf::from("/vm/vmm"));
        assert!(p.needs_kvm);
        let joined = p.args.join(" ");
        assert!(joined.contains("--vsock-uds /run/vm/vm.vsock"));
        assert!(joined.contains("--drive /vm/code.ext4,ro"));
        assert!(joined.contains("reboot=k gi.port=9000"));
        assert!(joined.contains("--kvm-fd 3"));
    }

    #[test]
    fn qemu_plan_starts_the_daemon_first() {
        let k = LauncherKind::QemuTcg {
            qemu: "/usr/bin/qemu-system-x86_64".into(),
            vhost_device_vsock: "/t/vhost-device-vsock".into(),
            kernel: "/k/bzImage".into(),
        };
        let p = k.plan(&VmShape {
            mem_mib: 128,
            vcpus: 1,
            extra_cmdline: String::new(),
        });
        let script = &p.args[1];
        let daemon = script.find("vhost-device-vsock --guest-cid 3").unwrap();
        let qemu = script.find("exec /usr/bin/qemu-system-x86_64").unwrap();
        assert!(daemon < qemu);
        assert!(script.contains("size=128M,share=on"));
        assert!(!p.needs_kvm);
    }
}
