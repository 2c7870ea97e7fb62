//! `--metrics-listen`: the worker's `/metrics` over plain HTTP, for scrapers that hold
//! no cluster certificate. Off unless asked for; it serves nothing but `GET /metrics`
//! (the same text frontends read over the link), reads no request body, and bounds
//! its connections and their duration.

use super::{handler, Daemon};
use crate::link::body::LinkBody;
use crate::link::transport::respond;
use http::{Method, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::net::TcpListener;

/// Scrape connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 16;
/// A scraper's connection is closed after this long, whatever it is doing.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves scrapes on `listener` while the daemon lives.
pub(super) fn spawn(daemon: Weak<Daemon>, listener: TcpListener) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::spawn(async move {
        loop {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let Some(tcp) = crate::link::accept_tcp(&listener).await else {
                continue;
            };
            if daemon.strong_count() == 0 {
                return;
            }
            let d = daemon.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: http::Request<_>| {
                    let answer = answer(&d, req.method(), req.uri().path());
                    async move { Ok::<_, Infallible>(answer) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEADER_READ_TIMEOUT)
                    .serve_connection(TokioIo::new(tcp), svc);
                let _ = tokio::time::timeout(CONNECTION_LIFETIME, conn).await;
                drop(slot);
            });
        }
    });
}

fn answer(daemon: &Weak<Daemon>, method: &Method, path: &str) -> http::Response<LinkBody> {
    match (method, path, daemon.upgrade()) {
        (&Method::GET, "/metrics", Some(d)) => respond(StatusCode::OK, handler::metrics(&d)),
        (_, _, None) => respond(StatusCode::SERVICE_UNAVAILABLE, "worker stopping"),
        _ => respond(StatusCode::NOT_FOUND, "only GET /metrics is served here"),
    }
}
