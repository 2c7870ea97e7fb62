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

/// Offset of the end-of-central-directory record (searched back over the comment).
fn find_eocd(zip: &[u8]) -> Option<usize> {
    let last = zip.len().checked_sub(EOCD_LEN)?;
    let first = last.saturating_sub(u16::MAX as usize);
    (first..=last)
        .rev()
        .find(|&o| u32_at(zip, o) == Some(EOCD_SIG))
}

/// (entries, central directory offset) from the EOCD, or from its Zip64 twin.
fn directory(zip: &[u8], eocd: usize) -> Option<(u64, u64)> {
    let entries = u16_at(zip, eocd + 10)?;
    let offset = u32_at(zip, eocd + 16)?;
    if entries != u16::MAX && offset != u32::MAX {
        return Some((u64::from(entries), u64::from(offset)));
    }
    let locator = eocd.checked_sub(20)?;
    if u32_at(zip, locator)? != ZIP64_LOCATOR_SIG {
        return None;
    }
    let record = usize::try_from(u64_at(zip, locator + 8)?).ok()?;
    if u32_at(zip, record)? != ZIP64_EOCD_SIG {
        return None;
    }
    Some((u64_at(zip, record + 32)?, u64_at(zip, record + 48)?))
}

/// Every entry name the central directory lists, in order; `None` when the directory
/// cannot be read (the zip crate then reports why).
pub fn entry_names(zip: &[u8]) -> Option<Vec<&[u8]>> {
    let eocd = find_eocd(zip)?;
    let (count, offset) = directory(zip, eocd)?;
    let mut at = usize::try_from(offset).ok()?;
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

/// The first name the central directory lists twice.
pub fn repeated_name(zip: &[u8]) -> Option<String> {
    let mut seen = std::collections::HashSet::new();
    entry_names(zip)?
        .into_iter()
        .find(|n| !seen.insert(*n))
        .map(|n| String::from_utf8_lossy(n).into_owned())
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
        assert_eq!(repeated_name(&z), None);
        let dup = raw_zip(&[("a", b"1"), ("b", b"2"), ("a", b"3")]);
        assert_eq!(repeated_name(&dup).as_deref(), Some("a"));
        // The zip crate sees two entries where the archive has three.
        assert_eq!(
            zip::ZipArchive::new(std::io::Cursor::new(&dup))
                .unwrap()
                .len(),
            2
        );
        assert_eq!(entry_names(b"not a zip"), None);
    }
}
