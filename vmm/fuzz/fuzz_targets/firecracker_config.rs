//! Fuzzes the VM configuration parsers: Firecracker's `--config-file` JSON and the
//! command line.
//!
//! Run: `tests/fuzz.sh vmm/firecracker_config`.
//! Input: the first byte picks the mode. Document (even): a Firecracker config built
//! from fuzzed values, sometimes with an unknown key, a wrongly typed field or an
//! unsupported section; the parser must accept it exactly when it is valid and then
//! carry every value over (root drive first, defaults where a section is missing).
//! Text (odd): the rest is the file as is, and also a NUL-separated argument list.
//! Properties: no panic; `validate` (with every path pointed at a readable file)
//! accepts exactly the configurations inside the documented limits.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Value};
use vmm::arch::x86_64::layout::MAX_VCPUS;
use vmm::config::firecracker_json::parse_str;
use vmm::config::{cli, DriveBacking, VmConfig, DEFAULT_MEM_MIB, MAX_MEM_MIB};

/// Sections accepted with any value and ignored.
const IGNORED: [&str; 3] = ["logger", "mmds-config", "cpu-config"];

#[derive(Arbitrary, Debug)]
struct DriveDoc {
    id: String,
    path: String,
    root: bool,
    read_only: Option<bool>,
    vhost_user: bool,
}

#[derive(Arbitrary, Debug)]
struct Doc {
    kernel: String,
    boot_args: Option<String>,
    initrd: Option<String>,
    drives: Vec<DriveDoc>,
    machine: Option<(u8, u64, Option<bool>)>,
    vsock: Option<(u64, String)>,
    metrics: Option<String>,
    network: bool,
    balloon: bool,
    logger: bool,
    unknown_key: Option<String>,
    /// Replaces a numeric field with a string.
    wrong_type: bool,
}

impl Doc {
    fn to_json(&self) -> Value {
        let mut boot = json!({ "kernel_image_path": self.kernel });
        if let Some(a) = &self.boot_args {
            boot["boot_args"] = json!(a);
        }
        if let Some(i) = &self.initrd {
            boot["initrd_path"] = json!(i);
        }
        let drives: Vec<Value> = self.drives.iter().take(8).map(drive_json).collect();
        let mut doc = json!({ "boot-source": boot, "drives": drives });
        if let Some((vcpus, mem, smt)) = self.machine {
            doc["machine-config"] = json!({ "vcpu_count": vcpus, "mem_size_mib": mem, "smt": smt });
            if self.wrong_type {
                doc["machine-config"]["mem_size_mib"] = json!(mem.to_string());
            }
        }
        if let Some((cid, uds)) = &self.vsock {
            doc["vsock"] = json!({ "guest_cid": cid, "uds_path": uds, "vsock_id": "v" });
        }
        if let Some(m) = &self.metrics {
            doc["metrics"] = json!({ "metrics_path": m });
        }
        let nics = if self.network {
            vec![json!({"iface_id": "eth0"})]
        } else {
            vec![]
        };
        doc["network-interfaces"] = json!(nics);
        doc["balloon"] = if self.balloon {
            json!({"amount_mib": 1})
        } else {
            Value::Null
        };
        if self.logger {
            doc["logger"] = json!({ "level": "Info" });
        }
        if let (Some(k), Value::Object(map)) = (&self.unknown_key, &mut doc) {
            map.insert(k.clone(), json!(1));
        }
        doc
    }

    /// Whether a correct parser accepts this document.
    fn valid(&self) -> bool {
        // An unknown key is refused; a known one set to `1` is refused unless its
        // section is one that is accepted and ignored.
        let bad_key = self
            .unknown_key
            .as_deref()
            .is_some_and(|k| !IGNORED.contains(&k));
        !(bad_key
            || self.network
            || self.balloon
            || (self.wrong_type && self.machine.is_some())
            || self.drives.iter().take(8).any(|d| d.vhost_user))
    }

