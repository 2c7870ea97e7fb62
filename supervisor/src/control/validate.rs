//! Parameter validation with Lambda's limits and messages.

use std::collections::BTreeMap;

use base64::Engine as _;

use crate::http::{ApiError, ErrorKind};

pub const RUNTIMES: &[&str] = &["provided.al2023", "provided.al2", "python3.11"];
pub const ENV_LIMIT_BYTES: usize = 4096;
pub const MAX_ZIP_BYTES: usize = 50 * 1024 * 1024;

/// Variables the runtime sets itself; Lambda refuses them from users.
const RESERVED_ENV: &[&str] = &[
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
];

fn constraint(value: impl std::fmt::Display, field: &str, rule: &str) -> ApiError {
    ApiError::invalid(format!(
        "1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: {rule}"
    ))
}

pub fn range(value: i64, field: &str, min: i64, max: i64) -> Result<u32, ApiError> {
    if value < min {
        return Err(constraint(
            value,
            field,
            &format!("Member must have value greater than or equal to {min}"),
        ));
    }
    if value > max {
        return Err(constraint(
            value,
            field,
            &format!("Member must have value less than or equal to {max}"),
        ));
    }
    u32::try_from(value).map_err(|_| constraint(value, field, "Member must fit in 32 bits"))
}

pub fn memory_size(v: i64) -> Result<u32, ApiError> {
    range(v, "memorySize", 128, 10240)
}

pub fn timeout(v: i64) -> Result<u32, ApiError> {
    range(v, "timeout", 1, 900)
}

pub fn ephemeral(v: i64) -> Result<u32, ApiError> {
    range(v, "ephemeralStorage.size", 512, 10240)
}

/// `SnapStart.ApplyOn`: whether published versions start from a snapshot.
pub fn snap_start(s: &super::model::SnapStart) -> Result<bool, ApiError> {
    match s.apply_on.as_deref() {
        Some("PublishedVersions") => Ok(true),
        Some("None") | None => Ok(false),
        Some(other) => Err(ApiError::invalid(format!(
            "Value {other} at 'snapStart.applyOn' failed to satisfy constraint: Member must satisfy enum value set: [PublishedVersions, None]"
        ))),
    }
}

pub fn runtime(r: &str) -> Result<(), ApiError> {
    if RUNTIMES.contains(&r) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "Value {r} at 'runtime' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
            RUNTIMES.join(", ")
        )))
    }
}

pub fn handler(h: &str) -> Result<(), ApiError> {
    if h.is_empty() || h.len() > 128 || h.chars().any(char::is_whitespace) {
        return Err(constraint(
            h,
            "handler",
            "Member must satisfy regular expression pattern: [^\\s]+ and have length 1-128",
        ));
    }
    Ok(())
}

/// Python runtimes need a `module.function` handler; `provided.*` may omit it.
pub fn handler_for_runtime(runtime: &str, handler: Option<&str>) -> Result<(), ApiError> {
    if runtime.starts_with("python") && handler.is_none() {
        return Err(ApiError::invalid(format!(
            "Handler is required for runtime {runtime}"
        )));
    }
    Ok(())
}

pub fn role(r: &str) -> Result<(), ApiError> {
    let ok =
        r.starts_with("arn:aws") && r.contains(":iam::") && r.contains(":role/") && r.len() <= 2048;
    if ok {
        Ok(())
    } else {
        Err(constraint(r, "role", "Member must satisfy regular expression pattern: arn:(aws[a-zA-Z-]*)?:iam::\\d{12}:role/?[a-zA-Z_0-9+=,.@\\-_/]+"))
    }
}

pub fn description(d: &str) -> Result<(), ApiError> {
    if d.chars().count() > 256 {
        return Err(constraint(
            "...",
            "description",
            "Member must have length less than or equal to 256",
        ));
    }
    Ok(())
}

