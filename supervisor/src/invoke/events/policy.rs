//! Lambda's retry behaviour for asynchronous invocations: a function error is
//! retried twice (after about one and two minutes by default); throttles and
//! sandbox failures are retried with backoff until the event is six hours old.

use std::time::Duration;

use super::store::Event;

/// Function errors: the first run plus two retries.
pub const MAX_ATTEMPTS: u32 = 3;
/// Lambda's default maximum event age.
pub const MAX_EVENT_AGE: Duration = Duration::from_secs(6 * 3600);
const SYSTEM_BACKOFF_START: Duration = Duration::from_secs(1);
const SYSTEM_BACKOFF_MAX: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    Success,
    FunctionError,
    /// 429 from the worker.
    Throttled,
    /// The sandbox could not be created, or another service-side failure.
    SystemError,
    /// The function or version no longer exists.
    Gone,
    /// A failure no retry can fix (e.g. code that does not match its digest).
    Permanent,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Remove the event; the label is the metrics outcome.
    Done(&'static str),
    Retry {
        attempts: u32,
        system_retries: u32,
        delay: Duration,
    },
}

pub fn decide(ev: &Event, outcome: RunOutcome, base: Duration, now_ms: i64) -> Next {
    match outcome {
        RunOutcome::Success => Next::Done("succeeded"),
        RunOutcome::Gone | RunOutcome::Permanent => Next::Done("dropped"),
        RunOutcome::FunctionError => {
            let attempts = ev.attempts.saturating_add(1);
            if attempts >= MAX_ATTEMPTS {
                Next::Done("dropped")
            } else {
                Next::Retry {
                    attempts,
                    system_retries: ev.system_retries,
                    delay: base.saturating_mul(1 << (attempts - 1).min(16)),
                }
            }
        }
        RunOutcome::Throttled | RunOutcome::SystemError => {
            let age_ms = now_ms.saturating_sub(ev.created_ms).max(0) as u128;
            if age_ms >= MAX_EVENT_AGE.as_millis() {
                return Next::Done("dropped");
            }
            let n = ev.system_retries.min(16);
            Next::Retry {
                attempts: ev.attempts,
                system_retries: ev.system_retries.saturating_add(1),
                delay: SYSTEM_BACKOFF_START
                    .saturating_mul(1 << n)
                    .min(SYSTEM_BACKOFF_MAX),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(attempts: u32, system_retries: u32) -> Event {
        Event {
            id: "e".into(),
            function: "f".into(),
            qualifier: None,
            payload: vec![],
            client_context: None,
            attempts,
            system_retries,
            next_at_ms: 0,
            created_ms: 0,
        }
    }

    #[test]
    fn two_retries_for_function_errors() {
        let base = Duration::from_secs(60);
        assert_eq!(
            decide(&ev(0, 0), RunOutcome::FunctionError, base, 0),
            Next::Retry {
                attempts: 1,
                system_retries: 0,
                delay: base
            }
        );
        assert_eq!(
            decide(&ev(1, 0), RunOutcome::FunctionError, base, 0),
            Next::Retry {
                attempts: 2,
                system_retries: 0,
                delay: base * 2
            }
        );
        assert_eq!(
            decide(&ev(2, 0), RunOutcome::FunctionError, base, 0),
            Next::Done("dropped")
        );
        assert_eq!(
            decide(&ev(2, 0), RunOutcome::Success, base, 0),
            Next::Done("succeeded")
        );
        assert_eq!(
            decide(&ev(0, 0), RunOutcome::Gone, base, 0),
            Next::Done("dropped")
        );
    }

    #[test]
    fn throttles_back_off_until_max_age() {
        let base = Duration::from_secs(60);
        let Next::Retry {
            delay,
            attempts,
            system_retries,
        } = decide(&ev(1, 3), RunOutcome::Throttled, base, 1000)
        else {
            panic!("expected retry");
        };
        assert_eq!(
            (attempts, system_retries, delay),
            (1, 4, Duration::from_secs(8))
        );
        let Next::Retry { delay, .. } = decide(&ev(0, 30), RunOutcome::SystemError, base, 0) else {
            panic!("expected retry");
        };
        assert_eq!(delay, SYSTEM_BACKOFF_MAX);
        let old = MAX_EVENT_AGE.as_millis() as i64 + 1;
        assert_eq!(
            decide(&ev(0, 0), RunOutcome::Throttled, base, old),
            Next::Done("dropped")
        );
    }
}
