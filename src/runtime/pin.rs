//! Pinning shard threads to CPUs: only the CPUs this process may run on.
//!
//! The machine may have more CPUs than the process is allowed (taskset, cgroup cpusets,
//! container limits), and pinning to a forbidden CPU fails. So the CPU list comes from
//! the process's own affinity mask (`sched_getaffinity`), and shard `i` gets
//! `allowed[i % allowed.len()]`: with more shards than allowed CPUs they share them
//! round-robin.

use std::io;

/// The CPUs this thread may run on, in increasing order (never empty).
#[cfg(target_os = "linux")]
pub(crate) fn allowed_cpus() -> io::Result<Vec<usize>> {
    // SAFETY: cpu_set_t is a plain bit array, valid when zeroed.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable cpu_set_t of the size we pass; pid 0 means
    // the calling thread.
    let rc =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    let max = 8 * std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: CPU_ISSET only reads the bit array, and every index is below its size.
    let cpus: Vec<usize> = (0..max)
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect();
    if cpus.is_empty() {
        return Err(io::Error::other("the process's CPU affinity mask is empty"));
    }
    Ok(cpus)
}

/// The CPUs core_affinity knows of (no affinity masks elsewhere).
#[cfg(not(target_os = "linux"))]
pub(crate) fn allowed_cpus() -> io::Result<Vec<usize>> {
    let ids = core_affinity::get_core_ids()
        .ok_or_else(|| io::Error::other("cannot list the CPU cores"))?;
    if ids.is_empty() {
        return Err(io::Error::other("cannot list the CPU cores"));
    }
    Ok(ids.into_iter().map(|c| c.id).collect())
}

/// The CPU shard `shard` is pinned to, round-robin over `allowed`.
pub(crate) fn cpu_for(shard: usize, allowed: &[usize]) -> usize {
    allowed[shard % allowed.len()]
}

/// Pins the calling thread to `cpu`.
pub(crate) fn pin_current(cpu: usize) -> io::Result<()> {
    if core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
        Ok(())
    } else {
        Err(io::Error::other(format!(
            "cannot pin the thread to CPU {cpu}"
        )))
    }
}
