use super::*;
use crate::devices::virtio::{ActivateError, VirtioInterrupt};
use vm_memory::GuestAddress;

#[derive(Default)]
struct Dummy {
    acked: u64,
    active: Option<ActivateContext>,
    config: [u8; 8],
    resets: u32,
}

impl VirtioDevice for Dummy {
    fn device_type(&self) -> u32 {
        42
    }
    fn queue_max_sizes(&self) -> &[u16] {
        &[16, 16]
    }
    fn avail_features(&self) -> u64 {
        1 << 3 | 1 << 40
    }
    fn set_acked_features(&mut self, acked: u64) {
        self.acked = acked;
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self.config.get(offset as usize + i).copied().unwrap_or(0);
        }
    }
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        for (i, b) in data.iter().enumerate() {
            if let Some(c) = self.config.get_mut(offset as usize + i) {
                *c = *b;
            }
        }
    }
    fn activate(&mut self, ctx: ActivateContext) -> Result<(), ActivateError> {
        if self.active.is_some() {
            return Err(ActivateError::AlreadyActive);
        }
        self.active = Some(ctx);
        Ok(())
    }
    fn reset(&mut self) -> Option<Vec<EventFd>> {
        self.resets += 1;
        self.active.take().map(|c| c.queue_evts)
    }
    fn is_activated(&self) -> bool {
        self.active.is_some()
    }
    fn queue_states(&self) -> Vec<virtio_queue::QueueState> {
        self.active
            .iter()
            .flat_map(|a| a.queues.iter().map(|q| q.state()))
            .collect()
    }
}

fn setup() -> (MmioTransport, Arc<Mutex<Dummy>>, EventFd) {
    let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
    let dev = Arc::new(Mutex::new(Dummy::default()));
    let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let int = Arc::new(MmioInterrupt::new(irq.try_clone().unwrap()));
    let t = MmioTransport::new(mem, dev.clone(), int).unwrap();
    (t, dev, irq)
}

fn r(t: &mut MmioTransport, off: u64) -> u32 {
    let mut b = [0u8; 4];
    t.read(off, &mut b);
    u32::from_le_bytes(b)
}

fn w(t: &mut MmioTransport, off: u64, v: u32) {
    t.write(off, &v.to_le_bytes());
}

