use vm_superio::serial::SerialState;

use super::format::{self, CpuModel, FormatError, SnapshotDocument, MAX_STATE_BYTES};
use super::MicroVmState;
use crate::devices::legacy::i8042::I8042State;
use crate::vstate::vm_state::VmState;

fn sample() -> MicroVmState {
    MicroVmState {
        mem_mib: 16,
        memory_blake3: [7; 32],
        vm: VmState {
            irqchips: vec![Default::default(); 3],
            pit: Default::default(),
            clock: Default::default(),
            host_realtime_ns: 1,
        },
        vcpus: Vec::new(),
        serial: SerialState::default().into(),
        i8042: I8042State {
            ctr: 1,
            status: 2,
            pending_cmd: None,
            outbuf: vec![0xfa],
        },
        virtio: Vec::new(),
    }
}

#[test]
fn a_document_round_trips() {
    let bytes = format::encode(&SnapshotDocument::here(sample())).unwrap();
    assert_eq!(&bytes[..8], b"LMVMSNAP");
    let doc = format::decode(&bytes).unwrap();
    assert_eq!(doc.state.mem_mib, 16);
    assert_eq!(doc.state.i8042.outbuf, vec![0xfa]);
    assert_eq!(doc.cpu, CpuModel::host());
}

#[test]
fn every_corruption_is_refused_before_parsing() {
    let bytes = format::encode(&SnapshotDocument::here(sample())).unwrap();
    for at in [0, 9, 12, bytes.len() / 2, bytes.len() - 1] {
        let mut bad = bytes.clone();
        bad[at] ^= 0x20;
        let e = format::decode(&bad).unwrap_err();
        let expected = match at {
            0 => matches!(e, FormatError::BadMagic),
            9 => matches!(e, FormatError::FormatVersion { .. }),
            _ => matches!(e, FormatError::Checksum),
        };
        assert!(expected, "byte {at}: {e}");
    }
    assert!(matches!(
        format::decode(&bytes[..20]),
        Err(FormatError::Truncated(20))
    ));
    assert!(matches!(
        format::decode(&bytes[..bytes.len() - 1]),
        Err(FormatError::Checksum)
    ));
    let huge = vec![0u8; MAX_STATE_BYTES as usize + 1];
    assert!(matches!(
        format::decode(&huge),
        Err(FormatError::TooLarge(_))
    ));
}

#[test]
fn another_vmm_version_or_cpu_model_is_refused() {
    let mut doc = SnapshotDocument::here(sample());
    doc.vmm_version = "0.0.0-other".into();
    let e = format::decode(&format::encode(&doc).unwrap()).unwrap_err();
    assert!(matches!(e, FormatError::VmmVersion { .. }), "{e}");
    assert!(e.to_string().contains("0.0.0-other"), "{e}");

    let mut doc = SnapshotDocument::here(sample());
    doc.cpu.signature ^= 0x10;
    let e = format::decode(&format::encode(&doc).unwrap()).unwrap_err();
    assert!(matches!(e, FormatError::Cpu { .. }), "{e}");
}
