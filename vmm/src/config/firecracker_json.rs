//! Firecracker's `--config-file` format (`boot-source`, `drives`, `machine-config`,
//! `vsock`, ...). Unknown fields are errors, as in Firecracker; sections we do not
//! implement are accepted when empty and otherwise warned about or refused.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::*;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootSource {
    pub kernel_image_path: PathBuf,
    #[serde(default)]
    pub boot_args: Option<String>,
    #[serde(default)]
    pub initrd_path: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Drive {
    pub drive_id: String,
    pub path_on_host: PathBuf,
    pub is_root_device: bool,
    #[serde(default)]
    pub is_read_only: Option<bool>,
    #[serde(default)]
    pub partuuid: Option<String>,
    #[serde(default)]
    pub cache_type: Option<String>,
    #[serde(default)]
    pub io_engine: Option<String>,
    #[serde(default)]
    pub rate_limiter: Option<serde_json::Value>,
    #[serde(default)]
    pub socket: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineConfig {
    pub vcpu_count: u8,
    pub mem_size_mib: u64,
    #[serde(default)]
    pub smt: Option<bool>,
    #[serde(default)]
    pub track_dirty_pages: Option<bool>,
    #[serde(default)]
    pub cpu_template: Option<String>,
    #[serde(default)]
    pub huge_pages: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vsock {
    pub guest_cid: u64,
    pub uds_path: PathBuf,
    #[serde(default)]
    pub vsock_id: Option<String>,
}

/// Firecracker's metrics section; here the file gets one report, written at exit.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    pub metrics_path: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirecrackerConfig {
    #[serde(rename = "boot-source")]
    pub boot_source: BootSource,
    #[serde(default)]
    pub drives: Vec<Drive>,
    #[serde(rename = "machine-config", default)]
    pub machine_config: Option<MachineConfig>,
    #[serde(default)]
    pub vsock: Option<Vsock>,
    #[serde(rename = "network-interfaces", default)]
    pub network_interfaces: Vec<serde_json::Value>,
    #[serde(default)]
    pub logger: Option<serde_json::Value>,
    #[serde(default)]
    pub metrics: Option<Metrics>,
    #[serde(default)]
    pub balloon: Option<serde_json::Value>,
    #[serde(rename = "mmds-config", default)]
    pub mmds_config: Option<serde_json::Value>,
    #[serde(default)]
    pub entropy: Option<serde_json::Value>,
    #[serde(rename = "cpu-config", default)]
    pub cpu_config: Option<serde_json::Value>,
}

fn unsupported(path: &Path, reason: impl Into<String>) -> ConfigError {
    ConfigError::Unsupported {
        path: path.to_owned(),
        reason: reason.into(),
    }
}

fn warn_ignored(fc: &FirecrackerConfig) {
    let ignored = [
        ("logger", fc.logger.is_some()),
        ("mmds-config", fc.mmds_config.is_some()),
        ("cpu-config", fc.cpu_config.is_some()),
    ];
    for (name, present) in ignored {
        if present {
            log::warn!("config: section {name:?} is not supported and is ignored");
        }
    }
}

fn convert_drive(path: &Path, d: Drive) -> Result<DriveConfig, ConfigError> {
    if d.socket.is_some() {
        return Err(unsupported(
            path,
            format!(
                "drive {:?}: vhost-user drives are not supported",
                d.drive_id
            ),
        ));
    }
    if d.rate_limiter.as_ref().is_some_and(|v| !v.is_null()) {
        log::warn!("config: drive {:?}: rate_limiter is ignored", d.drive_id);
    }
    Ok(DriveConfig {
        backing: DriveBacking::File(d.path_on_host),
        read_only: d.is_read_only.unwrap_or(false),
        is_root: d.is_root_device,
        partuuid: d.partuuid,
    })
}

/// Converts a parsed file; `path` only labels errors.
pub fn convert(path: &Path, fc: FirecrackerConfig) -> Result<VmConfig, ConfigError> {
    if !fc.network_interfaces.is_empty() {
        return Err(unsupported(path, "network interfaces are not supported"));
    }
    if fc.balloon.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(unsupported(path, "the balloon device is not supported"));
    }
    if fc.entropy.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(unsupported(path, "the entropy device is not supported"));
    }
    warn_ignored(&fc);
    let (vcpus, mem_mib) = match &fc.machine_config {
        Some(m) => {
            if m.smt == Some(true) {
                log::warn!("config: smt=true is ignored; vCPUs are exposed as cores");
            }
            (m.vcpu_count, m.mem_size_mib)
        }
        None => (1, DEFAULT_MEM_MIB),
    };
    // Firecracker puts the root device first (/dev/vda) whatever its position in the list.
    let mut drives = fc
        .drives
        .into_iter()
        .map(|d| convert_drive(path, d))
        .collect::<Result<Vec<_>, _>>()?;
    drives.sort_by_key(|d| !d.is_root);
    Ok(VmConfig {
        kernel: fc.boot_source.kernel_image_path,
        initrd: fc.boot_source.initrd_path,
        cmdline: fc.boot_source.boot_args,
        drives,
        vcpus,
        mem_mib,
        serial_out: SerialOutConfig::Stdout,
        serial_stdin: false,
        vsock: fc.vsock.map(|v| VsockConfig {
            cid: v.guest_cid,
            uds_path: v.uds_path,
        }),
        metrics_path: fc.metrics.map(|m| m.metrics_path),
        log_level: log::LevelFilter::Info,
        seccomp: true,
        kvm_fd: None,
        xsave: Default::default(),
        snapshot: None,
        restore: None,
    })
}

