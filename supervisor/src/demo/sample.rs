//! The demo's sample function: a shell custom runtime in the style of AWS's
//! "Building a custom runtime" tutorial, zipped in memory.

use std::io::Write as _;

use zip::write::SimpleFileOptions;

/// `bootstrap`: loads the handler file named by `_HANDLER`, then loops over the
/// Runtime API with curl.
pub const BOOTSTRAP: &str = r#"#!/bin/sh
set -eu
# Initialization: source the handler file ("function" of "function.handler").
. "$LAMBDA_TASK_ROOT/$(echo "$_HANDLER" | cut -d. -f1).sh"
HANDLER_FN="$(echo "$_HANDLER" | cut -d. -f2)"
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
HEADERS="$(mktemp)"
while true; do
  EVENT="$(curl -sS -D "$HEADERS" "$API/invocation/next")"
  REQUEST_ID="$(grep -Fi Lambda-Runtime-Aws-Request-Id "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)"
  RESPONSE="$("$HANDLER_FN" "$EVENT")"
  curl -sS -o /dev/null "$API/invocation/$REQUEST_ID/response" -d "$RESPONSE"
done
"#;

/// `function.sh`: the handler echoes the event inside a greeting.
pub const FUNCTION: &str = r#"handler() {
  echo "demo: handling $1" >&2
  printf '{"message":"Hello from a shell function in a sandbox","event":%s}' "$1"
}
"#;

pub const HANDLER: &str = "function.handler";

#[derive(Debug, thiserror::Error)]
#[error("building the sample zip: {0}")]
pub struct SampleError(String);

/// The deployment package: `bootstrap` (0755) and `function.sh` (0644).
pub fn zip() -> Result<Vec<u8>, SampleError> {
    let err = |e: &dyn std::fmt::Display| SampleError(e.to_string());
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, text, mode) in [
        ("bootstrap", BOOTSTRAP, 0o755),
        ("function.sh", FUNCTION, 0o644),
    ] {
        let opts = SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .unix_permissions(mode);
        w.start_file(name, opts).map_err(|e| err(&e))?;
        w.write_all(text.as_bytes()).map_err(|e| err(&e))?;
    }
    Ok(w.finish().map_err(|e| err(&e))?.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zip_holds_an_executable_bootstrap() {
        let bytes = zip().expect("zip");
        let mut a = zip::ZipArchive::new(std::io::Cursor::new(bytes)).expect("read");
        let b = a.by_name("bootstrap").expect("bootstrap");
        assert_eq!(b.unix_mode().map(|m| m & 0o777), Some(0o755));
    }
}
