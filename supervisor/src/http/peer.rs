//! What the server adds to every request before routing: the peer's address, and for a
//! host named `<id>.lambda-url.<anything>` the function URL path it stands for
//! (`/lambda-url/<id><path>`), so both URL forms reach the same handler.

use std::net::SocketAddr;

use axum::http::{Request, Uri};

use crate::control::url::URL_PATH_PREFIX;

#[derive(Clone, Copy, Debug)]
pub struct PeerAddr(pub SocketAddr);

/// The URI a host-routed function URL request was sent to: what its signature covers.
#[derive(Clone, Debug)]
pub struct SentUri(pub Uri);

/// The URL id a `Host` header names, if it names one.
fn url_host_id(host: &str) -> Option<&str> {
    let (id, _) = host.split_once(".lambda-url.")?;
    let ok = !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric());
    ok.then_some(id)
}

pub fn prepare<B>(mut req: Request<B>, peer: SocketAddr) -> Request<B> {
    req.extensions_mut().insert(PeerAddr(peer));
    let id = req
        .headers()
        .get("host")
        .and_then(|h| h.to_str().ok())
        .and_then(url_host_id)
        .map(str::to_owned);
    if let Some(id) = id {
        let sent = req.uri().clone();
        let pq = sent.path_and_query().map_or("/", |p| p.as_str());
        if let Ok(uri) = format!("{URL_PATH_PREFIX}{id}{pq}").parse::<Uri>() {
            *req.uri_mut() = uri;
            req.extensions_mut().insert(SentUri(sent));
        }
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routed(host: &str, uri: &str) -> (String, bool) {
        let req = Request::builder()
            .uri(uri)
            .header("host", host)
            .body(())
            .expect("request");
        let out = prepare(req, "10.1.2.3:5".parse().expect("addr"));
        assert_eq!(
            out.extensions().get::<PeerAddr>().map(|p| p.0.port()),
            Some(5)
        );
        let rewritten = out.extensions().get::<SentUri>().is_some();
        (out.uri().to_string(), rewritten)
    }

    #[test]
    fn url_hosts_route_to_their_path() {
        assert_eq!(
            routed("abc9.lambda-url.us-east-1.localhost:9000", "/x?y=1"),
            ("/lambda-url/abc9/x?y=1".into(), true)
        );
        assert_eq!(routed("127.0.0.1:9000", "/x"), ("/x".into(), false));
        assert_eq!(routed("a/b.lambda-url.x", "/x"), ("/x".into(), false));
    }
}
