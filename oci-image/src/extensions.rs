//! What GNU long-name entries (`L`, `K`) and PAX extended headers (`x`) say about the
//! entry after them. The tar reader runs in raw mode, so these are read here, each
//! bounded by [`MAX_EXTENSION_BYTES`] (the reader's own handling would load one of any
//! size into memory). A PAX `size` must agree with the header's, so this code and the
//! tar reader never disagree on where the next header starts.

use std::io::Read;

/// The largest long name or extended header accepted.
pub const MAX_EXTENSION_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExtensionError {
    #[error("a tar extension entry (type {kind:?}) over {MAX_EXTENSION_BYTES} bytes")]
    TooLarge { kind: char },
    #[error("a PAX header says size {pax} but the tar header says {header}")]
    SizeMismatch { pax: u64, header: u64 },
    #[error("a PAX record {0:?} has an unreadable value")]
    Value(String),
    #[error(
        "sparse files (GNU sparse entries or PAX GNU.sparse records) are not supported in layers"
    )]
    Sparse,
    #[error("reading a tar extension entry: {0}")]
    Read(String),
}

/// Overrides for the next real entry.
#[derive(Debug, Default)]
pub struct Pending {
    pub path: Option<Vec<u8>>,
    pub link: Option<Vec<u8>>,
    pub size: Option<u64>,
    pub uid: Option<u64>,
    pub gid: Option<u64>,
    pub mtime: Option<u64>,
}

fn read_bounded(data: &mut impl Read, kind: char) -> Result<Vec<u8>, ExtensionError> {
    let mut out = Vec::new();
    data.take(MAX_EXTENSION_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| ExtensionError::Read(e.to_string()))?;
    if out.len() as u64 > MAX_EXTENSION_BYTES {
        return Err(ExtensionError::TooLarge { kind });
    }
    Ok(out)
}

/// GNU long names end with a NUL.
fn trim_nul(mut v: Vec<u8>) -> Vec<u8> {
    while v.last() == Some(&0) {
        v.pop();
    }
    v
}

impl Pending {
    /// Reads an extension entry of tar type `kind` into this; false when the entry is
    /// not an extension (it is the real entry these apply to).
    pub fn absorb(&mut self, kind: u8, data: &mut impl Read) -> Result<bool, ExtensionError> {
        match kind {
            b'L' => self.path = Some(trim_nul(read_bounded(data, 'L')?)),
            b'K' => self.link = Some(trim_nul(read_bounded(data, 'K')?)),
            b'x' => self.pax(&read_bounded(data, 'x')?)?,
            // Global headers set defaults no image tool relies on: read past them.
            b'g' => drop(read_bounded(data, 'g')?),
            b'S' => return Err(ExtensionError::Sparse),
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn pax(&mut self, records: &[u8]) -> Result<(), ExtensionError> {
        for record in tar::PaxExtensions::new(records) {
            let record = record.map_err(|e| ExtensionError::Read(e.to_string()))?;
            let key = record.key_bytes();
            let value = record.value_bytes();
            let number = || -> Result<u64, ExtensionError> {
                let text = std::str::from_utf8(value).ok();
                // mtime may carry a fraction; the integer part is what is kept.
                let int = text.map(|t| t.split('.').next().unwrap_or(""));
                int.and_then(|t| t.parse().ok())
                    .ok_or_else(|| ExtensionError::Value(String::from_utf8_lossy(key).into()))
            };
            match key {
                b"path" => self.path = Some(value.to_vec()),
                b"linkpath" => self.link = Some(value.to_vec()),
                b"size" => self.size = Some(number()?),
                b"uid" => self.uid = Some(number()?),
                b"gid" => self.gid = Some(number()?),
                b"mtime" => self.mtime = Some(number()?),
                k if k.starts_with(b"GNU.sparse.") => return Err(ExtensionError::Sparse),
                _ => {}
            }
        }
        Ok(())
    }

    /// Checks the PAX size against the header's data size.
    pub fn check_size(&self, header_size: u64) -> Result<(), ExtensionError> {
        match self.size {
            Some(pax) if pax != header_size => Err(ExtensionError::SizeMismatch {
                pax,
                header: header_size,
            }),
            _ => Ok(()),
        }
    }
}
