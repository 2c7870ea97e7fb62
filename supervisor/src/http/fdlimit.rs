//! The descriptor limit and the connection cap derived from it. Connections, sandboxes,
//! log files and the registry all take descriptors from one `RLIMIT_NOFILE`; the cap
//! keeps connections from using up what a sandbox start needs (EMFILE).

/// Most connections served at once, however many descriptors there are.
pub const MAX_CONNECTIONS: usize = 2048;
/// Descriptors connections never get: sandboxes (sockets, pipes, pidfds), log files,
/// the registry and event store, the listener.
pub const FD_RESERVE: u64 = 512;
/// Fewest connections served, even under a limit too low to keep the reserve.
const MIN_CONNECTIONS: usize = 16;
/// What the cap assumes when the limit cannot be read (a common default).
const ASSUMED_SOFT_LIMIT: u64 = 1024;

#[derive(Debug, thiserror::Error)]
pub enum FdLimitError {
    #[error("reading RLIMIT_NOFILE: {0}")]
    Get(std::io::Error),
    #[error("raising RLIMIT_NOFILE to {0}: {1}")]
    Set(u64, std::io::Error),
}

/// The (soft, hard) descriptor limits of this process.
pub fn nofile() -> Result<(u64, u64), FdLimitError> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the valid, exclusively borrowed `lim`.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(FdLimitError::Get(std::io::Error::last_os_error()));
    }
    Ok((lim.rlim_cur, lim.rlim_max))
}

/// Raises the soft descriptor limit to the hard one (the soft one is often 1024, fewer
/// than [`MAX_CONNECTIONS`] plus sandboxes need). Returns the soft limit now in force.
pub fn raise_nofile() -> Result<u64, FdLimitError> {
    let (soft, hard) = nofile()?;
    if soft >= hard {
        return Ok(soft);
    }
    let lim = libc::rlimit {
        rlim_cur: hard,
        rlim_max: hard,
    };
    // SAFETY: setrlimit only reads the valid `lim`; raising the soft limit up to the
    // hard one needs no privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
        return Err(FdLimitError::Set(hard, std::io::Error::last_os_error()));
    }
    Ok(hard)
}

/// Connections served at once under a soft limit of `soft` descriptors: at most half of
/// what is left after [`FD_RESERVE`] (sandboxes grow with load too, beyond the reserve),
/// within [`MIN_CONNECTIONS`]..=[`MAX_CONNECTIONS`].
pub fn connection_cap(soft: u64) -> usize {
    let room = soft.saturating_sub(FD_RESERVE) / 2;
    usize::try_from(room)
        .unwrap_or(usize::MAX)
        .clamp(MIN_CONNECTIONS, MAX_CONNECTIONS)
}

/// The cap for this process's current soft limit.
pub fn current_connection_cap() -> (usize, u64) {
    let soft = match nofile() {
        Ok((soft, _)) => soft,
        Err(e) => {
            tracing::warn!(error = %e, "assuming a descriptor limit of {ASSUMED_SOFT_LIMIT}");
            ASSUMED_SOFT_LIMIT
        }
    };
    (connection_cap(soft), soft)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_leaves_the_reserve_and_stays_within_bounds() {
        // The usual default soft limit: 1024 - 512 reserved, half of the rest.
        assert_eq!(connection_cap(1024), 256);
        assert_eq!(connection_cap(4096), 1792);
        // Large limits: the fixed maximum.
        assert_eq!(connection_cap(4608), MAX_CONNECTIONS);
        assert_eq!(connection_cap(1 << 20), MAX_CONNECTIONS);
        assert_eq!(connection_cap(u64::MAX), MAX_CONNECTIONS);
        // Too low for the reserve: still a few connections.
        assert_eq!(connection_cap(0), MIN_CONNECTIONS);
        assert_eq!(connection_cap(256), MIN_CONNECTIONS);
        for soft in [600, 1024, 2000, 4000, 4608] {
            let cap = connection_cap(soft) as u64;
            assert!(cap + FD_RESERVE <= soft, "{soft}: {cap}");
        }
    }

    #[test]
    fn raising_reaches_the_hard_limit() {
        let soft = raise_nofile().expect("raise");
        let (now_soft, hard) = nofile().expect("read");
        assert_eq!((soft, now_soft), (hard, hard));
        assert_eq!(current_connection_cap(), (connection_cap(hard), hard));
    }
}
