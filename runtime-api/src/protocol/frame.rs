//! Frame layout: an 8-byte header followed by the body.
//!
//! ```text
//! 0      2        3     4                 8
//! +------+--------+-----+-----------------+--------------------+
//! | "LR" | version| kind| body length u32 | body (length bytes)|
//! +------+--------+-----+-----------------+--------------------+
//! ```
//! Payloads travel as raw bytes inside the body: no base64, no JSON wrapping.

use super::codec::{DecodeError, Encoder};
use super::messages::{error_code, Message, ProtocolError};
use std::io::{self, Read, Write};

pub const MAGIC: [u8; 2] = *b"LR";
/// The only protocol version this build speaks.
pub const VERSION: u8 = 2;
pub const HEADER_LEN: usize = 8;
/// Largest accepted body: a 6 MB payload plus generous room for metadata.
pub const MAX_BODY_LEN: u32 = 8 * 1024 * 1024;

/// Everything that can go wrong reading or writing frames.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("connection I/O: {0}")]
    Io(#[from] io::Error),
    #[error("connection closed by peer")]
    Closed,
    #[error("bad frame magic {0:02x?}")]
    BadMagic([u8; 2]),
    #[error("unsupported protocol version {0} (this side speaks {VERSION})")]
    UnsupportedVersion(u8),
    #[error("frame body of {0} bytes exceeds the {MAX_BODY_LEN}-byte limit")]
    TooLarge(u64),
    #[error("malformed frame body: {0}")]
    Decode(#[from] DecodeError),
    #[error("handshake failed: expected Hello, got message kind {0:#04x}")]
    Handshake(u8),
    #[error("peer reported protocol error {}: {}", .0.code, .0.message)]
    Peer(ProtocolError),
}

impl WireError {
    /// The error frame to send the peer before closing, if the peer is at fault.
    pub fn to_protocol_error(&self) -> Option<ProtocolError> {
        let code = match self {
            WireError::Io(_) | WireError::Closed | WireError::Peer(_) => return None,
            WireError::BadMagic(_) => error_code::MALFORMED_FRAME,
            WireError::Decode(DecodeError::UnexpectedKind(_)) | WireError::Handshake(_) => {
                error_code::UNEXPECTED_MESSAGE
            }
            WireError::Decode(_) => error_code::MALFORMED_FRAME,
            WireError::UnsupportedVersion(_) => error_code::UNSUPPORTED_VERSION,
            WireError::TooLarge(_) => error_code::FRAME_TOO_LARGE,
        };
        Some(ProtocolError {
            code,
            message: self.to_string(),
        })
    }
}

/// A validated frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: u8,
    pub body_len: u32,
}

/// Validates a raw header: magic, version and size limit.
pub fn parse_header(raw: &[u8; HEADER_LEN]) -> Result<Header, WireError> {
    let magic = [raw[0], raw[1]];
    if magic != MAGIC {
        return Err(WireError::BadMagic(magic));
    }
    if raw[2] != VERSION {
        return Err(WireError::UnsupportedVersion(raw[2]));
    }
    let body_len = u32::from_le_bytes([raw[4], raw[5], raw[6], raw[7]]);
    if body_len > MAX_BODY_LEN {
        return Err(WireError::TooLarge(u64::from(body_len)));
    }
    Ok(Header {
        kind: raw[3],
        body_len,
    })
}

/// Encodes a message into one contiguous frame (header + body).
pub fn encode<M: Message>(msg: &M) -> Result<Vec<u8>, WireError> {
    let mut e = Encoder::with_capacity(HEADER_LEN + msg.size_hint());
    // Placeholder header, patched once the body length is known.
    for _ in 0..HEADER_LEN {
        e.u8(0);
    }
    msg.encode_body(&mut e);
    let mut frame = e.finish();
    let body_len = (frame.len() - HEADER_LEN) as u64;
    let len32 = u32::try_from(body_len)
        .ok()
        .filter(|l| *l <= MAX_BODY_LEN)
        .ok_or(WireError::TooLarge(body_len))?;
    frame[0..2].copy_from_slice(&MAGIC);
    frame[2] = VERSION;
    frame[3] = msg.kind();
    frame[4..8].copy_from_slice(&len32.to_le_bytes());
    Ok(frame)
}

