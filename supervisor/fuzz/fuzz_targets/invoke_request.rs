//! Fuzzes the Invoke API request path end to end in process: SigV4 authentication,
//! routing, function name / ARN / qualifier resolution, the invoke headers, payload
//! checks, the worker pool and the response, with an echoing sandbox backend behind
//! the real worker.
//!
//! Run: `tests/fuzz.sh supervisor/invoke_request`.
//! Input: one request with a fuzzed endpoint, function name (plain, ARN, partial ARN
//! or any text), qualifier, invoke headers (known values or any bytes), extra headers,
//! body and signature (good, missing, wrong secret).
//! Properties: nothing panics; every error answer has Lambda's shape (an
//! `x-amzn-ErrorType` header and a JSON object with a message); a request that is not
//! correctly signed is refused with 403 and never reaches a sandbox; a valid
//! synchronous invoke of the echo function answers 200 with exactly the payload (`{}`
//! for an empty one), of the failing function 200 with `X-Amz-Function-Error`, and the
//! tail of the logs exactly when asked for.
//!
//! `Event` invocations are turned into `DryRun`: the fuzz process runs no event
//! runner, and millions of queued events would only fill its disk; everything up to
//! the queue is the same code.
#![no_main]

use std::sync::atomic::Ordering;

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine as _;
use http_body_util::BodyExt as _;
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use tower::ServiceExt as _;

#[path = "invoke_request/env.rs"]
mod env;

use env::{env, signed, unsigned, ACCOUNT, ECHO, FAIL, REACHED, SK};

#[derive(Arbitrary, Debug)]
enum Name {
    Echo,
    Fail,
    Arn(bool),
    Partial(bool),
    Text(String),
}

#[derive(Arbitrary, Debug)]
enum Qualifier {
    Latest,
    Version(u16),
    Text(String),
}

#[derive(Arbitrary, Debug)]
enum Value<T> {
    Known(T),
    Bytes(Vec<u8>),
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq)]
enum Kind {
    RequestResponse,
    Event,
    DryRun,
}

#[derive(Arbitrary, Debug, Clone, Copy, PartialEq)]
enum LogType {
    None,
    Tail,
}

#[derive(Arbitrary, Debug)]
enum Signature {
    Good,
    Missing,
    WrongSecret,
}

#[derive(Arbitrary, Debug)]
struct Input {
    streaming: bool,
    other_path: Option<String>,
    post: bool,
    name: Name,
    qualifier: Option<Qualifier>,
    invocation_type: Option<Value<Kind>>,
    log_type: Option<Value<LogType>>,
    client_context: Option<Value<String>>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
    signature: Signature,
}

fn arn(f: &str, partial: bool) -> String {
    if partial {
        format!("{ACCOUNT}:function:{f}")
    } else {
        format!("arn:aws:lambda:us-east-1:{ACCOUNT}:function:{f}")
    }
}

