//! Counters for things the guest can make happen; dumped as JSON at exit.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::devices::virtio::vsock::VsockMetrics;

/// Per-block-device counters.
#[derive(Debug, Default)]
pub struct BlockMetrics {
    pub read_count: AtomicU64,
    pub write_count: AtomicU64,
    pub flush_count: AtomicU64,
    pub get_id_count: AtomicU64,
    pub read_bytes: AtomicU64,
    pub write_bytes: AtomicU64,
    /// Chains that violate the virtio-blk layout (answered with IOERR or dropped).
    pub malformed_chains: AtomicU64,
    /// Malformed chains that could not even be answered (no usable status byte).
    pub dropped_chains: AtomicU64,
    pub io_errors: AtomicU64,
    pub unsupported: AtomicU64,
    pub read_only_violations: AtomicU64,
    pub queue_errors: AtomicU64,
}

/// VMM-wide counters.
#[derive(Debug, Default)]
pub struct VmmMetrics {
    pub unhandled_pio: AtomicU64,
    pub unhandled_mmio: AtomicU64,
    pub serial_dropped_bytes: AtomicU64,
    pub serial_errors: AtomicU64,
    pub mmio_transport_invalid: AtomicU64,
}

pub static VMM_METRICS: VmmMetrics = VmmMetrics {
    unhandled_pio: AtomicU64::new(0),
    unhandled_mmio: AtomicU64::new(0),
    serial_dropped_bytes: AtomicU64::new(0),
    serial_errors: AtomicU64::new(0),
    mmio_transport_invalid: AtomicU64::new(0),
};

pub fn inc(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

pub fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

fn get(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

impl BlockMetrics {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "read_count": get(&self.read_count),
            "write_count": get(&self.write_count),
            "flush_count": get(&self.flush_count),
            "get_id_count": get(&self.get_id_count),
            "read_bytes": get(&self.read_bytes),
            "write_bytes": get(&self.write_bytes),
            "malformed_chains": get(&self.malformed_chains),
            "dropped_chains": get(&self.dropped_chains),
            "io_errors": get(&self.io_errors),
            "unsupported": get(&self.unsupported),
            "read_only_violations": get(&self.read_only_violations),
            "queue_errors": get(&self.queue_errors),
        })
    }
}

impl VmmMetrics {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "unhandled_pio": get(&self.unhandled_pio),
            "unhandled_mmio": get(&self.unhandled_mmio),
            "serial_dropped_bytes": get(&self.serial_dropped_bytes),
            "serial_errors": get(&self.serial_errors),
            "mmio_transport_invalid": get(&self.mmio_transport_invalid),
        })
    }
}

/// The vsock device's counters as a JSON object, one key per counter.
pub fn vsock_json(m: &VsockMetrics) -> serde_json::Value {
    let fields = m
        .snapshot()
        .into_iter()
        .map(|(name, value)| (name.to_owned(), serde_json::Value::from(value)));
    serde_json::Value::Object(fields.collect())
}

/// What the VMM reports at exit: VMM-wide counters, one object per block device in
/// attach order, and the vsock device's counters when one is attached.
pub fn exit_report(
    vmm: &VmmMetrics,
    blocks: &[&BlockMetrics],
    vsock: Option<&VsockMetrics>,
) -> serde_json::Value {
    let mut report = serde_json::json!({
        "vmm": vmm.to_json(),
        "block": blocks.iter().map(|b| b.to_json()).collect::<Vec<_>>(),
    });
    if let (Some(v), Some(obj)) = (vsock, report.as_object_mut()) {
        obj.insert("vsock".into(), vsock_json(v));
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_report_has_vsock_counters_only_with_a_vsock_device() {
        let vmm = VmmMetrics::default();
        add(&vmm.unhandled_mmio, 2);
        let block = BlockMetrics::default();
        add(&block.read_bytes, 4096);
        let vsock = VsockMetrics::default();
        add(&vsock.tx_packets, 7);
        add(&vsock.rx_bytes, 1500);
        inc(&vsock.conns_added);
        inc(&vsock.rst_sent);

        let r = exit_report(&vmm, &[&block], Some(&vsock));
        assert_eq!(r["vmm"]["unhandled_mmio"], 2);
        assert_eq!(r["block"][0]["read_bytes"], 4096);
        let v = r["vsock"].as_object().expect("vsock object");
        assert_eq!(v["tx_packets"], 7);
        assert_eq!(v["rx_bytes"], 1500);
        assert_eq!(v["conns_added"], 1);
        assert_eq!(v["rst_sent"], 1);
        assert_eq!(v["drop_bad_len"], 0);
        // Every counter of the device is exported, none invented.
        assert_eq!(v.len(), vsock.snapshot().len());

        let r = exit_report(&vmm, &[], None);
        assert!(r.get("vsock").is_none(), "{r}");
        assert_eq!(r["block"].as_array().map(Vec::len), Some(0));
    }
}
