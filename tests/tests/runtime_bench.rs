//! Warm invoke round trip through guest-init as a host process (Invoke frame in ->
//! Runtime API -> lambda_runtime function -> Response frame out), 1 KiB echo, next to
//! a bare loopback HTTP/1.1 echo measured in the same run.
//!
//! CI runs a short version; for the published figures use release builds:
//!
//!     GUEST_INIT_BIN=target/x86_64-unknown-linux-musl/release/guest-init \
//!     FN_RUST_BIN=target/x86_64-unknown-linux-musl/release/fn-rust \
//!     RUNTIME_BENCH_N=5000 cargo test -p integration-tests --test runtime_bench -- --nocapture

use integration_tests::images::require;
use integration_tests::runtime::bench::{run_echo_client, start_echo_server, Stats};
use integration_tests::runtime::guest::{init, invoke, json_string_of_len};
use integration_tests::runtime::{binaries, functions, GuestProcess, InvokeOutcome, Sandbox};
use std::time::{Duration, Instant};

#[test]
fn warm_invoke_round_trip_vs_loopback_http() {
    let ready = binaries::guest_init().and(binaries::fn_rust());
    let Some(_) = require("runtime_bench", ready) else {
        return;
    };
    let n: usize = std::env::var("RUNTIME_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let payload = json_string_of_len(1024);

    let sb = Sandbox::new().expect("sandbox");
    functions::stage_rust(&sb).expect("stage");
    let mut g = GuestProcess::start(&sb, &[]).expect("start");
    g.send_init(&init("echo", &[]));
    g.wait_init(Duration::from_secs(30)).expect("init");
    // Warm-up: connections, allocator, page cache.
    for _ in 0..50 {
        let out = g.invoke(invoke(payload.clone(), 30_000), Duration::from_secs(30));
        assert_eq!(out, InvokeOutcome::Response(payload.clone()));
    }
    let mut samples = Vec::with_capacity(n);
    let wall = Instant::now();
    for _ in 0..n {
        let inv = invoke(payload.clone(), 30_000);
        let t = Instant::now();
        let out = g.invoke(inv, Duration::from_secs(30));
        samples.push(t.elapsed());
        assert!(
            matches!(out, InvokeOutcome::Response(ref p) if p.len() == 1024),
            "{out:?}"
        );
    }
    let invoke_stats = Stats::from_samples(samples, wall.elapsed());

    let addr = start_echo_server().expect("echo server");
    let _ = run_echo_client(&addr, &payload, 50).expect("warm-up");
    let http_stats = run_echo_client(&addr, &payload, n).expect("echo client");

    eprintln!("warm invoke (1 KiB echo, fn-rust via guest-init): {invoke_stats}");
    eprintln!("bare loopback HTTP/1.1 echo (1 KiB):             {http_stats}");
    // Loose sanity bounds that hold on a loaded 2-core CI box with debug builds.
    assert!(
        invoke_stats.p50 < Duration::from_millis(50),
        "{invoke_stats}"
    );
    assert!(
        invoke_stats.p50 >= http_stats.p50,
        "an invoke cannot beat one bare HTTP round trip"
    );
}
