//! Networking: DHCP on every interface (busybox `udhcpc`, kept running so leases renew),
//! a static address in the kernel's `ip=` syntax, or none.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;
use std::str::FromStr;

use crate::console::log;

pub const BUSYBOX: &str = "/bin/busybox";
/// The script udhcpc runs on lease events (installed by image-build/appliance.sh).
pub const UDHCPC_SCRIPT: &str = "/usr/share/appliance/udhcpc.script";
pub const RESOLV_CONF: &str = "/run/resolv.conf";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticNet {
    pub addr: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    /// The interface; the first one that is not `lo` when absent.
    pub device: Option<String>,
    pub dns: Vec<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetConfig {
    Dhcp,
    Off,
    Static(StaticNet),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NetParseError {
    #[error("field {field}: {value:?} is not an IPv4 address")]
    Address { field: &'static str, value: String },
    #[error("netmask {0:?} is neither a dotted mask nor a prefix length")]
    Netmask(String),
    #[error("expected dhcp, off, or client-ip::gw-ip:netmask:hostname:device:off:dns0:dns1")]
    Shape,
}

fn addr(field: &'static str, v: &str) -> Result<Option<Ipv4Addr>, NetParseError> {
    if v.is_empty() {
        return Ok(None);
    }
    v.parse().map(Some).map_err(|_| NetParseError::Address {
        field,
        value: v.to_owned(),
    })
}

fn prefix_of(mask: &str) -> Result<u8, NetParseError> {
    if let Ok(p) = mask.parse::<u8>() {
        return if p <= 32 {
            Ok(p)
        } else {
            Err(NetParseError::Netmask(mask.into()))
        };
    }
    let m: Ipv4Addr = mask
        .parse()
        .map_err(|_| NetParseError::Netmask(mask.into()))?;
    let bits = u32::from(m);
    if bits.leading_ones() + bits.trailing_zeros() != 32 {
        return Err(NetParseError::Netmask(mask.into()));
    }
    Ok(bits.leading_ones() as u8)
}

impl FromStr for NetConfig {
    type Err = NetParseError;

    /// `dhcp`, `off`/`none`, or the kernel's
    /// `<client-ip>:<server-ip>:<gw-ip>:<netmask>:<hostname>:<device>:<autoconf>:<dns0>:<dns1>`
    /// where client-ip may carry a `/prefix` instead of the netmask field.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "dhcp" | "on" | "any" => return Ok(NetConfig::Dhcp),
            "off" | "none" => return Ok(NetConfig::Off),
            _ => {}
        }
        let f: Vec<&str> = s.split(':').collect();
        if f.len() > 9 {
            return Err(NetParseError::Shape);
        }
        let field = |i: usize| f.get(i).copied().unwrap_or("");
        let (client, inline_prefix) = match field(0).split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (field(0), None),
        };
        let addr_v = addr("client-ip", client)?.ok_or(NetParseError::Shape)?;
        let prefix = match (inline_prefix, field(3)) {
            (Some(p), _) => prefix_of(p)?,
            (None, "") => 24,
            (None, m) => prefix_of(m)?,
        };
        let device = Some(field(5).to_owned()).filter(|d| !d.is_empty());
        let dns = [addr("dns0-ip", field(7))?, addr("dns1-ip", field(8))?]
            .into_iter()
            .flatten()
            .collect();
        Ok(NetConfig::Static(StaticNet {
            addr: addr_v,
            prefix,
            gateway: addr("gw-ip", field(2))?,
            device,
            dns,
        }))
    }
}

/// Interfaces other than `lo`, sorted by name.
pub fn interfaces(sys_class_net: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(sys_class_net)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n != "lo")
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn ip(args: &[&str]) -> bool {
    let mut cmd = Command::new(BUSYBOX);
    cmd.arg("ip").args(args);
    match crate::service::with_clean_signals(&mut cmd).status() {
        Ok(s) if s.success() => true,
        Ok(s) => {
            log(format!("ip {}: {s}", args.join(" ")));
            false
        }
        Err(e) => {
            log(format!("ip {}: {e}", args.join(" ")));
            false
        }
    }
}

fn write_resolv_conf(dns: &[Ipv4Addr]) {
    let text: String = dns.iter().map(|d| format!("nameserver {d}\n")).collect();
    if let Err(e) = std::fs::write(RESOLV_CONF, text) {
        log(format!("writing {RESOLV_CONF}: {e}"));
    }
}

/// Applies a static configuration; returns false when it could not be applied.
pub fn apply_static(cfg: &StaticNet, ifaces: &[String]) -> bool {
    let Some(dev) = cfg.device.clone().or_else(|| ifaces.first().cloned()) else {
        log("lambda.ip: no network interface found");
        return false;
    };
    let cidr = format!("{}/{}", cfg.addr, cfg.prefix);
    let mut ok =
        ip(&["link", "set", "dev", &dev, "up"]) && ip(&["addr", "add", &cidr, "dev", &dev]);
    if let Some(gw) = cfg.gateway {
        ok &= ip(&[
            "route",
            "add",
            "default",
            "via",
            &gw.to_string(),
            "dev",
            &dev,
        ]);
    }
    write_resolv_conf(&cfg.dns);
    log(format!("network: {dev} {cidr} (static)"));
    ok
}

/// The udhcpc command for one interface: foreground (so PID 1 supervises it), retrying
/// forever, renewing its lease while it runs.
pub fn dhcp_command(iface: &str, hostname: &str) -> Command {
    let mut c = Command::new(BUSYBOX);
    c.args([
        "udhcpc",
        "-f",
        "-S",
        "-t",
        "0",
        "-T",
        "2",
        "-i",
        iface,
        "-s",
        UDHCPC_SCRIPT,
    ])
    .args(["-x", &format!("hostname:{hostname}")]);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_kernel_syntax() {
        let c: NetConfig = "10.0.2.15::10.0.2.2:255.255.255.0:box:eth0:off:10.0.2.3"
            .parse()
            .unwrap();
        assert_eq!(
            c,
            NetConfig::Static(StaticNet {
                addr: Ipv4Addr::new(10, 0, 2, 15),
                prefix: 24,
                gateway: Some(Ipv4Addr::new(10, 0, 2, 2)),
                device: Some("eth0".into()),
                dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
            })
        );
        let c: NetConfig = "192.168.1.9/16".parse().unwrap();
        let NetConfig::Static(s) = c else { panic!() };
        assert_eq!((s.prefix, s.gateway, s.device), (16, None, None));
        assert_eq!("dhcp".parse::<NetConfig>().unwrap(), NetConfig::Dhcp);
        assert_eq!("off".parse::<NetConfig>().unwrap(), NetConfig::Off);
    }

    #[test]
    fn bad_addresses_and_masks_are_errors() {
        for bad in [
            "10.0.0",
            "10.0.0.1::x",
            "10.0.0.1:::255.0.255.0",
            "10.0.0.1/33",
            "a:b:c:d:e:f:g:h:i:j",
        ] {
            assert!(bad.parse::<NetConfig>().is_err(), "{bad}");
        }
    }

    #[test]
    fn lists_interfaces_without_lo() {
        let d = tempfile::tempdir().unwrap();
        for n in ["lo", "eth1", "eth0"] {
            std::fs::create_dir(d.path().join(n)).unwrap();
        }
        assert_eq!(interfaces(d.path()), ["eth0", "eth1"]);
    }
}