    fn check(&self, cfg: &VmConfig) {
        assert_eq!(cfg.kernel, PathBuf::from(&self.kernel));
        assert_eq!(cfg.cmdline, self.boot_args);
        assert_eq!(cfg.initrd, self.initrd.as_ref().map(PathBuf::from));
        let (vcpus, mem) = self
            .machine
            .map_or((1, DEFAULT_MEM_MIB), |(v, m, _)| (v, m));
        assert_eq!((cfg.vcpus, cfg.mem_mib), (vcpus, mem));
        let want: Vec<(&str, bool, bool)> = {
            let drives = self.drives.iter().take(8);
            let (roots, rest): (Vec<_>, Vec<_>) = drives.partition(|d| d.root);
            roots
                .into_iter()
                .chain(rest)
                .map(|d| (d.path.as_str(), d.root, d.read_only.unwrap_or(false)))
                .collect()
        };
        let got: Vec<(&str, bool, bool)> = cfg
            .drives
            .iter()
            .map(|d| match &d.backing {
                DriveBacking::File(path) => {
                    (path.to_str().expect("utf-8 path"), d.is_root, d.read_only)
                }
                DriveBacking::ImageLink(fd) => panic!("a config file named an image link {fd}"),
            })
            .collect();
        assert_eq!(got, want, "drives, root first");
        let vsock = cfg.vsock.as_ref().map(|v| (v.cid, v.uds_path.clone()));
        assert_eq!(
            vsock,
            self.vsock.as_ref().map(|(c, u)| (*c, PathBuf::from(u)))
        );
        assert_eq!(cfg.metrics_path, self.metrics.as_ref().map(PathBuf::from));
    }
}

fn drive_json(d: &DriveDoc) -> Value {
    let mut v = json!({
        "drive_id": d.id,
        "path_on_host": d.path,
        "is_root_device": d.root,
        "is_read_only": d.read_only,
    });
    if d.vhost_user {
        v["socket"] = json!("/run/vhost.sock");
    }
    v
}

/// A readable regular file every path is pointed at before `validate`: the fuzz
/// binary itself (a scratch file would outlive the run, which ends by being killed).
fn readable() -> &'static Path {
    static FILE: OnceLock<PathBuf> = OnceLock::new();
    FILE.get_or_init(|| std::env::current_exe().expect("the fuzz binary's path"))
}

/// `validate` with the paths made readable must agree with the documented limits.
fn check_validate(mut cfg: VmConfig) {
    let f = readable().to_path_buf();
    cfg.kernel = f.clone();
    cfg.initrd = cfg.initrd.map(|_| f.clone());
    for d in &mut cfg.drives {
        d.backing = DriveBacking::File(f.clone());
    }
    cfg.kvm_fd = None;
    let expected = cfg.drives.iter().filter(|d| d.is_root).count() <= 1
        && (1..=MAX_VCPUS).contains(&cfg.vcpus)
        && (1..=MAX_MEM_MIB).contains(&cfg.mem_mib)
        && cfg
            .vsock
            .as_ref()
            .is_none_or(|v| (3..=u64::from(u32::MAX)).contains(&v.cid));
    let got = cfg.validate();
    assert_eq!(got.is_ok(), expected, "validate: {got:?} for {cfg:?}");
}

fn text_mode(rest: &[u8]) {
    let path = Path::new("fuzz.json");
    if let Ok(text) = std::str::from_utf8(rest) {
        if let Ok(cfg) = parse_str(path, text) {
            check_validate(cfg);
        }
    }
    let args: Vec<String> = rest
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    // A config file would be read from the fuzzed path; that is `load`, not parsing.
    if args.iter().any(|a| a.starts_with("--config-file")) {
        return;
    }
    if let Ok(cli::Command::Run(cfg)) = cli::parse(args) {
        check_validate(*cfg);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 1 {
        return text_mode(rest);
    }
    let Ok(doc) = Doc::arbitrary_take_rest(Unstructured::new(rest)) else {
        return;
    };
    let text = doc.to_json().to_string();
    let parsed = parse_str(Path::new("fuzz.json"), &text);
    assert_eq!(parsed.is_ok(), doc.valid(), "{parsed:?} for {text}");
    if let Ok(cfg) = parsed {
        doc.check(&cfg);
        check_validate(cfg);
    }
});
