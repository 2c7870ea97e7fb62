//! AWS Signature Version 4 verification (header form) for every request.

mod canonical;
mod credentials;
mod header;
mod signer;
mod verify;

pub use canonical::{
    canonical_query, canonical_request, canonical_uri, sha256_hex, CanonicalInput,
};
pub use credentials::{Credentials, CredentialsError};
pub use header::{parse_authorization, ParsedAuthorization};
pub use signer::{sign_request, SigningRequest};
pub use verify::{Verifier, VerifyRequest};

/// Why a request was not authenticated. Every variant maps to HTTP 403.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("Missing Authentication Token")]
    MissingAuthorization,
    #[error(
        "query-string (presigned) authentication is not supported; sign the Authorization header"
    )]
    QueryAuthNotSupported,
    #[error("Authorization header is malformed: {0}")]
    Malformed(String),
    #[error("only AWS4-HMAC-SHA256 signatures are accepted")]
    UnsupportedAlgorithm,
    #[error("The security token included in the request is invalid.")]
    UnknownAccessKey,
    #[error("missing or malformed X-Amz-Date header")]
    BadDate,
    #[error("Signature expired: {request} is now earlier or later than {now} (allowed skew {skew_secs} s)")]
    Expired {
        request: String,
        now: String,
        skew_secs: i64,
    },
    #[error("Credential should be scoped to {field} '{expected}', not '{got}'")]
    ScopeMismatch {
        field: &'static str,
        expected: String,
        got: String,
    },
    #[error("header '{0}' is listed in SignedHeaders but absent from the request")]
    MissingSignedHeader(String),
    #[error("SignedHeaders must include '{0}'")]
    UnsignedRequiredHeader(&'static str),
    #[error("The provided x-amz-content-sha256 header does not match what was computed.")]
    PayloadHashMismatch,
    #[error("The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method.")]
    SignatureMismatch,
}

impl AuthError {
    /// The AWS error code clients dispatch on.
    pub fn error_type(&self) -> &'static str {
        match self {
            AuthError::UnknownAccessKey => "UnrecognizedClientException",
            _ => "InvalidSignatureException",
        }
    }
}
