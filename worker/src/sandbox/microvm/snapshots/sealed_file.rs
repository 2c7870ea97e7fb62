//! One file sealed with AES-256-GCM, holes kept: a snapshot's memory file is mostly
//! pages the guest never touched, so only chunks holding a non-zero byte are stored.
//!
//! Layout (integers little-endian):
//! - header: magic `LMSEAL01`, the plaintext length (u64), then the file's own random
//!   data key wrapped by the vault key (12-byte random nonce, 32 + 16 bytes);
//! - records: offset (u64, chunk-aligned, increasing), length (u32, 1..=[`CHUNK`]),
//!   ciphertext and tag; record `i` uses nonce `i` under the data key (which seals this
//!   one file only) and has the context and its offset as associated data;
//! - trailer: offset `u64::MAX`, length 0, and a tag over the record count and the
//!   plaintext length, so a dropped, repeated, reordered or cut-off record fails.
//!
//! The context (which snapshot and which of its files) is bound into every tag: a file
//! moved to another slot does not open.

use std::io::{BufReader, BufWriter, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

/// Plaintext bytes per record; also the unit in which zero runs are skipped.
pub const CHUNK: usize = 1 << 20;
const MAGIC: &[u8; 8] = b"LMSEAL01";
const TAG_LEN: usize = 16;
const WRAPPED_KEY_LEN: usize = 12 + 32 + TAG_LEN;
/// Larger than any guest memory or drive image a snapshot holds.
const MAX_PLAIN_LEN: u64 = 1 << 40;
const TRAILER: u64 = u64::MAX;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Tampered with, cut short, sealed under another key or for another slot.
    #[error("{0}: not an authentic sealed file ({1})")]
    NotAuthentic(PathBuf, &'static str),
    #[error("OS random number generator: {0}")]
    Random(String),
    #[error("sealing failed")]
    Seal,
}

/// AES-256-GCM under `bytes` (aws-lc, as the chunk store: about three times
/// RustCrypto's speed on these machines).
fn aes_gcm(bytes: &[u8; 32]) -> LessSafeKey {
    let Ok(key) = UnboundKey::new(&AES_256_GCM, bytes) else {
        unreachable!("AES-256-GCM takes any 32-byte key")
    };
    LessSafeKey::new(key)
}

/// The key every sealed file's data key is wrapped with.
pub struct VaultKey(LessSafeKey);

impl VaultKey {
    pub fn new(bytes: &[u8; 32]) -> Self {
        Self(aes_gcm(bytes))
    }

    /// A key that lives only in this process's memory.
    pub fn random() -> Result<Self, SealError> {
        Ok(Self::new(&random::<32>()?))
    }
}

/// Seals a small message (a snapshot's description) whole: nonce, ciphertext, tag.
pub fn seal_bytes(key: &VaultKey, context: &[u8], msg: &[u8]) -> Result<Vec<u8>, SealError> {
    let n = random::<12>()?;
    let mut body = msg.to_vec();
    let tag = key
        .0
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(n),
            Aad::from(context),
            &mut body,
        )
        .map_err(|_| SealError::Seal)?;
    Ok([&n[..], &body, tag.as_ref()].concat())
}

/// Opens what [`seal_bytes`] sealed for the same context; `path` names it in errors.
pub fn open_bytes(
    key: &VaultKey,
    context: &[u8],
    sealed: &[u8],
    path: &Path,
) -> Result<Vec<u8>, SealError> {
    let bad = || SealError::NotAuthentic(path.to_owned(), "fails authentication");
    if sealed.len() < 12 + TAG_LEN {
        return Err(bad());
    }
    let (n, rest) = sealed.split_at(12);
    let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
    let mut body = body.to_vec();
    let n = Nonce::try_assume_unique_for_key(n).map_err(|_| bad())?;
    key.0
        .open_in_place_separate_tag(n, Aad::from(context), tag, &mut body)
        .map_err(|_| bad())?;
    Ok(body)
}

