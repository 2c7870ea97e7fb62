//! The shared `main` of the bench binaries: run the async body, print its JSON, save it.

use std::future::Future;
use std::path::PathBuf;

/// Runs `body` on the runtime the supervisor would run on ([`crate::runtime::build`];
/// `SUPERVISOR_ASYNC_THREADS` sets its threads, as for the supervisor), prints the JSON
/// it returns and writes it to `out` when given. Exits with 1 on any error, naming the
/// bench.
pub fn run_and_report<F>(name: &str, out: Option<PathBuf>, body: F)
where
    F: Future<Output = Result<serde_json::Value, String>>,
{
    let threads = std::env::var("SUPERVISOR_ASYNC_THREADS")
        .ok()
        .and_then(|t| t.parse().ok());
    let result = crate::runtime::build(threads)
        .map_err(|e| format!("runtime: {e}"))
        .and_then(|rt| rt.block_on(body))
        .and_then(|value| {
            let text = serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?;
            println!("{text}");
            match &out {
                Some(path) => std::fs::write(path, text)
                    .map_err(|e| format!("writing {}: {e}", path.display())),
                None => Ok(()),
            }
        });
    if let Err(e) = result {
        eprintln!("{name}: {e}");
        std::process::exit(1);
    }
}
