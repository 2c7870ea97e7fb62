//! Lambda's platform log lines (START / END / REPORT) and error bodies, in the exact
//! formats Lambda writes them.

use crate::spec::Report;
use std::fmt::Write;
use std::time::Duration;

pub fn start_line(request_id: &str, version: &str) -> String {
    format!("START RequestId: {request_id} Version: {version}\n")
}

pub fn end_line(request_id: &str) -> String {
    format!("END RequestId: {request_id}\n")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Billed duration: whole milliseconds, rounded up (Lambda's 1 ms granularity).
pub fn billed_ms(d: Duration) -> u64 {
    let micros = d.as_micros();
    u64::try_from(micros.div_ceil(1000))
        .unwrap_or(u64::MAX)
        .max(1)
}

/// `REPORT RequestId: …\tDuration: 1.23 ms\tBilled Duration: 2 ms\t…` with Lambda's tabs.
pub fn report_line(request_id: &str, r: &Report) -> String {
    let mut s = format!(
        "REPORT RequestId: {request_id}\tDuration: {:.2} ms\tBilled Duration: {} ms\t\
         Memory Size: {} MB\tMax Memory Used: {} MB\t",
        ms(r.duration),
        r.billed_ms,
        r.memory_size_mb,
        r.max_memory_used_mb
    );
    match (r.init_duration, r.billed_restore) {
        (Some(restore), Some(billed)) => {
            let _ = write!(
                s,
                "Restore Duration: {:.2} ms\tBilled Restore Duration: {} ms\t",
                ms(restore),
                billed_ms(billed)
            );
        }
        (Some(init), None) => {
            let _ = write!(s, "Init Duration: {:.2} ms\t", ms(init));
        }
        (None, _) => {}
    }
    if let Some(status) = r.status {
        let _ = write!(s, "Status: {status}\t");
        if let Some(t) = &r.error_type {
            let _ = write!(s, "Error Type: {t}\t");
        }
    }
    s.push('\n');
    s
}

/// `INIT_REPORT Init Duration: 10000.09 ms\tPhase: init\tStatus: timeout` for a failed
/// init (Lambda writes none for one that succeeds).
pub fn init_report_line(
    init: Duration,
    phase: &str,
    status: &str,
    error_type: Option<&str>,
) -> String {
    let mut s = format!(
        "INIT_REPORT Init Duration: {:.2} ms\tPhase: {phase}\tStatus: {status}\t",
        ms(init)
    );
    if let Some(t) = error_type {
        let _ = write!(s, "Error Type: {t}\t");
    }
    s.push('\n');
    s
}

/// The Init a SnapStart snapshot was taken after: `INIT_REPORT Init Duration: …`.
pub fn snapshot_init_report_line(init: Duration) -> String {
    format!("INIT_REPORT Init Duration: {:.2} ms\t\n", ms(init))
}

/// Lambda's error JSON: `{"errorType": …, "errorMessage": …}`.
pub fn error_body(error_type: &str, message: &str) -> Vec<u8> {
    serde_json::json!({ "errorType": error_type, "errorMessage": message })
        .to_string()
        .into_bytes()
}

/// "Task timed out after 3.00 seconds".
pub fn timeout_message(request_id: &str, timeout: Duration) -> String {
    format!(
        "RequestId: {request_id} Error: Task timed out after {:.2} seconds",
        timeout.as_secs_f64()
    )
}

/// "RequestId: … Error: Runtime exited with error: exit status 1".
pub fn exit_message(request_id: &str, detail: &str) -> String {
    let detail = detail
        .strip_prefix("Runtime exited with error: ")
        .unwrap_or(detail);
    format!("RequestId: {request_id} Error: Runtime exited with error: {detail}")
}

/// The timestamped line Lambda writes into the function log on a timeout.
pub fn timeout_log_line(request_id: &str, timeout: Duration) -> String {
    format!(
        "{} {request_id} Task timed out after {:.2} seconds\n",
        rfc3339_now(),
        timeout.as_secs_f64()
    )
}

/// UTC timestamp with milliseconds, e.g. `2024-01-02T03:04:05.678Z`.
pub fn rfc3339_now() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(now)
}

fn rfc3339(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs();
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        since_epoch.subsec_millis()
    )
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's well-known algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_matches_lambda_format() {
        let r = Report {
            duration: Duration::from_micros(1234),
            billed_ms: 2,
            memory_size_mb: 128,
            max_memory_used_mb: 18,
            init_duration: Some(Duration::from_micros(120_560)),
            billed_restore: None,
            status: None,
            error_type: None,
        };
        assert_eq!(
            report_line("abc", &r),
            "REPORT RequestId: abc\tDuration: 1.23 ms\tBilled Duration: 2 ms\tMemory Size: 128 MB\t\
             Max Memory Used: 18 MB\tInit Duration: 120.56 ms\t\n"
        );
        let restored = Report {
            billed_restore: Some(Duration::from_micros(40_200)),
            ..r.clone()
        };
        let line = report_line("abc", &restored);
        assert!(
            line.ends_with("Restore Duration: 120.56 ms\tBilled Restore Duration: 41 ms\t\n"),
            "{line}"
        );
        assert!(!line.contains("Init Duration"));
        let warm = Report {
            init_duration: None,
            status: Some("timeout"),
            ..r
        };
        let line = report_line("abc", &warm);
        assert!(!line.contains("Init Duration"));
        assert!(line.ends_with("Status: timeout\t\n"));
        let crashed = Report {
            status: Some("error"),
            error_type: Some("Runtime.ExitError".into()),
            ..warm
        };
        assert!(report_line("abc", &crashed)
            .ends_with("Status: error\tError Type: Runtime.ExitError\t\n"));
        assert_eq!(
            init_report_line(Duration::from_millis(10_000), "init", "timeout", None),
            "INIT_REPORT Init Duration: 10000.00 ms\tPhase: init\tStatus: timeout\t\n"
        );
        assert_eq!(
            init_report_line(Duration::from_millis(5), "invoke", "error", Some("Runtime.ExitError")),
            "INIT_REPORT Init Duration: 5.00 ms\tPhase: invoke\tStatus: error\tError Type: Runtime.ExitError\t\n"
        );
    }

    #[test]
    fn start_end_and_billing() {
        assert_eq!(
            start_line("r1", "$LATEST"),
            "START RequestId: r1 Version: $LATEST\n"
        );
        assert_eq!(end_line("r1"), "END RequestId: r1\n");
        assert_eq!(billed_ms(Duration::from_micros(1001)), 2);
        assert_eq!(billed_ms(Duration::from_micros(1000)), 1);
        assert_eq!(billed_ms(Duration::ZERO), 1);
    }

    #[test]
    fn error_messages() {
        assert_eq!(
            timeout_message("r", Duration::from_secs(3)),
            "RequestId: r Error: Task timed out after 3.00 seconds"
        );
        assert_eq!(
            exit_message("r", "Runtime exited with error: signal: killed"),
            "RequestId: r Error: Runtime exited with error: signal: killed"
        );
        let body: serde_json::Value =
            serde_json::from_slice(&error_body("Sandbox.Timedout", "m")).unwrap();
        assert_eq!(body["errorType"], "Sandbox.Timedout");
        assert_eq!(body["errorMessage"], "m");
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(Duration::ZERO), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(Duration::from_millis(1_709_251_199_123)),
            "2024-02-29T23:59:59.123Z"
        );
    }
}
