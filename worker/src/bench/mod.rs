//! Pieces of the bench binaries: a bare loopback HTTP/1.1 echo baseline, the invoke
//! topology's floor, a closed-loop load generator, latency stats and the shared JSON reporting `main`.

pub mod args;
pub mod floor;
pub mod http_echo;
pub mod load;
pub mod report;
pub mod stats;

/// A deployment package holding `bin` as an executable `bootstrap` (the bench
/// functions' zip).
pub fn bootstrap_zip(bin: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Write as _;
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let o = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
    w.start_file("bootstrap", o).map_err(|e| e.to_string())?;
    w.write_all(bin).map_err(|e| e.to_string())?;
    Ok(w.finish().map_err(|e| e.to_string())?.into_inner())
}
