//! CPU placement: each sandbox runs on its own small set of host CPUs.
//!
//! A warm invoke is a ping-pong between three processes (worker, guest-init, runtime).
//! When the scheduler spreads them over CPUs, every hand-off wakes a sleeping CPU with
//! an inter-processor interrupt, which on a nested or paravirtualised host costs more
//! than the work itself. Confining a sandbox to as many CPUs as its vCPU share (Lambda
//! gives one vCPU per 1,769 MB) keeps guest-init and the runtime on one run queue;
//! sandboxes go to the least-loaded CPUs so the host stays balanced.
//!
//! This is placement, not a limit: the CPU quota stays with the cgroup, and a sandbox
//! may widen its own affinity without gaining any CPU time.

use std::sync::{Arc, Mutex, PoisonError};

/// Memory that buys one vCPU in Lambda.
pub const MIB_PER_VCPU: u32 = 1769;

/// vCPUs Lambda gives a function of `memory_mib`: one per 1,769 MB, at least one.
pub fn vcpus_for_memory(memory_mib: u32) -> usize {
    memory_mib.div_ceil(MIB_PER_VCPU).max(1) as usize
}

/// Hands out CPUs to sandboxes, least-loaded first.
#[derive(Clone)]
pub struct CpuPlacer {
    inner: Arc<Placer>,
}

struct Placer {
    /// The host CPUs sandboxes may use.
    cpus: Vec<usize>,
    /// Live leases per entry of `cpus`.
    load: Mutex<Vec<u32>>,
}

/// CPUs granted to one sandbox; returned when dropped.
pub struct CpuLease {
    placer: Arc<Placer>,
    slots: Vec<usize>,
    cpus: Vec<usize>,
}

impl CpuPlacer {
    /// Places over `cpus` (host CPU numbers). Empty means "no placement".
    pub fn new(cpus: Vec<usize>) -> Self {
        let load = Mutex::new(vec![0; cpus.len()]);
        Self {
            inner: Arc::new(Placer { cpus, load }),
        }
    }

    /// Places over the CPUs this process may run on.
    pub fn from_own_affinity() -> Self {
        Self::new(own_affinity().unwrap_or_default())
    }

    pub fn cpus(&self) -> &[usize] {
        &self.inner.cpus
    }

    /// The `n` least-loaded CPUs (all of them when `n` covers the host), or `None`
    /// when there is nothing to place (no known CPUs, or `n` covers them all anyway).
    pub fn lease(&self, n: usize) -> Option<CpuLease> {
        let p = &self.inner;
        if n == 0 || n >= p.cpus.len() {
            return None;
        }
        let mut load = p.load.lock().unwrap_or_else(PoisonError::into_inner);
        let mut order: Vec<usize> = (0..p.cpus.len()).collect();
        // Stable: ties go to the lower CPU number.
        order.sort_by_key(|&i| load[i]);
        let slots: Vec<usize> = order.into_iter().take(n).collect();
        for &i in &slots {
            load[i] += 1;
        }
        let cpus = slots.iter().map(|&i| p.cpus[i]).collect();
        Some(CpuLease {
            placer: Arc::clone(p),
            slots,
            cpus,
        })
    }

    /// Live leases per CPU, in the order of `cpus()`.
    pub fn load(&self) -> Vec<u32> {
        self.inner
            .load
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl CpuLease {
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }
}

impl Drop for CpuLease {
    fn drop(&mut self) {
        let mut load = self
            .placer
            .load
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for &i in &self.slots {
            if let Some(l) = load.get_mut(i) {
                *l = l.saturating_sub(1);
            }
        }
    }
}

/// The CPUs the calling thread may run on.
pub fn own_affinity() -> std::io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the pointer and size describe `set`, which lives on this frame.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET reads bit `i` of `set`; `i` is below CPU_SETSIZE.
        .filter(|&i| unsafe { libc::CPU_ISSET(i, &set) })
        .collect())
}

/// Confines `pid` (and what it later forks) to `cpus`.
pub fn set_affinity(pid: i32, cpus: &[usize]) -> std::io::Result<()> {
    // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        if c >= libc::CPU_SETSIZE as usize {
            return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
        }
        // SAFETY: CPU_SET writes bit `c` of `set`; `c` is below CPU_SETSIZE.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: the pointer and size describe `set`, which lives on this frame.
    let r = unsafe { libc::sched_setaffinity(pid, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vcpus_follow_lambda_rule() {
        assert_eq!(vcpus_for_memory(128), 1);
        assert_eq!(vcpus_for_memory(1769), 1);
        assert_eq!(vcpus_for_memory(1770), 2);
        assert_eq!(vcpus_for_memory(10240), 6);
    }

    #[test]
    fn leases_go_to_least_loaded_and_return_on_drop() {
        let p = CpuPlacer::new(vec![0, 1, 2, 3]);
        let a = p.lease(1).unwrap();
        let b = p.lease(1).unwrap();
        let c = p.lease(2).unwrap();
        assert_eq!(a.cpus(), &[0]);
        assert_eq!(b.cpus(), &[1]);
        assert_eq!(c.cpus(), &[2, 3]);
        assert_eq!(p.load(), vec![1, 1, 1, 1]);
        drop(b);
        assert_eq!(p.lease(1).unwrap().cpus(), &[1]);
        assert_eq!(
            p.load(),
            vec![1, 0, 1, 1],
            "the temporary lease was returned"
        );
        drop((a, c));
        assert_eq!(p.load(), vec![0, 0, 0, 0]);
    }

    #[test]
    fn no_lease_when_the_share_covers_the_host() {
        let p = CpuPlacer::new(vec![0, 1]);
        assert!(p.lease(2).is_none());
        assert!(p.lease(0).is_none());
        assert!(CpuPlacer::new(Vec::new()).lease(1).is_none());
    }

    #[test]
    fn affinity_round_trips_for_a_child() {
        let own = own_affinity().unwrap();
        assert!(!own.is_empty());
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        set_affinity(pid, &own[..1]).unwrap();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let allowed = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap()
            .trim()
            .to_string();
        assert_eq!(allowed, own[0].to_string());
        let _ = child.kill();
        let _ = child.wait();
    }
}
