//! Address-range dispatch for port I/O and MMIO exits.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A device reachable through a bus. `offset` is relative to the device's base.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("device range {base:#x}+{len:#x} is empty or overlaps another device")]
    Overlap { base: u64, len: u64 },
}

struct Entry {
    len: u64,
    device: Arc<Mutex<dyn BusDevice>>,
}

/// Built before the vCPUs start and read-only afterwards, so lookups need no lock.
#[derive(Default)]
pub struct Bus {
    devices: BTreeMap<u64, Entry>,
}

impl Bus {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(
        &mut self,
        base: u64,
        len: u64,
        device: Arc<Mutex<dyn BusDevice>>,
    ) -> Result<(), BusError> {
        let end = base.checked_add(len).filter(|_| len > 0);
        let overlap = |e: &(&u64, &Entry)| *e.0 < end.unwrap_or(0) && base < *e.0 + e.1.len;
        if end.is_none() || self.devices.iter().any(|e| overlap(&e)) {
            return Err(BusError::Overlap { base, len });
        }
        self.devices.insert(base, Entry { len, device });
        Ok(())
    }

    fn find(&self, addr: u64) -> Option<(u64, &Entry)> {
        let (base, entry) = self.devices.range(..=addr).next_back()?;
        (addr - base < entry.len).then_some((addr - base, entry))
    }

    /// Returns false if no device claims `addr`.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr) {
            Some((offset, e)) => {
                // A poisoned lock means another vCPU panicked inside the device; keep going
                // with whatever state it left rather than cascading the panic.
                let mut dev = e.device.lock().unwrap_or_else(|p| p.into_inner());
                dev.read(offset, data);
                true
            }
            None => false,
        }
    }

    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr) {
            Some((offset, e)) => {
                let mut dev = e.device.lock().unwrap_or_else(|p| p.into_inner());
                dev.write(offset, data);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Reg(u8);
    impl BusDevice for Reg {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data[0] = self.0 + offset as u8;
        }
        fn write(&mut self, _offset: u64, data: &[u8]) {
            self.0 = data[0];
        }
    }

    #[test]
    fn dispatch_and_overlap() {
        let mut bus = Bus::new();
        bus.insert(0x10, 8, Arc::new(Mutex::new(Reg(1)))).unwrap();
        bus.insert(0x18, 8, Arc::new(Mutex::new(Reg(100)))).unwrap();
        assert!(bus.insert(0x14, 8, Arc::new(Mutex::new(Reg(0)))).is_err());
        assert!(bus.insert(0x0c, 8, Arc::new(Mutex::new(Reg(0)))).is_err());
        assert!(bus.insert(0x40, 0, Arc::new(Mutex::new(Reg(0)))).is_err());
        let mut d = [0u8];
        assert!(bus.read(0x12, &mut d));
        assert_eq!(d[0], 3);
        assert!(bus.write(0x18, &[7]));
        assert!(bus.read(0x1f, &mut d));
        assert_eq!(d[0], 14);
        assert!(!bus.read(0x20, &mut d));
        assert!(!bus.read(0x0f, &mut d));
    }
}