pub fn environment(vars: &BTreeMap<String, String>) -> Result<(), ApiError> {
    for key in vars.keys() {
        let mut chars = key.chars();
        let ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
            && key.len() >= 2;
        if !ok {
            return Err(ApiError::invalid(format!(
                "Environment variable key '{key}' must match [a-zA-Z]([a-zA-Z0-9_])+"
            )));
        }
        if RESERVED_ENV.contains(&key.as_str()) {
            return Err(ApiError::invalid(format!(
                "Lambda was unable to configure your environment variables because the environment variables you have provided contains reserved keys that are currently not supported for modification. Reserved keys used in this request: {key}"
            )));
        }
    }
    // A process environment cannot carry NUL: refused now, not at the first invoke.
    if let Some(key) = vars.iter().find(|(_, v)| v.contains('\0')).map(|(k, _)| k) {
        return Err(ApiError::invalid(format!(
            "Environment variable '{key}' has a value that contains a NUL character"
        )));
    }
    // Lambda measures the JSON-serialised map.
    let size = serde_json::to_string(vars)
        .map(|s| s.len())
        .unwrap_or(usize::MAX);
    if size > ENV_LIMIT_BYTES {
        return Err(ApiError::invalid(format!(
            "Lambda was unable to configure your environment variables because the environment variables you have provided exceeded the 4KB limit. String measured: {size} bytes"
        )));
    }
    Ok(())
}

/// Decodes `ZipFile` (base64 in JSON) and applies the zipped-size limit.
pub fn decode_zip(b64: &str) -> Result<Vec<u8>, ApiError> {
    // 4 base64 chars per 3 bytes: refuse before allocating for huge input.
    if b64.len() / 4 * 3 > MAX_ZIP_BYTES + 3 {
        return Err(too_large());
    }
    let zip = base64::engine::general_purpose::STANDARD
        .decode(b64.as_bytes())
        .map_err(|_| ApiError::invalid("Could not decode ZipFile: it must be base64-encoded"))?;
    if zip.len() > MAX_ZIP_BYTES {
        return Err(too_large());
    }
    Ok(zip)
}

fn too_large() -> ApiError {
    ApiError::new(
        ErrorKind::RequestTooLarge,
        format!("Zipped size must be smaller than {MAX_ZIP_BYTES} bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert!(memory_size(127).is_err());
        assert_eq!(memory_size(128).ok(), Some(128));
        assert!(memory_size(10241).is_err());
        assert!(timeout(0).is_err());
        assert!(timeout(901).is_err());
        assert!(ephemeral(511).is_err());
        assert!(runtime("python3.11").is_ok());
        assert!(runtime("nodejs20.x").is_err());
        assert!(handler("a b").is_err());
        assert!(handler_for_runtime("python3.11", None).is_err());
        assert!(handler_for_runtime("provided.al2023", None).is_ok());
        assert!(role("arn:aws:iam::000000000000:role/x").is_ok());
        assert!(role("nope").is_err());
    }

    #[test]
    fn environment_rules() {
        let mut v = BTreeMap::new();
        v.insert("GOOD_KEY".to_owned(), "x".to_owned());
        assert!(environment(&v).is_ok());
        v.insert("AWS_REGION".to_owned(), "x".to_owned());
        assert!(environment(&v).is_err());
        let mut big = BTreeMap::new();
        big.insert("BIG".to_owned(), "x".repeat(4096));
        assert!(environment(&big).is_err());
        let mut bad = BTreeMap::new();
        bad.insert("1X".to_owned(), String::new());
        assert!(environment(&bad).is_err());
        let mut nul = BTreeMap::new();
        nul.insert("GOOD".to_owned(), "a\0b".to_owned());
        assert!(environment(&nul).is_err());
    }

    #[test]
    fn zip_decoding() {
        assert_eq!(decode_zip("UEsFBg==").ok(), Some(b"PK\x05\x06".to_vec()));
        assert_eq!(
            decode_zip("!!!").expect_err("b64").kind,
            ErrorKind::InvalidParameterValue
        );
        let huge = "A".repeat((MAX_ZIP_BYTES + 1024) / 3 * 4);
        assert_eq!(
            decode_zip(&huge).expect_err("big").kind,
            ErrorKind::RequestTooLarge
        );
    }
}
