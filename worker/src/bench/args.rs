//! The command line of the load benches (worker-bench, link-bench, invoke-bench): the
//! flags they share are parsed here once, each bench's own through a callback.

use std::fmt::Display;
use std::path::PathBuf;
use std::str::FromStr;

/// Flags every load bench takes.
#[derive(Debug, Clone)]
pub struct LoadFlags {
    /// The fn-rust (musl) binary, the benches' function.
    pub fn_bin: PathBuf,
    /// Seconds per level (or run).
    pub seconds: f64,
    /// Concurrent clients per level.
    pub levels: Vec<usize>,
    /// Where the JSON report goes besides stdout.
    pub out: Option<PathBuf>,
}

impl Default for LoadFlags {
    fn default() -> Self {
        Self {
            fn_bin: PathBuf::new(),
            seconds: 3.0,
            levels: vec![1, 8, 32],
            out: None,
        }
    }
}

/// `value` parsed as the number `flag` takes.
pub fn number<T: FromStr>(flag: &str, value: &str) -> Result<T, String>
where
    T::Err: Display,
{
    value.parse().map_err(|e| format!("{flag}: {e}"))
}

/// The value reader handed to a bench's own flags.
pub type Value<'a> = dyn FnMut() -> Result<String, String> + 'a;

/// Reads the command line: shared flags into `load`, every other one to `own` (which
/// returns false for a flag it does not know). Checks `--fn-bin` names a file.
pub fn parse(
    load: &mut LoadFlags,
    mut own: impl FnMut(&str, &mut Value<'_>) -> Result<bool, String>,
) -> Result<(), String> {
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--fn-bin" => load.fn_bin = val()?.into(),
            "--seconds" => load.seconds = number(&flag, &val()?)?,
            "--levels" => {
                load.levels = val()?
                    .split(',')
                    .map(|s| number(&flag, s))
                    .collect::<Result<_, _>>()?
            }
            "--out" => load.out = Some(val()?.into()),
            other => {
                if !own(other, &mut val)? {
                    return Err(format!("unknown flag {other}"));
                }
            }
        }
    }
    if !load.fn_bin.is_file() {
        return Err("--fn-bin must name the fn-rust (musl) binary".into());
    }
    Ok(())
}

/// The parsed arguments, or exit status 2 with the error, naming the bench.
pub fn or_exit<A>(bench: &str, parsed: Result<A, String>) -> A {
    parsed.unwrap_or_else(|e| {
        eprintln!("{bench}: {e}");
        std::process::exit(2)
    })
}