fn negotiate(t: &mut MmioTransport) {
    w(t, REG_STATUS, STATUS_ACKNOWLEDGE);
    w(t, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    w(t, REG_DRIVER_FEATURES_SEL, 0);
    w(t, REG_DRIVER_FEATURES, 1 << 3);
    w(t, REG_DRIVER_FEATURES_SEL, 1);
    w(t, REG_DRIVER_FEATURES, 1 | 1 << 8); // VERSION_1 and bit 40
    w(
        t,
        REG_STATUS,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
    );
}

fn setup_queue(t: &mut MmioTransport, idx: u32, base: u32) {
    w(t, REG_QUEUE_SEL, idx);
    w(t, REG_QUEUE_NUM, 16);
    w(t, REG_QUEUE_DESC_LOW, base);
    w(t, REG_QUEUE_DESC_HIGH, 0);
    w(t, REG_QUEUE_DRIVER_LOW, base + 0x1000);
    w(t, REG_QUEUE_DEVICE_LOW, base + 0x2000);
    w(t, REG_QUEUE_READY, 1);
}

#[test]
fn identification_registers() {
    let (mut t, _, _) = setup();
    assert_eq!(r(&mut t, REG_MAGIC), MMIO_MAGIC_VALUE);
    assert_eq!(r(&mut t, REG_VERSION), 2);
    assert_eq!(r(&mut t, REG_DEVICE_ID), 42);
    w(&mut t, REG_DEVICE_FEATURES_SEL, 0);
    assert_eq!(r(&mut t, REG_DEVICE_FEATURES), 1 << 3);
    w(&mut t, REG_DEVICE_FEATURES_SEL, 1);
    assert_eq!(r(&mut t, REG_DEVICE_FEATURES), 1 | 1 << 8);
    w(&mut t, REG_QUEUE_SEL, 1);
    assert_eq!(r(&mut t, REG_QUEUE_NUM_MAX), 16);
    w(&mut t, REG_QUEUE_SEL, 7);
    assert_eq!(r(&mut t, REG_QUEUE_NUM_MAX), 0);
}

#[test]
fn full_negotiation_activates_device() {
    let (mut t, dev, irq) = setup();
    negotiate(&mut t);
    assert_eq!(dev.lock().unwrap().acked, 1 << 3 | 1 << 40);
    setup_queue(&mut t, 0, 0x1_0000);
    setup_queue(&mut t, 1, 0x2_0000);
    w(&mut t, REG_STATUS, 0xf);
    assert_eq!(r(&mut t, REG_STATUS), 0xf);
    assert!(dev.lock().unwrap().is_activated());

    // Queue registers are frozen after DRIVER_OK.
    w(&mut t, REG_QUEUE_SEL, 0);
    w(&mut t, REG_QUEUE_READY, 0);
    assert_eq!(r(&mut t, REG_QUEUE_READY), 1);

    // Notify fallback reaches the device's clone of the queue eventfd.
    w(&mut t, REG_QUEUE_NOTIFY, 1);
    {
        let d = dev.lock().unwrap();
        assert_eq!(d.active.as_ref().unwrap().queue_evts[1].read().unwrap(), 1);
        d.active
            .as_ref()
            .unwrap()
            .interrupt
            .signal_used_queue(0)
            .unwrap();
    }
    assert_eq!(irq.read().unwrap(), 1);
    assert_eq!(r(&mut t, REG_INTERRUPT_STATUS), 1);
    w(&mut t, REG_INTERRUPT_ACK, 1);
    assert_eq!(r(&mut t, REG_INTERRUPT_STATUS), 0);

    // Reset returns everything to zero and resets the device.
    w(&mut t, REG_STATUS, 0);
    assert_eq!(r(&mut t, REG_STATUS), 0);
    assert!(!dev.lock().unwrap().is_activated());
    assert_eq!(dev.lock().unwrap().resets, 1);
    w(&mut t, REG_QUEUE_SEL, 0);
    assert_eq!(r(&mut t, REG_QUEUE_READY), 0);
}

#[test]
fn out_of_order_status_is_ignored() {
    let (mut t, dev, _) = setup();
    w(&mut t, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    assert_eq!(r(&mut t, REG_STATUS), 0);
    w(&mut t, REG_STATUS, STATUS_ACKNOWLEDGE);
    w(
        &mut t,
        REG_STATUS,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_DRIVER_OK,
    );
    assert_eq!(r(&mut t, REG_STATUS), STATUS_ACKNOWLEDGE);
    assert!(!dev.lock().unwrap().is_activated());
}

#[test]
fn features_without_version_1_are_refused() {
    let (mut t, _, _) = setup();
    w(&mut t, REG_STATUS, STATUS_ACKNOWLEDGE);
    w(&mut t, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    w(&mut t, REG_DRIVER_FEATURES, 1 << 3);
    w(
        &mut t,
        REG_STATUS,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
    );
    assert_eq!(r(&mut t, REG_STATUS) & STATUS_FEATURES_OK, 0);
}

#[test]
fn unoffered_features_are_masked() {
    let (mut t, dev, _) = setup();
    w(&mut t, REG_STATUS, STATUS_ACKNOWLEDGE);
    w(&mut t, REG_STATUS, STATUS_ACKNOWLEDGE | STATUS_DRIVER);
    w(&mut t, REG_DRIVER_FEATURES, 0xffff_ffff);
    w(&mut t, REG_DRIVER_FEATURES_SEL, 1);
    w(&mut t, REG_DRIVER_FEATURES, 1);
    w(
        &mut t,
        REG_STATUS,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK,
    );
    assert_eq!(dev.lock().unwrap().acked, 1 << 3);
}

#[test]
fn queue_setup_before_features_ok_is_rejected() {
    let (mut t, _, _) = setup();
    w(&mut t, REG_STATUS, STATUS_ACKNOWLEDGE);
    setup_queue(&mut t, 0, 0x1_0000);
    w(&mut t, REG_QUEUE_SEL, 0);
    assert_eq!(r(&mut t, REG_QUEUE_READY), 0);
}

#[test]
fn driver_ok_with_invalid_queue_needs_reset() {
    let (mut t, dev, _) = setup();
    negotiate(&mut t);
    setup_queue(&mut t, 0, 0x1_0000);
    // Queue 1 points outside guest memory.
    setup_queue(&mut t, 1, 0x4000_0000);
    w(&mut t, REG_STATUS, 0xf);
    assert_ne!(r(&mut t, REG_STATUS) & STATUS_DEVICE_NEEDS_RESET, 0);
    assert!(!dev.lock().unwrap().is_activated());
}

#[test]
fn config_space_and_bad_widths() {
    let (mut t, _, _) = setup();
    t.write(CONFIG_SPACE + 2, &[0xaa, 0xbb]);
    let mut b = [0u8; 4];
    t.read(CONFIG_SPACE, &mut b);
    assert_eq!(b, [0, 0, 0xaa, 0xbb]);
    let mut far = [1u8; 2];
    t.read(CONFIG_SPACE + 100, &mut far);
    assert_eq!(far, [0, 0]);
    // A 2-byte register access is ignored and reads as zero.
    let mut two = [0xffu8; 2];
    t.read(REG_MAGIC, &mut two);
    assert_eq!(two, [0, 0]);
    t.write(REG_STATUS, &[1]);
    assert_eq!(r(&mut t, REG_STATUS), 0);
    // Notify for a non-existent queue does not panic.
    w(&mut t, REG_QUEUE_NOTIFY, 99);
}

fn running(t: &mut MmioTransport) {
    negotiate(t);
    setup_queue(t, 0, 0x1_0000);
    setup_queue(t, 1, 0x2_0000);
    w(
        t,
        REG_STATUS,
        STATUS_ACKNOWLEDGE | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
    );
}

#[test]
fn a_snapshot_resumes_the_device_with_its_live_rings() {
    let (mut t, dev, _) = setup();
    running(&mut t);
    // The device moved on since DRIVER_OK: the snapshot must hold its positions.
    dev.lock().unwrap().active.as_mut().unwrap().queues[1].set_next_avail(5);
    t.interrupt().signal_used_queue(0).unwrap();
    let state = t.snapshot();
    assert_eq!(state.queues[1].next_avail, 5);

    let (mut fresh, fresh_dev, _) = setup();
    fresh.restore(&state).unwrap();
    assert_eq!(r(&mut fresh, REG_STATUS), state.status);
    assert_eq!(r(&mut fresh, REG_INTERRUPT_STATUS), 1);
    let d = fresh_dev.lock().unwrap();
    assert_eq!(d.acked, 1 << 3 | 1 << 40);
    let active = d.active.as_ref().expect("restored device is active");
    assert_eq!(active.queues[1].state().next_avail, 5);
    assert_eq!(active.queues[0].state().desc_table, 0x1_0000);
    // Kicked once per queue for buffers queued while the snapshot was taken.
    for evt in &active.queue_evts {
        assert_eq!(evt.read().unwrap(), 1);
    }
}

#[test]
fn a_snapshot_of_a_device_not_yet_running_leaves_it_inactive() {
    let (mut t, _, _) = setup();
    negotiate(&mut t);
    let state = t.snapshot();
    let (mut fresh, fresh_dev, _) = setup();
    fresh.restore(&state).unwrap();
    assert!(fresh_dev.lock().unwrap().active.is_none());
    assert_eq!(r(&mut fresh, REG_STATUS), state.status);
}

#[test]
fn a_snapshot_that_does_not_fit_the_device_or_memory_is_refused() {
    let (mut t, _, _) = setup();
    running(&mut t);
    let good = t.snapshot();

    let mut other = good.clone();
    other.device_type = 2;
    let (mut fresh, _, _) = setup();
    assert!(matches!(
        fresh.restore(&other),
        Err(TransportError::DeviceType { found: 2, .. })
    ));

    let mut short = good.clone();
    short.queues.pop();
    assert!(matches!(
        fresh.restore(&short),
        Err(TransportError::QueueCount { found: 1, .. })
    ));

    // Rings outside guest memory fail as they would at DRIVER_OK.
    let mut outside = good;
    outside.queues[0].desc_table = 0x4000_0000;
    let (mut fresh, fresh_dev, _) = setup();
    assert!(matches!(
        fresh.restore(&outside),
        Err(TransportError::Activate(42))
    ));
    assert!(fresh_dev.lock().unwrap().active.is_none());
}
