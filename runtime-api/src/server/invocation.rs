//! Handlers for `/2018-06-01/runtime/...`.

use super::body::{header_str, next_item, read_limited, BodyError, StreamItem};
use super::errors::{
    error_json, response_too_large_json, ApiError, MAX_RESPONSE_BYTES, MAX_STREAM_BYTES,
};
use super::reply::{accepted, json_response, Reply};
use super::state::Invocations;
use crate::protocol::{
    GuestMessage, Invoke, InvokeError, Response, StreamChunk, StreamEnd, StreamStart,
};
use base64::Engine;
use hyper::body::Incoming;
use hyper::Request;
use std::sync::Arc;

const ERROR_TYPE_HEADER: &str = "lambda-runtime-function-error-type";
const ERROR_BODY_TRAILER: &str = "lambda-runtime-function-error-body";
const RESPONSE_MODE_HEADER: &str = "lambda-runtime-function-response-mode";
/// What the caller gets if the runtime's response body breaks off mid-request.
const TRUNCATED_TYPE: &str = "Runtime.TruncatedResponse";

/// `GET /runtime/invocation/next`: blocks until the host sends an invocation.
pub async fn next(inv: &Invocations) -> Result<Reply, ApiError> {
    let rx = inv.next()?;
    let invoke = rx.await.map_err(|_| ApiError::RuntimeExited)?;
    Ok(render_invoke(invoke))
}

fn render_invoke(i: Invoke) -> Reply {
    let mut headers = vec![
        ("Lambda-Runtime-Aws-Request-Id", i.request_id),
        ("Lambda-Runtime-Deadline-Ms", i.deadline_ms.to_string()),
        (
            "Lambda-Runtime-Invoked-Function-Arn",
            i.invoked_function_arn,
        ),
    ];
    let optional = [
        ("Lambda-Runtime-Trace-Id", i.trace_id),
        ("Lambda-Runtime-Client-Context", i.client_context),
        ("Lambda-Runtime-Cognito-Identity", i.cognito_identity),
    ];
    headers.extend(optional.into_iter().filter_map(|(k, v)| v.map(|v| (k, v))));
    json_response(200, i.payload, &headers)
}

/// `POST /runtime/invocation/{id}/response`, buffered or streamed.
pub async fn response(
    inv: &Arc<Invocations>,
    id: &str,
    req: Request<Incoming>,
) -> Result<Reply, ApiError> {
    let streaming = match header_str(req.headers(), RESPONSE_MODE_HEADER) {
        None => false,
        Some(m) if m.eq_ignore_ascii_case("streaming") => true,
        Some(other) => return Err(ApiError::InvalidFunctionResponseMode(other.to_string())),
    };
    inv.claim_response(id, streaming)?;
    if streaming {
        return stream_response(inv, id, req).await;
    }
    match read_limited(req.into_body(), MAX_RESPONSE_BYTES).await {
        Ok(payload) => {
            inv.send(GuestMessage::Response(Response {
                request_id: id.to_string(),
                payload,
            }));
            Ok(accepted())
        }
        Err(e) => Err(fail_body(inv, id, e)),
    }
}

/// Reports a broken response body to the host and picks the runtime's HTTP error.
fn fail_body(inv: &Invocations, id: &str, err: BodyError) -> ApiError {
    let (error_type, body, api_err) = match err {
        BodyError::TooLarge { limit } => (
            "Function.ResponseSizeTooLarge",
            response_too_large_json(),
            ApiError::RequestEntityTooLarge { limit },
        ),
        BodyError::Truncated(e) => (
            TRUNCATED_TYPE,
            error_json(
                TRUNCATED_TYPE,
                &format!("Runtime response body was truncated: {e}"),
            ),
            ApiError::TruncatedHttpRequest(e.to_string()),
        ),
    };
    inv.send(GuestMessage::InvokeError(InvokeError {
        request_id: id.to_string(),
        error_type: error_type.to_string(),
        body,
    }));
    api_err
}

async fn stream_response(
    inv: &Arc<Invocations>,
    id: &str,
    req: Request<Incoming>,
) -> Result<Reply, ApiError> {
    let content_type = header_str(req.headers(), "content-type")
        .unwrap_or("application/octet-stream")
        .to_string();
    inv.send(GuestMessage::StreamStart(StreamStart {
        request_id: id.to_string(),
        content_type,
    }));
    let mut body = req.into_body();
    let mut total = 0usize;
    let mut end = StreamEnd {
        request_id: id.to_string(),
        error_type: None,
        error_body: None,
    };
    let mut result = Ok(accepted());
    while let Some(item) = next_item(&mut body).await {
        match item {
            Ok(StreamItem::Data(data)) => {
                total += data.len();
                if total > MAX_STREAM_BYTES {
                    end.error_type = Some("Function.ResponseSizeTooLarge".to_string());
                    end.error_body = Some(format!(
                        "Response payload size exceeded maximum allowed payload size ({MAX_STREAM_BYTES} bytes)."
                    ));
                    result = Err(ApiError::RequestEntityTooLarge {
                        limit: MAX_STREAM_BYTES,
                    });
                    break;
                }
                inv.send(GuestMessage::StreamChunk(StreamChunk {
                    request_id: id.to_string(),
                    data: data.to_vec(),
                }));
            }
            Ok(StreamItem::Trailers(t)) => {
                end.error_type = header_str(&t, ERROR_TYPE_HEADER).map(str::to_string);
                end.error_body = header_str(&t, ERROR_BODY_TRAILER).map(decode_error_body);
            }
            Err(e) => {
                end.error_type = Some(TRUNCATED_TYPE.to_string());
                end.error_body = Some(format!("Runtime response stream was truncated: {e}"));
                result = Err(ApiError::TruncatedHttpRequest(e.to_string()));
                break;
            }
        }
    }
    inv.stream_closed(id);
    inv.send(GuestMessage::StreamEnd(end));
    result
}

