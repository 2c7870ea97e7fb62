//! Command-line parsing (hand-rolled: a dozen options do not justify a parser dependency).

use std::path::PathBuf;

use super::*;

pub const USAGE: &str = "\
usage: vmm --kernel PATH [--initrd PATH] [--rootfs PATH [--rootfs-read-only]]
           [--drive PATH[,ro] | --image-drive FD]... [--vcpus N] [--mem-mib N] [--cmdline STR]
           [--serial-out PATH|-] [--serial-out-max-bytes N] [--serial-stdin]
           [--vsock-cid N --vsock-uds PATH] [--metrics-path FILE] [--log-level LEVEL]
           [--kvm-fd N] [--xsave auto|on|off] [--no-seccomp] [SNAPSHOT]
       vmm --restore-state PATH --restore-mem PATH [--restore-lazy] [--drive ...|--image-drive FD]...
           [--vsock-cid N --vsock-uds PATH] [--serial-out ...] [--metrics-path FILE]
           [--log-level LEVEL] [--kvm-fd N] [--no-seccomp] [SNAPSHOT]
       vmm --config-file vm.json [--serial-out PATH|-] [--metrics-path FILE]
           [--log-level LEVEL] [--kvm-fd N] [--xsave auto|on|off] [--no-seccomp] [SNAPSHOT]
           [--restore-state PATH --restore-mem PATH [--restore-lazy]]
       vmm --probe-host [--kvm-fd N]
SNAPSHOT: --snapshot-state PATH --snapshot-mem PATH [--snapshot-exit]

--kvm-fd N: use the already open /dev/kvm inherited as descriptor N (a jail then
needs no /dev/kvm node).
--image-drive FD: a read-only drive holding a container image, read lazily through
the chunk link (a socket) inherited as descriptor FD: each chunk is fetched,
checked and decrypted on first use.
--snapshot-state/--snapshot-mem: on SIGUSR1 the VM pauses and writes its state and
its memory to these files (created at start), then resumes, or with --snapshot-exit
stops (exit code 4). --restore-state/--restore-mem resume such a snapshot in a new
process instead of booting: vCPUs and memory come from it (guest memory is mapped
copy-on-write from the memory file), drives, vsock and serial output from the command
line or the config file (whose boot-source and machine-config are then ignored), in
the same order and kinds as when it was taken. A snapshot from another vmm
version or CPU model, or whose checksums fail, is refused with exit code 1.
--restore-lazy maps the memory file without reading it first (its checksum is then
not checked): for callers that keep it where nothing else can write it.
--xsave: auto (default) probes whether this host's KVM tracks the guest's XCR0 and
hides XSAVE/AVX from the guest if not; --probe-host prints what the probe found as
JSON, so a caller starting many VMs can probe once and pass --xsave on|off.

Exit codes: 0 guest reboot (i8042 reset), 1 configuration/setup error, 2 vCPU error,
3 guest triple fault, 4 stopped after a snapshot, 128+N killed by signal N.";

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    Run(Box<VmConfig>),
    /// Probe the host's KVM and print the findings as JSON.
    ProbeHost {
        kvm_fd: Option<i32>,
    },
    Help,
    Version,
}

#[derive(Default)]
struct Raw {
    kernel: Option<PathBuf>,
    initrd: Option<PathBuf>,
    rootfs: Option<PathBuf>,
    rootfs_ro: bool,
    drives: Vec<DriveConfig>,
    vcpus: Option<u8>,
    mem_mib: Option<u64>,
    cmdline: Option<String>,
    serial_out: Option<String>,
    serial_cap: Option<u64>,
    serial_stdin: bool,
    vsock_cid: Option<u64>,
    vsock_uds: Option<PathBuf>,
    metrics_path: Option<PathBuf>,
    config_file: Option<PathBuf>,
    log_level: Option<String>,
    kvm_fd: Option<i32>,
    xsave: Option<XsaveMode>,
    probe_host: bool,
    no_seccomp: bool,
    snapshot_state: Option<PathBuf>,
    snapshot_mem: Option<PathBuf>,
    snapshot_exit: bool,
    restore_state: Option<PathBuf>,
    restore_mem: Option<PathBuf>,
    restore_lazy: bool,
}

fn number<T: std::str::FromStr>(option: &'static str, v: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    v.parse().map_err(|e: T::Err| ConfigError::Invalid {
        option,
        value: v.to_owned(),
        reason: e.to_string(),
    })
}

