//! The Invoke request's headers and Lambda's payload limits.

use axum::http::HeaderMap;
use base64::Engine as _;

use crate::http::{ApiError, ErrorKind};

/// Synchronous request and response payloads (Lambda: 6 MB each way).
pub const MAX_SYNC_REQUEST_BYTES: usize = 6_291_456;
pub const MAX_SYNC_RESPONSE_BYTES: usize = worker::MAX_BUFFERED_RESPONSE_BYTES as usize;
/// Asynchronous (`Event`) request payloads: 1 MB (Lambda raised it from 256 KB in
/// October 2025), counted like the synchronous limit, on the request body.
pub const MAX_EVENT_REQUEST_BYTES: usize = 1_048_576;
/// `X-Amz-Client-Context`, base64-encoded.
pub const MAX_CLIENT_CONTEXT_BYTES: usize = 3583;
/// `X-Amz-Log-Result` carries the tail of the logs.
pub const LOG_TAIL_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvocationType {
    RequestResponse,
    Event,
    DryRun,
}

/// Parsed invoke headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvokeHeaders {
    pub invocation_type: InvocationType,
    pub tail_logs: bool,
    /// The decoded client context JSON, as the runtime receives it.
    pub client_context: Option<String>,
    pub trace_id: Option<String>,
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    match h.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(Some)
            .map_err(|_| ApiError::invalid(format!("header {name} must be visible ASCII"))),
    }
}

/// `X-Amz-Invocation-Type` (RequestResponse when absent).
pub fn invocation_type(h: &HeaderMap) -> Result<InvocationType, ApiError> {
    match header(h, "x-amz-invocation-type")? {
        None | Some("RequestResponse") => Ok(InvocationType::RequestResponse),
        Some("Event") => Ok(InvocationType::Event),
        Some("DryRun") => Ok(InvocationType::DryRun),
        Some(other) => Err(ApiError::invalid(format!(
            "1 validation error detected: Value '{other}' at 'invocationType' failed to satisfy constraint: Member must satisfy enum value set: [Event, RequestResponse, DryRun]"
        ))),
    }
}

pub fn parse(h: &HeaderMap) -> Result<InvokeHeaders, ApiError> {
    let invocation_type = invocation_type(h)?;
    let tail_logs = match header(h, "x-amz-log-type")? {
        None | Some("None") => false,
        Some("Tail") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "1 validation error detected: Value '{other}' at 'logType' failed to satisfy constraint: Member must satisfy enum value set: [None, Tail]"
            )))
        }
    };
    let client_context = header(h, "x-amz-client-context")?
        .filter(|s| !s.is_empty())
        .map(decode_client_context)
        .transpose()?;
    let trace_id = header(h, "x-amzn-trace-id")?.map(str::to_owned);
    Ok(InvokeHeaders {
        invocation_type,
        tail_logs,
        client_context,
        trace_id,
    })
}

fn decode_client_context(raw: &str) -> Result<String, ApiError> {
    let bad = || {
        ApiError::new(
            ErrorKind::InvalidRequestContent,
            "Client context must be a valid Base64-encoded JSON object.",
        )
    };
    if raw.len() > MAX_CLIENT_CONTEXT_BYTES {
        return Err(ApiError::invalid(format!(
            "Client context must be at most {MAX_CLIENT_CONTEXT_BYTES} bytes (base64-encoded)"
        )));
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw)
        .map_err(|_| bad())?;
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(serde_json::Value::Object(_)) => String::from_utf8(bytes).map_err(|_| bad()),
        _ => Err(bad()),
    }
}

/// Lambda's request payload limit for an invocation type.
pub fn payload_limit(kind: InvocationType) -> usize {
    match kind {
        InvocationType::Event => MAX_EVENT_REQUEST_BYTES,
        InvocationType::RequestResponse | InvocationType::DryRun => MAX_SYNC_REQUEST_BYTES,
    }
}

/// The 413 for a payload of `size` bytes.
pub fn too_large(kind: InvocationType, size: u64) -> ApiError {
    let name = match kind {
        InvocationType::Event => "Event",
        InvocationType::DryRun => "DryRun",
        InvocationType::RequestResponse => "RequestResponse",
    };
    ApiError::new(
        ErrorKind::RequestTooLarge,
        format!(
            "{size} byte payload is too large for the {name} invocation type (limit {} bytes)",
            payload_limit(kind)
        ),
    )
}

