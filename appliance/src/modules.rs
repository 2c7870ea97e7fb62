//! Kernel modules: the appliance ships Debian's modules for the hardware it supports
//! (`image-build/appliance.sh` picks them and runs depmod). PID 1 loads what the
//! devices present ask for ("coldplug": every `modalias` under /sys/devices matched
//! against `modules.alias`), plus a fixed list of filesystems, with dependencies first.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

/// Loaded by name whatever the hardware: the data disk's filesystem and the jail's root.
pub const ALWAYS: &[&str] = &["ext4", "overlay"];

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("reading {path}: {source}")]
    Index {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unknown module {0}")]
    Unknown(String),
    #[error("loading {path}: {source}")]
    Load { path: PathBuf, source: nix::Error },
}

/// `modules.dep`, `modules.alias` and `modules.builtin` of one kernel.
#[derive(Debug, Default)]
pub struct ModuleIndex {
    root: PathBuf,
    /// Module name -> (path relative to `root`, dependency names).
    deps: HashMap<String, (String, Vec<String>)>,
    aliases: Vec<(String, String)>,
    /// `modules.softdep`: module -> (names to load before, names to load after). Names
    /// may be aliases (ext4 wants `crypto-crc32c` first, which no symbol dependency
    /// says).
    softdeps: HashMap<String, (Vec<String>, Vec<String>)>,
    builtin: HashSet<String>,
}

/// `kernel/fs/ext4/ext4.ko` -> `ext4`; dashes and underscores are the same in names.
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    normalize(stem)
}

fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// The glob matching of `modules.alias` patterns (`*`, `?`, `[...]` as fnmatch).
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            match pattern[p] {
                b'*' => {
                    backtrack = Some((p, t));
                    p += 1;
                    continue;
                }
                b'?' => {
                    p += 1;
                    t += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class_match(&pattern[p..], text[t]) {
                        if matched {
                            p += next;
                            t += 1;
                            continue;
                        }
                    } else if text[t] == b'[' {
                        p += 1;
                        t += 1;
                        continue;
                    }
                }
                c if c == text[t] => {
                    p += 1;
                    t += 1;
                    continue;
                }
                _ => {}
            }
        }
        match backtrack {
            Some((bp, bt)) => {
                p = bp + 1;
                t = bt + 1;
                backtrack = Some((bp, bt + 1));
            }
            None => return false,
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Matches one byte against the class at the start of `pat`; returns (matched, length of
/// the class) or None when the class is not closed.
fn class_match(pat: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(pat.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    while i < pat.len() {
        if pat[i] == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if i + 2 < pat.len() && pat[i + 1] == b'-' && pat[i + 2] != b']' {
            matched |= pat[i] <= c && c <= pat[i + 2];
            i += 3;
        } else {
            matched |= pat[i] == c;
            i += 1;
        }
    }
    None
}

impl ModuleIndex {
    /// Reads the index files under `root` (`/lib/modules/<release>`).
    pub fn load(root: &Path) -> Result<Self, ModuleError> {
        let read = |name: &str| {
            let path = root.join(name);
            std::fs::read_to_string(&path).map_err(|source| ModuleError::Index { path, source })
        };
        let mut idx = ModuleIndex {
            root: root.to_owned(),
            ..Default::default()
        };
        for line in read("modules.dep")?.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let deps = deps.split_whitespace().map(module_name).collect();
            idx.deps.insert(module_name(path), (path.to_owned(), deps));
        }
        for line in read("modules.alias")?.lines() {
            let mut f = line.split_whitespace();
            if let (Some("alias"), Some(pat), Some(module)) = (f.next(), f.next(), f.next()) {
                idx.aliases.push((pat.to_owned(), normalize(module)));
            }
        }
        if let Ok(text) = read("modules.builtin") {
            idx.builtin = text.lines().map(module_name).collect();
        }
        if let Ok(text) = read("modules.softdep") {
            idx.softdeps = parse_softdeps(&text);
        }
        Ok(idx)
    }

    /// The modules a name stands for: itself when it is a module, else its aliases.
    pub fn resolve(&self, name: &str) -> Vec<String> {
        let n = normalize(name);
        if self.deps.contains_key(&n) || self.builtin.contains(&n) {
            vec![n]
        } else {
            self.resolve_alias(name)
        }
    }

    /// Modules whose alias patterns match `modalias`.
    pub fn resolve_alias(&self, modalias: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .aliases
            .iter()
            .filter(|(pat, _)| glob_match(pat.as_bytes(), modalias.as_bytes()))
            .map(|(_, m)| m.clone())
            .collect();
        out.dedup();
        out
    }

    /// `name` and its dependencies in load order (dependencies first); builtins skipped.
    pub fn load_order(&self, name: &str) -> Result<Vec<String>, ModuleError> {
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        self.visit(&normalize(name), &mut seen, &mut order)?;
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        seen: &mut HashSet<String>,
        order: &mut Vec<String>,
    ) -> Result<(), ModuleError> {
        if !seen.insert(name.to_owned()) || self.builtin.contains(name) {
            return Ok(());
        }
        let (_, deps) = self
            .deps
            .get(name)
            .ok_or_else(|| ModuleError::Unknown(name.to_owned()))?;
        // modules.dep lists the full closure, deepest last: load from the end.
        for d in deps.iter().rev() {
            self.visit(d, seen, order)?;
        }
        order.push(name.to_owned());
        Ok(())
    }

    fn path_of(&self, name: &str) -> Option<PathBuf> {
        self.deps.get(name).map(|(p, _)| self.root.join(p))
    }
}

/// Loads modules into the running kernel, remembering what is already in.
pub struct Loader {
    index: ModuleIndex,
    loaded: HashSet<String>,
}

impl Loader {
    pub fn new(index: ModuleIndex) -> Self {
        let loaded = std::fs::read_to_string("/proc/modules")
            .map(|t| {
                t.lines()
                    .filter_map(|l| l.split_whitespace().next())
                    .map(normalize)
                    .collect()
            })
            .unwrap_or_default();
        Self { index, loaded }
    }

    /// Loads what `name` stands for (a module or an alias) with its dependencies and
    /// soft dependencies; returns how many modules were inserted.
    pub fn load(&mut self, name: &str) -> Result<usize, ModuleError> {
        let modules = self.index.resolve(name);
        if modules.is_empty() {
            return Err(ModuleError::Unknown(name.to_owned()));
        }
        let mut inserted = 0;
        for m in modules {
            inserted += self.load_with_softdeps(&m, 0)?;
        }
        Ok(inserted)
    }

    fn load_with_softdeps(&mut self, module: &str, depth: u8) -> Result<usize, ModuleError> {
        if self.loaded.contains(module) || depth > 4 {
            return Ok(0);
        }
        let (pre, post) = self.index.softdeps.get(module).cloned().unwrap_or_default();
        let mut inserted = 0;
        // A missing soft dependency is not fatal: the module itself says what it lacks.
        for soft in &pre {
            for m in self.index.resolve(soft) {
                inserted += self.load_with_softdeps(&m, depth + 1).unwrap_or(0);
            }
        }
        inserted += self.load_hard(module)?;
        for soft in &post {
            for m in self.index.resolve(soft) {
                inserted += self.load_with_softdeps(&m, depth + 1).unwrap_or(0);
            }
        }
        Ok(inserted)
    }

    fn load_hard(&mut self, name: &str) -> Result<usize, ModuleError> {
        let mut inserted = 0;
        for m in self.index.load_order(name)? {
            if self.loaded.contains(&m) {
                continue;
            }
            let path = self
                .index
                .path_of(&m)
                .ok_or_else(|| ModuleError::Unknown(m.clone()))?;
            insert(&path)?;
            self.loaded.insert(m);
            inserted += 1;
        }
        Ok(inserted)
    }

    /// One coldplug round: loads the modules the devices under `sys_devices` ask for.
    /// Returns the names loaded and the errors met (a driver failing to load must not
    /// keep the others from loading).
    pub fn coldplug_round(&mut self, sys_devices: &Path) -> (Vec<String>, Vec<ModuleError>) {
        let mut wanted: Vec<String> = Vec::new();
        for alias in modaliases(sys_devices) {
            for m in self.index.resolve_alias(&alias) {
                if !self.loaded.contains(&m) && !wanted.contains(&m) {
                    wanted.push(m);
                }
            }
        }
        let mut loaded = Vec::new();
        let mut errors = Vec::new();
        for m in wanted {
            match self.load(&m) {
                Ok(_) => loaded.push(m),
                Err(e) => {
                    // Do not try it again in the next round.
                    self.loaded.insert(m);
                    errors.push(e);
                }
            }
        }
        (loaded, errors)
    }
}

/// `softdep ext4 pre: crypto-crc32c post: x` lines.
fn parse_softdeps(text: &str) -> HashMap<String, (Vec<String>, Vec<String>)> {
    let mut out: HashMap<String, (Vec<String>, Vec<String>)> = HashMap::new();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let (Some("softdep"), Some(module)) = (words.next(), words.next()) else {
            continue;
        };
        let entry = out.entry(normalize(module)).or_default();
        let mut post = false;
        for w in words {
            match w {
                "pre:" => post = false,
                "post:" => post = true,
                name if post => entry.1.push(name.to_owned()),
                name => entry.0.push(name.to_owned()),
            }
        }
    }
    out
}

/// `modprobe [-q] [-b] [--] NAME...` as the kernel runs it (`/proc/sys/kernel/modprobe`)
/// when a driver, filesystem or crypto algorithm is first asked for. Returns the exit code.
pub fn modprobe_main(args: impl Iterator<Item = String>) -> i32 {
    let names: Vec<String> = args.filter(|a| !a.starts_with('-')).collect();
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let index = match ModuleIndex::load(&Path::new("/lib/modules").join(release)) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("modprobe: {e}");
            return 1;
        }
    };
    let mut loader = Loader::new(index);
    let mut code = 0;
    for n in names {
        if let Err(e) = loader.load(&n) {
            eprintln!("modprobe: {e}");
            code = 1;
        }
    }
    code
}

fn insert(path: &Path) -> Result<(), ModuleError> {
    let err = |source| ModuleError::Load {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path)
        .map_err(|e| err(nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EIO))))?;
    match nix::kmod::finit_module(&file, c"", nix::kmod::ModuleInitFlags::empty()) {
        Ok(()) | Err(nix::Error::EEXIST) => Ok(()),
        Err(e) => Err(err(e)),
    }
}

/// Every `modalias` value under `dir` (not following symlinks).
pub fn modaliases(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() && e.file_name() == "modalias" {
                if let Ok(v) = std::fs::read_to_string(e.path()) {
                    let v = v.trim();
                    if !v.is_empty() {
                        out.push(v.to_owned());
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests;