pub fn parse_str(path: &Path, text: &str) -> Result<VmConfig, ConfigError> {
    let fc: FirecrackerConfig = serde_json::from_str(text).map_err(|source| ConfigError::Json {
        path: path.to_owned(),
        source,
    })?;
    convert(path, fc)
}

pub fn load(path: &Path) -> Result<VmConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::File {
        what: "config file",
        path: path.to_owned(),
        source,
    })?;
    parse_str(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FC_EXAMPLE: &str = r#"{
      "boot-source": {
        "kernel_image_path": "/img/vmlinux",
        "boot_args": "console=ttyS0 reboot=k panic=1 pci=off",
        "initrd_path": null
      },
      "drives": [
        {"drive_id": "scratch", "path_on_host": "/img/data.ext4", "is_root_device": false,
         "is_read_only": true},
        {"drive_id": "rootfs", "path_on_host": "/img/rootfs.ext4", "is_root_device": true,
         "partuuid": null, "is_read_only": false, "cache_type": "Unsafe", "io_engine": "Sync",
         "rate_limiter": null}
      ],
      "machine-config": {"vcpu_count": 2, "mem_size_mib": 1024, "smt": false,
                         "track_dirty_pages": false, "huge_pages": "None"},
      "cpu-config": null,
      "balloon": null,
      "network-interfaces": [],
      "vsock": {"guest_cid": 3, "uds_path": "/tmp/v.sock", "vsock_id": "vsock0"},
      "logger": null,
      "metrics": null,
      "mmds-config": null,
      "entropy": null
    }"#;

    fn path() -> &'static Path {
        Path::new("vm.json")
    }

    #[test]
    fn firecracker_example_parses() {
        let c = parse_str(path(), FC_EXAMPLE).unwrap();
        assert_eq!(c.kernel, PathBuf::from("/img/vmlinux"));
        assert_eq!(c.vcpus, 2);
        assert_eq!(c.mem_mib, 1024);
        assert!(c.drives[0].is_root);
        assert_eq!(
            c.drives[0].backing,
            DriveBacking::File(PathBuf::from("/img/rootfs.ext4"))
        );
        assert!(c.drives[1].read_only);
        assert_eq!(c.vsock.unwrap().cid, 3);
        assert_eq!(
            c.cmdline.as_deref(),
            Some("console=ttyS0 reboot=k panic=1 pci=off")
        );
    }

    #[test]
    fn unknown_field_is_an_error_naming_it() {
        let bad = FC_EXAMPLE.replace("\"smt\": false", "\"smt\": false, \"turbo\": 1");
        let e = parse_str(path(), &bad).unwrap_err().to_string();
        assert!(e.contains("turbo"), "{e}");
        let bad = FC_EXAMPLE.replace("\"logger\": null", "\"loggr\": null");
        assert!(parse_str(path(), &bad).is_err());
    }

    #[test]
    fn unsupported_sections_are_refused() {
        let bad = FC_EXAMPLE.replace(
            "\"network-interfaces\": []",
            "\"network-interfaces\": [{\"iface_id\": \"eth0\"}]",
        );
        let e = parse_str(path(), &bad).unwrap_err().to_string();
        assert!(e.contains("network"), "{e}");
        assert!(parse_str(path(), "{").is_err());
        assert!(parse_str(path(), "{}").is_err());
    }

    #[test]
    fn minimal_config() {
        let c = parse_str(path(), r#"{"boot-source": {"kernel_image_path": "/k"}}"#).unwrap();
        assert_eq!((c.vcpus, c.mem_mib), (1, DEFAULT_MEM_MIB));
        assert!(c.drives.is_empty());
        assert!(c.cmdline.is_none());
        assert!(c.metrics_path.is_none());
    }

    #[test]
    fn metrics_section_sets_the_metrics_file() {
        let with = FC_EXAMPLE.replace(
            "\"metrics\": null",
            "\"metrics\": {\"metrics_path\": \"/run/m.json\"}",
        );
        let c = parse_str(path(), &with).unwrap();
        assert_eq!(c.metrics_path, Some(PathBuf::from("/run/m.json")));
        let bad = FC_EXAMPLE.replace("\"metrics\": null", "\"metrics\": {\"path\": \"/m\"}");
        assert!(parse_str(path(), &bad).is_err());
    }
}
