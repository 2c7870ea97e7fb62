//! The Rust (lambda_runtime) and Python (awslambdaric) functions end to end in a real
//! guest under QEMU TCG: guest-init as PID 1, AF_VSOCK to the host, code on /dev/vdb.

use integration_tests::images::require;
use integration_tests::runtime::guest::{init, invoke, json_string_of_len};
use integration_tests::runtime::tcg_guest::{boot, fn_rust_musl, prerequisites};
use runtime_api::protocol::{GuestMessage, Shutdown};
use std::time::{Duration, Instant};

const BOOT: Duration = Duration::from_secs(60);
const T: Duration = Duration::from_secs(60);

/// Receives until the result for `id` arrives, collecting log lines on the way.
fn result_for(
    conn: &mut runtime_api::protocol::HostConnection<std::os::unix::net::UnixStream>,
    id: &str,
) -> (GuestMessage, Vec<String>) {
    let mut logs = Vec::new();
    loop {
        match conn.recv().expect("guest message") {
            GuestMessage::Log(l) => logs.push(String::from_utf8_lossy(&l.line).into_owned()),
            m @ GuestMessage::Response(_) | m @ GuestMessage::InvokeError(_)
                if matches!(&m, GuestMessage::Response(r) if r.request_id == id)
                    || matches!(&m, GuestMessage::InvokeError(e) if e.request_id == id) =>
            {
                return (m, logs)
            }
            GuestMessage::InitError(e) => panic!("init failed: {e:?} logs: {logs:?}"),
            other => logs.push(format!("(other) {other:?}")),
        }
    }
}

fn wait_init(
    conn: &mut runtime_api::protocol::HostConnection<std::os::unix::net::UnixStream>,
) -> Vec<String> {
    let mut logs = Vec::new();
    loop {
        match conn.recv().expect("guest message") {
            GuestMessage::InitDone => return logs,
            GuestMessage::Log(l) => logs.push(String::from_utf8_lossy(&l.line).into_owned()),
            other => panic!("expected InitDone, got {other:?}; logs: {logs:?}"),
        }
    }
}

#[test]
fn rust_function_in_the_provided_rootfs() {
    let Some((images, rootfs)) = require("TCG runtime (provided)", prerequisites("provided"))
    else {
        return;
    };
    let Some(func) = require("TCG runtime (provided)", fn_rust_musl()) else {
        return;
    };
    let bytes = std::fs::read(&func).expect("read fn-rust");
    let mut g = boot(
        &images.bzimage(),
        &rootfs,
        &[("bootstrap", bytes, 0o755)],
        BOOT,
    )
    .expect("boot");
    eprintln!("guest-init connected after {:?}", g.connect_time);
    let t0 = Instant::now();
    g.conn
        .send_init(&init("context", &[("CUSTOM_VAR", "in-guest".into())]))
        .expect("init");
    wait_init(&mut g.conn);
    eprintln!("init (runtime start to first /next) {:?}", t0.elapsed());
    for len in [1024, 256 * 1024] {
        let inv = invoke(json_string_of_len(len), 60_000);
        let id = inv.request_id.clone();
        let t = Instant::now();
        g.conn.send_invoke(&inv).expect("invoke");
        let (msg, _logs) = result_for(&mut g.conn, &id);
        eprintln!("{len}-byte invoke round trip {:?}", t.elapsed());
        let GuestMessage::Response(r) = msg else {
            panic!("{msg:?}")
        };
        let v: serde_json::Value = serde_json::from_slice(&r.payload).expect("json");
        assert_eq!(v["request_id"], id.as_str());
        assert_eq!(v["payload"].as_str().map(str::len), Some(len - 2));
        assert_eq!(v["uid"], 993, "the runtime must run as sbx_user1051");
        assert_eq!(v["env"]["AWS_LAMBDA_RUNTIME_API"], "127.0.0.1:9001");
        assert_eq!(v["env"]["LAMBDA_TASK_ROOT"], "/var/task");
        assert_eq!(v["env"]["CUSTOM_VAR"], "in-guest");
    }
    g.conn
        .send_shutdown(&Shutdown {
            reason: "spindown".into(),
            grace_ms: 1000,
        })
        .expect("shutdown");
    let outcome = g.vm.wait(T);
    assert!(
        outcome.status.is_some(),
        "the VM must power off after Shutdown:\n{}",
        outcome.serial
    );
    assert!(
        outcome.serial.contains(" ready: pid=1 "),
        "{}",
        outcome.serial
    );
}

#[test]
fn python_function_in_the_python_rootfs() {
    let Some((images, rootfs)) = require("TCG runtime (python3.11)", prerequisites("python3.11"))
    else {
        return;
    };
    let app = std::fs::read(
        integration_tests::images::workspace_root().join("tests/functions/python/app.py"),
    )
    .expect("app.py");
    let mut g = boot(&images.bzimage(), &rootfs, &[("app.py", app, 0o644)], BOOT).expect("boot");
    eprintln!("guest-init connected after {:?}", g.connect_time);
    let t0 = Instant::now();
    g.conn.send_init(&init("app.logs", &[])).expect("init");
    wait_init(&mut g.conn);
    eprintln!("python init {:?}", t0.elapsed());
    let inv = invoke(&b"{}"[..], 60_000);
    let id = inv.request_id.clone();
    g.conn.send_invoke(&inv).expect("invoke");
    let (msg, logs) = result_for(&mut g.conn, &id);
    assert!(
        matches!(&msg, GuestMessage::Response(r) if r.payload == b"\"logged\""),
        "{msg:?}"
    );
    // The stdout line may trail the response: shut down and read to the end of the
    // stream; guest-init flushes every queued frame before closing.
    g.conn
        .send_shutdown(&Shutdown {
            reason: "spindown".into(),
            grace_ms: 1000,
        })
        .expect("shutdown");
    let mut logs = logs;
    while let Ok(m) = g.conn.recv() {
        if let GuestMessage::Log(l) = m {
            logs.push(String::from_utf8_lossy(&l.line).into_owned());
        }
    }
    let want = format!("python stdout line for {id}");
    assert!(logs.contains(&want), "log line missing; got {logs:?}");
    let outcome = g.vm.wait(T);
    assert!(
        outcome.status.is_some(),
        "the VM must power off after Shutdown"
    );
}
