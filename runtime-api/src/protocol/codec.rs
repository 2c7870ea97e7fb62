//! Primitive field encoding for frame bodies.
//!
//! Every field is little-endian and self-delimiting: integers are fixed width, strings
//! and byte strings carry a `u32` length prefix, optional values a one-byte tag. The
//! decoder never trusts a length: it checks it against the bytes that are actually left.

/// Why a frame body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("field `{field}` is truncated")]
    Truncated { field: &'static str },
    #[error("field `{field}` is not valid UTF-8")]
    InvalidUtf8 { field: &'static str },
    #[error("field `{field}` has invalid tag {tag}")]
    InvalidTag { field: &'static str, tag: u8 },
    #[error("{0} unexpected bytes after the last field")]
    TrailingBytes(usize),
    #[error("message kind {0:#04x} is not valid in this direction")]
    UnexpectedKind(u8),
}

/// Appends fields to a frame body.
#[derive(Debug, Default)]
pub struct Encoder {
    buf: Vec<u8>,
}

impl Encoder {
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            buf: Vec::with_capacity(capacity),
        }
    }

    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// Writes a length-prefixed byte string. Lengths above `u32::MAX` cannot occur:
    /// frames are capped far below that and the caller checks the total size.
    pub fn bytes(&mut self, v: &[u8]) {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        self.buf.extend_from_slice(v);
    }

    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }

    pub fn opt_str(&mut self, v: Option<&str>) {
        match v {
            None => self.u8(0),
            Some(s) => {
                self.u8(1);
                self.str(s);
            }
        }
    }

    pub fn pairs(&mut self, v: &[(String, String)]) {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        for (k, val) in v {
            self.str(k);
            self.str(val);
        }
    }

    pub fn strs(&mut self, v: &[String]) {
        self.u32(u32::try_from(v.len()).unwrap_or(u32::MAX));
        for x in v {
            self.str(x);
        }
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads fields from a frame body.
#[derive(Debug)]
pub struct Decoder<'a> {
    rest: &'a [u8],
}

impl<'a> Decoder<'a> {
    pub fn new(body: &'a [u8]) -> Self {
        Self { rest: body }
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Truncated { field });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, field)?);
        Ok(out)
    }

    pub fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    pub fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    pub fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    pub fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    pub fn bytes(&mut self, field: &'static str) -> Result<Vec<u8>, DecodeError> {
        let len = self.u32(field)?;
        let len = usize::try_from(len).map_err(|_| DecodeError::Truncated { field })?;
        Ok(self.take(len, field)?.to_vec())
    }

    pub fn string(&mut self, field: &'static str) -> Result<String, DecodeError> {
        String::from_utf8(self.bytes(field)?).map_err(|_| DecodeError::InvalidUtf8 { field })
    }

    pub fn opt_string(&mut self, field: &'static str) -> Result<Option<String>, DecodeError> {
        match self.u8(field)? {
            0 => Ok(None),
            1 => self.string(field).map(Some),
            tag => Err(DecodeError::InvalidTag { field, tag }),
        }
    }

    pub fn pairs(&mut self, field: &'static str) -> Result<Vec<(String, String)>, DecodeError> {
        let count = self.u32(field)?;
        // Each pair needs at least 8 bytes of length prefixes: bound the allocation by
        // what the body can actually hold, not by the untrusted count.
        let max_possible = self.rest.len() / 8;
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        if count > max_possible {
            return Err(DecodeError::Truncated { field });
        }
        let mut out = Vec::with_capacity(count);
        for _ in 0..count {
            let k = self.string(field)?;
            let v = self.string(field)?;
            out.push((k, v));
        }
        Ok(out)
    }

    pub fn strs(&mut self, field: &'static str) -> Result<Vec<String>, DecodeError> {
        let count = self.u32(field)?;
        // Each string needs at least its 4-byte length prefix.
        let count = usize::try_from(count).unwrap_or(usize::MAX);
        if count > self.rest.len() / 4 {
            return Err(DecodeError::Truncated { field });
        }
        (0..count).map(|_| self.string(field)).collect()
    }

    /// Succeeds only when every byte of the body was consumed.
    pub fn finish(self) -> Result<(), DecodeError> {
        match self.rest.len() {
            0 => Ok(()),
            n => Err(DecodeError::TrailingBytes(n)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_field_type() {
        let mut e = Encoder::default();
        e.u8(7);
        e.u16(0xBEEF);
        e.u32(123_456);
        e.u64(u64::MAX - 1);
        e.bytes(&[0, 1, 255]);
        e.str("héllo");
        e.opt_str(None);
        e.opt_str(Some(""));
        e.pairs(&[("A".into(), "1".into()), ("B".into(), String::new())]);
        let body = e.finish();
        let mut d = Decoder::new(&body);
        assert_eq!(d.u8("a").unwrap(), 7);
        assert_eq!(d.u16("b").unwrap(), 0xBEEF);
        assert_eq!(d.u32("c").unwrap(), 123_456);
        assert_eq!(d.u64("d").unwrap(), u64::MAX - 1);
        assert_eq!(d.bytes("e").unwrap(), vec![0, 1, 255]);
        assert_eq!(d.string("f").unwrap(), "héllo");
        assert_eq!(d.opt_string("g").unwrap(), None);
        assert_eq!(d.opt_string("h").unwrap(), Some(String::new()));
        assert_eq!(d.pairs("i").unwrap().len(), 2);
        d.finish().unwrap();
    }

    #[test]
    fn rejects_lengths_beyond_the_body() {
        let mut e = Encoder::default();
        e.u32(1_000_000);
        e.u8(1);
        let body = e.finish();
        assert_eq!(
            Decoder::new(&body).bytes("payload"),
            Err(DecodeError::Truncated { field: "payload" })
        );
        assert_eq!(
            Decoder::new(&body).pairs("env"),
            Err(DecodeError::Truncated { field: "env" })
        );
    }

    #[test]
    fn rejects_bad_utf8_tags_and_trailing_bytes() {
        let mut e = Encoder::default();
        e.bytes(&[0xff, 0xfe]);
        let body = e.finish();
        assert_eq!(
            Decoder::new(&body).string("s"),
            Err(DecodeError::InvalidUtf8 { field: "s" })
        );
        assert_eq!(
            Decoder::new(&[2]).opt_string("o"),
            Err(DecodeError::InvalidTag { field: "o", tag: 2 })
        );
        let mut d = Decoder::new(&[1, 2]);
        d.u8("x").unwrap();
        assert_eq!(d.finish(), Err(DecodeError::TrailingBytes(1)));
    }
}
