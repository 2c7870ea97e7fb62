//! SnapStart's guest side with guest-init as a host process: after Init it answers the
//! host's Checkpoint, takes the broken connection a restore brings for the restore
//! itself, reconnects, and serves again once the host's Restore arrived: with a runtime
//! that calls `/runtime/restore/next` (and runs its after-restore hook there) and with
//! one that knows nothing of SnapStart and sits in `/invocation/next` throughout.

use integration_tests::images::require;
use integration_tests::runtime::guest::{init, invoke};
use integration_tests::runtime::{binaries, functions, GuestProcess, InvokeOutcome, Sandbox};
use runtime_api::protocol::{GuestMessage, HostMessage, Restore};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

const T: Duration = Duration::from_secs(30);

/// A shell runtime that waits in `/restore/next` when snapshotting, then says so from
/// its after-restore hook (or reports the hook's failure when `FAIL_RESTORE` is set).
const HOOKED_BOOTSTRAP: &str = r#"#!/bin/sh
API="http://${AWS_LAMBDA_RUNTIME_API}/2018-06-01/runtime"
if [ "$AWS_LAMBDA_INITIALIZATION_TYPE" = snap-start ]; then
    curl -sSf "$API/restore/next" > /dev/null || exit 9
    if [ -n "$FAIL_RESTORE" ]; then
        curl -sS -X POST "$API/restore/error" -H 'Lambda-Runtime-Function-Error-Type: Hook.Failed' \
            -d '{"errorType":"Hook.Failed","errorMessage":"after-restore hook failed"}'
        sleep 30
    fi
    echo "after-restore hook ran" >&2
fi
while true; do
    HEADERS=$(mktemp)
    BODY=$(curl -sS -D "$HEADERS" "$API/invocation/next")
    ID=$(grep -i '^Lambda-Runtime-Aws-Request-Id' "$HEADERS" | tr -d '[:space:]' | cut -d: -f2)
    curl -sS -X POST "$API/invocation/$ID/response" -d "{\"restored\":$BODY}" > /dev/null
done
"#;

/// A sandbox with the hooked runtime, or `None` (skipped) without guest-init or curl.
fn hooked_sandbox() -> Option<Sandbox> {
    require("runtime_snapstart", binaries::guest_init())?;
    let sb = Sandbox::new().unwrap();
    // The tutorial-style shell function first: it checks for curl, which both use.
    require("runtime_snapstart (curl)", functions::stage_shell(&sb))?;
    let path = sb.task.join("bootstrap");
    std::fs::write(&path, HOOKED_BOOTSTRAP).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    Some(sb)
}

fn snap_start_init(env: &[(&str, String)]) -> runtime_api::protocol::Init {
    runtime_api::protocol::Init {
        initialization_type: "snap-start".into(),
        ..init("function.handler", env)
    }
}

/// Init, Checkpoint, the broken connection and the reconnect; returns after Restore.
fn checkpoint_and_restore(sb: &Sandbox, g: &mut GuestProcess) -> GuestMessage {
    g.wait_init(T).expect("init succeeds");
    g.sender().send(&HostMessage::Checkpoint).unwrap();
    assert_eq!(g.recv(T), Some(GuestMessage::CheckpointReady));
    g.reconnect(sb)
        .expect("guest-init reconnects after the break");
    g.sender()
        .send(&HostMessage::Restore(Restore {
            seed: vec![0x5a; 32],
            host_now_ms: integration_tests::runtime::guest::now_ms(),
        }))
        .unwrap();
    g.recv(T).expect("an answer to Restore")
}

#[test]
fn a_runtime_with_restore_hooks_serves_after_the_restore() {
    let Some(sb) = hooked_sandbox() else {
        return;
    };
    let mut g = GuestProcess::start(&sb, &[]).unwrap();
    g.send_init(&snap_start_init(&[]));
    assert_eq!(
        checkpoint_and_restore(&sb, &mut g),
        GuestMessage::RestoreDone
    );
    assert!(
        g.wait_log("after-restore hook ran", T).is_some(),
        "{}",
        g.stderr()
    );
    match g.invoke(invoke(&b"{\"n\":1}"[..], 30_000), T) {
        InvokeOutcome::Response(out) => assert_eq!(out, b"{\"restored\":{\"n\":1}}"),
        other => panic!("after the restore: {other:?}; {}", g.stderr()),
    }
}

#[test]
fn a_failed_after_restore_hook_fails_the_restore_and_later_invokes() {
    let Some(sb) = hooked_sandbox() else {
        return;
    };
    let mut g = GuestProcess::start(&sb, &[]).unwrap();
    g.send_init(&snap_start_init(&[("FAIL_RESTORE", "1".into())]));
    match checkpoint_and_restore(&sb, &mut g) {
        GuestMessage::RestoreError(e) => assert_eq!(e.error_type, "Hook.Failed"),
        other => panic!("expected RestoreError, got {other:?}"),
    }
    match g.invoke(invoke(&b"{}"[..], 30_000), T) {
        InvokeOutcome::Error { error_type, .. } => assert_eq!(error_type, "Hook.Failed"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_runtime_without_hooks_is_ready_at_the_restore() {
    let Some(_) = require("runtime_snapstart", binaries::guest_init()) else {
        return;
    };
    let sb = Sandbox::new().unwrap();
    let Some(()) = require("runtime_snapstart (shell)", functions::stage_shell(&sb)) else {
        return;
    };
    let mut g = GuestProcess::start(&sb, &[]).unwrap();
    g.send_init(&snap_start_init(&[]));
    assert_eq!(
        checkpoint_and_restore(&sb, &mut g),
        GuestMessage::RestoreDone
    );
    match g.invoke(invoke(&b"\"x\""[..], 30_000), T) {
        InvokeOutcome::Response(out) => assert_eq!(out, b"\"x\""),
        other => panic!("{other:?}; {}", g.stderr()),
    }
}

#[test]
fn awslambdaric_waits_in_restore_next_and_serves_after_the_restore() {
    let Some(_) = require("runtime_snapstart", binaries::guest_init()) else {
        return;
    };
    let sb = Sandbox::new().unwrap();
    let Some(env) = require(
        "runtime_snapstart (awslambdaric)",
        functions::stage_python(&sb),
    ) else {
        return;
    };
    let mut g = GuestProcess::start(&sb, &[]).unwrap();
    g.send_init(&runtime_api::protocol::Init {
        initialization_type: "snap-start".into(),
        ..init("app.echo", &env)
    });
    let restored = checkpoint_and_restore(&sb, &mut g);
    assert_eq!(restored, GuestMessage::RestoreDone, "{}", g.stderr());
    match g.invoke(invoke(&b"{\"py\":1}"[..], 30_000), T) {
        InvokeOutcome::Response(out) => assert_eq!(out, b"{\"py\": 1}"),
        other => panic!("{other:?}; {}", g.stderr()),
    }
}
