//! The virtio-vsock packet header and moving packets between descriptor chains and
//! host buffers.
//!
//! Every header field is guest-controlled: parsing never trusts `len` beyond what the
//! descriptor chain actually holds, and the payload is bounded by [`MAX_PKT_PAYLOAD`].

use std::io::{Read, Write};

use virtio_queue::DescriptorChain;

use super::defs::MAX_PKT_PAYLOAD;
use crate::devices::virtio::GuestMemory;

/// Size of `struct virtio_vsock_hdr` on the wire.
pub const HDR_SIZE: usize = 44;

/// The only socket type the device supports.
pub const TYPE_STREAM: u16 = 1;

/// SHUTDOWN flag: the sender will not receive any more data.
pub const SHUTDOWN_RCV: u32 = 1;
/// SHUTDOWN flag: the sender will not send any more data.
pub const SHUTDOWN_SEND: u32 = 2;

/// Packet operations (virtio spec 5.10.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Request = 1,
    Response = 2,
    Rst = 3,
    Shutdown = 4,
    Rw = 5,
    CreditUpdate = 6,
    CreditRequest = 7,
}

impl Op {
    /// Decodes a wire op; `None` for anything the spec does not define.
    pub fn from_wire(op: u16) -> Option<Op> {
        Some(match op {
            1 => Op::Request,
            2 => Op::Response,
            3 => Op::Rst,
            4 => Op::Shutdown,
            5 => Op::Rw,
            6 => Op::CreditUpdate,
            7 => Op::CreditRequest,
            _ => return None,
        })
    }
}

/// `struct virtio_vsock_hdr`, decoded to host byte order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VsockHeader {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

