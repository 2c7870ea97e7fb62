//! Server-side SigV4 verification: scope, date window, payload hash and a
//! constant-time signature comparison.

use axum::http::HeaderMap;
use std::sync::{Arc, Mutex};
use subtle::ConstantTimeEq as _;
use time::{Duration, OffsetDateTime};

use super::canonical::{canonical_request, sha256_hex, CanonicalInput};
use super::header::{parse_authorization, ParsedAuthorization};
use super::signer::{signature, signing_key, string_to_sign};
use super::{AuthError, Credentials};
use crate::timefmt::{format_amz_date, parse_amz_date};

/// The parts of an HTTP request that the signature covers.
pub struct VerifyRequest<'a> {
    pub method: &'a str,
    pub raw_path: &'a str,
    pub raw_query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

#[derive(Debug, Clone)]
pub struct Verifier {
    region: String,
    service: String,
    credentials: Vec<Credentials>,
    max_skew: Duration,
    keys: Arc<SigningKeys>,
}

/// What [`Verifier::precheck`] found in a request's headers.
#[derive(Debug)]
pub struct Prechecked {
    parsed: ParsedAuthorization,
    /// Index of the signing key in the verifier's credentials.
    creds: usize,
}

/// Signing keys by access key id and date: a key is four HMACs of the secret and
/// lasts the whole day (region and service are fixed for a verifier). A short list,
/// searched without allocating: one entry per key and day in use.
#[derive(Debug, Default)]
struct SigningKeys(Mutex<Vec<CachedKey>>);

#[derive(Debug)]
struct CachedKey {
    access_key_id: String,
    date: String,
    key: [u8; 32],
}

/// More entries than this (many keys, or dates nobody signs with any more) clears them.
const MAX_CACHED_KEYS: usize = 64;

impl SigningKeys {
    fn get(&self, creds: &Credentials, date: &str, region: &str, service: &str) -> [u8; 32] {
        let mut keys = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let cached = keys
            .iter()
            .find(|c| c.access_key_id == creds.access_key_id && c.date == date);
        if let Some(c) = cached {
            return c.key;
        }
        let key = signing_key(&creds.secret_access_key, date, region, service);
        if keys.len() >= MAX_CACHED_KEYS {
            keys.clear();
        }
        keys.push(CachedKey {
            access_key_id: creds.access_key_id.clone(),
            date: date.to_owned(),
            key,
        });
        key
    }
}

impl Verifier {
    pub fn new(
        region: &str,
        service: &str,
        credentials: Vec<Credentials>,
        max_skew: Duration,
    ) -> Self {
        Self {
            region: region.to_owned(),
            service: service.to_owned(),
            credentials,
            max_skew,
            keys: Arc::default(),
        }
    }

    /// Everything that can be checked before the body is read: header
    /// syntax, known key, scope and date window. Lets the server refuse
    /// unauthenticated uploads without buffering them; what it found goes to
    /// [`Self::verify_prechecked`] once the body is read.
    pub fn precheck(
        &self,
        headers: &HeaderMap,
        raw_query: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<Prechecked, AuthError> {
        let (parsed, creds) = self.check_headers(headers, raw_query, now)?;
        Ok(Prechecked { parsed, creds })
    }

    fn check_headers(
        &self,
        headers: &HeaderMap,
        raw_query: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<(ParsedAuthorization, usize), AuthError> {
        let mut auth_values = headers.get_all("authorization").iter();
        let Some(auth) = auth_values.next() else {
            let presigned = raw_query
                .is_some_and(|q| q.contains("X-Amz-Signature=") || q.contains("X-Amz-Algorithm="));
            return Err(if presigned {
                AuthError::QueryAuthNotSupported
            } else {
                AuthError::MissingAuthorization
            });
        };
        if auth_values.next().is_some() {
            return Err(AuthError::Malformed(
                "more than one Authorization header".into(),
            ));
        }
        let auth = auth
            .to_str()
            .map_err(|_| AuthError::Malformed("Authorization is not ASCII".into()))?;
        let parsed = parse_authorization(auth)?;

        let creds = self
            .credentials
            .iter()
            .position(|c| c.access_key_id == parsed.access_key_id)
            .ok_or(AuthError::UnknownAccessKey)?;

        for required in ["host", "x-amz-date"] {
            if !parsed.signed_headers.iter().any(|h| h == required) {
                return Err(AuthError::UnsignedRequiredHeader(required));
            }
        }
        let amz_date = single_header(headers, "x-amz-date")?;
        let request_time = parse_amz_date(amz_date).ok_or(AuthError::BadDate)?;
        check_scope("date", &amz_date[..8], &parsed.scope_date)?;
        check_scope("region", &self.region, &parsed.region)?;
        check_scope("service", &self.service, &parsed.service)?;
        if (now - request_time).abs() > self.max_skew {
            return Err(AuthError::Expired {
                request: amz_date.to_owned(),
                now: format_amz_date(now),
                skew_secs: self.max_skew.whole_seconds(),
            });
        }
        Ok((parsed, creds))
    }

    /// Verifies `req` at time `now`; returns the access key id that signed it.
    pub fn verify(
        &self,
        req: &VerifyRequest<'_>,
        now: OffsetDateTime,
    ) -> Result<String, AuthError> {
        let pre = self.precheck(req.headers, req.raw_query, now)?;
        self.verify_prechecked(&pre, req)
    }

    /// Verifies the signature of `req`, whose headers passed [`Self::precheck`] as
    /// `pre` (the date window was checked then, when the request arrived; its body
    /// may have taken a while). Returns the access key id that signed it.
    pub fn verify_prechecked(
        &self,
        pre: &Prechecked,
        req: &VerifyRequest<'_>,
    ) -> Result<String, AuthError> {
        let parsed = &pre.parsed;
        let creds = self
            .credentials
            .get(pre.creds)
            .ok_or(AuthError::UnknownAccessKey)?;
        let amz_date = single_header(req.headers, "x-amz-date")?;

        let payload = sha256_hex(req.body);
        if let Some(claimed) = req.headers.get("x-amz-content-sha256") {
            // The body is always fully buffered here, so a claimed hash (or
            // UNSIGNED-PAYLOAD) must equal the real one.
            if claimed.as_bytes() != payload.as_bytes() {
                return Err(AuthError::PayloadHashMismatch);
            }
        }
        let creq = canonical_request(&CanonicalInput {
            method: req.method,
            raw_path: req.raw_path,
            raw_query: req.raw_query,
            headers: req.headers,
            signed_headers: &parsed.signed_headers,
            payload_sha256: &payload,
        })?;
        let key = self
            .keys
            .get(creds, &parsed.scope_date, &parsed.region, &parsed.service);
        let expected = signature(&key, &string_to_sign(amz_date, &parsed.scope(), &creq));
        if bool::from(expected.ct_eq(&parsed.signature)) {
            Ok(creds.access_key_id.clone())
        } else {
            Err(AuthError::SignatureMismatch)
        }
    }
}

fn single_header<'h>(headers: &'h HeaderMap, name: &str) -> Result<&'h str, AuthError> {
    let mut values = headers.get_all(name).iter();
    match (values.next(), values.next()) {
        (Some(v), None) => v.to_str().map_err(|_| AuthError::BadDate),
        _ => Err(AuthError::BadDate),
    }
}

fn check_scope(field: &'static str, expected: &str, got: &str) -> Result<(), AuthError> {
    if expected == got {
        Ok(())
    } else {
        Err(AuthError::ScopeMismatch {
            field,
            expected: expected.to_owned(),
            got: got.to_owned(),
        })
    }
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
