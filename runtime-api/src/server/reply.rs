//! Building HTTP responses.

use super::errors::ApiError;
use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};

pub type Reply = Response<Full<Bytes>>;

/// A JSON (or raw payload) response with extra headers. Header values that are not
/// valid HTTP (host-supplied strings with control characters) are dropped rather than
/// failing the whole response.
pub fn json_response(status: u16, body: Vec<u8>, headers: &[(&str, String)]) -> Reply {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    for (name, value) in headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            h.insert(n, v);
        }
    }
    resp
}

/// `202 {"status":"OK"}`, Lambda's acknowledgement of responses and errors.
pub fn accepted() -> Reply {
    json_response(202, br#"{"status":"OK"}"#.to_vec(), &[])
}

pub fn error_reply(err: &ApiError) -> Reply {
    json_response(err.status(), err.body(), &[])
}
