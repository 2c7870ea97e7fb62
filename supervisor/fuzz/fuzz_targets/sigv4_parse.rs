//! Fuzzes SigV4 authentication: the `Authorization` header parser and the verifier over
//! whole requests (method, raw path and query, headers, body, date).
//!
//! Run: `tests/fuzz.sh supervisor/sigv4_parse`.
//! Properties: nothing panics; a header that parses re-formats to one that parses to the
//! same value; a request that verifies also passes the precheck; a request the in-tree
//! signer signed over fuzzed parts verifies exactly when its date is within the allowed
//! skew, and never once its body is changed.
#![no_main]

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use supervisor::auth::{
    parse_authorization, sign_request, Credentials, ParsedAuthorization, SigningRequest, Verifier,
    VerifyRequest,
};
use time::{Duration, OffsetDateTime};

const AKID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const REGION: &str = "us-east-1";
const SERVICE: &str = "lambda";
const SKEW_MINUTES: i64 = 15;
const METHODS: [&str; 6] = ["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"];

#[derive(Arbitrary, Debug)]
struct Request {
    /// Sign the request with the in-tree signer, or send `authorization` as given.
    sign: bool,
    method: u8,
    path: String,
    query: Option<String>,
    /// Raw names and values; ones that are not valid HTTP are left out.
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    body: Vec<u8>,
    authorization: AuthText,
    /// The request's date relative to the server's clock, in seconds.
    offset_secs: i16,
    /// An `x-amz-date` to send verbatim instead of the offset one (unsigned only).
    raw_date: Option<String>,
}

/// The `Authorization` value of an unsigned request.
#[derive(Arbitrary, Debug)]
enum AuthText {
    Raw(String),
    /// A well-formed header with some fields fuzzed (`None`: the value the verifier
    /// expects), so that the checks after parsing are reached too.
    Shaped {
        access_key_id: Option<String>,
        date: Option<String>,
        region: Option<String>,
        service: Option<String>,
        signed_headers: Option<Vec<String>>,
        signature: [u8; 32],
        /// Appended verbatim.
        tail: String,
    },
}

impl AuthText {
    fn render(&self, date: OffsetDateTime) -> String {
        match self {
            AuthText::Raw(s) => s.clone(),
            AuthText::Shaped {
                access_key_id,
                date: scope_date,
                region,
                service,
                signed_headers,
                signature,
                tail,
            } => {
                let amz_date = supervisor::timefmt::format_amz_date(date);
                let signed = signed_headers
                    .as_ref()
                    .map(|h| h.join(";"))
                    .unwrap_or_else(|| "host;x-amz-date".into());
                format!(
                    "AWS4-HMAC-SHA256 Credential={}/{}/{}/{}/aws4_request, SignedHeaders={signed}, Signature={}{tail}",
                    access_key_id.as_deref().unwrap_or(AKID),
                    scope_date.as_deref().unwrap_or(&amz_date[..8]),
                    region.as_deref().unwrap_or(REGION),
                    service.as_deref().unwrap_or(SERVICE),
                    to_hex(signature),
                )
            }
        }
    }
}

fn now() -> OffsetDateTime {
    // 2015-08-30T12:36:00Z, the date of the AWS SigV4 test suite.
    OffsetDateTime::from_unix_timestamp(1_440_938_160).expect("valid timestamp")
}

fn verifier() -> Verifier {
    let creds = Credentials::new(AKID.into(), SECRET.into()).expect("valid credentials");
    Verifier::new(
        REGION,
        SERVICE,
        vec![creds],
        Duration::minutes(SKEW_MINUTES),
    )
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The header text a client would send for `p`.
fn format_authorization(p: &ParsedAuthorization) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential={}/{}, SignedHeaders={}, Signature={}",
        p.access_key_id,
        p.scope(),
        p.signed_headers.join(";"),
        to_hex(&p.signature)
    )
}

fn check_parser(value: &str) {
    let parsed = parse_authorization(value);
    if trace() {
        eprintln!("sigv4: parse: {:?}", parsed.as_ref().map(|_| ()));
    }
    if let Ok(p) = parsed {
        let again = format_authorization(&p);
        match parse_authorization(&again) {
            Ok(q) => assert_eq!(p, q, "{value:?} re-formatted as {again:?}"),
            Err(e) => panic!("{value:?} parsed, its re-formatting {again:?} did not: {e}"),
        }
    }
}

