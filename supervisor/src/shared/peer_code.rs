//! Code objects copied between frontends (`--etcd`): a frontend that stores a sealed
//! package pushes it to the other registered frontends and acknowledges the upload only
//! once at least one of them holds it; a frontend asked for an object it lacks fetches
//! it from one that has it.
//!
//! Objects travel sealed (AES-256-GCM under the shared master key, bound to their
//! function and digest), so a copy reveals nothing and cannot be altered unnoticed. The
//! requests themselves are authenticated with an HMAC key derived from the master key:
//! only a frontend can store an object on another.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use hmac::{Hmac, Mac as _};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use super::etcd::{Etcd, EtcdError};
use super::members::{members, Member};

/// The route objects are pushed to and fetched from.
pub const ROUTE: &str = "/_peer/code/{object_id}";
/// The request header carrying `UNIX_SECONDS.HEX_HMAC`.
pub const AUTH_HEADER: &str = "x-lm-peer-auth";
/// How far a request's timestamp may be from the receiver's clock.
const MAX_SKEW_SECS: u64 = 300;
/// Largest object: a 50 MB zip and its envelope, with room to spare.
pub const MAX_OBJECT_BYTES: usize = 80 << 20;
const PEER_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest reply to a push: a list of missing chunks.
const MAX_REPLY_BYTES: usize = super::peer_chunks::MAX_LISTING_BYTES;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// Transient: other frontends are registered but none took the copy.
    #[error("no other frontend took a copy of code object {object}: {reasons}")]
    NotReplicated { object: String, reasons: String },
    #[error(transparent)]
    Etcd(#[from] EtcdError),
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub struct PeerCode {
    etcd: Arc<Etcd>,
    me: String,
    client: PeerClient,
}

/// `METHOD\nPATH\nTS\nSHA256(BODY)`, the string a request's HMAC covers.
fn signed_text(method: &str, path: &str, ts: u64, body: &[u8]) -> String {
    format!(
        "{method}\n{path}\n{ts}\n{}",
        hex::encode(Sha256::digest(body))
    )
}

fn mac(key: &[u8; 32], text: &str) -> Hmac<Sha256> {
    let mut m = <Hmac<Sha256>>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(text.as_bytes());
    m
}

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The header value for a request.
pub fn sign(key: &[u8; 32], method: &str, path: &str, body: &[u8]) -> String {
    let ts = now_unix();
    let tag = mac(key, &signed_text(method, path, ts, body))
        .finalize()
        .into_bytes();
    format!("{ts}.{}", hex::encode(tag))
}

/// Whether `header` is well formed and its timestamp within the allowed skew (checked
/// before a body is read).
pub fn is_fresh(header: &str) -> bool {
    header
        .split_once('.')
        .and_then(|(ts, _)| ts.parse::<u64>().ok())
        .is_some_and(|ts| now_unix().abs_diff(ts) <= MAX_SKEW_SECS)
}

/// Whether `header` authenticates this request (constant-time comparison).
pub fn verify(key: &[u8; 32], header: &str, method: &str, path: &str, body: &[u8]) -> bool {
    let Some((ts, tag)) = header.split_once('.') else {
        return false;
    };
    let (Ok(ts), Ok(tag)) = (ts.parse::<u64>(), hex::decode(tag)) else {
        return false;
    };
    if now_unix().abs_diff(ts) > MAX_SKEW_SECS {
        return false;
    }
    mac(key, &signed_text(method, path, ts, body))
        .verify_slice(&tag)
        .is_ok()
}

impl PeerCode {
    pub fn new(etcd: Arc<Etcd>, me: String, key: Zeroizing<[u8; 32]>) -> Self {
        let http = Client::builder(TokioExecutor::new()).build_http();
        Self {
            etcd,
            me,
            client: PeerClient {
                key: Arc::new(key),
                http,
            },
        }
    }

    pub fn key(&self) -> &[u8; 32] {
        &self.client.key
    }

    pub(super) fn etcd(&self) -> &Etcd {
        &self.etcd
    }

    pub(super) fn client(&self) -> PeerClient {
        self.client.clone()
    }

    pub(super) fn others(&self) -> Result<Vec<Member>, EtcdError> {
        Ok(members(&self.etcd)?
            .into_iter()
            .filter(|m| m.id != self.me)
            .collect())
    }

    /// Copies `sealed` to every other registered frontend; succeeds when at least one
    /// took it, or when no other frontend is registered (a cluster of one).
    pub fn push(&self, object_id: &str, sealed: Vec<u8>) -> Result<usize, PeerError> {
        let others = self.others()?;
        if others.is_empty() {
            return Ok(0);
        }
        let path = ROUTE.replace("{object_id}", object_id);
        let (peer, sealed) = (self.client(), Bytes::from(sealed));
        self.to_each(others, PEER_TIMEOUT, object_id.to_owned(), move |m| {
            let (peer, url, body) = (peer.clone(), format!("{}{path}", m.url), sealed.clone());
            async move { peer.send("PUT", &url, body).await.map(drop) }
        })
    }

    /// Runs `each` for every member of `others`, one task per member so that a slow or
    /// dead frontend does not hold up the others, all within `deadline`. Succeeds with
    /// how many succeeded, unless none did (then `object` was not replicated).
    pub(super) fn to_each<F, Fut>(
        &self,
        others: Vec<Member>,
        deadline: Duration,
        object: String,
        each: F,
    ) -> Result<usize, PeerError>
    where
        F: Fn(&Member) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = Result<(), String>> + Send + 'static,
    {
        let results = self.etcd.run_for(deadline, async move {
            let tasks: Vec<_> = others
                .into_iter()
                .map(|m| {
                    let work = each(&m);
                    tokio::spawn(async move { work.await.map_err(|e| format!("{}: {e}", m.id)) })
                })
                .collect();
            let mut out = Vec::with_capacity(tasks.len());
            for t in tasks {
                out.push(t.await.unwrap_or_else(|e| Err(e.to_string())));
            }
            Ok(out)
        })?;
        let took = results.iter().filter(|r| r.is_ok()).count();
        if took == 0 {
            let reasons = results
                .into_iter()
                .filter_map(Result::err)
                .collect::<Vec<_>>()
                .join("; ");
            return Err(PeerError::NotReplicated { object, reasons });
        }
        Ok(took)
    }

    /// The sealed object from the first other frontend that has it.
    pub fn fetch(&self, object_id: &str) -> Result<Option<Vec<u8>>, PeerError> {
        let path = ROUTE.replace("{object_id}", object_id);
        for m in self.others()? {
            let (peer, url) = (self.client(), format!("{}{path}", m.url));
            let got = self.etcd.run_for(PEER_TIMEOUT, async move {
                Ok(peer.get(&url, MAX_OBJECT_BYTES).await.ok())
            });
            if let Ok(Some(bytes)) = got {
                return Ok(Some(bytes));
            }
        }
        Ok(None)
    }
}

/// Signed requests to other frontends.
#[derive(Clone)]
pub struct PeerClient {
    key: Arc<Zeroizing<[u8; 32]>>,
    http: HttpClient,
}

impl PeerClient {
    /// `method` `url` with `body`, signed; the reply's body (at most a listing) on 2xx.
    pub async fn send(&self, method: &str, url: &str, body: Bytes) -> Result<Vec<u8>, String> {
        self.exchange(method, url, body, MAX_REPLY_BYTES).await
    }

    /// GET `url`, signed; its body if 2xx and at most `limit` bytes.
    pub async fn get(&self, url: &str, limit: usize) -> Result<Vec<u8>, String> {
        self.exchange("GET", url, Bytes::new(), limit).await
    }

    async fn exchange(
        &self,
        method: &str,
        url: &str,
        body: Bytes,
        limit: usize,
    ) -> Result<Vec<u8>, String> {
        let path = path_of(url);
        let auth = sign(&self.key, method, path, &body);
        let req = hyper::Request::builder()
            .method(method)
            .uri(url)
            .header(AUTH_HEADER, auth)
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let resp = self.http.request(req).await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("{method} {path}: {}", resp.status()));
        }
        let limited = http_body_util::Limited::new(resp.into_body(), limit);
        Ok(limited
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes()
            .to_vec())
    }
}

