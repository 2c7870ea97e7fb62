//! The Lambda Runtime API HTTP/1.1 server (hyper 1.x on tokio).
//!
//! guest-init binds it on 127.0.0.1:9001 inside the guest, or on any address given for
//! host-process tests. The server owns no process logic: the [`Invocations`] state
//! machine decides which frames go to the host.

mod body;
pub mod errors;
mod ext_state;
mod extensions;
mod invocation;
mod reply;
mod restore;
pub mod state;

pub use errors::{ApiError, MAX_RESPONSE_BYTES, MAX_STREAM_BYTES};
pub use state::{FunctionInfo, Invocations, LogTag, Sink, EXIT_ERROR, OUT_OF_MEMORY};

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use reply::{error_reply, json_response, Reply};
use std::convert::Infallible;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

/// Accepts connections until the listener fails; each connection gets its own task.
pub async fn serve(listener: TcpListener, inv: Arc<Invocations>) -> std::io::Error {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) if is_transient(&e) => continue,
            Err(e) => return e,
        };
        // Invocation round trips are small request/response pairs: Nagle would add
        // delayed-ACK stalls to every one of them.
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve_connection(stream, Arc::clone(&inv)));
    }
}

/// Serves one runtime connection (any byte stream) until it closes.
pub async fn serve_connection<I>(io: I, inv: Arc<Invocations>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| {
        let inv = Arc::clone(&inv);
        async move { Ok::<_, Infallible>(handle(inv, req).await) }
    });
    // A runtime that disconnects mid-request is not our error to report.
    let _ = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | Interrupted | WouldBlock
    ) || e.raw_os_error() == Some(24) // EMFILE: back off by retrying later
}

async fn handle(inv: Arc<Invocations>, req: Request<Incoming>) -> Reply {
    match route(&inv, req).await {
        Ok(r) => r,
        Err(e) => error_reply(&e),
    }
}

async fn route(inv: &Arc<Invocations>, req: Request<Incoming>) -> Result<Reply, ApiError> {
    let path = req.uri().path().to_string();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let method = req.method().clone();
    match segments.as_slice() {
        ["2018-06-01", "runtime", "invocation", "next"] => {
            require(&method, Method::GET)?;
            invocation::next(inv).await
        }
        ["2018-06-01", "runtime", "invocation", id, "response"] => {
            require(&method, Method::POST)?;
            invocation::response(inv, id, req).await
        }
        ["2018-06-01", "runtime", "invocation", id, "error"] => {
            require(&method, Method::POST)?;
            invocation::invocation_error(inv, id, req).await
        }
        ["2018-06-01", "runtime", "init", "error"] => {
            require(&method, Method::POST)?;
            invocation::init_error(inv, req).await
        }
        ["2018-06-01", "runtime", "restore", "next"] => {
            require(&method, Method::GET)?;
            restore::next(inv).await
        }
        ["2018-06-01", "runtime", "restore", "error"] => {
            require(&method, Method::POST)?;
            restore::error(inv, req).await
        }
        ["2020-01-01", "extension", "register"] => {
            require(&method, Method::POST)?;
            extensions::register(inv, req).await
        }
        ["2020-01-01", "extension", "event", "next"] => {
            require(&method, Method::GET)?;
            extensions::next(inv, &req).await
        }
        ["2020-01-01", "extension", "init", "error"] => {
            require(&method, Method::POST)?;
            extensions::init_error(inv, req).await
        }
        ["2020-01-01", "extension", "exit", "error"] => {
            require(&method, Method::POST)?;
            extensions::exit_error(inv, req).await
        }
        ["2020-08-15", "logs"] => Ok(not_supported("Logs", "Logs API is not supported")),
        ["2022-07-01", "telemetry"] => {
            Ok(not_supported("Telemetry", "Telemetry API is not supported"))
        }
        _ => Err(ApiError::NotFound(path.clone())),
    }
}

fn require(got: &Method, want: Method) -> Result<(), ApiError> {
    if *got == want {
        Ok(())
    } else {
        Err(ApiError::MethodNotAllowed(got.to_string()))
    }
}

/// Subscriptions are acknowledged (202) but say the API is not available, as the
/// Runtime Interface Emulator does, so extensions that subscribe keep running.
fn not_supported(api: &str, message: &str) -> Reply {
    json_response(
        202,
        errors::error_json(&format!("{api}.NotSupported"), message),
        &[],
    )
}
