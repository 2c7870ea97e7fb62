//! The zip's own central directory, read without the zip crate: that crate keys
//! entries by name, so an archive that repeats a name silently keeps only the last
//! copy. Counting the central directory's records tells the two apart.

const EOCD_SIG: u32 = 0x0605_4b50;
const EOCD_LEN: usize = 22;
const ZIP64_LOCATOR_SIG: u32 = 0x0706_4b50;
const ZIP64_EOCD_SIG: u32 = 0x0606_4b50;
const CENTRAL_SIG: u32 = 0x0201_4b50;
const CENTRAL_LEN: usize = 46;

fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(o..o + 2)?.try_into().ok()?))
}
fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(o..o + 4)?.try_into().ok()?))
}
fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(o..o + 8)?.try_into().ok()?))
}

/// Offset of the end-of-central-directory record: searched back from the end, and
/// one whose comment ends exactly at the end of the file wins over a signature that
/// merely appears inside a comment.
fn find_eocd(zip: &[u8]) -> Option<usize> {
    let last = zip.len().checked_sub(EOCD_LEN)?;
    let first = last.saturating_sub(u16::MAX as usize);
    let mut candidates = (first..=last)
        .rev()
        .filter(|&o| u32_at(zip, o) == Some(EOCD_SIG));
    let fallback = candidates.next()?;
    let exact =
        |o: usize| u16_at(zip, o + 20).is_some_and(|c| o + EOCD_LEN + usize::from(c) == zip.len());
    Some(
        std::iter::once(fallback)
            .chain(candidates)
            .find(|&o| exact(o))
            .unwrap_or(fallback),
    )
}

/// (entries, where the central directory really starts). The start is found from the
/// directory's size right before its end record, not from the recorded offset: data
/// in front of the archive shifts every recorded offset, as the zip crate allows.
fn directory(zip: &[u8], eocd: usize) -> Option<(u64, usize)> {
    let entries = u16_at(zip, eocd + 10)?;
    let size = u32_at(zip, eocd + 12)?;
    let offset = u32_at(zip, eocd + 16)?;
    if entries != u16::MAX && offset != u32::MAX && size != u32::MAX {
        let start = eocd.checked_sub(usize::try_from(size).ok()?)?;
        return Some((u64::from(entries), start));
    }
    let locator = eocd.checked_sub(20)?;
    if u32_at(zip, locator)? != ZIP64_LOCATOR_SIG {
        return None;
    }
    // The Zip64 end record sits right before its locator (its recorded offset is
    // shifted like the others).
    let record = (0..locator)
        .rev()
        .take(1 << 16)
        .find(|&o| u32_at(zip, o) == Some(ZIP64_EOCD_SIG))?;
    let size = usize::try_from(u64_at(zip, record + 40)?).ok()?;
    Some((u64_at(zip, record + 32)?, record.checked_sub(size)?))
}

/// Every entry name the central directory lists, in order; `None` when the directory
/// cannot be read.
pub fn entry_names(zip: &[u8]) -> Option<Vec<&[u8]>> {
    let eocd = find_eocd(zip)?;
    let (count, mut at) = directory(zip, eocd)?;
    let mut names = Vec::with_capacity(usize::try_from(count.min(100_000)).ok()?);
    for _ in 0..count {
        if u32_at(zip, at)? != CENTRAL_SIG {
            return None;
        }
        let name_len = usize::from(u16_at(zip, at + 28)?);
        let extra_len = usize::from(u16_at(zip, at + 30)?);
        let comment_len = usize::from(u16_at(zip, at + 32)?);
        let name = zip.get(at + CENTRAL_LEN..at + CENTRAL_LEN + name_len)?;
        names.push(name);
        at = at.checked_add(CENTRAL_LEN + name_len + extra_len + comment_len)?;
    }
    Some(names)
}

/// Why the central directory and the zip crate's reading of it disagree.
#[derive(Debug, PartialEq, Eq)]
pub enum Mismatch {
    /// A name is listed more than once (the zip crate kept only the last).
    Repeated(String),
    /// The directory cannot be read, or lists another number of entries than the zip
    /// crate found: refuse rather than trust either reading.
    Unreadable { listed: Option<usize>, read: usize },
}