/// The path of `http://host:port/path`.
fn path_of(url: &str) -> &str {
    url.split_once("://")
        .and_then(|(_, rest)| rest.find('/').map(|at| &rest[at..]))
        .unwrap_or("/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_signature_covers_method_path_body_and_time() {
        let key = [7u8; 32];
        let h = sign(&key, "PUT", "/_peer/code/ab", b"sealed");
        assert!(is_fresh(&h));
        assert!(verify(&key, &h, "PUT", "/_peer/code/ab", b"sealed"));
        assert!(!verify(&key, &h, "PUT", "/_peer/code/ab", b"sealeD"));
        assert!(!verify(&key, &h, "GET", "/_peer/code/ab", b"sealed"));
        assert!(!verify(&key, &h, "PUT", "/_peer/code/ac", b"sealed"));
        assert!(!verify(&[8u8; 32], &h, "PUT", "/_peer/code/ab", b"sealed"));
        let (_, tag) = h.split_once('.').unwrap();
        let stale = format!("{}.{tag}", now_unix() - MAX_SKEW_SECS - 5);
        assert!(!is_fresh(&stale));
        assert!(!verify(&key, &stale, "PUT", "/_peer/code/ab", b"sealed"));
        assert!(!is_fresh("garbage") && !verify(&key, "1.zz", "PUT", "/p", b""));
    }
}
