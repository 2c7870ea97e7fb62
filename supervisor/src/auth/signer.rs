//! SigV4 signature computation, shared by the verifier and by the in-tree
//! client used in tests and the benchmark.

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use time::OffsetDateTime;

use super::canonical::{canonical_request, sha256_hex, CanonicalInput};
use super::AuthError;
use crate::timefmt::format_amz_date;

type HmacSha256 = Hmac<Sha256>;

fn hmac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so construction cannot fail.
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// `kSigning = HMAC(HMAC(HMAC(HMAC("AWS4"+secret, date), region), service), "aws4_request")`.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> [u8; 32] {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

pub fn string_to_sign(amz_date: &str, scope: &str, canonical_request: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

pub fn signature(key: &[u8; 32], string_to_sign: &str) -> [u8; 32] {
    hmac(key, string_to_sign.as_bytes())
}

/// A request to sign on the client side.
pub struct SigningRequest<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: Option<&'a str>,
    pub body: &'a [u8],
    pub access_key_id: &'a str,
    pub secret_access_key: &'a str,
    pub region: &'a str,
    pub service: &'a str,
    pub now: OffsetDateTime,
}

/// Adds `x-amz-date` to `headers` (which must already hold `host`) and returns
/// the `Authorization` value covering every header present.
pub fn sign_request(
    req: &SigningRequest<'_>,
    headers: &mut HeaderMap,
) -> Result<String, AuthError> {
    let amz_date = format_amz_date(req.now);
    let value = amz_date.parse().map_err(|_| AuthError::BadDate)?;
    headers.insert("x-amz-date", value);
    let mut signed: Vec<String> = headers.keys().map(|k| k.as_str().to_owned()).collect();
    signed.sort();
    signed.dedup();
    let payload = sha256_hex(req.body);
    let creq = canonical_request(&CanonicalInput {
        method: req.method,
        raw_path: req.path,
        raw_query: req.query,
        headers,
        signed_headers: &signed,
        payload_sha256: &payload,
    })?;
    let date = &amz_date[..8];
    let scope = format!("{date}/{}/{}/aws4_request", req.region, req.service);
    let key = signing_key(req.secret_access_key, date, req.region, req.service);
    let sig = signature(&key, &string_to_sign(&amz_date, &scope, &creq));
    Ok(format!(
        "AWS4-HMAC-SHA256 Credential={}/{scope}, SignedHeaders={}, Signature={}",
        req.access_key_id,
        signed.join(";"),
        hex::encode(sig)
    ))
}