/// Checks the request payload: size for the invocation type (the HTTP layer already
/// refused a larger body while reading it), and JSON. An empty payload is sent to the
/// function as `{}`, as Lambda does.
pub fn check_payload(kind: InvocationType, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    if body.len() > payload_limit(kind) {
        return Err(too_large(kind, body.len() as u64));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(b"{}".to_vec());
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(body).map_err(|e| {
        ApiError::new(
            ErrorKind::InvalidRequestContent,
            format!("Could not parse request body into json: {e}"),
        )
    })?;
    Ok(body.to_vec())
}

/// The last [`LOG_TAIL_BYTES`] of `logs`, base64-encoded.
pub fn log_tail(logs: &str) -> String {
    let b = logs.as_bytes();
    let tail = &b[b.len().saturating_sub(LOG_TAIL_BYTES)..];
    base64::engine::general_purpose::STANDARD.encode(tail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("value"));
        }
        h
    }

    #[test]
    fn parses_types_and_rejects_unknown_values() {
        let p = parse(&HeaderMap::new()).expect("defaults");
        assert_eq!(p.invocation_type, InvocationType::RequestResponse);
        assert!(!p.tail_logs);
        let p = parse(&headers(&[
            ("x-amz-invocation-type", "Event"),
            ("x-amz-log-type", "Tail"),
        ]))
        .expect("event");
        assert_eq!(p.invocation_type, InvocationType::Event);
        assert!(p.tail_logs);
        assert!(parse(&headers(&[("x-amz-invocation-type", "Sync")])).is_err());
        assert!(parse(&headers(&[("x-amz-log-type", "Head")])).is_err());
    }

    #[test]
    fn client_context_must_be_base64_json_object() {
        let ok = base64::engine::general_purpose::STANDARD.encode(r#"{"custom":{"a":1}}"#);
        let p = parse(&headers(&[("x-amz-client-context", &ok)])).expect("ok");
        assert_eq!(p.client_context.as_deref(), Some(r#"{"custom":{"a":1}}"#));
        let arr = base64::engine::general_purpose::STANDARD.encode("[1]");
        for bad in ["!!!", arr.as_str()] {
            let e = parse(&headers(&[("x-amz-client-context", bad)])).expect_err(bad);
            assert_eq!(e.kind, ErrorKind::InvalidRequestContent);
        }
        let long = "A".repeat(MAX_CLIENT_CONTEXT_BYTES + 4);
        assert!(parse(&headers(&[("x-amz-client-context", &long)])).is_err());
    }

    #[test]
    fn payload_limits_and_json() {
        let kind = InvocationType::RequestResponse;
        let mut at_limit = vec![b' '; MAX_SYNC_REQUEST_BYTES];
        at_limit[0] = b'1';
        assert!(check_payload(kind, &at_limit).is_ok());
        at_limit.push(b' ');
        let e = check_payload(kind, &at_limit).expect_err("too large");
        assert_eq!(e.kind, ErrorKind::RequestTooLarge);
        let mut event = vec![b' '; MAX_EVENT_REQUEST_BYTES];
        event[0] = b'1';
        assert!(check_payload(InvocationType::Event, &event).is_ok());
        event.push(b' ');
        let e = check_payload(InvocationType::Event, &event).expect_err("event too large");
        assert_eq!(e.kind, ErrorKind::RequestTooLarge);
        assert_eq!(
            e.message,
            "1048577 byte payload is too large for the Event invocation type (limit 1048576 bytes)"
        );
        assert_eq!(check_payload(kind, b"").expect("empty"), b"{}");
        assert_eq!(
            check_payload(kind, b"{not json").expect_err("json").kind,
            ErrorKind::InvalidRequestContent
        );
    }

    #[test]
    fn log_tail_keeps_the_last_4_kib() {
        let logs = format!("{}END", "x".repeat(10_000));
        let tail = base64::engine::general_purpose::STANDARD
            .decode(log_tail(&logs))
            .expect("b64");
        assert_eq!(tail.len(), LOG_TAIL_BYTES);
        assert!(tail.ends_with(b"END"));
        assert_eq!(log_tail("short"), "c2hvcnQ=");
    }
}