/// Checks the central directory against the `read` entries the zip crate found.
pub fn verify(zip: &[u8], read: usize) -> Result<(), Mismatch> {
    let names = entry_names(zip).ok_or(Mismatch::Unreadable { listed: None, read })?;
    let mut seen = std::collections::HashSet::new();
    if let Some(n) = names.iter().find(|n| !seen.insert(**n)) {
        return Err(Mismatch::Repeated(String::from_utf8_lossy(n).into_owned()));
    }
    if names.len() != read {
        return Err(Mismatch::Unreadable {
            listed: Some(names.len()),
            read,
        });
    }
    Ok(())
}

#[cfg(test)]
pub mod tests {
    use super::*;

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    /// A stored (uncompressed) zip written by hand, repeated names allowed.
    pub fn raw_zip(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut central = Vec::new();
        for (name, data) in entries {
            let offset = out.len() as u32;
            let (crc, len) = (crc32(data), data.len() as u32);
            out.extend_from_slice(&0x0403_4b50u32.to_le_bytes());
            out.extend_from_slice(&[20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            for v in [crc, len, len] {
                out.extend_from_slice(&v.to_le_bytes());
            }
            out.extend_from_slice(&(name.len() as u16).to_le_bytes());
            out.extend_from_slice(&0u16.to_le_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(data);
            central.extend_from_slice(&CENTRAL_SIG.to_le_bytes());
            central.extend_from_slice(&[20, 3, 20, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
            for v in [crc, len, len] {
                central.extend_from_slice(&v.to_le_bytes());
            }
            central.extend_from_slice(&(name.len() as u16).to_le_bytes());
            central.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0]);
            central.extend_from_slice(&((0o100_644u32) << 16).to_le_bytes());
            central.extend_from_slice(&offset.to_le_bytes());
            central.extend_from_slice(name.as_bytes());
        }
        let cd_offset = out.len() as u32;
        out.extend_from_slice(&central);
        out.extend_from_slice(&EOCD_SIG.to_le_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        let n = entries.len() as u16;
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&n.to_le_bytes());
        out.extend_from_slice(&(central.len() as u32).to_le_bytes());
        out.extend_from_slice(&cd_offset.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out
    }

    #[test]
    fn lists_names_and_finds_a_repeat() {
        let z = raw_zip(&[("a", b"1"), ("b/c", b"2")]);
        assert_eq!(entry_names(&z).unwrap(), [&b"a"[..], &b"b/c"[..]]);
        assert_eq!(verify(&z, 2), Ok(()));
        let dup = raw_zip(&[("a", b"1"), ("b", b"2"), ("a", b"3")]);
        assert_eq!(verify(&dup, 2), Err(Mismatch::Repeated("a".into())));
        // The zip crate sees two entries where the archive has three.
        assert_eq!(
            zip::ZipArchive::new(std::io::Cursor::new(&dup))
                .unwrap()
                .len(),
            2
        );
        assert_eq!(entry_names(b"not a zip"), None);
    }

    /// Found in review: data in front of the archive, or an end-record signature in the
    /// comment, made the directory unreadable here and the repeat slipped through.
    #[test]
    fn a_repeat_behind_prepended_data_or_a_fake_signature_is_still_found() {
        let dup = raw_zip(&[("a", b"1"), ("a", b"2")]);
        let mut shifted = b"#!/bin/sh\nexit 0\n".to_vec();
        shifted.extend_from_slice(&dup);
        assert_eq!(
            zip::ZipArchive::new(std::io::Cursor::new(&shifted))
                .unwrap()
                .len(),
            1,
            "the zip crate reads the shifted archive"
        );
        assert_eq!(verify(&shifted, 1), Err(Mismatch::Repeated("a".into())));
        // A comment holding an end-record signature.
        let mut commented = dup.clone();
        let comment = [&EOCD_SIG.to_le_bytes()[..], &[0u8; 18]].concat();
        let n = commented.len();
        commented[n - 2..].copy_from_slice(&(comment.len() as u16).to_le_bytes());
        commented.extend_from_slice(&comment);
        assert!(
            verify(&commented, 1).is_err(),
            "refused one way or the other"
        );
        // Unreadable or disagreeing directories are refused, never waved through.
        assert!(matches!(
            verify(b"junk", 1),
            Err(Mismatch::Unreadable { .. })
        ));
        let ok = raw_zip(&[("a", b"1"), ("b", b"2")]);
        assert!(matches!(verify(&ok, 3), Err(Mismatch::Unreadable { .. })));
    }
}
