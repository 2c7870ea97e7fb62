//! Verification against the AWS SigV4 test suite
//! (docs.aws.amazon.com/general/latest/gr/signature-v4-test-suite.html) and
//! against tampering.

use axum::http::{HeaderMap, HeaderName, HeaderValue};
use time::{Duration, OffsetDateTime};

use super::*;
use crate::auth::sign_request;
use crate::auth::signer::SigningRequest;

const AKID: &str = "AKIDEXAMPLE";
const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
const SCOPE: &str = "Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request";

fn suite_time() -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp(1_440_938_160).expect("valid")
}

fn verifier() -> Verifier {
    let creds = Credentials::new(AKID.into(), SECRET.into()).expect("valid");
    Verifier::new("us-east-1", "service", vec![creds], Duration::minutes(15))
}

struct Vector {
    name: &'static str,
    method: &'static str,
    path: &'static str,
    query: Option<&'static str>,
    extra: &'static [(&'static str, &'static str)],
    signed: &'static str,
    signature: &'static str,
}

const VECTORS: &[Vector] = &[
    Vector {
        name: "get-vanilla",
        method: "GET",
        path: "/",
        query: None,
        extra: &[],
        signed: "host;x-amz-date",
        signature: "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31",
    },
    Vector {
        name: "post-vanilla",
        method: "POST",
        path: "/",
        query: None,
        extra: &[],
        signed: "host;x-amz-date",
        signature: "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b",
    },
    Vector {
        name: "get-vanilla-query-order-key-case",
        method: "GET",
        path: "/",
        query: Some("Param2=value2&Param1=value1"),
        extra: &[],
        signed: "host;x-amz-date",
        signature: "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500",
    },
    Vector {
        name: "post-header-value-case",
        method: "POST",
        path: "/",
        query: None,
        extra: &[("my-header1", "VALUE1")],
        signed: "host;my-header1;x-amz-date",
        signature: "cdbc9802e29d2942e5e10b5bccfdd67c5f22c7c4e8ae67b53629efa58b974b7d",
    },
    Vector {
        name: "get-header-value-trim",
        method: "GET",
        path: "/",
        query: None,
        extra: &[("my-header1", " value1"), ("my-header2", "\"a   b   c\"")],
        signed: "host;my-header1;my-header2;x-amz-date",
        signature: "acc3ed3afb60bb290fc8d2dd0098b9911fcaa05412b367055dee359757a9c736",
    },
    Vector {
        name: "get-header-key-duplicate",
        method: "GET",
        path: "/",
        query: None,
        extra: &[
            ("my-header1", "value2"),
            ("my-header1", "value2"),
            ("my-header1", "value1"),
        ],
        signed: "host;my-header1;x-amz-date",
        signature: "c9d5ea9f3f72853aea855b47ea873832890dbdd183b4468f858259531a5138ea",
    },
    Vector {
        name: "get-unreserved",
        method: "GET",
        path: "/-._~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz",
        query: None,
        extra: &[],
        signed: "host;x-amz-date",
        signature: "07ef7494c76fa4850883e2b006601f940f8a34d404d0cfa977f52a65bbf5f24f",
    },
    Vector {
        name: "normalize-path/get-special-character",
        method: "GET",
        path: "/example/$delete",
        query: None,
        extra: &[],
        signed: "host;x-amz-date",
        signature: "a853c9b21b528b19643d00910d35b83a10c366a10833ceefb45edd6c80e40f27",
    },
];

fn headers_for(v: &Vector, signature: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("example.amazonaws.com"));
    h.insert("x-amz-date", HeaderValue::from_static("20150830T123600Z"));
    for (k, val) in v.extra {
        h.append(HeaderName::from_static(k), HeaderValue::from_static(val));
    }
    let auth = format!(
        "AWS4-HMAC-SHA256 {SCOPE}, SignedHeaders={}, Signature={signature}",
        v.signed
    );
    h.insert("authorization", auth.parse().expect("header"));
    h
}

fn verify_vector(v: &Vector, signature: &str, body: &[u8]) -> Result<String, AuthError> {
    let headers = headers_for(v, signature);
    verifier().verify(
        &VerifyRequest {
            method: v.method,
            raw_path: v.path,
            raw_query: v.query,
            headers: &headers,
            body,
        },
        suite_time(),
    )
}

#[test]
fn aws_test_suite_vectors_verify() {
    for v in VECTORS {
        let r = verify_vector(v, v.signature, b"");
        assert_eq!(r.ok().as_deref(), Some(AKID), "vector {}", v.name);
    }
}

#[test]
fn one_flipped_bit_in_any_vector_is_rejected() {
    for v in VECTORS {
        let mut sig = hex::decode(v.signature).expect("hex");
        sig[31] ^= 1;
        let r = verify_vector(v, &hex::encode(sig), b"");
        assert!(
            matches!(r, Err(AuthError::SignatureMismatch)),
            "vector {}",
            v.name
        );
    }
}

#[test]
fn body_is_covered_by_the_signature() {
    let r = verify_vector(&VECTORS[1], VECTORS[1].signature, b"tampered");
    assert!(matches!(r, Err(AuthError::SignatureMismatch)));
}

