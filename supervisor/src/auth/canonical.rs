//! SigV4 canonical request construction (AWS "Create a canonical request").
//!
//! The server rebuilds exactly what the client signed: the path as it came
//! over the wire (re-encoded once more, as every service but S3 requires),
//! the query re-encoded with RFC 3986 rules and sorted, and precisely the
//! headers named in `SignedHeaders`, in the client's order.

use axum::http::HeaderMap;
use percent_encoding::percent_decode_str;
use sha2::{Digest, Sha256};

use super::AuthError;

/// What the canonical request is built from.
pub struct CanonicalInput<'a> {
    pub method: &'a str,
    /// Path exactly as received on the wire (still percent-encoded).
    pub raw_path: &'a str,
    /// Query string as received, without the leading `?`.
    pub raw_query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    /// Lowercase header names from the client's `SignedHeaders`.
    pub signed_headers: &'a [String],
    /// Lowercase hex SHA-256 of the request body.
    pub payload_sha256: &'a str,
}

/// Lowercase hex SHA-256.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// Percent-encodes every byte except RFC 3986 unreserved characters (and `/`
/// when `keep_slash`), with uppercase hex digits.
pub fn uri_encode(input: &[u8], keep_slash: bool) -> String {
    let mut out = String::with_capacity(input.len());
    for &b in input {
        let unreserved = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~');
        if unreserved || (keep_slash && b == b'/') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Removes `.`/`..` segments and empty segments (consecutive slashes), keeping
/// leading and trailing slashes, as the AWS SDK signers do before signing.
pub fn normalize_path(path: &str) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut s = String::with_capacity(path.len());
    s.push('/');
    s.push_str(&out.join("/"));
    if path.ends_with('/') && !out.is_empty() {
        s.push('/');
    }
    s
}

/// The canonical URI: the wire path, normalised, encoded a second time.
pub fn canonical_uri(raw_path: &str) -> String {
    uri_encode(normalize_path(raw_path).as_bytes(), true)
}

/// The canonical query string: each name and value decoded, re-encoded
/// strictly, then sorted by name and value.
pub fn canonical_query(raw_query: Option<&str>) -> String {
    let Some(q) = raw_query.filter(|q| !q.is_empty()) else {
        return String::new();
    };
    let mut pairs: Vec<(String, String)> = q
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let dec = |s: &str| -> Vec<u8> { percent_decode_str(s).collect() };
            (uri_encode(&dec(k), false), uri_encode(&dec(v), false))
        })
        .collect();
    pairs.sort();
    pairs
        .into_iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Trims a header value and collapses runs of spaces, per the SigV4 spec.
fn canonical_header_value(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    text.split_ascii_whitespace().collect::<Vec<_>>().join(" ")
}

/// Builds the canonical request; fails when a signed header is absent.
pub fn canonical_request(input: &CanonicalInput<'_>) -> Result<String, AuthError> {
    let mut out = String::with_capacity(512);
    out.push_str(input.method);
    out.push('\n');
    out.push_str(&canonical_uri(input.raw_path));
    out.push('\n');
    out.push_str(&canonical_query(input.raw_query));
    out.push('\n');
    for name in input.signed_headers {
        let values: Vec<String> = input
            .headers
            .get_all(name.as_str())
            .iter()
            .map(|v| canonical_header_value(v.as_bytes()))
            .collect();
        if values.is_empty() {
            return Err(AuthError::MissingSignedHeader(name.clone()));
        }
        out.push_str(name);
        out.push(':');
        out.push_str(&values.join(","));
        out.push('\n');
    }
    out.push('\n');
    out.push_str(&input.signed_headers.join(";"));
    out.push('\n');
    out.push_str(input.payload_sha256);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_normalisation_matches_sdk_rules() {
        assert_eq!(normalize_path(""), "/");
        assert_eq!(normalize_path("/"), "/");
        assert_eq!(normalize_path("/a/./b/../c"), "/a/c");
        assert_eq!(normalize_path("//a//b/"), "/a/b/");
        assert_eq!(normalize_path("/../.."), "/");
        assert_eq!(
            normalize_path("/2015-03-31/functions/"),
            "/2015-03-31/functions/"
        );
    }

    #[test]
    fn uri_is_encoded_twice_for_already_encoded_paths() {
        assert_eq!(
            canonical_uri("/2015-03-31/functions/arn%3Aaws%3Alambda"),
            "/2015-03-31/functions/arn%253Aaws%253Alambda"
        );
        assert_eq!(canonical_uri("/example/$delete"), "/example/%24delete");
    }

    #[test]
    fn query_is_decoded_reencoded_and_sorted() {
        assert_eq!(
            canonical_query(Some("Qualifier=%24LATEST&MaxItems=2&A=b+c&empty")),
            "A=b%2Bc&MaxItems=2&Qualifier=%24LATEST&empty="
        );
        assert_eq!(canonical_query(Some("b=2&a=1&a=0")), "a=0&a=1&b=2");
        assert_eq!(canonical_query(None), "");
    }

    #[test]
    fn header_values_are_trimmed_and_collapsed() {
        assert_eq!(canonical_header_value(b"  a   b\tc  "), "a b c");
    }
}
