//! The persistent data disk: found by partition name, filesystem label or path,
//! formatted ext4 on first boot when (and only when) it is blank, checked and mounted
//! on every boot. A disk that holds anything else is never formatted.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::settings::{DataDisk, DATA_LABEL};

pub const MKFS: &str = "/usr/sbin/mkfs.ext4";
pub const E2FSCK: &str = "/usr/sbin/e2fsck";
/// Bytes that must all be zero for a disk to count as blank.
const BLANK_PROBE: usize = 1 << 20;
const EXT4_MAGIC: u16 = 0xEF53;

#[derive(Debug, thiserror::Error)]
pub enum DataDiskError {
    #[error("no data disk {0} appeared within {1:?}")]
    NotFound(String, Duration),
    #[error("{dev}: {source}")]
    Io {
        dev: PathBuf,
        source: std::io::Error,
    },
    #[error("{dev} is not blank and holds no ext4 filesystem ({what}); refusing to format it")]
    Foreign { dev: PathBuf, what: &'static str },
    #[error("{tool} {dev} failed: {status}")]
    Tool {
        tool: &'static str,
        dev: PathBuf,
        status: String,
    },
    #[error("mounting {dev} on {target}: {source}")]
    Mount {
        dev: PathBuf,
        target: PathBuf,
        source: nix::Error,
    },
}

/// What a device holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    Ext4 { label: String },
    Blank,
    Other(&'static str),
}

/// Reads what `head` (the device's first bytes) says the device holds.
pub fn classify(head: &[u8]) -> Contents {
    let u16_at = |o: usize| head.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    if u16_at(1024 + 0x38) == Some(EXT4_MAGIC) {
        let label = head
            .get(1024 + 0x78..1024 + 0x88)
            .map(|b| {
                let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
                String::from_utf8_lossy(&b[..end]).into_owned()
            })
            .unwrap_or_default();
        return Contents::Ext4 { label };
    }
    if head.iter().all(|&b| b == 0) {
        return Contents::Blank;
    }
    if head.get(512..520) == Some(b"EFI PART") {
        return Contents::Other("a GPT partition table");
    }
    if u16_at(510) == Some(0xAA55) {
        return Contents::Other("an MBR boot sector or partition table");
    }
    Contents::Other("unknown data")
}

fn read_head(dev: &Path, len: usize) -> Result<Vec<u8>, DataDiskError> {
    let io = |source| DataDiskError::Io {
        dev: dev.to_owned(),
        source,
    };
    let mut f = std::fs::File::open(dev).map_err(io)?;
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        match f.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io(e)),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// A block device as sysfs lists it: kernel name and GPT partition name, if any.
#[derive(Debug, Clone)]
struct BlockDev {
    name: String,
    partname: Option<String>,
}

fn block_devices(sys_class_block: &Path) -> Vec<BlockDev> {
    let mut out: Vec<BlockDev> = std::fs::read_dir(sys_class_block)
        .map(|d| d.flatten().collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if name.starts_with("loop") || name.starts_with("ram") {
                return None;
            }
            let uevent = std::fs::read_to_string(e.path().join("uevent")).unwrap_or_default();
            let partname = uevent
                .lines()
                .find_map(|l| l.strip_prefix("PARTNAME="))
                .map(str::to_owned);
            Some(BlockDev { name, partname })
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// One look for the device `want` names; `None` when it is not (yet) there.
fn find_once(want: &DataDisk, sys_class_block: &Path, dev_dir: &Path) -> Option<PathBuf> {
    let devs = block_devices(sys_class_block);
    let by_partname = |label: &str| {
        devs.iter()
            .find(|d| d.partname.as_deref() == Some(label))
            .map(|d| dev_dir.join(&d.name))
    };
    let by_label = |label: &str| {
        devs.iter().map(|d| dev_dir.join(&d.name)).find(|p| {
            matches!(read_head(p, 2048).map(|h| classify(&h)),
                Ok(Contents::Ext4 { label: l }) if l == label)
        })
    };
    match want {
        DataDisk::Path(p) => p.exists().then(|| p.clone()),
        DataDisk::PartLabel(l) => by_partname(l),
        DataDisk::Label(l) => by_label(l),
        DataDisk::Default => by_partname(DATA_LABEL).or_else(|| by_label(DATA_LABEL)),
        DataDisk::Ephemeral => None,
    }
}

/// Waits up to `wait` for the data disk (drivers probe asynchronously).
pub fn find(want: &DataDisk, wait: Duration) -> Result<PathBuf, DataDiskError> {
    let start = Instant::now();
    loop {
        if let Some(p) = find_once(want, Path::new("/sys/class/block"), Path::new("/dev")) {
            return Ok(p);
        }
        if start.elapsed() >= wait {
            return Err(DataDiskError::NotFound(format!("{want:?}"), wait));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn run(
    tool: &'static str,
    cmd: &mut Command,
    dev: &Path,
    ok: impl Fn(i32) -> bool,
) -> Result<(), DataDiskError> {
    let status = crate::service::with_clean_signals(cmd)
        .status()
        .map_err(|source| DataDiskError::Io {
            dev: dev.to_owned(),
            source,
        })?;
    match status.code() {
        Some(c) if ok(c) => Ok(()),
        _ => Err(DataDiskError::Tool {
            tool,
            dev: dev.to_owned(),
            status: status.to_string(),
        }),
    }
}

/// Formats a blank device, checks an ext4 one, refuses anything else. Returns whether it
/// was formatted now (the first boot).
pub fn prepare(dev: &Path) -> Result<bool, DataDiskError> {
    match classify(&read_head(dev, BLANK_PROBE)?) {
        Contents::Blank => {
            run(
                "mkfs.ext4",
                Command::new(MKFS)
                    .args([
                        "-q",
                        "-F",
                        "-L",
                        DATA_LABEL,
                        "-E",
                        "lazy_itable_init=1,lazy_journal_init=1",
                    ])
                    .arg(dev),
                dev,
                |c| c == 0,
            )?;
            Ok(true)
        }
        // e2fsck -p: 0 clean, 1 errors fixed, 2 fixed but wants a reboot (we mount anyway:
        // nothing is mounted yet); 4 and above need a human.
        Contents::Ext4 { .. } => {
            run(
                "e2fsck -p",
                Command::new(E2FSCK).arg("-p").arg(dev),
                dev,
                |c| c < 4,
            )?;
            Ok(false)
        }
        Contents::Other(what) => Err(DataDiskError::Foreign {
            dev: dev.to_owned(),
            what,
        }),
    }
}

pub fn mount(dev: &Path, target: &Path) -> Result<(), DataDiskError> {
    use nix::mount::MsFlags;
    std::fs::create_dir_all(target).map_err(|source| DataDiskError::Io {
        dev: target.to_owned(),
        source,
    })?;
    nix::mount::mount(
        Some(dev),
        target,
        Some("ext4"),
        MsFlags::MS_NOATIME | MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        None::<&str>,
    )
    .map_err(|source| DataDiskError::Mount {
        dev: dev.to_owned(),
        target: target.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_heads() {
        assert_eq!(classify(&[0u8; 4096]), Contents::Blank);
        let mut ext4 = vec![0u8; 4096];
        ext4[1024 + 0x38..1024 + 0x3a].copy_from_slice(&EXT4_MAGIC.to_le_bytes());
        ext4[1024 + 0x78..1024 + 0x78 + 11].copy_from_slice(b"lambda-data");
        assert_eq!(
            classify(&ext4),
            Contents::Ext4 {
                label: "lambda-data".into()
            }
        );
        let mut gpt = vec![0u8; 4096];
        gpt[510] = 0x55;
        gpt[511] = 0xAA;
        gpt[512..520].copy_from_slice(b"EFI PART");
        assert!(matches!(classify(&gpt), Contents::Other(w) if w.contains("GPT")));
        let mut junk = vec![0u8; 4096];
        junk[4000] = 1;
        assert!(matches!(classify(&junk), Contents::Other(_)));
    }

    #[test]
    fn finds_by_partition_name_and_label() {
        let d = tempfile::tempdir().unwrap();
        let sys = d.path().join("sys");
        let dev = d.path().join("dev");
        std::fs::create_dir_all(&dev).unwrap();
        for (name, uevent) in [
            ("vda", "DEVNAME=vda\n"),
            ("vda1", "DEVNAME=vda1\nPARTNAME=EFI\n"),
            ("vda2", "DEVNAME=vda2\nPARTNAME=lambda-data\n"),
            ("vdb", "DEVNAME=vdb\n"),
        ] {
            std::fs::create_dir_all(sys.join(name)).unwrap();
            std::fs::write(sys.join(name).join("uevent"), uevent).unwrap();
            std::fs::write(dev.join(name), [0u8; 2048]).unwrap();
        }
        assert_eq!(
            find_once(&DataDisk::Default, &sys, &dev),
            Some(dev.join("vda2"))
        );
        assert_eq!(
            find_once(&DataDisk::PartLabel("EFI".into()), &sys, &dev),
            Some(dev.join("vda1"))
        );
        assert_eq!(
            find_once(&DataDisk::Label("disk2".into()), &sys, &dev),
            None
        );
        let mut sb = vec![0u8; 2048];
        sb[1024 + 0x38..1024 + 0x3a].copy_from_slice(&EXT4_MAGIC.to_le_bytes());
        sb[1024 + 0x78..1024 + 0x78 + 5].copy_from_slice(b"disk2");
        std::fs::write(dev.join("vdb"), &sb).unwrap();
        assert_eq!(
            find_once(&DataDisk::Label("disk2".into()), &sys, &dev),
            Some(dev.join("vdb"))
        );
    }

    #[test]
    fn refuses_to_format_foreign_data() {
        let d = tempfile::tempdir().unwrap();
        let img = d.path().join("disk");
        let mut data = vec![0u8; 8192];
        data[5000] = 7;
        std::fs::write(&img, &data).unwrap();
        assert!(matches!(prepare(&img), Err(DataDiskError::Foreign { .. })));
    }
}