/// The error-body trailer is base64 of the error JSON; keep it raw if it is not.
fn decode_error_body(raw: &str) -> String {
    base64::engine::general_purpose::STANDARD
        .decode(raw.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .unwrap_or_else(|| raw.to_string())
}

/// `POST /runtime/invocation/{id}/error`.
pub async fn invocation_error(
    inv: &Invocations,
    id: &str,
    req: Request<Incoming>,
) -> Result<Reply, ApiError> {
    inv.claim_response(id, false)?;
    let header_type = header_str(req.headers(), ERROR_TYPE_HEADER).map(str::to_string);
    let raw = match read_limited(req.into_body(), MAX_RESPONSE_BYTES).await {
        Ok(b) => b,
        Err(e) => return Err(fail_body(inv, id, e)),
    };
    let (error_type, body) = normalize_error(header_type, raw, "Unhandled");
    inv.send(GuestMessage::InvokeError(InvokeError {
        request_id: id.to_string(),
        error_type,
        body,
    }));
    Ok(accepted())
}

/// `POST /runtime/init/error`.
pub async fn init_error(inv: &Invocations, req: Request<Incoming>) -> Result<Reply, ApiError> {
    let (error_type, body) = error_document(req).await?;
    inv.init_error(error_type, body)?;
    Ok(accepted())
}

/// The error type and JSON error document a runtime posted (`init/error`,
/// `restore/error`), read up to the response bound.
pub(super) async fn error_document(req: Request<Incoming>) -> Result<(String, Vec<u8>), ApiError> {
    let header_type = header_str(req.headers(), ERROR_TYPE_HEADER).map(str::to_string);
    let raw = read_limited(req.into_body(), MAX_RESPONSE_BYTES)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge { limit } => ApiError::RequestEntityTooLarge { limit },
            BodyError::Truncated(e) => ApiError::TruncatedHttpRequest(e.to_string()),
        })?;
    Ok(normalize_error(header_type, raw, "Runtime.Unknown"))
}

/// Picks the error type (the body's `errorType`, which is what the caller sees, then
/// the `Lambda-Runtime-Function-Error-Type` header, then `default`) and makes sure the
/// body is a JSON error document: a runtime may post anything. Clients disagree on the
/// header (`lambda_runtime` sends `unhandled` whatever the error), so the body wins.
fn normalize_error(header_type: Option<String>, raw: Vec<u8>, default: &str) -> (String, Vec<u8>) {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(&raw).ok();
    let body_type = parsed
        .as_ref()
        .and_then(|v| v.get("errorType"))
        .and_then(|t| t.as_str())
        .map(str::to_string);
    let error_type = body_type
        .filter(|t| !t.is_empty())
        .or(header_type.filter(|t| !t.is_empty()))
        .unwrap_or_else(|| default.to_string());
    match parsed {
        Some(v) if v.is_object() => (error_type, raw),
        _ => {
            let message = String::from_utf8_lossy(&raw).into_owned();
            let body = error_json(&error_type, &message);
            (error_type, body)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_type_prefers_body_then_header_then_default() {
        let body = br#"{"errorType":"FromBody","errorMessage":"m"}"#.to_vec();
        assert_eq!(
            normalize_error(Some("Hdr".into()), body.clone(), "D").0,
            "FromBody"
        );
        assert_eq!(
            normalize_error(None, body.clone(), "D"),
            ("FromBody".into(), body)
        );
        let untyped = br#"{"errorMessage":"m"}"#.to_vec();
        assert_eq!(normalize_error(Some("Hdr".into()), untyped, "D").0, "Hdr");
        let (t, b) = normalize_error(None, b"not json".to_vec(), "Unhandled");
        assert_eq!(t, "Unhandled");
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["errorMessage"], "not json");
        assert_eq!(v["errorType"], "Unhandled");
    }

    #[test]
    fn error_body_trailer_is_base64_decoded() {
        assert_eq!(decode_error_body("eyJhIjoxfQ=="), r#"{"a":1}"#);
        assert_eq!(decode_error_body("not base64!"), "not base64!");
    }
}
