//! Which root filesystem serves which Lambda runtime identifier.

use std::path::{Path, PathBuf};

/// Runtime → rootfs (an unpacked directory for processes, an ext4 image for microVMs).
/// A key matches a runtime exactly or as its family: `provided` serves
/// `provided.al2023` and `provided.al2`.
#[derive(Debug, Clone, Default)]
pub struct RootfsMap {
    entries: Vec<(String, PathBuf)>,
}

impl RootfsMap {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with(mut self, runtime: &str, path: impl Into<PathBuf>) -> Self {
        self.entries.push((runtime.to_string(), path.into()));
        self
    }

    pub fn get(&self, runtime: &str) -> Option<&Path> {
        let exact = self.entries.iter().find(|(k, _)| k == runtime);
        let family = || {
            self.entries.iter().find(|(k, _)| {
                runtime
                    .strip_prefix(k.as_str())
                    .is_some_and(|rest| rest.starts_with('.'))
            })
        };
        exact.or_else(family).map(|(_, p)| p.as_path())
    }

    /// The layout `image-build` produces: `rootfs-provided{,.ext4}` and
    /// `rootfs-python3.11{,.ext4}` in one directory.
    pub fn from_images_dir(dir: &Path, ext4: bool) -> Self {
        let suffix = if ext4 { ".ext4" } else { "" };
        Self::new()
            .with("provided", dir.join(format!("rootfs-provided{suffix}")))
            .with("python3.11", dir.join(format!("rootfs-python3.11{suffix}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_exact_then_family() {
        let m = RootfsMap::new()
            .with("provided", "/p")
            .with("python3.11", "/py");
        assert_eq!(m.get("provided.al2023"), Some(Path::new("/p")));
        assert_eq!(m.get("provided"), Some(Path::new("/p")));
        assert_eq!(m.get("python3.11"), Some(Path::new("/py")));
        assert_eq!(m.get("python3.12"), None);
        assert_eq!(m.get("providedx"), None);
    }
}
