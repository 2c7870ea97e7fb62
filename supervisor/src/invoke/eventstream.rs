//! The `application/vnd.amazon.eventstream` framing InvokeWithResponseStream answers
//! with: each message is `total_len | headers_len | prelude_crc | headers | payload |
//! message_crc`, big-endian, CRC-32 (IEEE) over the preceding bytes.

/// Header value type 7: a UTF-8 string with a 16-bit length.
const STRING: u8 = 7;

fn header(out: &mut Vec<u8>, name: &str, value: &str) {
    // Names and values here are short constants; lengths fit their fields.
    out.push(name.len() as u8);
    out.extend_from_slice(name.as_bytes());
    out.push(STRING);
    out.extend_from_slice(&(value.len() as u16).to_be_bytes());
    out.extend_from_slice(value.as_bytes());
}

/// One `event` message of type `event_type` carrying `payload`.
pub fn event(event_type: &str, content_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut headers = Vec::new();
    header(&mut headers, ":event-type", event_type);
    header(&mut headers, ":content-type", content_type);
    header(&mut headers, ":message-type", "event");
    let total = 12 + headers.len() + payload.len() + 4;
    let mut out = Vec::with_capacity(total);
    out.extend_from_slice(&(total as u32).to_be_bytes());
    out.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    let prelude_crc = crc32fast::hash(&out);
    out.extend_from_slice(&prelude_crc.to_be_bytes());
    out.extend_from_slice(&headers);
    out.extend_from_slice(payload);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_with_lengths_and_crcs() {
        let m = event("PayloadChunk", "application/octet-stream", b"hello");
        let total = u32::from_be_bytes(m[0..4].try_into().expect("4")) as usize;
        let hlen = u32::from_be_bytes(m[4..8].try_into().expect("4")) as usize;
        assert_eq!(total, m.len());
        assert_eq!(
            u32::from_be_bytes(m[8..12].try_into().expect("4")),
            crc32fast::hash(&m[..8])
        );
        assert_eq!(&m[12 + hlen..total - 4], b"hello");
        assert_eq!(
            u32::from_be_bytes(m[total - 4..].try_into().expect("4")),
            crc32fast::hash(&m[..total - 4])
        );
        // First header: name length, name, type 7, value length, value.
        assert_eq!(m[12] as usize, ":event-type".len());
        assert_eq!(&m[13..24], b":event-type");
        assert_eq!(m[24], STRING);
    }
}
