//! Device identity, config space, activation errors and construction errors.

use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

use super::{TmpDir, CID};
use crate::devices::virtio::vsock::testing::{GuestDriver, TestInterrupt};
use crate::devices::virtio::vsock::{Vsock, VsockError};
use crate::devices::virtio::{ActivateContext, ActivateError, VirtioDevice};

#[test]
fn identity_features_and_config_space() {
    let dir = TmpDir::new();
    let mut dev = Vsock::new(0x1_2345_6789 & 0xffff_ffff, dir.uds()).unwrap();
    assert_eq!(dev.device_type(), 19);
    assert_eq!(dev.queue_max_sizes(), &[256, 256, 256]);
    assert_eq!(dev.avail_features(), 1 << 32);
    dev.set_acked_features(u64::MAX);
    let mut cfg = [0xaau8; 12];
    dev.read_config(0, &mut cfg);
    assert_eq!(&cfg[..8], &0x2345_6789u64.to_le_bytes());
    assert_eq!(&cfg[8..], &[0, 0, 0, 0], "bytes past the end read as zero");
    let mut hi = [0u8; 4];
    dev.read_config(4, &mut hi);
    assert_eq!(hi, [0, 0, 0, 0]);
    let mut far = [0xffu8; 2];
    dev.read_config(u64::MAX, &mut far);
    assert_eq!(far, [0, 0]);
    dev.write_config(0, &[9; 8]);
    dev.read_config(0, &mut cfg[..8]);
    assert_eq!(&cfg[..8], &0x2345_6789u64.to_le_bytes(), "cid is read-only");
}

#[test]
fn invalid_cids_and_busy_paths_are_errors() {
    let dir = TmpDir::new();
    for cid in [0, 1, 2, u64::from(u32::MAX) + 1] {
        assert!(matches!(Vsock::new(cid, dir.uds()), Err(VsockError::InvalidCid(c)) if c == cid));
    }
    let _first = Vsock::new(CID, dir.uds()).unwrap();
    let err = Vsock::new(CID, dir.uds()).unwrap_err();
    assert!(matches!(err, VsockError::Backend(_)), "{err}");
    assert!(err.to_string().contains("v.sock"), "{err}");
    let err = Vsock::new(CID, dir.path().join("missing/dir/v.sock")).unwrap_err();
    assert!(matches!(err, VsockError::Backend(_)));
}

#[test]
fn activation_checks_queue_count_and_double_activation() {
    let dir = TmpDir::new();
    let mut dev = Vsock::new(CID, dir.uds()).unwrap();
    let (driver, mut queues) = GuestDriver::new();
    let irq = Arc::new(TestInterrupt::default());
    let evts = |n| (0..n).map(|_| EventFd::new(0).unwrap()).collect::<Vec<_>>();
    queues.pop();
    let ctx = ActivateContext {
        mem: driver.mem.clone(),
        queues,
        queue_evts: evts(3),
        interrupt: irq.clone(),
    };
    assert!(matches!(
        dev.activate(ctx),
        Err(ActivateError::QueueCount {
            expected: 3,
            got: 2
        })
    ));
    assert!(!dev.is_activated());
    assert!(dev.reset().is_none(), "reset of an inactive device");
    let (driver, queues) = GuestDriver::new();
    let ctx = ActivateContext {
        mem: driver.mem.clone(),
        queues,
        queue_evts: evts(3),
        interrupt: irq.clone(),
    };
    dev.activate(ctx).unwrap();
    assert!(dev.is_activated());
    let (driver2, queues2) = GuestDriver::new();
    let ctx = ActivateContext {
        mem: driver2.mem.clone(),
        queues: queues2,
        queue_evts: evts(3),
        interrupt: irq,
    };
    assert!(matches!(
        dev.activate(ctx),
        Err(ActivateError::AlreadyActive)
    ));
    let back = dev.reset().expect("queue eventfds back");
    assert_eq!(back.len(), 3);
    assert!(!dev.is_activated());
}

#[test]
fn socket_file_is_removed_on_drop() {
    let dir = TmpDir::new();
    let dev = Vsock::new(CID, dir.uds()).unwrap();
    assert!(dir.uds().exists());
    drop(dev);
    assert!(!dir.uds().exists());
    Vsock::new(CID, dir.uds()).expect("path reusable after drop");
}
