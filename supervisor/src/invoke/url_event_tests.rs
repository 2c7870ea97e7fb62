use super::*;
use axum::http::HeaderValue;

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_str(v).expect("value"));
    }
    h
}

fn event(h: &HeaderMap, query: Option<&str>, body: &[u8]) -> Value {
    request_event(&UrlRequest {
        url_id: "abc",
        region: "us-east-1",
        method: "POST",
        path: "/a/b",
        query,
        headers: h,
        body,
        source_ip: "10.0.0.9",
        request_id: "rid",
        now: OffsetDateTime::from_unix_timestamp(1_583_348_638).expect("time"),
        caller: None,
    })
}

#[test]
fn the_event_has_lambdas_shape() {
    let h = headers(&[
        ("user-agent", "curl/8"),
        ("x-multi", "1"),
        ("x-multi", "2"),
        ("cookie", "a=1; b=2"),
        ("content-type", "application/json"),
    ]);
    let ev = event(&h, Some("q=1&q=2&s=a%20b"), br#"{"k":1}"#);
    assert_eq!(ev["version"], "2.0");
    assert_eq!(ev["rawPath"], "/a/b");
    assert_eq!(ev["rawQueryString"], "q=1&q=2&s=a%20b");
    assert_eq!(ev["queryStringParameters"], json!({"q": "1,2", "s": "a b"}));
    assert_eq!(ev["cookies"], json!(["a=1", "b=2"]));
    assert_eq!(ev["headers"]["x-multi"], "1,2");
    assert!(ev["headers"].get("cookie").is_none());
    assert_eq!(ev["headers"]["x-forwarded-for"], "10.0.0.9");
    assert_eq!(ev["body"], r#"{"k":1}"#);
    assert_eq!(ev["isBase64Encoded"], false);
    let ctx = &ev["requestContext"];
    assert_eq!(ctx["http"]["method"], "POST");
    assert_eq!(ctx["http"]["userAgent"], "curl/8");
    assert_eq!(ctx["domainName"], "abc.lambda-url.us-east-1.on.aws");
    assert_eq!(ctx["accountId"], "anonymous");
    assert_eq!(ctx["time"], "04/Mar/2020:19:03:58 +0000");
    assert_eq!(ctx["timeEpoch"], 1_583_348_638_000i64);
}

#[test]
fn binary_bodies_are_base64_and_empty_ones_absent() {
    let h = headers(&[("content-type", "application/octet-stream")]);
    let ev = event(&h, None, &[0, 159, 146, 150]);
    assert_eq!(ev["isBase64Encoded"], true);
    assert_eq!(ev["body"], "AJ+Slg==");
    let ev = event(&headers(&[]), None, b"");
    assert!(ev.get("body").is_none());
    assert!(ev.get("queryStringParameters").is_none());
    assert!(ev.get("cookies").is_none());
}

#[test]
fn structured_answers_become_responses() {
    let r = url_response(
        br#"{"statusCode":201,"headers":{"X-A":"b","n":5},"cookies":["c=1"],"body":"made"}"#,
    )
    .expect("ok");
    assert_eq!(r.status, 201);
    assert!(r.headers.contains(&("x-a".into(), "b".into())));
    assert!(r.headers.contains(&("n".into(), "5".into())));
    assert_eq!(r.cookies, ["c=1"]);
    assert_eq!(r.body, b"made");
    let bin = url_response(br#"{"statusCode":200,"body":"AJ+Slg==","isBase64Encoded":true}"#)
        .expect("ok");
    assert_eq!(bin.body, [0, 159, 146, 150]);
}

#[test]
fn other_json_is_a_200_json_body_and_bad_answers_are_errors() {
    let r = url_response(br#"{"message":"hi"}"#).expect("ok");
    assert_eq!(r.status, 200);
    assert_eq!(
        r.headers,
        [("content-type".to_owned(), "application/json".to_owned())]
    );
    assert_eq!(r.body, br#"{"message":"hi"}"#);
    assert_eq!(url_response(b"\"text\"").expect("ok").body, b"\"text\"");
    assert_eq!(
        url_response(br#"{"statusCode":"x"}"#),
        Err(ResponseError::Status)
    );
    assert_eq!(
        url_response(br#"{"statusCode":700}"#),
        Err(ResponseError::Status)
    );
    assert_eq!(
        url_response(br#"{"statusCode":200,"body":"!!","isBase64Encoded":true}"#),
        Err(ResponseError::Base64)
    );
}
