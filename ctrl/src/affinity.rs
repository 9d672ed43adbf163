//! Keeps vipd's control threads (tokio workers, health checks, BGP speaker, neighbour service,
//! admin socket, the DPDK EAL's own threads) off the CPUs of `[dataplane] cpus`, so they never
//! preempt a busy-polling lcore.
//!
//! Affinity is per thread on Linux and a new thread inherits its creator's, so confining every
//! thread that exists once the engine has started (listed in `/proc/self/task`) confines the
//! threads started later too. The lcore threads (named `vipd-lcore-N`) pin themselves before the
//! engine reports them started, and are left alone. The EAL pins the thread that calls
//! `rte_eal_init` to its main lcore and its control threads to the process's CPUs minus its
//! `-l` set: both are overridden here, since the EAL does not know `[dataplane] cpus`.

#![allow(unsafe_code)] // sched_getaffinity / sched_setaffinity, in `get_affinity` / `set_affinity`

use std::collections::BTreeSet;
use std::io;

/// Prefix of the lcore thread names (dataplane/src/engine.rs).
pub const LCORE_THREAD_PREFIX: &str = "vipd-lcore-";

/// Where the control threads run, as decided by [`control_cpus`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    /// No `[dataplane] cpus`: control threads keep the process's CPUs.
    Unpinned(Vec<usize>),
    /// Control threads run on these CPUs (allowed minus lcore CPUs, never empty).
    Apart(Vec<usize>),
    /// The lcore CPUs cover every allowed CPU: control threads share them.
    Shared(Vec<usize>),
}

impl Placement {
    /// The CPUs the control threads run on.
    pub fn cpus(&self) -> &[usize] {
        match self {
            Placement::Unpinned(c) | Placement::Apart(c) | Placement::Shared(c) => c,
        }
    }
}

/// The control CPUs for a process allowed on `allowed` whose lcores are pinned to `lcore_cpus`.
pub fn control_cpus(allowed: &[usize], lcore_cpus: &[usize]) -> Placement {
    let allowed: BTreeSet<usize> = allowed.iter().copied().collect();
    let all: Vec<usize> = allowed.iter().copied().collect();
    if lcore_cpus.is_empty() {
        return Placement::Unpinned(all);
    }
    let lcores: BTreeSet<usize> = lcore_cpus.iter().copied().collect();
    let free: Vec<usize> = allowed.difference(&lcores).copied().collect();
    if free.is_empty() {
        Placement::Shared(all)
    } else {
        Placement::Apart(free)
    }
}

/// The CPUs the calling thread may run on (call it before anything pins this thread).
pub fn allowed_cpus() -> io::Result<Vec<usize>> {
    let set = get_affinity()?;
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET only reads `set`, and cpu < CPU_SETSIZE is in bounds.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect())
}

/// Restricts every thread of the process except the lcore threads to `cpus`. Returns how many
/// threads were moved. Threads that exit meanwhile are skipped.
pub fn confine_control_threads(cpus: &[usize]) -> io::Result<usize> {
    confine_threads(cpus, true)
}

/// Lets every thread of the process, the lcore threads included, run on `cpus`: for lcores
/// that `[dataplane] cpus` does not pin, which would otherwise all stay on the CPU the EAL
/// pinned their creator to.
pub fn spread_all_threads(cpus: &[usize]) -> io::Result<usize> {
    confine_threads(cpus, false)
}

fn confine_threads(cpus: &[usize], skip_lcores: bool) -> io::Result<usize> {
    let mut done: BTreeSet<libc::pid_t> = BTreeSet::new();
    let mut moved = 0;
    // Another pass while new threads show up: one created during a pass by a thread not yet
    // confined may have inherited the old affinity.
    loop {
        let mut moved_any = false;
        for entry in std::fs::read_dir("/proc/self/task")? {
            let entry = entry?;
            let Some(tid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<libc::pid_t>().ok())
            else {
                continue;
            };
            if done.contains(&tid) {
                continue;
            }
            let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
            if skip_lcores && comm.trim_end().starts_with(LCORE_THREAD_PREFIX) {
                done.insert(tid);
                continue;
            }
            match set_affinity(tid, cpus) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {} // exited meanwhile
                Err(e) => {
                    return Err(io::Error::new(
                        e.kind(),
                        format!(
                            "cannot set the CPU affinity of thread {tid} ({}): {e}",
                            comm.trim_end()
                        ),
                    ))
                }
            }
            done.insert(tid);
            moved += 1;
            moved_any = true;
        }
        if !moved_any {
            return Ok(moved);
        }
    }
}

fn get_affinity() -> io::Result<libc::cpu_set_t> {
    // SAFETY: cpu_set_t is plain data (all-zero is the empty set); sched_getaffinity writes at
    // most size_of::<cpu_set_t>() bytes into it.
    let (ret, set) = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        let ret = libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set);
        (ret, set)
    };
    if ret == 0 {
        Ok(set)
    } else {
        Err(io::Error::last_os_error())
    }
}

fn set_affinity(tid: libc::pid_t, cpus: &[usize]) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data (all-zero is the empty set); CPU_SET is only called with
    // cpu < CPU_SETSIZE; sched_setaffinity reads size_of::<cpu_set_t>() bytes of `set`.
    let ret = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &cpu in cpus.iter().filter(|&&c| c < libc::CPU_SETSIZE as usize) {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_cpus_are_the_allowed_ones_minus_the_lcore_ones() {
        assert_eq!(
            control_cpus(&[0, 1, 2, 3], &[2, 3]),
            Placement::Apart(vec![0, 1])
        );
        assert_eq!(control_cpus(&[0, 1], &[1]), Placement::Apart(vec![0]));
        // An lcore CPU outside the allowed set takes nothing away.
        assert_eq!(control_cpus(&[0, 1], &[7]), Placement::Apart(vec![0, 1]));
        assert_eq!(
            control_cpus(&[0, 1], &[0, 1]),
            Placement::Shared(vec![0, 1])
        );
        assert_eq!(control_cpus(&[0, 1], &[]), Placement::Unpinned(vec![0, 1]));
    }

    #[test]
    fn the_calling_thread_has_some_allowed_cpu() {
        let cpus = allowed_cpus().unwrap();
        assert!(!cpus.is_empty());
    }
}
