//! Runtime API error responses, with Lambda's status codes and `errorType` strings.

use serde_json::json;

/// Largest buffered response (and error body) Lambda accepts from a runtime.
pub const MAX_RESPONSE_BYTES: usize = crate::MAX_RESPONSE_BYTES;
/// Largest streamed response body.
pub const MAX_STREAM_BYTES: usize = crate::MAX_STREAMED_RESPONSE_BYTES;

/// An error answered to the runtime (or extension) over HTTP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("Invalid request ID")]
    InvalidRequestId,
    #[error("State transition from {from} to {to} failed for runtime. Error: State transition is not allowed")]
    InvalidStateTransition {
        from: &'static str,
        to: &'static str,
    },
    #[error("Exceeded maximum allowed payload size ({limit} bytes).")]
    RequestEntityTooLarge { limit: usize },
    #[error("Invalid function response mode {0:?}; the only supported mode is \"streaming\"")]
    InvalidFunctionResponseMode(String),
    #[error("Truncated HTTP request body: {0}")]
    TruncatedHttpRequest(String),
    #[error("Unknown resource {0}")]
    NotFound(String),
    #[error("Method {0} not allowed on this resource")]
    MethodNotAllowed(String),
    #[error("Extension identifier missing or unknown")]
    ExtensionForbidden,
    #[error("Invalid extension registration: {0}")]
    InvalidExtensionRequest(String),
    #[error("Extensions can only register during the init phase, before the runtime starts")]
    RegistrationClosed,
    #[error("The runtime has exited")]
    RuntimeExited,
}

impl ApiError {
    /// HTTP status code Lambda uses for this error.
    pub fn status(&self) -> u16 {
        match self {
            ApiError::InvalidRequestId
            | ApiError::InvalidFunctionResponseMode(_)
            | ApiError::TruncatedHttpRequest(_)
            | ApiError::InvalidExtensionRequest(_) => 400,
            ApiError::InvalidStateTransition { .. }
            | ApiError::ExtensionForbidden
            | ApiError::RegistrationClosed => 403,
            ApiError::NotFound(_) => 404,
            ApiError::MethodNotAllowed(_) => 405,
            ApiError::RequestEntityTooLarge { .. } => 413,
            ApiError::RuntimeExited => 500,
        }
    }

    /// Lambda's `errorType` string.
    pub fn error_type(&self) -> &'static str {
        match self {
            ApiError::InvalidRequestId => "InvalidRequestID",
            ApiError::InvalidStateTransition { .. } => "InvalidStateTransition",
            ApiError::RequestEntityTooLarge { .. } => "RequestEntityTooLarge",
            ApiError::InvalidFunctionResponseMode(_) => "InvalidFunctionResponseMode",
            ApiError::TruncatedHttpRequest(_) => "TruncatedHTTPRequest",
            ApiError::NotFound(_) => "NotFound",
            ApiError::MethodNotAllowed(_) => "MethodNotAllowed",
            ApiError::ExtensionForbidden => "Extension.Forbidden",
            ApiError::InvalidExtensionRequest(_) => "InvalidRequest",
            ApiError::RegistrationClosed => "Extension.RegistrationClosed",
            ApiError::RuntimeExited => "InternalServerError",
        }
    }

    /// `{"errorMessage": ..., "errorType": ...}`.
    pub fn body(&self) -> Vec<u8> {
        error_json(self.error_type(), &self.to_string())
    }
}

/// The standard Lambda error document.
pub fn error_json(error_type: &str, message: &str) -> Vec<u8> {
    json!({ "errorMessage": message, "errorType": error_type })
        .to_string()
        .into_bytes()
}

/// The document the caller gets when the runtime's response was too big.
pub fn response_too_large_json() -> Vec<u8> {
    error_json(
        "Function.ResponseSizeTooLarge",
        &format!(
            "Response payload size exceeded maximum allowed payload size ({MAX_RESPONSE_BYTES} bytes)."
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_match_lambda() {
        let e = ApiError::InvalidRequestId;
        assert_eq!(e.status(), 400);
        let v: serde_json::Value = serde_json::from_slice(&e.body()).unwrap();
        assert_eq!(v["errorType"], "InvalidRequestID");
        assert_eq!(v["errorMessage"], "Invalid request ID");
        assert_eq!(
            ApiError::RequestEntityTooLarge {
                limit: MAX_RESPONSE_BYTES
            }
            .status(),
            413
        );
        let v: serde_json::Value = serde_json::from_slice(&response_too_large_json()).unwrap();
        assert_eq!(v["errorType"], "Function.ResponseSizeTooLarge");
    }
}
