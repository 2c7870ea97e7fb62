//! The router end to end (in process): SigV4 layer, routing, AWS error
//! shapes, and the code-preparation API the sandbox side uses.

use std::io::{Cursor, Write as _};
use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode};
use axum::Router;
use base64::Engine as _;
use http_body_util::BodyExt as _;
use supervisor::auth::{sign_request, SigningRequest};
use supervisor::config::Config;
use supervisor::Supervisor;
use tower::ServiceExt as _;

const AK: &str = "AKIAINPROCESSTEST000";
const SK: &str = "in-process-secret";

fn open(dir: &std::path::Path) -> (Arc<Supervisor>, Router) {
    let mut cfg = Config::with_data_dir(dir);
    cfg.credentials = Some((AK.into(), SK.into()));
    let (sup, _) = Supervisor::open(cfg).expect("open");
    let router = sup.router(Router::new(), Router::new());
    (sup, router)
}

fn zip_with_bootstrap(marker: &str) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let o = zip::write::SimpleFileOptions::default().unix_permissions(0o755);
    w.start_file("bootstrap", o).expect("zip");
    w.write_all(format!("#!/bin/sh\necho {marker}\n").as_bytes())
        .expect("zip");
    w.finish().expect("zip").into_inner()
}

fn signed(method: &str, path_and_query: &str, body: Vec<u8>, secret: &str) -> Request<Body> {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_and_query, None),
    };
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("localhost:9000"));
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let auth = sign_request(
        &SigningRequest {
            method,
            path,
            query,
            body: &body,
            access_key_id: AK,
            secret_access_key: secret,
            region: "us-east-1",
            service: "lambda",
            now: supervisor::timefmt::now(),
        },
        &mut headers,
    )
    .expect("sign");
    let mut req = Request::builder().method(method).uri(path_and_query);
    for (k, v) in &headers {
        req = req.header(k, v);
    }
    req.header("authorization", auth)
        .body(Body::from(body))
        .expect("request")
}

async fn call(
    router: &Router,
    req: Request<Body>,
) -> (StatusCode, Option<String>, serde_json::Value) {
    let resp = router.clone().oneshot(req).await.expect("infallible");
    let status = resp.status();
    let etype = resp
        .headers()
        .get("x-amzn-ErrorType")
        .map(|v| v.to_str().unwrap_or_default().to_owned());
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, etype, json)
}

fn create_body(name: &str, zip: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "FunctionName": name,
        "Runtime": "provided.al2023",
        "Role": "arn:aws:iam::000000000000:role/r",
        "Code": {"ZipFile": base64::engine::general_purpose::STANDARD.encode(zip)},
    }))
    .expect("json")
}