/// Decodes one frame from the start of `buf`, returning the message and the bytes used.
/// `Ok(None)` means `buf` holds an incomplete frame so far.
pub fn decode<M: Message>(buf: &[u8]) -> Result<Option<(M, usize)>, WireError> {
    let Some(raw) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let mut header = [0u8; HEADER_LEN];
    header.copy_from_slice(raw);
    let h = parse_header(&header)?;
    let end = HEADER_LEN + h.body_len as usize;
    let Some(body) = buf.get(HEADER_LEN..end) else {
        return Ok(None);
    };
    Ok(Some((M::decode(h.kind, body)?, end)))
}

/// Writes one message as a frame.
pub fn write_frame<M: Message, W: Write>(w: &mut W, msg: &M) -> Result<(), WireError> {
    let frame = encode(msg)?;
    w.write_all(&frame)?;
    w.flush()?;
    Ok(())
}

/// Reads one frame. A clean end of stream before the first header byte is `Closed`.
pub fn read_frame<M: Message, R: Read>(r: &mut R) -> Result<M, WireError> {
    let mut header = [0u8; HEADER_LEN];
    let mut filled = 0;
    while filled < HEADER_LEN {
        match r.read(&mut header[filled..]) {
            Ok(0) if filled == 0 => return Err(WireError::Closed),
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let h = parse_header(&header)?;
    let mut body = vec![0u8; h.body_len as usize];
    r.read_exact(&mut body)?;
    Ok(M::decode(h.kind, &body)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::messages::*;

    fn sample_guest_messages() -> Vec<GuestMessage> {
        vec![
            GuestMessage::Hello(Hello {
                agent: "guest-init test".into(),
            }),
            GuestMessage::InitDone,
            GuestMessage::InitError(InitError {
                error_type: "Runtime.InvalidEntrypoint".into(),
                body: b"{}".to_vec(),
            }),
            GuestMessage::Response(Response {
                request_id: "r1".into(),
                payload: vec![0, 159, 146, 150],
            }),
            GuestMessage::InvokeError(InvokeError {
                request_id: "r1".into(),
                error_type: "Unhandled".into(),
                body: vec![],
            }),
            GuestMessage::StreamStart(StreamStart {
                request_id: "r2".into(),
                content_type: "text/plain".into(),
            }),
            GuestMessage::StreamChunk(StreamChunk {
                request_id: "r2".into(),
                data: b"chunk".to_vec(),
            }),
            GuestMessage::StreamEnd(StreamEnd {
                request_id: "r2".into(),
                error_type: Some("E".into()),
                error_body: None,
            }),
            GuestMessage::Log(Log {
                stream: LogStream::Stderr,
                request_id: None,
                line: b"\xffnot utf8".to_vec(),
            }),
            GuestMessage::RuntimeExited(RuntimeExited {
                error_type: "Runtime.ExitError".into(),
                message: "Runtime exited with error: exit status 1".into(),
            }),
            GuestMessage::CheckpointReady,
            GuestMessage::RestoreDone,
            GuestMessage::RestoreError(InitError {
                error_type: "Runtime.AfterRestoreError".into(),
                body: b"{}".to_vec(),
            }),
            GuestMessage::ProtocolError(ProtocolError {
                code: 2,
                message: "bad".into(),
            }),
        ]
    }

    fn sample_host_messages() -> Vec<HostMessage> {
        vec![
            HostMessage::Hello(Hello { agent: "h".into() }),
            HostMessage::Init(Init {
                function_name: "f".into(),
                function_version: "$LATEST".into(),
                handler: "h.handler".into(),
                memory_mib: 128,
                timeout_ms: 3000,
                region: "us-east-1".into(),
                log_group: "/aws/lambda/f".into(),
                log_stream: "s".into(),
                initialization_type: "on-demand".into(),
                env: vec![("K".into(), "V".into())],
                host_now_ms: 1_699_999_999_000,
                command: vec![
                    "/usr/bin/python3".into(),
                    "-m".into(),
                    "awslambdaric".into(),
                ],
                working_dir: "/var/task".into(),
            }),
            HostMessage::Invoke(Invoke {
                request_id: "id".into(),
                deadline_ms: 1_700_000_000_000,
                host_now_ms: 1_699_999_997_000,
                invoked_function_arn: "arn:aws:lambda:us-east-1:123456789012:function:f".into(),
                trace_id: Some("Root=1-abc".into()),
                client_context: None,
                cognito_identity: Some("{}".into()),
                payload: vec![1; 1024],
            }),
            HostMessage::Shutdown(Shutdown {
                reason: "spindown".into(),
                grace_ms: 2000,
            }),
            HostMessage::Checkpoint,
            HostMessage::Restore(Restore {
                seed: vec![7; 32],
                host_now_ms: 1_700_000_000_001,
            }),
        ]
    }

    #[test]
    fn every_message_round_trips_through_a_stream() {
        let mut wire = Vec::new();
        for m in sample_guest_messages() {
            write_frame(&mut wire, &m).unwrap();
        }
        let mut r = wire.as_slice();
        for m in sample_guest_messages() {
            assert_eq!(read_frame::<GuestMessage, _>(&mut r).unwrap(), m);
        }
        assert!(matches!(
            read_frame::<GuestMessage, _>(&mut r),
            Err(WireError::Closed)
        ));

        let mut wire = Vec::new();
        for m in sample_host_messages() {
            write_frame(&mut wire, &m).unwrap();
        }
        let mut offset = 0;
        for m in sample_host_messages() {
            let (got, used) = decode::<HostMessage>(&wire[offset..]).unwrap().unwrap();
            assert_eq!(got, m);
            offset += used;
        }
        assert_eq!(offset, wire.len());
    }

    #[test]
    fn header_checks_reject_bad_frames() {
        let good = encode(&HostMessage::Hello(Hello { agent: "a".into() })).unwrap();
        let mut bad_magic = good.clone();
        bad_magic[0] = b'X';
        assert!(matches!(
            decode::<HostMessage>(&bad_magic),
            Err(WireError::BadMagic(_))
        ));
        let mut bad_version = good.clone();
        bad_version[2] = 9;
        let err = decode::<HostMessage>(&bad_version).unwrap_err();
        assert!(matches!(err, WireError::UnsupportedVersion(9)));
        assert_eq!(
            err.to_protocol_error().unwrap().code,
            error_code::UNSUPPORTED_VERSION
        );
        let mut huge = good.clone();
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            decode::<HostMessage>(&huge),
            Err(WireError::TooLarge(_))
        ));
        // A guest-only kind is not a valid host message.
        let mut wrong_dir = good;
        wrong_dir[3] = kind::RESPONSE;
        let err = decode::<HostMessage>(&wrong_dir).unwrap_err();
        assert_eq!(
            err.to_protocol_error().unwrap().code,
            error_code::UNEXPECTED_MESSAGE
        );
    }

    #[test]
    fn partial_frames_ask_for_more_bytes() {
        let frame = encode(&GuestMessage::InitDone).unwrap();
        assert!(decode::<GuestMessage>(&frame[..3]).unwrap().is_none());
        let frame = encode(&GuestMessage::Response(Response {
            request_id: "x".into(),
            payload: vec![7; 100],
        }))
        .unwrap();
        assert!(decode::<GuestMessage>(&frame[..50]).unwrap().is_none());
        let mut r = &frame[..50];
        assert!(matches!(
            read_frame::<GuestMessage, _>(&mut r),
            Err(WireError::Io(_))
        ));
    }

    #[test]
    fn six_megabyte_payload_fits_and_oversize_is_refused() {
        let big = HostMessage::Invoke(Invoke {
            payload: vec![b'a'; 6 * 1024 * 1024],
            ..Invoke::default()
        });
        let frame = encode(&big).unwrap();
        assert_eq!(decode::<HostMessage>(&frame).unwrap().unwrap().0, big);
        let too_big = HostMessage::Invoke(Invoke {
            payload: vec![0; MAX_BODY_LEN as usize],
            ..Invoke::default()
        });
        assert!(matches!(encode(&too_big), Err(WireError::TooLarge(_))));
    }

    /// Deterministic garbage and mutated frames never panic the decoder (the cargo-fuzz
    /// target in `runtime-api/fuzz` explores this much further).
    #[test]
    fn random_and_mutated_input_never_panics() {
        let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut frames: Vec<Vec<u8>> = sample_guest_messages()
            .iter()
            .map(|m| encode(m).unwrap())
            .collect();
        frames.extend(sample_host_messages().iter().map(|m| encode(m).unwrap()));
        for round in 0..20_000 {
            let mut buf = frames[round % frames.len()].clone();
            let flips = 1 + (next() % 4) as usize;
            for _ in 0..flips {
                let i = (next() as usize) % buf.len();
                buf[i] = next() as u8;
            }
            if next() % 3 == 0 {
                let cut = (next() as usize) % (buf.len() + 1);
                buf.truncate(cut);
            }
            let _ = decode::<GuestMessage>(&buf);
            let _ = decode::<HostMessage>(&buf);
            let _ = read_frame::<GuestMessage, _>(&mut buf.as_slice());
        }
    }
}
