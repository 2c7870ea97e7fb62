//! Cold start: create a sandbox and run init, together bounded by the init timeout.

use super::Inner;
use crate::sandbox::{LogLine, Sandbox, SandboxError};
use crate::spec::FunctionVersionSpec;
use std::time::{Duration, Instant};

pub(crate) struct Started {
    pub sandbox: Box<dyn Sandbox>,
    pub id: String,
    pub init_duration: Duration,
    pub logs: Vec<LogLine>,
}

/// Why a cold start produced no sandbox.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ColdStartError {
    /// Infrastructure failure: a service error, not a function error.
    #[error("{0}")]
    Start(SandboxError),
    /// The function's init failed: returned to the caller as a function error.
    #[error("init failed: {error}")]
    Init {
        error: SandboxError,
        logs: Vec<LogLine>,
        duration: Duration,
    },
    #[error("init timed out after {0:?}")]
    InitTimeout(Duration, Vec<LogLine>),
}

/// RAII count of sandboxes in the starting state.
struct Starting<'a>(&'a Inner);

impl<'a> Starting<'a> {
    fn new(inner: &'a Inner) -> Self {
        inner.lock().starting += 1;
        Self(inner)
    }
}

impl Drop for Starting<'_> {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.starting = st.starting.saturating_sub(1);
    }
}

pub(crate) async fn start(
    inner: &Inner,
    spec: &FunctionVersionSpec,
) -> Result<Started, ColdStartError> {
    let _starting = Starting::new(inner);
    let id = inner.new_sandbox_id();
    let t0 = Instant::now();
    let deadline = tokio::time::Instant::from_std(t0 + inner.cfg.init_timeout);
    let mut sb = match tokio::time::timeout_at(deadline, inner.backend.create(spec, &id)).await {
        Ok(Ok(sb)) => sb,
        Ok(Err(e)) => return Err(ColdStartError::Start(e)),
        Err(_) => {
            return Err(ColdStartError::Start(SandboxError::Start(format!(
                "sandbox did not start within {:?}",
                inner.cfg.init_timeout
            ))))
        }
    };
    let result = tokio::time::timeout_at(deadline, sb.init()).await;
    let logs = sb.take_logs();
    match result {
        Ok(Ok(())) => {
            let init_duration = t0.elapsed();
            inner.metrics.cold_start(init_duration);
            Ok(Started {
                sandbox: sb,
                id,
                init_duration,
                logs,
            })
        }
        Ok(Err(SandboxError::Start(m))) => {
            inner.destroy_all(vec![sb]);
            Err(ColdStartError::Start(SandboxError::Start(m)))
        }
        Ok(Err(error)) => {
            inner.destroy_all(vec![sb]);
            Err(ColdStartError::Init {
                error,
                logs,
                duration: t0.elapsed(),
            })
        }
        Err(_) => {
            inner.destroy_all(vec![sb]);
            Err(ColdStartError::InitTimeout(inner.cfg.init_timeout, logs))
        }
    }
}