fn random<const N: usize>() -> Result<[u8; N], SealError> {
    let mut b = [0u8; N];
    getrandom::getrandom(&mut b).map_err(|e| SealError::Random(e.to_string()))?;
    Ok(b)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SealError + '_ {
    move |source| SealError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Record `index`'s nonce: each file's data key seals that one file only.
fn nonce(index: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&index.to_le_bytes());
    Nonce::assume_unique_for_key(n)
}

fn aad(context: &[u8], a: u64, b: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(context.len() + 16);
    v.extend_from_slice(context);
    v.extend_from_slice(&a.to_le_bytes());
    v.extend_from_slice(&b.to_le_bytes());
    v
}

/// The next offset at or after `from` where `file` has data, or `None` past its end.
fn next_data(file: &std::fs::File, from: u64, len: u64) -> Option<u64> {
    let Ok(off) = libc::off_t::try_from(from) else {
        return None;
    };
    // SAFETY: lseek on an fd this function borrows; it only moves the file position.
    let at = unsafe { libc::lseek(file.as_raw_fd(), off, libc::SEEK_DATA) };
    match u64::try_from(at) {
        Ok(at) => Some(at),
        // ENXIO: only a hole remains. Any other error: fall back to reading everything.
        Err(_) if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) => None,
        Err(_) => (from < len).then_some(from),
    }
}

/// Seals `src` into `dst` (created, mode 0600); returns the sealed size.
pub fn seal_file(key: &VaultKey, context: &[u8], src: &Path, dst: &Path) -> Result<u64, SealError> {
    let input = std::fs::File::open(src).map_err(io(src))?;
    let len = input.metadata().map_err(io(src))?.len();
    let data_key = random::<32>()?;
    let cipher = aes_gcm(&data_key);
    let out = create_private(dst)?;
    let mut out = BufWriter::with_capacity(CHUNK + 64, out);
    let mut written = write_header(key, context, len, &data_key, &mut out).map_err(io(dst))?;
    let mut buf = vec![0u8; CHUNK];
    let mut index = 0u64;
    let mut at = 0u64;
    while let Some(data) = next_data(&input, at, len) {
        at = data - data % CHUNK as u64;
        if at >= len {
            break;
        }
        let n = (len - at).min(CHUNK as u64) as usize;
        input.read_exact_at(&mut buf[..n], at).map_err(io(src))?;
        if buf[..n].iter().any(|b| *b != 0) {
            let ad = Aad::from(aad(context, at, 0));
            let tag = cipher
                .seal_in_place_separate_tag(nonce(index), ad, &mut buf[..n])
                .map_err(|_| SealError::Seal)?;
            written += write_record(&mut out, at, &buf[..n], tag.as_ref()).map_err(io(dst))?;
            index += 1;
        }
        at += n as u64;
    }
    let tag = cipher
        .seal_in_place_separate_tag(nonce(index), Aad::from(aad(context, len, index)), &mut [])
        .map_err(|_| SealError::Seal)?;
    written += write_record(&mut out, TRAILER, &[], tag.as_ref()).map_err(io(dst))?;
    let out = out.into_inner().map_err(|e| io(dst)(e.into_error()))?;
    out.sync_all().map_err(io(dst))?;
    Ok(written)
}

fn create_private(path: &Path) -> Result<std::fs::File, SealError> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io(path))
}

fn write_header(
    key: &VaultKey,
    context: &[u8],
    len: u64,
    data_key: &[u8; 32],
    out: &mut impl Write,
) -> std::io::Result<u64> {
    let wrap_nonce = random::<12>().map_err(std::io::Error::other)?;
    let mut wrapped = *data_key;
    let tag = key
        .0
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(wrap_nonce),
            Aad::from(aad(context, len, 0)),
            &mut wrapped,
        )
        .map_err(|_| std::io::Error::other("wrapping the data key failed"))?;
    out.write_all(MAGIC)?;
    out.write_all(&len.to_le_bytes())?;
    out.write_all(&wrap_nonce)?;
    out.write_all(&wrapped)?;
    out.write_all(tag.as_ref())?;
    Ok((MAGIC.len() + 8 + WRAPPED_KEY_LEN) as u64)
}

