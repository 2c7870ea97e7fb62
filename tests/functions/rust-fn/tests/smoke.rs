//! The function binary refuses to run outside a Lambda environment with an error
//! instead of hanging (and this test makes `cargo test --workspace` build the binary
//! that the runtime integration tests stage as a bootstrap).

use std::process::Command;
use std::time::Duration;

#[test]
fn without_runtime_api_it_exits_with_an_error() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_fn-rust"))
        .env_clear()
        .env("_HANDLER", "echo")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn fn-rust");
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(
                !status.success(),
                "fn-rust must fail without AWS_LAMBDA_RUNTIME_API"
            );
            return;
        }
        if started.elapsed() > Duration::from_secs(10) {
            let _ = child.kill();
            panic!("fn-rust hung without a Runtime API");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn init_fail_handler_exits_before_serving() {
    let status = Command::new(env!("CARGO_BIN_EXE_fn-rust"))
        .env_clear()
        .env("_HANDLER", "init-fail")
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run fn-rust");
    assert_eq!(status.code(), Some(3));
}
