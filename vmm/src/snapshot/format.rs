//! The snapshot state file: `LMVMSNAP`, a format version, the JSON document (vmm
//! version, host CPU model, the VM's state), and a BLAKE3 checksum of everything before
//! it. Read in that order: the size bound first, the checksum before any parsing, then
//! the version and CPU checks, each refusal with its own error.

use serde::{Deserialize, Serialize};

use super::MicroVmState;

pub const MAGIC: [u8; 8] = *b"LMVMSNAP";
pub const FORMAT_VERSION: u32 = 1;
/// A state file is a few tens of KiB per vCPU; anything past this is not ours.
pub const MAX_STATE_BYTES: u64 = 16 << 20;
const HEADER: usize = MAGIC.len() + 4;
const CHECKSUM: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("snapshot state of {0} bytes is larger than any this vmm writes ({MAX_STATE_BYTES})")]
    TooLarge(u64),
    #[error("snapshot state is truncated ({0} bytes)")]
    Truncated(usize),
    #[error("not a vmm snapshot (bad magic)")]
    BadMagic,
    #[error("snapshot format version {found}, this vmm reads {FORMAT_VERSION}")]
    FormatVersion { found: u32 },
    #[error("snapshot state checksum mismatch: the file was modified or cut short")]
    Checksum,
    #[error("snapshot state does not parse: {0}")]
    Parse(serde_json::Error),
    #[error("snapshot taken by vmm {found}, this is vmm {expected}")]
    VmmVersion { found: String, expected: String },
    #[error("snapshot taken on a {found} CPU, this host has a {expected} CPU")]
    Cpu { found: CpuModel, expected: CpuModel },
}

/// The host CPU a snapshot's vCPU state (CPUID, MSRs, XSAVE layout) belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuModel {
    pub vendor: String,
    /// CPUID leaf 1 EAX: family, model and stepping.
    pub signature: u32,
}

impl std::fmt::Display for CpuModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (signature {:#x})", self.vendor, self.signature)
    }
}

impl CpuModel {
    pub fn host() -> Self {
        // CPUID exists on every x86_64 CPU (the intrinsic is safe there).
        let leaf0 = core::arch::x86_64::__cpuid(0);
        let mut vendor = Vec::with_capacity(12);
        for reg in [leaf0.ebx, leaf0.edx, leaf0.ecx] {
            vendor.extend_from_slice(&reg.to_le_bytes());
        }
        Self {
            vendor: String::from_utf8_lossy(&vendor).into_owned(),
            signature: core::arch::x86_64::__cpuid(1).eax,
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotDocument {
    pub vmm_version: String,
    pub cpu: CpuModel,
    pub state: MicroVmState,
}

impl SnapshotDocument {
    /// A document for this vmm on this host.
    pub fn here(state: MicroVmState) -> Self {
        Self {
            vmm_version: env!("CARGO_PKG_VERSION").to_owned(),
            cpu: CpuModel::host(),
            state,
        }
    }
}

pub fn encode(doc: &SnapshotDocument) -> Result<Vec<u8>, FormatError> {
    let json = serde_json::to_vec(doc).map_err(FormatError::Parse)?;
    let mut out = Vec::with_capacity(HEADER + json.len() + CHECKSUM);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&json);
    let sum = blake3::hash(&out);
    out.extend_from_slice(sum.as_bytes());
    Ok(out)
}

/// Checks and parses a state file for a restore on this host by this vmm.
pub fn decode(bytes: &[u8]) -> Result<SnapshotDocument, FormatError> {
    if bytes.len() as u64 > MAX_STATE_BYTES {
        return Err(FormatError::TooLarge(bytes.len() as u64));
    }
    if bytes.len() < HEADER + CHECKSUM {
        return Err(FormatError::Truncated(bytes.len()));
    }
    if bytes[..MAGIC.len()] != MAGIC {
        return Err(FormatError::BadMagic);
    }
    let mut version = [0u8; 4];
    version.copy_from_slice(&bytes[MAGIC.len()..HEADER]);
    let found = u32::from_le_bytes(version);
    if found != FORMAT_VERSION {
        return Err(FormatError::FormatVersion { found });
    }
    let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM);
    if blake3::hash(body).as_bytes() != sum {
        return Err(FormatError::Checksum);
    }
    let doc: SnapshotDocument =
        serde_json::from_slice(&body[HEADER..]).map_err(FormatError::Parse)?;
    let expected = env!("CARGO_PKG_VERSION");
    if doc.vmm_version != expected {
        return Err(FormatError::VmmVersion {
            found: doc.vmm_version,
            expected: expected.to_owned(),
        });
    }
    let here = CpuModel::host();
    if doc.cpu != here {
        return Err(FormatError::Cpu {
            found: doc.cpu,
            expected: here,
        });
    }
    Ok(doc)
}