#[tokio::test]
async fn signed_crud_and_error_shapes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_sup, router) = open(dir.path());

    let unsigned = Request::get("/2015-03-31/functions/")
        .body(Body::empty())
        .expect("req");
    let (status, etype, json) = call(&router, unsigned).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(etype.as_deref(), Some("InvalidSignatureException"));
    assert!(json["Message"].is_string());

    let (status, etype, _) = call(
        &router,
        signed("GET", "/2015-03-31/functions/", vec![], "bad"),
    )
    .await;
    assert_eq!(
        (status, etype.as_deref()),
        (StatusCode::FORBIDDEN, Some("InvalidSignatureException"))
    );

    let zip = zip_with_bootstrap("one");
    let (status, _, json) = call(
        &router,
        signed("POST", "/2015-03-31/functions", create_body("f", &zip), SK),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{json}");
    assert_eq!(json["CodeSha256"], supervisor::codestore::code_sha256(&zip));

    let (status, etype, _) = call(
        &router,
        signed("POST", "/2015-03-31/functions", create_body("f", &zip), SK),
    )
    .await;
    assert_eq!(
        (status, etype.as_deref()),
        (StatusCode::CONFLICT, Some("ResourceConflictException"))
    );

    let arn_path = "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Af?Qualifier=%24LATEST";
    let (status, _, json) = call(&router, signed("GET", arn_path, vec![], SK)).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["Configuration"]["Version"], "$LATEST");

    let (status, etype, _) = call(
        &router,
        signed("GET", "/2015-03-31/functions/f?Qualifier=9", vec![], SK),
    )
    .await;
    assert_eq!(
        (status, etype.as_deref()),
        (StatusCode::NOT_FOUND, Some("ResourceNotFoundException"))
    );

    let (status, etype, _) = call(
        &router,
        signed("POST", "/2015-03-31/functions", b"{not json".to_vec(), SK),
    )
    .await;
    assert_eq!(
        (status, etype.as_deref()),
        (
            StatusCode::BAD_REQUEST,
            Some("InvalidRequestContentException")
        )
    );

    // An unknown path, and a known path with a method it does not take (found by the
    // invoke_request fuzz target: axum answered a bare 405).
    for (method, path) in [
        ("GET", "/2015-03-31/nothing-here"),
        ("PATCH", "/2015-03-31/functions/f"),
    ] {
        let (status, etype, _) = call(&router, signed(method, path, vec![], SK)).await;
        assert_eq!(
            (status, etype.as_deref()),
            (StatusCode::NOT_FOUND, Some("UnknownOperationException")),
            "{method} {path}"
        );
    }

    let (status, _, _) = call(
        &router,
        signed("DELETE", "/2015-03-31/functions/f", vec![], SK),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _, _) = call(
        &router,
        signed("GET", "/2015-03-31/functions/f", vec![], SK),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn oversized_request_is_413() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_sup, router) = open(dir.path());
    // Unsigned: refused before the body is even read.
    let big = || vec![b' '; supervisor::http::MAX_REQUEST_BYTES + 1];
    let req = Request::post("/2015-03-31/functions")
        .body(Body::from(big()))
        .expect("req");
    let (status, _, _) = call(&router, req).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Plausibly signed headers: the body is read up to the limit, then 413.
    let (parts, _) = signed("POST", "/2015-03-31/functions", vec![], SK).into_parts();
    let req = Request::from_parts(parts, Body::from(big()));
    let (status, etype, _) = call(&router, req).await;
    assert_eq!(
        (status, etype.as_deref()),
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            Some("RequestTooLargeException")
        )
    );
}

#[tokio::test]
async fn code_package_and_orphan_collection() {
    let dir = tempfile::tempdir().expect("tempdir");
    let zip = zip_with_bootstrap("prepared");
    {
        let (sup, router) = open(dir.path());
        let (status, _, _) = call(
            &router,
            signed("POST", "/2015-03-31/functions", create_body("p", &zip), SK),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
        let package = tokio::task::spawn_blocking(move || sup.code_package("p", None))
            .await
            .expect("join")
            .expect("package");
        assert_eq!(package, zip, "decrypted and checked against its CodeSha256");
    }
    // An object sealed but never committed (crash between the two steps)
    // is collected at the next start; committed ones are kept.
    let orphan = dir
        .path()
        .join("code")
        .join(format!("{}.code", "ab".repeat(16)));
    std::fs::write(&orphan, b"junk").expect("write");
    let mut cfg = Config::with_data_dir(dir.path());
    cfg.credentials = Some((AK.into(), SK.into()));
    let (sup, report) = Supervisor::open(cfg).expect("reopen");
    assert_eq!(report.orphans_removed, 1);
    assert!(!orphan.exists());
    assert_eq!(sup.code_package("p", None).expect("package"), zip);
    assert!(matches!(
        sup.code_package("p", Some("1")),
        Err(supervisor::PrepareError::NotFound(_))
    ));
}

#[tokio::test]
async fn lost_master_key_is_refused_not_regenerated() {
    let dir = tempfile::tempdir().expect("tempdir");
    {
        let (_sup, router) = open(dir.path());
        let zip = zip_with_bootstrap("k");
        let (status, _, _) = call(
            &router,
            signed("POST", "/2015-03-31/functions", create_body("k", &zip), SK),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED);
    }
    std::fs::remove_file(dir.path().join("master.key")).expect("rm key");
    let mut cfg = Config::with_data_dir(dir.path());
    cfg.credentials = Some((AK.into(), SK.into()));
    let err = Supervisor::open(cfg).err().expect("must refuse");
    assert!(err.to_string().contains("master key"), "{err}");
    assert!(
        !dir.path().join("master.key").exists(),
        "no new key generated"
    );
}