impl Input {
    /// The function it names, when it names one of ours unambiguously.
    fn function(&self) -> Option<&'static str> {
        let which = |fail: bool| if fail { FAIL } else { ECHO };
        match &self.name {
            Name::Echo => Some(ECHO),
            Name::Fail => Some(FAIL),
            Name::Arn(f) | Name::Partial(f) => Some(which(*f)),
            Name::Text(_) => None,
        }
    }

    fn uri(&self) -> String {
        let enc = |s: &str| percent_encode(s);
        let name = match &self.name {
            Name::Echo => ECHO.to_owned(),
            Name::Fail => FAIL.to_owned(),
            Name::Arn(f) => enc(&arn(if *f { FAIL } else { ECHO }, false)),
            Name::Partial(f) => enc(&arn(if *f { FAIL } else { ECHO }, true)),
            Name::Text(t) => enc(t),
        };
        let path = match (&self.other_path, self.streaming) {
            (Some(p), _) => format!("/{}", enc(p)),
            (None, true) => format!("/2021-11-15/functions/{name}/response-streaming-invocations"),
            (None, false) => format!("/2015-03-31/functions/{name}/invocations"),
        };
        match &self.qualifier {
            None => path,
            Some(Qualifier::Latest) => format!("{path}?Qualifier=%24LATEST"),
            Some(Qualifier::Version(v)) => format!("{path}?Qualifier={v}"),
            Some(Qualifier::Text(t)) => format!("{path}?Qualifier={}", enc(t)),
        }
    }

    fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        let mut put = |name: &'static str, v: Option<Vec<u8>>| {
            if let Some(Ok(v)) = v.map(|b| HeaderValue::from_bytes(&b)) {
                h.insert(name, v);
            }
        };
        put(
            "x-amz-invocation-type",
            self.invocation_type.as_ref().map(|v| match v {
                // Never Event: see the module comment.
                Value::Known(Kind::Event | Kind::DryRun) => b"DryRun".to_vec(),
                Value::Known(Kind::RequestResponse) => b"RequestResponse".to_vec(),
                Value::Bytes(b) if b == b"Event" => b"DryRun".to_vec(),
                Value::Bytes(b) => b.clone(),
            }),
        );
        put(
            "x-amz-log-type",
            self.log_type.as_ref().map(|v| match v {
                Value::Known(t) => format!("{t:?}").into_bytes(),
                Value::Bytes(b) => b.clone(),
            }),
        );
        put(
            "x-amz-client-context",
            self.client_context.as_ref().map(|v| match v {
                Value::Known(s) => base64::engine::general_purpose::STANDARD
                    .encode(serde_json::json!({ "custom": s }).to_string())
                    .into_bytes(),
                Value::Bytes(b) => b.clone(),
            }),
        );
        for (k, v) in self.headers.iter().take(4) {
            if let (Ok(k), Ok(v)) = (HeaderName::from_bytes(k), HeaderValue::from_bytes(v)) {
                // Framing headers must match the body, as hyper ensures on a real connection.
                let framing = [
                    "host",
                    "authorization",
                    "content-length",
                    "transfer-encoding",
                ];
                if !framing.contains(&k.as_str()) && !k.as_str().starts_with("x-amz") {
                    h.append(k, v);
                }
            }
        }
        h
    }

    /// True when the request is a correct synchronous invoke of one of our functions.
    fn valid_sync(&self) -> bool {
        let kind_ok = match &self.invocation_type {
            None => true,
            Some(Value::Known(k)) => *k == Kind::RequestResponse,
            Some(Value::Bytes(b)) => b == b"RequestResponse",
        };
        let log_ok = match &self.log_type {
            None | Some(Value::Known(_)) => true,
            Some(Value::Bytes(b)) => b == b"None" || b == b"Tail",
        };
        let ctx_ok = match &self.client_context {
            None => true,
            Some(Value::Known(_)) => self
                .headers()
                .get("x-amz-client-context")
                .is_some_and(|v| v.len() <= 3583),
            Some(Value::Bytes(b)) => b.is_empty(),
        };
        let qual_ok = matches!(self.qualifier, None | Some(Qualifier::Latest));
        let body_ok = self.body.iter().all(u8::is_ascii_whitespace)
            || serde_json::from_slice::<serde::de::IgnoredAny>(&self.body).is_ok();
        self.post
            && self.other_path.is_none()
            && matches!(self.signature, Signature::Good)
            && self.function().is_some()
            && kind_ok
            && log_ok
            && ctx_ok
            && qual_ok
            && body_ok
    }

    fn tail_logs(&self) -> bool {
        match &self.log_type {
            Some(Value::Known(t)) => *t == LogType::Tail,
            Some(Value::Bytes(b)) => b == b"Tail",
            None => false,
        }
    }
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

struct Answer {
    status: u16,
    headers: HeaderMap,
    body: Vec<u8>,
}

fn check_error_shape(a: &Answer) {
    let kind = a.headers.get("x-amzn-errortype");
    assert!(
        kind.is_some(),
        "status {} without x-amzn-ErrorType",
        a.status
    );
    let v: serde_json::Value = serde_json::from_slice(&a.body).expect("error body is JSON");
    assert!(
        v.get("Message")
            .or_else(|| v.get("message"))
            .is_some_and(|m| m.is_string()),
        "error body without a message: {v}"
    );
    assert_ne!(a.status, 500, "internal error: {v}");
}

fn check(input: &Input, a: &Answer, reached: bool) {
    if a.status >= 400 {
        check_error_shape(a);
    }
    if !matches!(input.signature, Signature::Good) {
        assert_eq!(a.status, 403, "a badly signed request got {}", a.status);
        assert!(!reached, "a badly signed request reached a sandbox");
        return;
    }
    if !input.valid_sync() {
        return;
    }
    let function_error = a.headers.get("x-amz-function-error").is_some();
    assert_eq!(
        a.status,
        200,
        "valid invoke: {}",
        String::from_utf8_lossy(&a.body)
    );
    assert!(reached, "valid invoke never reached a sandbox");
    if input.streaming {
        return;
    }
    assert_eq!(function_error, input.function() == Some(FAIL));
    assert_eq!(
        a.headers.get("x-amz-log-result").is_some(),
        input.tail_logs()
    );
    if input.function() == Some(ECHO) {
        let want: &[u8] = if input.body.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &input.body
        };
        assert_eq!(a.body, want, "echo answered something else");
    }
}

fuzz_target!(|input: Input| {
    let env = env();
    let method = if input.post { "POST" } else { "GET" };
    let uri = input.uri();
    let headers = input.headers();
    let body = input.body.clone();
    let req = match input.signature {
        Signature::Good => signed(method, &uri, headers, body, SK),
        Signature::WrongSecret => signed(method, &uri, headers, body, "not-the-secret"),
        Signature::Missing => unsigned(method, &uri, headers, body),
    };
    let before = REACHED.load(Ordering::Relaxed);
    let answer = env.rt.block_on(async {
        let resp = env.router.clone().oneshot(req).await.expect("infallible");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes().to_vec());
        Answer {
            status,
            headers,
            body: body.unwrap_or_default(),
        }
    });
    let reached = REACHED.load(Ordering::Relaxed) != before;
    check(&input, &answer, reached);
});
