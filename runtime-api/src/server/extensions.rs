//! Handlers for the Extensions API (`/2020-01-01/extension/...`).

use super::body::{header_str, read_limited, BodyError};
use super::errors::{error_json, ApiError};
use super::ext_state::Subscriptions;
use super::reply::{accepted, json_response, Reply};
use super::state::{ExtNext, Invocations};
use crate::protocol::{GuestMessage, Log, LogStream};
use hyper::body::Incoming;
use hyper::Request;
use serde_json::json;

const NAME_HEADER: &str = "lambda-extension-name";
const ID_HEADER: &str = "lambda-extension-identifier";
const ERROR_TYPE_HEADER: &str = "lambda-extension-function-error-type";
/// Registration and error bodies are small documents.
const MAX_BODY: usize = 64 * 1024;

async fn small_body(req: Request<Incoming>) -> Result<Vec<u8>, ApiError> {
    read_limited(req.into_body(), MAX_BODY)
        .await
        .map_err(|e| match e {
            BodyError::TooLarge { limit } => ApiError::RequestEntityTooLarge { limit },
            BodyError::Truncated(e) => ApiError::TruncatedHttpRequest(e.to_string()),
        })
}

fn extension_id(req: &Request<Incoming>) -> Result<String, ApiError> {
    header_str(req.headers(), ID_HEADER)
        .map(str::to_string)
        .ok_or(ApiError::ExtensionForbidden)
}

/// `POST /extension/register`.
pub async fn register(inv: &Invocations, req: Request<Incoming>) -> Result<Reply, ApiError> {
    let name = header_str(req.headers(), NAME_HEADER)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .ok_or_else(|| ApiError::InvalidExtensionRequest("missing Lambda-Extension-Name".into()))?;
    let body = small_body(req).await?;
    let subs = Subscriptions::parse(&body).map_err(ApiError::InvalidExtensionRequest)?;
    let (id, function) = inv.register_extension(&name, subs)?;
    let doc = json!({
        "functionName": function.name,
        "functionVersion": function.version,
        "handler": function.handler,
    });
    Ok(json_response(
        200,
        doc.to_string().into_bytes(),
        &[("Lambda-Extension-Identifier", id)],
    ))
}

/// `GET /extension/event/next`: blocks until INVOKE or SHUTDOWN.
pub async fn next(inv: &Invocations, req: &Request<Incoming>) -> Result<Reply, ApiError> {
    let id = header_str(req.headers(), ID_HEADER)
        .map(str::to_string)
        .ok_or(ApiError::ExtensionForbidden)?;
    let event = match inv.extension_next(&id)? {
        ExtNext::Ready(e) => e,
        ExtNext::Wait(rx) => rx.await.map_err(|_| ApiError::RuntimeExited)?,
    };
    Ok(json_response(
        200,
        event.body,
        &[("Lambda-Extension-Event-Identifier", event.id)],
    ))
}

/// `POST /extension/init/error`: the extension could not start; init fails.
pub async fn init_error(inv: &Invocations, req: Request<Incoming>) -> Result<Reply, ApiError> {
    let id = extension_id(&req)?;
    let error_type = header_str(req.headers(), ERROR_TYPE_HEADER)
        .unwrap_or("Extension.Unknown")
        .to_string();
    let body = small_body(req).await?;
    let body = if serde_json::from_slice::<serde_json::Value>(&body).is_ok_and(|v| v.is_object()) {
        body
    } else {
        error_json(&error_type, &String::from_utf8_lossy(&body))
    };
    inv.extension_init_error(&id, error_type, body)?;
    Ok(accepted())
}

/// `POST /extension/exit/error`: recorded in the log stream; the extension is exiting.
pub async fn exit_error(inv: &Invocations, req: Request<Incoming>) -> Result<Reply, ApiError> {
    let id = extension_id(&req)?;
    let name = inv.extension_name(&id)?;
    let error_type = header_str(req.headers(), ERROR_TYPE_HEADER)
        .unwrap_or("Extension.Unknown")
        .to_string();
    let body = small_body(req).await?;
    inv.send(GuestMessage::Log(Log {
        stream: LogStream::System,
        request_id: None,
        line: format!(
            "extension {name} exit error {error_type}: {}",
            String::from_utf8_lossy(&body)
        )
        .into_bytes(),
    }));
    Ok(accepted())
}