#[test]
fn a_prechecked_request_is_verified_against_its_body() {
    let v = &VECTORS[1];
    let headers = headers_for(v, v.signature);
    let ver = verifier();
    let pre = ver
        .precheck(&headers, None, suite_time())
        .expect("the headers pass");
    let req = |body: &'static [u8]| VerifyRequest {
        method: v.method,
        raw_path: v.path,
        raw_query: None,
        headers: &headers,
        body,
    };
    assert_eq!(
        ver.verify_prechecked(&pre, &req(b"")).ok().as_deref(),
        Some(AKID)
    );
    assert!(matches!(
        ver.verify_prechecked(&pre, &req(b"tampered")),
        Err(AuthError::SignatureMismatch)
    ));
    // A wrong signature that passed the precheck is still refused.
    let mut sig = hex::decode(v.signature).expect("hex");
    sig[0] ^= 1;
    let forged = headers_for(v, &hex::encode(sig));
    let pre = ver
        .precheck(&forged, None, suite_time())
        .expect("syntax is fine");
    let forged_req = VerifyRequest {
        headers: &forged,
        ..req(b"")
    };
    assert!(matches!(
        ver.verify_prechecked(&pre, &forged_req),
        Err(AuthError::SignatureMismatch)
    ));
}

#[test]
fn date_window_is_enforced() {
    let v = &VECTORS[0];
    let headers = headers_for(v, v.signature);
    let req = VerifyRequest {
        method: v.method,
        raw_path: v.path,
        raw_query: None,
        headers: &headers,
        body: b"",
    };
    let ok = verifier().verify(&req, suite_time() + Duration::minutes(14));
    assert!(ok.is_ok());
    let late = verifier().verify(&req, suite_time() + Duration::minutes(16));
    assert!(matches!(late, Err(AuthError::Expired { .. })));
    let early = verifier().verify(&req, suite_time() - Duration::minutes(16));
    assert!(matches!(early, Err(AuthError::Expired { .. })));
}

#[test]
fn scope_and_key_errors() {
    let v = &VECTORS[0];
    let req_with = |auth: &str| {
        let mut h = headers_for(v, v.signature);
        h.insert("authorization", auth.parse().expect("header"));
        h
    };
    let check = |h: &HeaderMap| {
        verifier().verify(
            &VerifyRequest {
                method: "GET",
                raw_path: "/",
                raw_query: None,
                headers: h,
                body: b"",
            },
            suite_time(),
        )
    };
    let unknown = req_with(&format!(
        "AWS4-HMAC-SHA256 Credential=NOPE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature={}",
        v.signature
    ));
    let err = check(&unknown).expect_err("unknown key");
    assert_eq!(err.error_type(), "UnrecognizedClientException");
    let region = req_with(&format!(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/eu-west-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature={}",
        v.signature
    ));
    assert!(matches!(
        check(&region),
        Err(AuthError::ScopeMismatch {
            field: "region",
            ..
        })
    ));
    let no_host = req_with(&format!(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=x-amz-date, Signature={}",
        v.signature
    ));
    assert!(matches!(
        check(&no_host),
        Err(AuthError::UnsignedRequiredHeader("host"))
    ));
    let mut missing = headers_for(v, v.signature);
    missing.remove("authorization");
    let err = check(&missing).expect_err("unsigned");
    assert_eq!(err.error_type(), "InvalidSignatureException");
}

#[test]
fn payload_hash_header_must_match_body() {
    let v = &VECTORS[1];
    let mut h = headers_for(v, v.signature);
    h.insert(
        "x-amz-content-sha256",
        HeaderValue::from_static("UNSIGNED-PAYLOAD"),
    );
    let r = verifier().verify(
        &VerifyRequest {
            method: "POST",
            raw_path: "/",
            raw_query: None,
            headers: &h,
            body: b"",
        },
        suite_time(),
    );
    assert!(matches!(r, Err(AuthError::PayloadHashMismatch)));
}

#[test]
fn in_tree_signer_round_trips_through_verifier() {
    let body = br#"{"FunctionName":"f"}"#;
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("127.0.0.1:9000"));
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let path = "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Af";
    let query = Some("Qualifier=%24LATEST");
    let auth = sign_request(
        &SigningRequest {
            method: "GET",
            path,
            query,
            body,
            access_key_id: AKID,
            secret_access_key: SECRET,
            region: "us-east-1",
            service: "service",
            now: suite_time(),
        },
        &mut headers,
    )
    .expect("sign");
    headers.insert("authorization", auth.parse().expect("header"));
    let req = VerifyRequest {
        method: "GET",
        raw_path: path,
        raw_query: query,
        headers: &headers,
        body,
    };
    assert!(verifier().verify(&req, suite_time()).is_ok());
    let wrong_secret = Verifier::new(
        "us-east-1",
        "service",
        vec![Credentials::new(AKID.into(), "other".into()).expect("valid")],
        Duration::minutes(15),
    );
    assert!(matches!(
        wrong_secret.verify(&req, suite_time()),
        Err(AuthError::SignatureMismatch)
    ));
}

/// Headers of a GET signed at `now` with `secret`.
fn signed_get(now: OffsetDateTime, secret: &str) -> HeaderMap {
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("127.0.0.1:9000"));
    let auth = sign_request(
        &SigningRequest {
            method: "GET",
            path: "/x",
            query: None,
            body: b"",
            access_key_id: AKID,
            secret_access_key: secret,
            region: "us-east-1",
            service: "service",
            now,
        },
        &mut headers,
    )
    .expect("sign");
    headers.insert("authorization", auth.parse().expect("header"));
    headers
}

#[test]
fn cached_signing_keys_are_per_day_and_never_accept_another_secret() {
    let v = verifier();
    let check = |h: &HeaderMap, now| {
        let req = VerifyRequest {
            method: "GET",
            raw_path: "/x",
            raw_query: None,
            headers: h,
            body: b"",
        };
        v.verify(&req, now)
    };
    let day1 = suite_time();
    let day2 = day1 + Duration::days(1);
    for _ in 0..2 {
        assert!(check(&signed_get(day1, SECRET), day1).is_ok());
        assert!(check(&signed_get(day2, SECRET), day2).is_ok());
        assert!(matches!(
            check(&signed_get(day1, "other"), day1),
            Err(AuthError::SignatureMismatch)
        ));
    }
}
