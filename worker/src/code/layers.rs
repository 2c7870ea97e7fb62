//! Layers merged into one tree for `/opt`, as Lambda merges them: in the function's
//! order, a later layer's entry replacing an earlier one's at the same path. Each
//! layer is unpacked (and checked) on its own first; the merge then writes only real
//! directories and hard links, and makes symbolic links last, never under a path that
//! is itself a link, so nothing a layer holds can point a write outside the tree.

use super::unpack::io;
use super::CodeError;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Which layer last wrote each path, and the links still to make.
#[derive(Default)]
struct Merge {
    owner: BTreeMap<PathBuf, usize>,
    links: BTreeMap<PathBuf, (usize, PathBuf)>,
}

/// Removes whatever is at `p` (nothing there is fine). Never follows a link.
fn clear(p: &Path) -> Result<(), CodeError> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(p).map_err(io(p)),
        Ok(_) => std::fs::remove_file(p).map_err(io(p)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io(p)(e)),
    }
}

impl Merge {
    /// Phase one for layer `layer`, unpacked at `src`: directories and files of the
    /// subtree `rel` (relative to `dest`); links are noted for later.
    fn add(&mut self, layer: usize, src: &Path, dest: &Path, rel: &Path) -> Result<(), CodeError> {
        let from_dir = src.join(rel);
        for entry in std::fs::read_dir(&from_dir).map_err(io(&from_dir))? {
            let entry = entry.map_err(io(&from_dir))?;
            let rel = rel.join(entry.file_name());
            let (from, to) = (src.join(&rel), dest.join(&rel));
            let kind = entry.file_type().map_err(io(&from))?;
            if kind.is_symlink() {
                let target = std::fs::read_link(&from).map_err(io(&from))?;
                self.links.insert(rel, (layer, target));
                continue;
            }
            self.links.remove(&rel);
            self.owner.insert(rel.clone(), layer);
            if kind.is_dir() {
                if !std::fs::symlink_metadata(&to).is_ok_and(|m| m.is_dir()) {
                    clear(&to)?;
                    std::fs::create_dir(&to).map_err(io(&to))?;
                }
                self.add(layer, src, dest, &rel)?;
            } else {
                clear(&to)?;
                std::fs::hard_link(&from, &to).map_err(io(&to))?;
            }
        }
        Ok(())
    }

    /// Phase two: each link whose layer is the last to write its path, shallowest
    /// first, unless some directory above it is itself a link.
    fn make_links(self, dest: &Path) -> Result<(), CodeError> {
        let mut links: Vec<_> = self.links.into_iter().collect();
        links.sort_by_key(|(rel, _)| rel.components().count());
        for (rel, (layer, target)) in links {
            if self.owner.get(&rel).is_some_and(|&o| o > layer) {
                continue;
            }
            let mut above = dest.to_path_buf();
            let mut safe = true;
            for c in rel.parent().into_iter().flat_map(Path::components) {
                above.push(c);
                safe &= std::fs::symlink_metadata(&above).is_ok_and(|m| m.is_dir());
            }
            if !safe {
                continue;
            }
            let at = dest.join(&rel);
            clear(&at)?;
            std::os::unix::fs::symlink(&target, &at).map_err(io(&at))?;
        }
        Ok(())
    }
}

/// Merges the unpacked layers `unpacked` (in the function's order) into `dest`, an
/// existing empty directory. Blocking.
pub(super) fn merge(unpacked: &[PathBuf], dest: &Path) -> Result<(), CodeError> {
    let mut m = Merge::default();
    for (i, src) in unpacked.iter().enumerate() {
        m.add(i, src, dest, Path::new(""))?;
    }
    m.make_links(dest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Empty directories with these names under `root`.
    fn dirs<const N: usize>(root: &Path, names: [&str; N]) -> [PathBuf; N] {
        names.map(|n| {
            let p = root.join(n);
            std::fs::create_dir_all(&p).expect("mkdir");
            p
        })
    }

    fn write(p: &Path, text: &str) {
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }

    #[test]
    fn later_layers_win_and_links_cannot_lead_writes_out() {
        let d = tempfile::tempdir().expect("tempdir");
        let [a, b, out, outside] = dirs(d.path(), ["a", "b", "out", "outside"]);
        write(&a.join("bin/tool"), "a-tool");
        write(&a.join("lib/only-a"), "a");
        write(&a.join("python/x.py"), "a-x");
        write(&b.join("bin/tool"), "b-tool");
        write(&b.join("python/y.py"), "b-y");
        // Layer b replaces a's directory `lib` with a link out of the tree, and a's
        // link `esc` (pointing outside) would have written `esc/f` through it.
        symlink(&outside, b.join("lib")).expect("link");
        symlink(&outside, a.join("esc")).expect("link");
        write(&b.join("esc/f"), "b-f");
        merge(&[a.clone(), b.clone()], &out).expect("merge");
        let read = |p: &str| std::fs::read_to_string(out.join(p)).expect(p);
        assert_eq!(read("bin/tool"), "b-tool");
        assert_eq!(
            (read("python/x.py"), read("python/y.py")),
            ("a-x".into(), "b-y".into())
        );
        assert_eq!(std::fs::read_link(out.join("lib")).expect("link"), outside);
        // b's directory `esc` beat a's link of that name; nothing went outside.
        assert!(std::fs::symlink_metadata(out.join("esc"))
            .expect("esc")
            .is_dir());
        assert_eq!(read("esc/f"), "b-f");
        assert_eq!(std::fs::read_dir(&outside).expect("outside").count(), 0);
    }

    #[test]
    fn a_link_under_a_linked_directory_is_not_made() {
        let d = tempfile::tempdir().expect("tempdir");
        let [a, b, out, outside] = dirs(d.path(), ["a", "b", "out", "outside"]);
        symlink(&outside, a.join("d")).expect("link");
        std::fs::create_dir_all(b.join("d")).expect("mkdir");
        symlink("/etc/passwd", b.join("d/evil")).expect("link");
        // Layer a's link `d` comes first by depth, but b's directory `d` is later.
        merge(&[a, b], &out).expect("merge");
        assert!(std::fs::symlink_metadata(out.join("d"))
            .expect("d")
            .is_dir());
        assert_eq!(std::fs::read_dir(&outside).expect("outside").count(), 0);
        assert!(std::fs::symlink_metadata(out.join("d/evil"))
            .expect("evil")
            .is_symlink());
    }
}
