//! Counters for things the guest can make happen; dumped as JSON at exit.

use std::sync::atomic::{AtomicU64, Ordering};

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