fn parse_drive(v: &str) -> Result<DriveConfig, ConfigError> {
    let (path, ro) = match v.rsplit_once(',') {
        Some((p, "ro")) => (p, true),
        Some((p, "rw")) => (p, false),
        Some((_, other)) => {
            return Err(ConfigError::Invalid {
                option: "drive",
                value: v.to_owned(),
                reason: format!("unknown flag {other:?} (expected ro or rw)"),
            })
        }
        None => (v, false),
    };
    if path.is_empty() {
        return Err(ConfigError::Invalid {
            option: "drive",
            value: v.to_owned(),
            reason: "empty path".into(),
        });
    }
    Ok(DriveConfig {
        backing: DriveBacking::File(path.into()),
        read_only: ro,
        is_root: false,
        partuuid: None,
    })
}

fn take_value(
    name: &str,
    inline: Option<String>,
    it: &mut impl Iterator<Item = String>,
) -> Result<String, ConfigError> {
    inline
        .or_else(|| it.next())
        .ok_or_else(|| ConfigError::Usage(format!("option {name} needs a value")))
}

fn apply(
    raw: &mut Raw,
    name: &str,
    v: Option<String>,
    it: &mut impl Iterator<Item = String>,
) -> Result<(), ConfigError> {
    let mut val = || take_value(name, v.clone(), it);
    match name {
        "--kernel" => raw.kernel = Some(val()?.into()),
        "--initrd" => raw.initrd = Some(val()?.into()),
        "--rootfs" => raw.rootfs = Some(val()?.into()),
        "--drive" => raw.drives.push(parse_drive(&val()?)?),
        "--image-drive" => raw.drives.push(DriveConfig {
            backing: DriveBacking::ImageLink(number("image-drive", &val()?)?),
            read_only: true,
            is_root: false,
            partuuid: None,
        }),
        "--vcpus" => raw.vcpus = Some(number("vcpus", &val()?)?),
        "--mem-mib" => raw.mem_mib = Some(number("mem-mib", &val()?)?),
        "--cmdline" => raw.cmdline = Some(val()?),
        "--serial-out" => raw.serial_out = Some(val()?),
        "--serial-out-max-bytes" => raw.serial_cap = Some(number("serial-out-max-bytes", &val()?)?),
        "--vsock-cid" => raw.vsock_cid = Some(number("vsock-cid", &val()?)?),
        "--vsock-uds" => raw.vsock_uds = Some(val()?.into()),
        "--metrics-path" => raw.metrics_path = Some(val()?.into()),
        "--config-file" => raw.config_file = Some(val()?.into()),
        "--log-level" => raw.log_level = Some(val()?),
        "--kvm-fd" => raw.kvm_fd = Some(number("kvm-fd", &val()?)?),
        "--xsave" => raw.xsave = Some(number("xsave", &val()?)?),
        "--snapshot-state" => raw.snapshot_state = Some(val()?.into()),
        "--snapshot-mem" => raw.snapshot_mem = Some(val()?.into()),
        "--restore-state" => raw.restore_state = Some(val()?.into()),
        "--restore-mem" => raw.restore_mem = Some(val()?.into()),
        "--rootfs-read-only" | "--serial-stdin" | "--no-seccomp" | "--probe-host"
        | "--snapshot-exit" | "--restore-lazy"
            if v.is_some() =>
        {
            return Err(ConfigError::Usage(format!("option {name} takes no value")))
        }
        "--rootfs-read-only" => raw.rootfs_ro = true,
        "--serial-stdin" => raw.serial_stdin = true,
        "--no-seccomp" => raw.no_seccomp = true,
        "--probe-host" => raw.probe_host = true,
        "--snapshot-exit" => raw.snapshot_exit = true,
        "--restore-lazy" => raw.restore_lazy = true,
        other => {
            return Err(ConfigError::Usage(format!(
                "unknown option {other:?}\n{USAGE}"
            )))
        }
    }
    Ok(())
}

pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Command, ConfigError> {
    let mut raw = Raw::default();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-V" | "--version" => return Ok(Command::Version),
            _ => {}
        }
        let (name, inline) = match arg.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        apply(&mut raw, &name, inline, &mut it)?;
    }
    if raw.probe_host {
        return Ok(Command::ProbeHost { kvm_fd: raw.kvm_fd });
    }
    build(raw).map(|c| Command::Run(Box::new(c)))
}

fn serial_out(raw: &Raw) -> SerialOutConfig {
    match raw.serial_out.as_deref() {
        None | Some("-") => SerialOutConfig::Stdout,
        Some(p) => SerialOutConfig::File {
            path: p.into(),
            cap: raw.serial_cap.unwrap_or(DEFAULT_SERIAL_CAP),
        },
    }
}

fn snapshot(raw: &Raw) -> Result<Option<SnapshotConfig>, ConfigError> {
    match (&raw.snapshot_state, &raw.snapshot_mem) {
        (Some(state), Some(mem)) => Ok(Some(SnapshotConfig {
            state: state.clone(),
            mem: mem.clone(),
            exit_after: raw.snapshot_exit,
        })),
        (None, None) if !raw.snapshot_exit => Ok(None),
        _ => Err(ConfigError::Usage(
            "--snapshot-state and --snapshot-mem must be given together (--snapshot-exit needs both)"
                .into(),
        )),
    }
}

