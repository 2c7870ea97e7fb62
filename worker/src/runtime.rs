//! The async runtime a worker host (and the supervisor around it) runs on.

/// Async worker threads for a host with `cpus` CPUs: one per 4, 1 to 8.
///
/// The invoke path mostly waits for sandboxes. Measured with `invoke-bench` on 2 CPUs
/// (1,769 MB Rust echo, 8 and 32 clients): with 2 threads the supervisor spent about
/// 122 µs of CPU per warm invoke, with 1 thread about 80 µs, and served 3–18 % more
/// invokes per second, because tasks woken on the other thread cost a futex wake-up
/// and a context switch each while the sandboxes need the same cores.
pub fn default_async_threads(cpus: usize) -> usize {
    (cpus / 4).clamp(1, 8)
}

/// A multi-threaded tokio runtime with `threads` async threads (default:
/// [`default_async_threads`] of this process's CPUs).
pub fn build(threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(
            threads
                .unwrap_or_else(|| default_async_threads(cpus))
                .max(1),
        )
        .enable_all()
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_thread_per_four_cpus_within_bounds() {
        assert_eq!(default_async_threads(1), 1);
        assert_eq!(default_async_threads(2), 1);
        assert_eq!(default_async_threads(8), 2);
        assert_eq!(default_async_threads(16), 4);
        assert_eq!(default_async_threads(192), 8);
    }
}
