use super::*;

fn head() -> InvokeHead {
    InvokeHead {
        spec: SpecHead {
            name: "echo".into(),
            version: "$LATEST".into(),
            code: CodeRef {
                sha256: "abc=".into(),
                source: "10.0.0.1:9443".into(),
            },
            runtime: "provided.al2023".into(),
            handler: "bootstrap".into(),
            memory_mib: 128,
            timeout_ms: 3000,
            env: vec![("K".into(), "V".into())],
            reserved_concurrency: None,
            revision: "r1".into(),
            layers: vec![CodeRef {
                sha256: "def=".into(),
                source: "10.0.0.1:9443".into(),
            }],
            image: Some(worker::code::image::ImageOverrides {
                command: Some(vec!["app.other".into()]),
                ..Default::default()
            }),
            snap_start: true,
        },
        request_id: "rid".into(),
        client_context: None,
        cognito_identity: None,
        trace_id: Some("Root=1".into()),
        streaming: false,
    }
}

#[test]
fn an_invoke_round_trips_with_its_raw_payload() {
    let body = encode_invoke(&head(), b"\x00{\"a\":1}\xff");
    let (h, p) = decode_invoke(&body).expect("decode");
    assert_eq!(h, head());
    assert_eq!(p, b"\x00{\"a\":1}\xff");
    let (spec, req, streaming) = h.into_parts(p);
    assert!(spec.code_dir.is_none() && spec.code.is_some());
    assert_eq!(spec.timeout, Duration::from_secs(3));
    let image = spec
        .image
        .expect("an image function's ImageConfig crosses the link");
    assert_eq!(image.overrides.command, Some(vec!["app.other".to_string()]));
    assert_eq!(req.trace_id.as_deref(), Some("Root=1"));
    assert!(!streaming);
}

#[test]
fn truncated_or_oversized_invokes_are_errors_not_panics() {
    let body = encode_invoke(&head(), b"payload");
    for cut in 0..20 {
        assert!(decode_invoke(&body[..cut]).is_err(), "cut at {cut}");
    }
    let mut lying = body.clone();
    lying[..4].copy_from_slice(&u32::MAX.to_le_bytes());
    assert_eq!(decode_invoke(&lying), Err(WireError::Truncated));
    let huge = vec![0u8; MAX_INVOKE_BYTES + 1];
    assert!(matches!(decode_invoke(&huge), Err(WireError::TooLarge(_))));
}

#[test]
fn records_decode_incrementally_in_order() {
    let outcome = OutcomeHead {
        request_id: "rid".into(),
        executed_version: "$LATEST".into(),
        function_error: Some("Unhandled".into()),
        logs: "START\n".into(),
        duration_us: 1234,
        billed_ms: 2,
        memory_size_mb: 128,
        max_memory_used_mb: 20,
        init_duration_us: Some(5),
        billed_restore_us: None,
        status: Some("timeout".into()),
        error_type: None,
    };
    let records = vec![
        Record::Chunk(b"one".to_vec()),
        Record::Chunk(Vec::new()),
        Record::Outcome(outcome.clone(), b"{\"errorType\":1}".to_vec()),
        Record::Failure(Failure::Code {
            message: "m".into(),
            transient: true,
        }),
        Record::Failure(Failure::SnapStart(worker::SnapStartFailure::Hook {
            error_type: "Runtime.AfterRestoreError".into(),
            message: "hook broke".into(),
        })),
        Record::Failure(Failure::SnapStart(worker::SnapStartFailure::Timeout(
            Duration::from_millis(10_000),
        ))),
    ];
    let stream: Vec<u8> = records.iter().flat_map(encode_record).collect();
    // Fed one byte at a time: nothing decodes early, everything decodes once.
    let mut buf = Vec::new();
    let mut got = Vec::new();
    for b in stream {
        buf.push(b);
        while let Some((r, used)) = decode_record(&buf).expect("valid") {
            buf.drain(..used);
            got.push(r);
        }
    }
    assert_eq!(got, records);
    let o = outcome.join(b"x".to_vec());
    assert_eq!(o.report.status, Some("timeout"));
    assert_eq!(o.report.duration, Duration::from_micros(1234));
}

#[test]
fn bad_records_are_refused() {
    assert_eq!(decode_record(&[9, 0, 0, 0, 0]), Err(WireError::Kind(9)));
    let mut big = vec![KIND_CHUNK];
    big.extend_from_slice(&u32::MAX.to_le_bytes());
    assert!(matches!(decode_record(&big), Err(WireError::TooLarge(_))));
    let mut bad_head = vec![KIND_FAILURE];
    bad_head.extend_from_slice(&3u32.to_le_bytes());
    bad_head.extend_from_slice(b"{{{");
    assert!(matches!(decode_record(&bad_head), Err(WireError::Head(_))));
}