/// A restored VM takes its kernel, vCPUs and memory size from the snapshot.
fn restore(raw: &Raw) -> Result<Option<RestoreConfig>, ConfigError> {
    let (state, mem) = match (&raw.restore_state, &raw.restore_mem) {
        (Some(s), Some(m)) => (s.clone(), m.clone()),
        (None, None) if !raw.restore_lazy => return Ok(None),
        _ => return Err(ConfigError::Usage(
            "--restore-state and --restore-mem must be given together (--restore-lazy needs both)"
                .into(),
        )),
    };
    let boot_opts = raw.kernel.is_some()
        || raw.initrd.is_some()
        || raw.cmdline.is_some()
        || raw.vcpus.is_some()
        || raw.mem_mib.is_some()
        || raw.xsave.is_some();
    if boot_opts {
        return Err(ConfigError::Usage(
            "a restored VM takes its kernel, command line, vCPUs and memory from the snapshot: \
             --kernel, --initrd, --cmdline, --vcpus, --mem-mib and --xsave cannot be combined \
             with --restore-state"
                .into(),
        ));
    }
    Ok(Some(RestoreConfig {
        state,
        mem,
        verify_mem: !raw.restore_lazy,
    }))
}

fn build(raw: Raw) -> Result<VmConfig, ConfigError> {
    let log_level = crate::logger::parse_level(raw.log_level.as_deref().unwrap_or("info"))?;
    let snapshot = snapshot(&raw)?;
    let restore = restore(&raw)?;
    if let Some(path) = &raw.config_file {
        let vm_opts = raw.kernel.is_some()
            || raw.rootfs.is_some()
            || !raw.drives.is_empty()
            || raw.vcpus.is_some()
            || raw.mem_mib.is_some()
            || raw.cmdline.is_some()
            || raw.vsock_cid.is_some();
        if vm_opts {
            return Err(ConfigError::Usage(
                "--config-file cannot be combined with VM options (--kernel, --rootfs, ...)".into(),
            ));
        }
        let mut cfg = firecracker_json::load(path)?;
        cfg.serial_out = serial_out(&raw);
        cfg.serial_stdin = raw.serial_stdin;
        if raw.metrics_path.is_some() {
            cfg.metrics_path = raw.metrics_path.clone();
        }
        cfg.log_level = log_level;
        cfg.seccomp = !raw.no_seccomp;
        cfg.kvm_fd = raw.kvm_fd;
        cfg.xsave = raw.xsave.unwrap_or_default();
        cfg.snapshot = snapshot;
        // As for the command line: the file's devices, the snapshot's machine.
        cfg.restore = restore;
        return Ok(cfg);
    }
    let kernel = match &restore {
        Some(_) => PathBuf::new(),
        None => raw.kernel.clone().ok_or(ConfigError::Missing("--kernel"))?,
    };
    let mut drives = Vec::new();
    if let Some(root) = &raw.rootfs {
        drives.push(DriveConfig {
            backing: DriveBacking::File(root.clone()),
            read_only: raw.rootfs_ro,
            is_root: true,
            partuuid: None,
        });
    } else if raw.rootfs_ro {
        return Err(ConfigError::Usage(
            "--rootfs-read-only needs --rootfs".into(),
        ));
    }
    drives.extend(raw.drives.iter().cloned());
    let vsock = match (raw.vsock_cid, &raw.vsock_uds) {
        (Some(cid), Some(uds)) => Some(VsockConfig {
            cid,
            uds_path: uds.clone(),
        }),
        (None, None) => None,
        _ => {
            return Err(ConfigError::Usage(
                "--vsock-cid and --vsock-uds must be given together".into(),
            ))
        }
    };
    Ok(VmConfig {
        kernel,
        initrd: raw.initrd.clone(),
        cmdline: raw.cmdline.clone(),
        drives,
        vcpus: raw.vcpus.unwrap_or(1),
        mem_mib: raw.mem_mib.unwrap_or(DEFAULT_MEM_MIB),
        serial_out: serial_out(&raw),
        serial_stdin: raw.serial_stdin,
        vsock,
        metrics_path: raw.metrics_path.clone(),
        log_level,
        seccomp: !raw.no_seccomp,
        kvm_fd: raw.kvm_fd,
        xsave: raw.xsave.unwrap_or_default(),
        snapshot,
        restore,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, ConfigError> {
        parse(args.iter().map(|s| s.to_string()))
    }

    fn cfg(args: &[&str]) -> VmConfig {
        match p(args).unwrap() {
            Command::Run(c) => *c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn full_command_line() {
        let c = cfg(&[
            "--kernel",
            "/k",
            "--rootfs=/r",
            "--rootfs-read-only",
            "--drive",
            "/d,ro",
            "--drive",
            "/e",
            "--vcpus",
            "2",
            "--mem-mib",
            "256",
            "--cmdline",
            "console=ttyS0",
            "--serial-out",
            "/tmp/s",
            "--vsock-cid",
            "3",
            "--vsock-uds",
            "/tmp/v.sock",
            "--metrics-path=/tmp/m.json",
            "--log-level",
            "debug",
            "--kvm-fd",
            "7",
            "--xsave=off",
            "--no-seccomp",
        ]);
        assert_eq!(c.kernel, PathBuf::from("/k"));
        assert_eq!(c.drives.len(), 3);
        assert!(c.drives[0].is_root && c.drives[0].read_only);
        assert!(c.drives[1].read_only && !c.drives[2].read_only);
        assert_eq!((c.vcpus, c.mem_mib), (2, 256));
        assert_eq!(
            c.serial_out,
            SerialOutConfig::File {
                path: "/tmp/s".into(),
                cap: DEFAULT_SERIAL_CAP
            }
        );
        assert_eq!(c.vsock.unwrap().cid, 3);
        assert_eq!(c.metrics_path, Some(PathBuf::from("/tmp/m.json")));
        assert!(!c.seccomp);
        assert_eq!(c.kvm_fd, Some(7));
        assert_eq!(c.xsave, XsaveMode::Off);
        assert_eq!(c.log_level, log::LevelFilter::Debug);
    }

    #[test]
    fn defaults_and_errors() {
        let c = cfg(&["--kernel", "/k"]);
        assert_eq!((c.vcpus, c.mem_mib, c.seccomp), (1, DEFAULT_MEM_MIB, true));
        assert_eq!(c.serial_out, SerialOutConfig::Stdout);
        assert_eq!(c.metrics_path, None);
        assert!(p(&["--kernel", "/k", "--metrics-path"]).is_err());
        assert!(matches!(p(&[]), Err(ConfigError::Missing("--kernel"))));
        assert!(p(&["--kernel"]).is_err());
        assert!(p(&["--kernel", "/k", "--vcpus", "x"]).is_err());
        assert!(p(&["--kernel", "/k", "--vcpus", "300"]).is_err());
        assert!(p(&["--kernel", "/k", "--bogus"]).is_err());
        assert!(p(&["--kernel", "/k", "--vsock-cid", "3"]).is_err());
        assert!(p(&["--kernel", "/k", "--drive", "/d,xx"]).is_err());
        assert!(p(&["--kernel", "/k", "--log-level", "loud"]).is_err());
        assert!(p(&["--kernel", "/k", "--no-seccomp=1"]).is_err());
        assert!(p(&["--config-file", "/x.json", "--kernel", "/k"]).is_err());
        assert!(matches!(p(&["--help"]).unwrap(), Command::Help));
        assert!(p(&["--kernel", "/k", "--xsave", "maybe"]).is_err());
        assert!(matches!(
            p(&["--probe-host", "--kvm-fd", "5"]).unwrap(),
            Command::ProbeHost { kvm_fd: Some(5) }
        ));
    }

    #[test]
    fn snapshot_and_restore_options() {
        let c = cfg(&[
            "--kernel",
            "/k",
            "--snapshot-state",
            "/s",
            "--snapshot-mem=/m",
            "--snapshot-exit",
        ]);
        let s = c.snapshot.unwrap();
        assert_eq!(
            (s.state, s.mem, s.exit_after),
            ("/s".into(), "/m".into(), true)
        );
        assert!(p(&["--kernel", "/k", "--snapshot-state", "/s"]).is_err());
        assert!(p(&["--kernel", "/k", "--snapshot-exit"]).is_err());

        let c = cfg(&[
            "--restore-state",
            "/s",
            "--restore-mem",
            "/m",
            "--drive",
            "/d",
        ]);
        let r = c.restore.unwrap();
        assert_eq!(
            (r.state, r.mem, r.verify_mem),
            ("/s".into(), "/m".into(), true)
        );
        assert_eq!(c.drives.len(), 1);
        let lazy = cfg(&[
            "--restore-state",
            "/s",
            "--restore-mem",
            "/m",
            "--restore-lazy",
        ]);
        assert!(!lazy.restore.unwrap().verify_mem);
        assert!(p(&["--kernel", "/k", "--restore-lazy"]).is_err());
        assert!(p(&["--restore-state", "/s"]).is_err());
        for extra in [["--kernel", "/k"], ["--mem-mib", "64"], ["--vcpus", "2"]] {
            let mut args = vec!["--restore-state", "/s", "--restore-mem", "/m"];
            args.extend(extra);
            assert!(p(&args).is_err(), "{extra:?}");
        }
    }
}
