//! A closed-loop load generator: N clients, each calling again as soon as its last
//! call returns, for a fixed time.

use std::future::Future;
use std::time::{Duration, Instant};

use super::stats::{self, RunStats};

/// `clients` tasks calling `call` in a loop for `secs`; `call` says whether the call
/// succeeded (only successful calls are timed, failures are counted).
pub async fn closed_loop<F, Fut>(clients: usize, secs: f64, call: F) -> RunStats
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let until = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let tasks = (0..clients)
        .map(|_| {
            let call = call.clone();
            tokio::spawn(async move {
                let (mut samples, mut errors) = (Vec::new(), 0);
                while Instant::now() < until {
                    let t = Instant::now();
                    if call().await {
                        samples.push(t.elapsed());
                    } else {
                        errors += 1;
                    }
                }
                (samples, errors)
            })
        })
        .collect();
    stats::collect(clients, tasks, started).await
}

/// CPU time (user + system) this process has used so far, all threads.
pub fn process_cpu() -> Duration {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes one `rusage` through the valid pointer it is given and
    // keeps nothing; RUSAGE_SELF needs no other argument.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return Duration::ZERO;
    }
    // SAFETY: getrusage returned 0, so it filled the whole struct (and it was zeroed).
    let u = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(u.ru_utime) + tv(u.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn counts_successes_and_failures() {
        let n = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let s = closed_loop(2, 0.05, move || {
            let n = n.clone();
            async move {
                tokio::task::yield_now().await;
                n.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 2 == 0
            }
        })
        .await;
        assert!(s.requests > 0 && s.errors > 0, "{s:?}");
        assert!(s.requests.abs_diff(s.errors) <= 2, "{s:?}");
    }

    #[test]
    fn process_cpu_grows_with_work() {
        let before = process_cpu();
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(30) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        assert!(process_cpu() > before);
    }
}
