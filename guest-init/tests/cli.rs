//! guest-init as a host process: flags, errors and the readiness banner. (This test
//! also makes `cargo test --workspace` build the binary the runtime tests launch.)

use std::process::Command;

fn guest_init() -> Command {
    Command::new(env!("CARGO_BIN_EXE_guest-init"))
}

#[test]
fn without_transport_prints_banner_and_exits_zero() {
    let out = guest_init().output().expect("run guest-init");
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "guest-init {} ready: pid=",
            env!("CARGO_PKG_VERSION")
        )),
        "banner missing: {stdout}"
    );
}

#[test]
fn bad_flags_exit_2_with_a_clear_message() {
    let out = guest_init()
        .args(["--runtime-api-addr", "not-an-address"])
        .output()
        .expect("run guest-init");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--runtime-api-addr"), "{stderr}");
    assert!(stderr.contains("usage:"), "{stderr}");
}

#[test]
fn unreachable_host_socket_is_an_error_not_a_hang() {
    let path = std::env::temp_dir().join(format!("gi-missing-{}.sock", std::process::id()));
    let started = std::time::Instant::now();
    let out = guest_init()
        .arg("--host-uds")
        .arg(&path)
        .args(["--connect-timeout-ms", "300"])
        .output()
        .expect("run guest-init");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("connect to host"), "{stderr}");
    // It retried for the given patience, then gave up.
    let took = started.elapsed();
    assert!(took >= std::time::Duration::from_millis(300), "{took:?}");
    assert!(took < std::time::Duration::from_secs(10), "{took:?}");
}
