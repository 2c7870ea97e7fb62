//! What the supervisor's integration tests share: SigV4-signed request headers.

use axum::http::{HeaderMap, HeaderValue};
use supervisor::auth::{sign_request, SigningRequest};

/// The headers of a request to `uri` (path and optional query) signed with the given
/// key pair for `lambda` in us-east-1, `authorization` included.
pub fn signed_headers(
    (method, uri): (&str, &str),
    (access_key_id, secret_access_key): (&str, &str),
    extra: &[(&'static str, &str)],
    body: &[u8],
) -> HeaderMap {
    let (path, query) = match uri.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (uri, None),
    };
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("localhost:9000"));
    for (k, v) in extra {
        headers.insert(*k, HeaderValue::from_str(v).expect("header"));
    }
    let auth = sign_request(
        &SigningRequest {
            method,
            path,
            query,
            body,
            access_key_id,
            secret_access_key,
            region: "us-east-1",
            service: "lambda",
            now: supervisor::timefmt::now(),
        },
        &mut headers,
    )
    .expect("sign");
    headers.insert("authorization", auth.parse().expect("auth header"));
    headers
}