fn write_record(out: &mut impl Write, at: u64, body: &[u8], tag: &[u8]) -> std::io::Result<u64> {
    out.write_all(&at.to_le_bytes())?;
    out.write_all(&(body.len() as u32).to_le_bytes())?;
    out.write_all(body)?;
    out.write_all(tag)?;
    Ok((12 + body.len() + TAG_LEN) as u64)
}

/// Opens `src` into `dst` (created, holes where no record is); returns the plaintext
/// length. On any failure `dst` is removed: nothing unauthenticated is left behind.
pub fn open_file(key: &VaultKey, context: &[u8], src: &Path, dst: &Path) -> Result<u64, SealError> {
    let opened = open_into(key, context, src, dst);
    if opened.is_err() {
        let _ = std::fs::remove_file(dst);
    }
    opened
}

fn open_into(key: &VaultKey, context: &[u8], src: &Path, dst: &Path) -> Result<u64, SealError> {
    let bad = |why| SealError::NotAuthentic(src.to_owned(), why);
    let mut input =
        BufReader::with_capacity(CHUNK + 64, std::fs::File::open(src).map_err(io(src))?);
    let mut header = [0u8; 8 + 8 + WRAPPED_KEY_LEN];
    read_or(&mut input, &mut header, src, "cut short")?;
    if &header[..8] != MAGIC {
        return Err(bad("bad magic"));
    }
    let len = u64::from_le_bytes(header[8..16].try_into().unwrap_or_default());
    if len > MAX_PLAIN_LEN {
        return Err(bad("length out of bounds"));
    }
    let (wrap_nonce, rest) = header[16..].split_at(12);
    let (wrapped, tag) = rest.split_at(32);
    let mut data_key = [0u8; 32];
    data_key.copy_from_slice(wrapped);
    let wrap_nonce =
        Nonce::try_assume_unique_for_key(wrap_nonce).map_err(|_| bad("key does not unwrap"))?;
    key.0
        .open_in_place_separate_tag(
            wrap_nonce,
            Aad::from(aad(context, len, 0)),
            tag,
            &mut data_key,
        )
        .map_err(|_| bad("key does not unwrap"))?;
    let cipher = aes_gcm(&data_key);
    let out = create_private(dst)?;
    out.set_len(len).map_err(io(dst))?;
    let mut buf = vec![0u8; CHUNK + TAG_LEN];
    let mut index = 0u64;
    let mut next_free = 0u64;
    loop {
        let mut head = [0u8; 12];
        read_or(&mut input, &mut head, src, "cut short")?;
        let at = u64::from_le_bytes(head[..8].try_into().unwrap_or_default());
        let n = u32::from_le_bytes(head[8..].try_into().unwrap_or_default()) as usize;
        let last = at == TRAILER;
        let in_bounds = if last {
            n == 0
        } else {
            n > 0 && n <= CHUNK && at % CHUNK as u64 == 0 && at >= next_free
        };
        let end = at.checked_add(n as u64);
        if !in_bounds || (!last && end.is_none_or(|e| e > len)) {
            return Err(bad("record out of bounds"));
        }
        read_or(&mut input, &mut buf[..n + TAG_LEN], src, "cut short")?;
        let (body, tag) = buf[..n + TAG_LEN].split_at_mut(n);
        let ad = if last {
            aad(context, len, index)
        } else {
            aad(context, at, 0)
        };
        cipher
            .open_in_place_separate_tag(nonce(index), Aad::from(ad), tag, body)
            .map_err(|_| bad("a record fails authentication"))?;
        if last {
            break;
        }
        out.write_all_at(body, at).map_err(io(dst))?;
        next_free = end.unwrap_or(len);
        index += 1;
    }
    if input.read(&mut [0u8; 1]).map_err(io(src))? != 0 {
        return Err(bad("bytes after the trailer"));
    }
    Ok(len)
}

fn read_or(
    input: &mut impl Read,
    buf: &mut [u8],
    path: &Path,
    why: &'static str,
) -> Result<(), SealError> {
    input.read_exact(buf).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => SealError::NotAuthentic(path.to_owned(), why),
        _ => io(path)(e),
    })
}
