//! What this host's KVM can do, asked of our `vmm` once per backend.

use std::path::Path;

/// Asks our `vmm` once what this host's KVM can do, so every VM starts without
/// probing; on failure each `vmm` probes for itself.
pub(super) fn probe_host(vmm: &Path) -> Vec<String> {
    let out = match std::process::Command::new(vmm).arg("--probe-host").output() {
        Ok(o) if o.status.success() => {
            // The vmm says why it decided what it did (e.g. no probe on an emulated CPU).
            for line in String::from_utf8_lossy(&o.stderr).lines() {
                eprintln!("worker: vmm --probe-host: {line}");
            }
            o.stdout
        }
        Ok(o) => {
            eprintln!(
                "worker: {} --probe-host failed ({}): {}",
                vmm.display(),
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return Vec::new();
        }
        Err(e) => {
            eprintln!("worker: {} --probe-host: {e}", vmm.display());
            return Vec::new();
        }
    };
    let found: serde_json::Value = serde_json::from_slice(&out).unwrap_or_default();
    match found.get("xsave").and_then(serde_json::Value::as_bool) {
        Some(true) => vec!["--xsave".into(), "on".into()],
        Some(false) => {
            eprintln!(
                "worker: this host's KVM does not see guests' XSETBV (nested under an \
                 emulator?): microVMs run without XSAVE/AVX"
            );
            vec!["--xsave".into(), "off".into()]
        }
        None => Vec::new(),
    }
}
