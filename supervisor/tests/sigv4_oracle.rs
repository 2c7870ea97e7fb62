//! Cross-check: requests signed by the AWS Rust SDK's own signer
//! (`aws-sigv4`, an implementation we did not write) must verify, and any
//! tampering must not.

use std::time::SystemTime;

use aws_credential_types::Credentials as SdkCredentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use supervisor::auth::{AuthError, Credentials, Verifier, VerifyRequest};
use time::{Duration, OffsetDateTime};

const AK: &str = "AKIAORACLETEST000000";
const SK: &str = "oracle/secret+with/odd=chars";

struct Case {
    method: &'static str,
    path: &'static str,
    query: Option<&'static str>,
    headers: &'static [(&'static str, &'static str)],
    body: &'static [u8],
}

const CASES: &[Case] = &[
    Case {
        method: "GET",
        path: "/2015-03-31/functions/",
        query: None,
        headers: &[],
        body: b"",
    },
    Case {
        method: "GET",
        path: "/2015-03-31/functions/",
        query: Some("Marker=MDpmbg&MaxItems=2&FunctionVersion=ALL"),
        headers: &[],
        body: b"",
    },
    Case {
        method: "GET",
        path: "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Af",
        query: Some("Qualifier=%24LATEST"),
        headers: &[],
        body: b"",
    },
    Case {
        method: "POST",
        path: "/2015-03-31/functions",
        query: None,
        headers: &[
            ("content-type", "application/json"),
            ("x-custom", "  spaced   value  "),
        ],
        body: br#"{"FunctionName":"f","Code":{"ZipFile":"UEsFBg=="}}"#,
    },
    Case {
        method: "PUT",
        path: "/2015-03-31/functions/f%3A1/configuration",
        query: None,
        headers: &[("content-type", "application/json")],
        body: br#"{"MemorySize":256}"#,
    },
    Case {
        method: "DELETE",
        path: "/2015-03-31/functions/my-fn_2",
        query: Some("Qualifier=7"),
        headers: &[],
        body: b"",
    },
];

fn sign_with_sdk(case: &Case, at: SystemTime, secret: &str) -> HeaderMap {
    let identity: Identity = SdkCredentials::new(AK, secret, None, None, "oracle").into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region("us-east-1")
        .name("lambda")
        .time(at)
        .settings(SigningSettings::default())
        .build()
        .expect("params")
        .into();
    let uri = match case.query {
        Some(q) => format!("http://localhost:9000{}?{q}", case.path),
        None => format!("http://localhost:9000{}", case.path),
    };
    let mut headers: Vec<(&str, &str)> = vec![("host", "localhost:9000")];
    headers.extend_from_slice(case.headers);
    let signable = SignableRequest::new(
        case.method,
        uri,
        headers.iter().copied(),
        SignableBody::Bytes(case.body),
    )
    .expect("signable");
    let (instructions, _) = sign(signable, &params).expect("sign").into_parts();
    let mut map = HeaderMap::new();
    for (k, v) in headers.iter().copied().chain(instructions.headers()) {
        map.append(
            HeaderName::from_bytes(k.as_bytes()).expect("name"),
            HeaderValue::from_str(v).expect("value"),
        );
    }
    map
}

fn verify(
    case: &Case,
    headers: &HeaderMap,
    body: &[u8],
    now: OffsetDateTime,
) -> Result<String, AuthError> {
    let verifier = Verifier::new(
        "us-east-1",
        "lambda",
        vec![Credentials::new(AK.into(), SK.into()).expect("creds")],
        Duration::minutes(15),
    );
    verifier.verify(
        &VerifyRequest {
            method: case.method,
            raw_path: case.path,
            raw_query: case.query,
            headers,
            body,
        },
        now,
    )
}

#[test]
fn sdk_signed_requests_verify() {
    let at = SystemTime::now();
    let now = OffsetDateTime::from(at);
    for case in CASES {
        let headers = sign_with_sdk(case, at, SK);
        assert_eq!(
            verify(case, &headers, case.body, now).ok().as_deref(),
            Some(AK),
            "{} {} {:?}",
            case.method,
            case.path,
            case.query
        );
    }
}

#[test]
fn sdk_signed_requests_fail_when_anything_changes() {
    let at = SystemTime::now();
    let now = OffsetDateTime::from(at);
    for case in CASES {
        let headers = sign_with_sdk(case, at, "not-the-secret");
        assert!(matches!(
            verify(case, &headers, case.body, now),
            Err(AuthError::SignatureMismatch)
        ));

        let headers = sign_with_sdk(case, at, SK);
        assert!(
            verify(case, &headers, b"x", now).is_err(),
            "body change accepted"
        );
        let moved = Case {
            path: "/2015-03-31/functions/other",
            ..*case
        };
        assert!(
            verify(&moved, &headers, case.body, now).is_err(),
            "path change accepted"
        );
        let requery = Case {
            query: Some("Qualifier=2"),
            ..*case
        };
        assert!(
            verify(&requery, &headers, case.body, now).is_err(),
            "query change accepted"
        );
        let late = now + Duration::minutes(16);
        assert!(matches!(
            verify(case, &headers, case.body, late),
            Err(AuthError::Expired { .. })
        ));
    }
}
