//! Stage 2's one-time steps, in order: modules, network, data disk. Each logs what it
//! did and why, so a console log alone explains a failed boot.

use std::path::Path;
use std::time::Duration;

use crate::console::log;
use crate::datadisk::{self, DataDiskError};
use crate::modules::{Loader, ModuleIndex, ALWAYS};
use crate::net::{self, NetConfig};
use crate::service::Service;
use crate::settings::{DataDisk, Settings};

pub const DATA_MOUNT: &str = "/data";

fn release() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Loads the always-needed modules and the extra ones named on the command line, then
/// coldplugs until a round loads nothing new (bus drivers reveal new devices).
pub fn load_modules(settings: &Settings) {
    let root = Path::new("/lib/modules").join(release());
    let index = match ModuleIndex::load(&root) {
        Ok(i) => i,
        Err(e) => {
            log(format!(
                "modules: {e}; continuing with built-in drivers only"
            ));
            return;
        }
    };
    let mut loader = Loader::new(index);
    for m in ALWAYS
        .iter()
        .copied()
        .chain(settings.modules.iter().map(String::as_str))
    {
        if let Err(e) = loader.load(m) {
            log(format!("modules: {e}"));
        }
    }
    let mut all = Vec::new();
    for _round in 0..6 {
        let (loaded, errors) = loader.coldplug_round(Path::new("/sys/devices"));
        for e in errors {
            log(format!("modules: {e}"));
        }
        if loaded.is_empty() {
            break;
        }
        all.extend(loaded);
        std::thread::sleep(Duration::from_millis(200));
    }
    log(format!(
        "modules: loaded for the hardware: {}",
        all.join(" ")
    ));
    if Path::new("/dev/kvm").exists() {
        log("kvm: /dev/kvm is present");
    } else {
        log("kvm: no /dev/kvm (no VMX/SVM, or disabled in firmware): microVMs cannot run here");
    }
}

/// Brings up lo and the configured network; returns DHCP clients to keep running.
pub fn network(settings: &Settings) -> Vec<Service> {
    if let Err(e) = pid1::netif::set_up("lo") {
        log(format!("lo: {e}"));
    }
    let ifaces = net::interfaces(Path::new("/sys/class/net"));
    match &settings.net {
        NetConfig::Off => {
            log("network: off (lambda.ip=off)");
            Vec::new()
        }
        NetConfig::Static(s) => {
            net::apply_static(s, &ifaces);
            Vec::new()
        }
        NetConfig::Dhcp => {
            if ifaces.is_empty() {
                log("network: no interfaces found (is the NIC's driver in the image?)");
            }
            ifaces
                .iter()
                .map(|iface| {
                    let (iface, host) = (iface.clone(), settings.hostname.clone());
                    Service::new(&format!("dhcp on {iface}"), move || {
                        Ok(net::dhcp_command(&iface, &host))
                    })
                })
                .collect()
        }
    }
}

/// Finds, prepares and mounts the data disk on [`DATA_MOUNT`]. With `lambda.data=none`
/// the data lives in a tmpfs and is lost at shutdown.
pub fn data_disk(settings: &Settings) -> Result<(), DataDiskError> {
    if settings.data == DataDisk::Ephemeral {
        log("data: lambda.data=none: functions, code and queued events live in RAM and are LOST at shutdown");
        let _ = std::fs::create_dir_all(DATA_MOUNT);
        return nix::mount::mount(
            Some("tmpfs"),
            DATA_MOUNT,
            Some("tmpfs"),
            nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
            Some("mode=0755"),
        )
        .map_err(|source| DataDiskError::Mount {
            dev: "tmpfs".into(),
            target: DATA_MOUNT.into(),
            source,
        });
    }
    let dev = datadisk::find(&settings.data, settings.data_wait)?;
    let formatted = datadisk::prepare(&dev)?;
    datadisk::mount(&dev, Path::new(DATA_MOUNT))?;
    if formatted {
        log(format!(
            "data: {} was blank: formatted ext4 (first boot), mounted on {DATA_MOUNT}",
            dev.display()
        ));
    } else {
        log(format!(
            "data: {} checked and mounted on {DATA_MOUNT}",
            dev.display()
        ));
    }
    Ok(())
}
