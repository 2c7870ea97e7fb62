//! Kernel command line assembly.

use linux_loader::cmdline::Cmdline;

use crate::arch::x86_64::layout::CMDLINE_MAX_SIZE;

/// Used when neither `--cmdline` nor `boot_args` is given.
pub const DEFAULT_CMDLINE: &str = "console=ttyS0 reboot=k panic=1 pci=off";
/// Stock kernels on PVM hosts need these (see `pvm.rs`).
pub const PVM_CMDLINE_EXTRA: &str = "noxsave clearcpuid=popcnt,smap,smep";

#[derive(Debug, thiserror::Error)]
pub enum CmdlineError {
    #[error("kernel command line: {0}")]
    Build(#[from] linux_loader::cmdline::Error),
}

/// A virtio-mmio device to announce as `virtio_mmio.device=<size>@<base>:<irq>`.
#[derive(Debug, Clone, Copy)]
pub struct MmioSlot {
    pub base: u64,
    pub size: u64,
    pub irq: u32,
}

pub struct CmdlineSpec<'a> {
    pub base: &'a str,
    /// `root=` argument to add unless the base line already has one.
    pub root: Option<String>,
    pub mmio: &'a [MmioSlot],
    pub pvm: bool,
}

pub fn build(spec: &CmdlineSpec<'_>) -> Result<Cmdline, CmdlineError> {
    let mut c = Cmdline::new(CMDLINE_MAX_SIZE)?;
    if !spec.base.trim().is_empty() {
        c.insert_str(spec.base.trim())?;
    }
    let has_root = spec.base.split_whitespace().any(|w| w.starts_with("root="));
    if let (Some(root), false) = (&spec.root, has_root) {
        c.insert_str(root)?;
    }
    if spec.pvm {
        c.insert_str(PVM_CMDLINE_EXTRA)?;
    }
    for slot in spec.mmio {
        c.insert_str(format!(
            "virtio_mmio.device={}K@{:#x}:{}",
            slot.size >> 10,
            slot.base,
            slot.irq
        ))?;
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(c: &Cmdline) -> String {
        c.as_cstring().unwrap().into_string().unwrap()
    }

    #[test]
    fn adds_root_pvm_and_devices() {
        let slots = [MmioSlot {
            base: 0xd000_1000,
            size: 0x1000,
            irq: 5,
        }];
        let c = build(&CmdlineSpec {
            base: DEFAULT_CMDLINE,
            root: Some("root=/dev/vda rw".into()),
            mmio: &slots,
            pvm: true,
        })
        .unwrap();
        let line = s(&c);
        assert!(line.starts_with(DEFAULT_CMDLINE), "{line}");
        assert!(line.contains(" root=/dev/vda rw "), "{line}");
        assert!(line.contains(PVM_CMDLINE_EXTRA), "{line}");
        assert!(
            line.ends_with("virtio_mmio.device=4K@0xd0001000:5"),
            "{line}"
        );
    }

    #[test]
    fn keeps_user_root_and_rejects_overflow() {
        let c = build(&CmdlineSpec {
            base: "console=ttyS0 root=/dev/vdb",
            root: Some("root=/dev/vda rw".into()),
            mmio: &[],
            pvm: false,
        })
        .unwrap();
        assert_eq!(s(&c), "console=ttyS0 root=/dev/vdb");
        let long = "a".repeat(CMDLINE_MAX_SIZE + 1);
        assert!(build(&CmdlineSpec {
            base: &long,
            root: None,
            mmio: &[],
            pvm: false
        })
        .is_err());
    }
}