fn le_u64(b: &[u8; HDR_SIZE], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

fn le_u32(b: &[u8; HDR_SIZE], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

fn le_u16(b: &[u8; HDR_SIZE], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

impl VsockHeader {
    /// Decodes the little-endian wire layout.
    pub fn from_bytes(b: &[u8; HDR_SIZE]) -> Self {
        VsockHeader {
            src_cid: le_u64(b, 0),
            dst_cid: le_u64(b, 8),
            src_port: le_u32(b, 16),
            dst_port: le_u32(b, 20),
            len: le_u32(b, 24),
            type_: le_u16(b, 28),
            op: le_u16(b, 30),
            flags: le_u32(b, 32),
            buf_alloc: le_u32(b, 36),
            fwd_cnt: le_u32(b, 40),
        }
    }

    /// Encodes to the little-endian wire layout.
    pub fn to_bytes(&self) -> [u8; HDR_SIZE] {
        let mut b = [0u8; HDR_SIZE];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    /// The decoded op, if it is one the spec defines.
    pub fn op(&self) -> Option<Op> {
        Op::from_wire(self.op)
    }
}

/// Decodes the first `HDR_SIZE` bytes of `bytes`, zero-filling if it is shorter.
pub fn parse_header_lossy(bytes: &[u8]) -> VsockHeader {
    let mut raw = [0u8; HDR_SIZE];
    let n = bytes.len().min(HDR_SIZE);
    raw[..n].copy_from_slice(&bytes[..n]);
    VsockHeader::from_bytes(&raw)
}

/// Why a descriptor chain could not be used as a packet.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    #[error("descriptor chain: {0}")]
    Chain(#[from] virtio_queue::Error),
    #[error("descriptor chain holds {0} bytes, less than a header")]
    ShortDescriptor(usize),
    #[error("header len {len} exceeds the maximum payload {max}")]
    LenTooLarge { len: u32, max: usize },
    #[error("header len {len} exceeds the {avail} bytes in the chain")]
    LenExceedsBuffer { len: u32, avail: usize },
    #[error("guest memory access: {0}")]
    Memory(#[from] std::io::Error),
}

type Chain<'a> = DescriptorChain<&'a GuestMemory>;

/// Reads one guest->host packet: the header, and its payload into `payload` (resized
/// to exactly `len`).
pub fn read_tx_packet(
    chain: Chain<'_>,
    mem: &GuestMemory,
    payload: &mut Vec<u8>,
) -> Result<VsockHeader, PacketError> {
    let mut reader = chain.reader(mem)?;
    let avail = reader.available_bytes();
    if avail < HDR_SIZE {
        return Err(PacketError::ShortDescriptor(avail));
    }
    let mut raw = [0u8; HDR_SIZE];
    reader.read_exact(&mut raw)?;
    let hdr = VsockHeader::from_bytes(&raw);
    let len = hdr.len as usize;
    if len > MAX_PKT_PAYLOAD {
        return Err(PacketError::LenTooLarge {
            len: hdr.len,
            max: MAX_PKT_PAYLOAD,
        });
    }
    if len > reader.available_bytes() {
        return Err(PacketError::LenExceedsBuffer {
            len: hdr.len,
            avail: reader.available_bytes(),
        });
    }
    payload.resize(len, 0);
    reader.read_exact(payload)?;
    Ok(hdr)
}

/// A guest-supplied receive buffer (a write-only chain) being filled with one packet.
pub struct RxBuffer<'a> {
    writer: virtio_queue::Writer<'a>,
}

impl<'a> RxBuffer<'a> {
    /// Wraps a receive chain; fails if it cannot even hold a header.
    pub fn new(chain: Chain<'a>, mem: &'a GuestMemory) -> Result<Self, PacketError> {
        let writer = chain.writer(mem)?;
        let avail = writer.available_bytes();
        if avail < HDR_SIZE {
            return Err(PacketError::ShortDescriptor(avail));
        }
        Ok(RxBuffer { writer })
    }

    /// Payload bytes this buffer can take after the header.
    pub fn payload_capacity(&self) -> usize {
        (self.writer.available_bytes() - HDR_SIZE).min(MAX_PKT_PAYLOAD)
    }

    /// Writes header and payload; returns the total bytes written (the used length).
    pub fn write(mut self, hdr: &VsockHeader, payload: &[u8]) -> Result<u32, PacketError> {
        self.writer.write_all(&hdr.to_bytes())?;
        self.writer.write_all(payload)?;
        // Bounded by the chain's length, which the queue keeps within u32.
        Ok(u32::try_from(self.writer.bytes_written()).unwrap_or(u32::MAX))
    }
}

/// Writes a 4-byte `virtio_vsock_event` into an event-queue chain.
pub fn write_event(chain: Chain<'_>, mem: &GuestMemory, id: u32) -> Result<u32, PacketError> {
    let mut writer = chain.writer(mem)?;
    if writer.available_bytes() < 4 {
        return Err(PacketError::ShortDescriptor(writer.available_bytes()));
    }
    writer.write_all(&id.to_le_bytes())?;
    Ok(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip_is_little_endian() {
        let hdr = VsockHeader {
            src_cid: 3,
            dst_cid: 2,
            src_port: 0x0102_0304,
            dst_port: 5,
            len: 6,
            type_: TYPE_STREAM,
            op: Op::Rw as u16,
            flags: SHUTDOWN_SEND,
            buf_alloc: 0x10000,
            fwd_cnt: 9,
        };
        let b = hdr.to_bytes();
        assert_eq!(&b[0..8], &[3, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&b[16..20], &[4, 3, 2, 1]);
        assert_eq!(&b[28..30], &[1, 0]);
        assert_eq!(&b[30..32], &[5, 0]);
        assert_eq!(VsockHeader::from_bytes(&b), hdr);
    }

    #[test]
    fn unknown_ops_decode_to_none() {
        assert_eq!(Op::from_wire(0), None);
        assert_eq!(Op::from_wire(8), None);
        assert_eq!(Op::from_wire(7), Some(Op::CreditRequest));
    }
}
