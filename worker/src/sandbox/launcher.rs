//! How a microVM sandbox starts our `vmm` inside its jail: the paths it sees there and
//! its command line. The guest's vsock is exposed with the hybrid convention on
//! `VSOCK_UDS`, and the jail hands the VMM an open `/dev/kvm` as [`KVM_FD`].

use std::path::PathBuf;

/// Paths as the VMM sees them inside the jail.
pub const KERNEL: &str = "/vm/kernel";
pub const ROOTFS: &str = "/vm/rootfs.ext4";
pub const CODE: &str = "/vm/code.ext4";
/// The function's merged layers, when it has any (the guest's `/dev/vdc`, at `/opt`).
pub const OPT: &str = "/vm/opt.ext4";
pub const VMM: &str = "/vm/vmm";
pub const VSOCK_DIR: &str = "/run/vm";
pub const VSOCK_UDS: &str = "/run/vm/vm.vsock";
/// The guest's CID.
pub const GUEST_CID: u32 = 3;
/// Descriptor number of the open `/dev/kvm` the worker hands our `vmm` (`--kvm-fd`).
pub const KVM_FD: i32 = 3;
/// Descriptor number of a container image's chunk link (`--image-drive`).
pub const IMAGE_FD: i32 = 4;

/// Kernel command line of every microVM: read-only root, guest-init as init, reset
/// through the i8042 at the end.
pub const BASE_CMDLINE: &str =
    "console=ttyS0 root=/dev/vda ro rootfstype=ext4 panic=-1 quiet reboot=k";

/// Our VMM binary and the guest kernel, as host paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launcher {
    pub vmm: PathBuf,
    pub kernel: PathBuf,
}

/// One VM to start.
#[derive(Debug, Clone)]
pub struct VmShape {
    pub mem_mib: u32,
    pub vcpus: u32,
    /// Appended to [`BASE_CMDLINE`].
    pub extra_cmdline: String,
    /// Whether [`OPT`] is attached (after the code drive).
    pub opt_drive: bool,
    /// A container image read through [`IMAGE_FD`] instead of the code drive: the
    /// guest's `/dev/vdb`, which guest-init makes its root.
    pub image_drive: bool,
}

/// Whether the ELF file at `path` asks for a program interpreter (dynamic linking).
/// Reads only the ELF and program headers.
pub fn is_dynamic_elf(path: &std::path::Path) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    const PT_INTERP: u32 = 3;
    let mut f = std::fs::File::open(path)?;
    let mut eh = [0u8; 64];
    f.read_exact(&mut eh)?;
    if &eh[..4] != b"\x7fELF" || eh[4] != 2 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a 64-bit ELF file",
        ));
    }
    let phoff = u64::from_le_bytes(eh[32..40].try_into().unwrap_or_default());
    let phentsize = u16::from_le_bytes([eh[54], eh[55]]) as usize;
    let phnum = u16::from_le_bytes([eh[56], eh[57]]).min(512) as usize;
    if phentsize < 4 {
        return Ok(false);
    }
    f.seek(SeekFrom::Start(phoff))?;
    let mut ph = vec![0u8; phentsize * phnum];
    f.read_exact(&mut ph)?;
    Ok(ph
        .chunks_exact(phentsize)
        .any(|h| u32::from_le_bytes([h[0], h[1], h[2], h[3]]) == PT_INTERP))
}

/// Where a VM booted to be snapshotted writes its snapshot, and where a restored VM
/// finds it (a directory bound into the jail).
pub const SNAPSHOT_DIR: &str = "/snapshot";
pub const SNAPSHOT_STATE: &str = "/snapshot/state";
pub const SNAPSHOT_MEM: &str = "/snapshot/mem";

impl Launcher {
    /// The VMM's arguments (paths inside the jail).
    pub fn args(&self, vm: &VmShape) -> Vec<String> {
        let opt = if vm.opt_drive { " gi.opt=/dev/vdc" } else { "" };
        let image = if vm.image_drive {
            " gi.task= gi.image=/dev/vdb"
        } else {
            ""
        };
        let cmdline = format!("{BASE_CMDLINE} {}{opt}{image}", vm.extra_cmdline);
        let mut args: Vec<String> = ["--kernel", KERNEL].iter().map(|s| s.to_string()).collect();
        args.extend(Self::devices(vm));
        args.extend([
            "--mem-mib".into(),
            vm.mem_mib.to_string(),
            "--vcpus".into(),
            vm.vcpus.to_string(),
            "--cmdline".into(),
            cmdline.trim().to_string(),
        ]);
        args
    }

    /// Boot arguments that also make SIGUSR1 write a snapshot to [`SNAPSHOT_DIR`] and
    /// stop the VM.
    pub fn snapshot_args(&self, vm: &VmShape) -> Vec<String> {
        let mut args = self.args(vm);
        args.extend(
            [
                "--snapshot-state",
                SNAPSHOT_STATE,
                "--snapshot-mem",
                SNAPSHOT_MEM,
                "--snapshot-exit",
            ]
            .map(String::from),
        );
        args
    }

