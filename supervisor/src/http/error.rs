//! AWS-shaped errors: status code, `x-amzn-ErrorType` header and a JSON body
//! `{"Type": "User"|"Service", "Message": ...}`, so SDKs raise the right
//! exception class.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::auth::AuthError;
use crate::codestore::{CodeStoreError, ZipError};
use crate::registry::RegistryError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    ResourceNotFound,
    ResourceConflict,
    InvalidParameterValue,
    InvalidRequestContent,
    RequestTooLarge,
    InvalidZipFile,
    PreconditionFailed,
    InvalidSignature,
    UnrecognizedClient,
    UnknownOperation,
    TooManyRequests,
    /// A SnapStart restore failed in the function's after-restore hooks.
    SnapStart,
    SnapStartTimeout,
    Service,
    /// A `ServiceException` that will pass: the shared registry (etcd) has no quorum,
    /// or no other frontend could take a copy of new code. 503, which SDKs retry.
    ServiceUnavailable,
}

impl ErrorKind {
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::ResourceNotFound | ErrorKind::UnknownOperation => StatusCode::NOT_FOUND,
            ErrorKind::ResourceConflict => StatusCode::CONFLICT,
            ErrorKind::InvalidParameterValue | ErrorKind::InvalidRequestContent => {
                StatusCode::BAD_REQUEST
            }
            ErrorKind::RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            // Lambda's own status for a package it cannot unpack at invoke time.
            ErrorKind::InvalidZipFile => StatusCode::BAD_GATEWAY,
            ErrorKind::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            ErrorKind::InvalidSignature | ErrorKind::UnrecognizedClient => StatusCode::FORBIDDEN,
            ErrorKind::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            ErrorKind::SnapStart => StatusCode::BAD_REQUEST,
            ErrorKind::SnapStartTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::Service => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    pub fn type_name(self) -> &'static str {
        match self {
            ErrorKind::ResourceNotFound => "ResourceNotFoundException",
            ErrorKind::ResourceConflict => "ResourceConflictException",
            ErrorKind::InvalidParameterValue => "InvalidParameterValueException",
            ErrorKind::InvalidRequestContent => "InvalidRequestContentException",
            ErrorKind::RequestTooLarge => "RequestTooLargeException",
            ErrorKind::InvalidZipFile => "InvalidZipFileException",
            ErrorKind::PreconditionFailed => "PreconditionFailedException",
            ErrorKind::InvalidSignature => "InvalidSignatureException",
            ErrorKind::UnrecognizedClient => "UnrecognizedClientException",
            ErrorKind::UnknownOperation => "UnknownOperationException",
            ErrorKind::TooManyRequests => "TooManyRequestsException",
            ErrorKind::SnapStart => "SnapStartException",
            ErrorKind::SnapStartTimeout => "SnapStartTimeoutException",
            ErrorKind::Service | ErrorKind::ServiceUnavailable => "ServiceException",
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {message}", kind.type_name())]
pub struct ApiError {
    pub kind: ErrorKind,
    pub message: String,
}

impl ApiError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::ResourceNotFound, m)
    }
    pub fn invalid(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidParameterValue, m)
    }
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::ResourceConflict, m)
    }
    pub fn service(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::Service, m)
    }
    pub fn precondition(m: impl Into<String>) -> Self {
        Self::new(ErrorKind::PreconditionFailed, m)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let service = matches!(
            self.kind,
            ErrorKind::Service | ErrorKind::ServiceUnavailable
        );
        let origin = if service { "Service" } else { "User" };
        let body = serde_json::json!({ "Type": origin, "Message": self.message });
        let mut resp = (self.kind.status(), axum::Json(body)).into_response();
        resp.headers_mut().insert(
            "x-amzn-ErrorType",
            HeaderValue::from_static(self.kind.type_name()),
        );
        if service {
            tracing::error!(message = %self.message, "service error");
        }
        resp
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let kind = match e {
            AuthError::UnknownAccessKey => ErrorKind::UnrecognizedClient,
            _ => ErrorKind::InvalidSignature,
        };
        Self::new(kind, e.to_string())
    }
}

impl From<ZipError> for ApiError {
    fn from(e: ZipError) -> Self {
        match e {
            ZipError::ZippedTooLarge { .. } => Self::new(ErrorKind::RequestTooLarge, e.to_string()),
            // Lambda answers CreateFunction/UpdateFunctionCode with bad
            // packages using InvalidParameterValueException.
            _ => Self::invalid(e.to_string()),
        }
    }
}

impl From<CodeStoreError> for ApiError {
    fn from(e: CodeStoreError) -> Self {
        match e {
            CodeStoreError::Zip(z) => z.into(),
            CodeStoreError::Peers(p) => Self::new(ErrorKind::ServiceUnavailable, p.to_string()),
            other => Self::service(other.to_string()),
        }
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::AlreadyExists(name) => Self::conflict(format!("Function already exist: {name}")),
            RegistryError::NotFound(what) => Self::not_found(format!("Function not found: {what}")),
            RegistryError::Conflict => Self::precondition(
                "The Revision Id provided does not match the latest Revision Id. Call the GetFunction/GetAlias API to retrieve the latest Revision Id",
            ),
            RegistryError::BadMarker => Self::invalid("Invalid Marker"),
            RegistryError::AliasExists(name) => {
                Self::conflict(format!("Alias already exists: {name}"))
            }
            RegistryError::AliasNotFound(name) => {
                Self::not_found(format!("Alias not found: {name}"))
            }
            RegistryError::UrlExists => Self::conflict(
                "Failed to create function url config for the function because a config already exists",
            ),
            RegistryError::UrlNotFound => {
                Self::not_found("The resource you requested does not exist.")
            }
            RegistryError::VersionInUse { aliases, .. } => Self::conflict(format!(
                "Unable to delete version because the following aliases reference it: [{}]",
                aliases.join(", ")
            )),
            RegistryError::OverReserved { unreserved_minimum } => Self::invalid(format!(
                "Specified ReservedConcurrentExecutions for function decreases account's UnreservedConcurrentExecution below its minimum value of [{unreserved_minimum}]."
            )),
            RegistryError::Shared(e) if e.is_transient() => {
                Self::new(ErrorKind::ServiceUnavailable, e.to_string())
            }
            other => Self::service(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_carry_type_header_and_status() {
        let r = ApiError::not_found("Function not found: x").into_response();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            r.headers().get("x-amzn-ErrorType").map(|v| v.as_bytes()),
            Some(&b"ResourceNotFoundException"[..])
        );
        let e: ApiError = AuthError::UnknownAccessKey.into();
        assert_eq!(e.kind.type_name(), "UnrecognizedClientException");
        assert_eq!(e.kind.status(), StatusCode::FORBIDDEN);
        let e: ApiError = ZipError::ParentTraversal("../x".into()).into();
        assert_eq!(e.kind, ErrorKind::InvalidParameterValue);
        let e: ApiError = ZipError::ZippedTooLarge { size: 2, limit: 1 }.into();
        assert_eq!(e.kind.status(), StatusCode::PAYLOAD_TOO_LARGE);
    }
}