fn header_map(raw: &[(Vec<u8>, Vec<u8>)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in raw {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) {
            headers.append(n, v);
        }
    }
    headers
}

/// Every HTTP/1.1 request has a Host header; add one when the fuzzer did not.
fn with_host(headers: &mut HeaderMap) {
    if !headers.contains_key("host") {
        headers.insert("host", HeaderValue::from_static("lambda.local"));
    }
}

/// Verifies `req` as given; a request that verifies must have passed the precheck too.
fn check_unsigned(r: &Request, auth: &str, mut headers: HeaderMap, date: OffsetDateTime) {
    with_host(&mut headers);
    if let Ok(v) = HeaderValue::from_bytes(auth.as_bytes()) {
        headers.append("authorization", v);
    }
    let date_text = r
        .raw_date
        .clone()
        .unwrap_or_else(|| supervisor::timefmt::format_amz_date(date));
    if let Ok(v) = HeaderValue::from_bytes(date_text.as_bytes()) {
        headers.insert("x-amz-date", v);
    }
    let v = verifier();
    let pre = v.precheck(&headers, r.query.as_deref(), now());
    let req = VerifyRequest {
        method: METHODS[usize::from(r.method) % METHODS.len()],
        raw_path: &r.path,
        raw_query: r.query.as_deref(),
        headers: &headers,
        body: &r.body,
    };
    let verdict = v.verify(&req, now());
    if trace() {
        eprintln!("sigv4: unsigned: precheck {pre:?}, verify {verdict:?}");
    }
    if verdict.is_ok() {
        assert!(pre.is_ok(), "verified, but the precheck failed: {pre:?}");
    }
}

/// Signs the fuzzed request and checks the verifier's verdict.
fn check_signed(r: &Request, mut headers: HeaderMap, date: OffsetDateTime) {
    // Headers the signer or this harness sets itself.
    for name in ["authorization", "x-amz-date", "x-amz-content-sha256"] {
        headers.remove(name);
    }
    with_host(&mut headers);
    let method = METHODS[usize::from(r.method) % METHODS.len()];
    let signing = SigningRequest {
        method,
        path: &r.path,
        query: r.query.as_deref(),
        body: &r.body,
        access_key_id: AKID,
        secret_access_key: SECRET,
        region: REGION,
        service: SERVICE,
        now: date,
    };
    let auth = match sign_request(&signing, &mut headers) {
        Ok(a) => a,
        Err(e) => panic!("signing failed: {e}"),
    };
    let auth = HeaderValue::from_str(&auth).expect("the signer writes a valid header value");
    headers.insert("authorization", auth);

    let v = verifier();
    let mut req = VerifyRequest {
        method,
        raw_path: &r.path,
        raw_query: r.query.as_deref(),
        headers: &headers,
        body: &r.body,
    };
    let in_window = (date - now()).abs() <= Duration::minutes(SKEW_MINUTES);
    let verdict = v.verify(&req, now());
    if trace() {
        eprintln!("sigv4: signed: in window {in_window}, verify {verdict:?}");
    }
    assert_eq!(
        verdict.is_ok(),
        in_window,
        "signed request: {verdict:?} (offset {} s)",
        r.offset_secs
    );
    assert_eq!(
        v.precheck(&headers, r.query.as_deref(), now()).is_ok(),
        in_window
    );
    let mut other_body = r.body.clone();
    other_body.push(0);
    req.body = &other_body;
    assert!(
        v.verify(&req, now()).is_err(),
        "a changed body still verifies"
    );
}

/// `SIGV4_FUZZ_TRACE=1`: print each verdict (to see what a corpus reaches).
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("SIGV4_FUZZ_TRACE").is_some())
}

fuzz_target!(|r: Request| {
    let date = now() + Duration::seconds(i64::from(r.offset_secs));
    let auth = r.authorization.render(date);
    check_parser(&auth);
    let headers = header_map(&r.headers);
    if r.sign {
        check_signed(&r, headers, date);
    } else {
        check_unsigned(&r, &auth, headers, date);
    }
});