    /// Arguments that resume the snapshot in [`SNAPSHOT_DIR`]: the same devices in the
    /// same order as when it was taken; kernel, memory and vCPUs come from it.
    pub fn restore_args(&self, vm: &VmShape) -> Vec<String> {
        // Lazy: the worker keeps snapshots where only root can write, and a restore that
        // read the whole memory file first would load every page the guest never uses.
        let mut args: Vec<String> = [
            "--restore-state",
            SNAPSHOT_STATE,
            "--restore-mem",
            SNAPSHOT_MEM,
            "--restore-lazy",
        ]
        .map(String::from)
        .to_vec();
        args.extend(Self::devices(vm));
        args
    }

    /// Drives, vsock, console and the inherited /dev/kvm, in the order a snapshot
    /// records them.
    fn devices(vm: &VmShape) -> Vec<String> {
        let code_drive = if vm.image_drive {
            ["--image-drive".to_string(), IMAGE_FD.to_string()]
        } else {
            ["--drive".to_string(), format!("{CODE},ro")]
        };
        let opt_drive = vm
            .opt_drive
            .then(|| ["--drive".to_string(), format!("{OPT},ro")]);
        ["--rootfs", ROOTFS, "--rootfs-read-only"]
            .iter()
            .map(|s| s.to_string())
            .chain(code_drive)
            .chain(opt_drive.into_iter().flatten())
            .chain([
                "--vsock-cid".into(),
                GUEST_CID.to_string(),
                "--vsock-uds".into(),
                VSOCK_UDS.into(),
                "--serial-out".into(),
                "-".into(),
                "--kvm-fd".into(),
                KVM_FD.to_string(),
            ])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restore_names_the_same_devices_in_the_same_order_and_nothing_of_the_boot() {
        let l = Launcher {
            vmm: "/host/vmm".into(),
            kernel: "/host/vmlinux".into(),
        };
        let vm = VmShape {
            mem_mib: 256,
            vcpus: 1,
            extra_cmdline: String::new(),
            opt_drive: true,
            image_drive: false,
        };
        let boot = l.snapshot_args(&vm).join(" ");
        assert!(boot.ends_with(
            "--snapshot-state /snapshot/state --snapshot-mem /snapshot/mem --snapshot-exit"
        ));
        let restore = l.restore_args(&vm).join(" ");
        assert!(restore.starts_with(
            "--restore-state /snapshot/state --restore-mem /snapshot/mem --restore-lazy --rootfs"
        ));
        let devices =
            |s: &str| s[s.find("--rootfs").unwrap()..s.find("--kvm-fd").unwrap()].to_owned();
        assert_eq!(devices(&boot), devices(&restore));
        for boot_only in ["--kernel", "--mem-mib", "--vcpus", "--cmdline"] {
            assert!(!restore.contains(boot_only), "{restore}");
        }
    }

    #[test]
    fn tells_static_from_dynamic_binaries() {
        // This test binary is dynamically linked on glibc hosts, static on musl.
        let me = std::env::current_exe().unwrap();
        let dynamic = is_dynamic_elf(&me).unwrap();
        assert_eq!(dynamic, cfg!(target_env = "gnu"));
        assert!(is_dynamic_elf(std::path::Path::new("/etc/hostname")).is_err());
    }

    #[test]
    fn args_use_jail_paths() {
        let l = Launcher {
            vmm: "/host/vmm".into(),
            kernel: "/host/vmlinux".into(),
        };
        let shape = |opt_drive| VmShape {
            mem_mib: 256,
            vcpus: 1,
            extra_cmdline: "gi.port=9000".into(),
            opt_drive,
            image_drive: false,
        };
        let joined = l.args(&shape(false)).join(" ");
        assert!(joined.starts_with("--kernel /vm/kernel --rootfs /vm/rootfs.ext4"));
        assert!(joined.contains("--vsock-uds /run/vm/vm.vsock"));
        assert!(joined.contains("--drive /vm/code.ext4,ro"));
        assert!(joined.contains("reboot=k gi.port=9000"));
        assert!(joined.contains("--kvm-fd 3"));
        assert!(joined.contains("--mem-mib 256"));
        assert!(!joined.contains("opt"));
        // Layers: a second drive after the code's, which the guest mounts at /opt.
        let joined = l.args(&shape(true)).join(" ");
        assert!(joined.contains("--drive /vm/code.ext4,ro --drive /vm/opt.ext4,ro"));
        assert!(joined.contains("gi.port=9000 gi.opt=/dev/vdc"));
        // A container image: its chunk link instead of the code drive, and its root.
        let joined = l
            .args(&VmShape {
                image_drive: true,
                ..shape(false)
            })
            .join(" ");
        assert!(joined.contains("--rootfs-read-only --image-drive 4 --vsock-cid"));
        assert!(!joined.contains("code.ext4"));
        assert!(joined.contains("gi.port=9000 gi.task= gi.image=/dev/vdb"));
    }
}
