//! The C allocator's policy for tidelet's long-lived processes (the agent, the supervisors).
//!
//! glibc's defaults suit a server with many busy threads, not an agent that must come back to
//! its idle footprint: every thread that allocates gets its own arena (up to 8 per core: the
//! tokio workers and every blocking-pool thread), each keeps what it once held, and after a
//! large buffer is freed the mmap threshold rises (up to 32 MiB), so later large buffers are
//! carved from those heaps instead of being mapped and unmapped. [`tune`] sets one arena and
//! fixed thresholds; [`trim`] gives free pages inside the heap back (glibc only returns the
//! top of the heap by itself); [`without_thread_caches`] turns off the per-thread caches,
//! whose chunks a trim cannot return. Other C libraries: all are no-ops.

/// One arena: the agent's threads allocate little and rarely at once (and glibc's per-thread
/// cache serves most small allocations without the arena's lock), so one heap costs no
/// measurable time and keeps all free memory in one place where a trim finds it. Fixed
/// thresholds (the values glibc starts from) turn its dynamic raise off: a buffer of 128 KiB
/// or more is mapped and unmapped, and a free top of the heap above 128 KiB goes back.
/// Call first thing in `main`, before any thread starts.
pub fn tune() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes the allocator's parameters; called before any thread
    // exists, so no allocation races with it.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
    }
}

/// Return the free pages of the heap to the kernel: after start-up (a supervisor's set-up)
/// and after a pod is torn down, when what its start and teardown allocated is free but
/// scattered between live allocations, where glibc would keep it resident.
pub fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of the allocator; safe from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The glibc tunable that turns its per-thread caches (tcache) off.
pub const NO_THREAD_CACHES: &str = "glibc.malloc.tcache_count=0";

/// Run this process without glibc's per-thread caches: for the agent, whose RSS must come
/// back near its idle start once a churn of pods has ended (issue 16).
///
/// Every thread keeps up to 7 freed chunks of each of 64 small sizes for itself. Those chunks
/// count as in use for the arena, so `malloc_trim` cannot return them, and scattered over the
/// heap they keep whole pages resident: after a 20-pod churn the agent's anonymous memory
/// stayed 1.48 MiB above idle (trimmed), 0.69 MiB without the caches (issue 16's notes in
/// docs/benchmarks.md). The agent allocates too little, too rarely, for the caches' speed
/// to show (its start-up bench is measured with them off).
///
/// glibc reads tunables only from `GLIBC_TUNABLES` when a program starts, and `mallopt` has
/// no setting for the cache, so when the environment does not already set the cache's size
/// this adds the tunable and executes the same program again (same pid, same arguments)
/// before any thread exists; a supervisor the agent starts inherits it (glibc ends each
/// `name=value` with a NUL as it parses the variable in place, so a process the agent starts
/// sees the first tunable only: the caller's, when there are two). A caller's own
/// `tcache_count` is kept. If the exec fails (the binary was replaced since it started) the
/// agent runs on with glibc's defaults. Under valgrind, set `GLIBC_TUNABLES` as above first
/// (scripts/layout/profile.sh does): valgrind does not follow the exec by default.
pub fn without_thread_caches() {
    #[cfg(target_env = "gnu")]
    {
        use std::os::unix::process::CommandExt;
        let current = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        let Some(tunables) = with_tunable(&current, NO_THREAD_CACHES) else {
            return;
        };
        let mut args = std::env::args_os();
        let Some(arg0) = args.next() else { return };
        // The path `/proc/self/exe` names, not that link itself: the kernel names the process
        // (`comm`: ps, pgrep, systemd's status) after the file it executes.
        let err = match std::env::current_exe() {
            Ok(exe) => std::process::Command::new(exe)
                .arg0(arg0)
                .args(args)
                .env("GLIBC_TUNABLES", tunables)
                .exec(),
            Err(e) => e,
        };
        eprintln!("tidelet: cannot restart with {NO_THREAD_CACHES} ({err}); running with glibc's defaults");
    }
}

/// `current` (a `GLIBC_TUNABLES` value: `name=value` pairs joined by `:`) with `tunable`
/// added, or `None` when it sets that tunable's name already (pure).
pub fn with_tunable(current: &str, tunable: &str) -> Option<String> {
    let name = tunable.split('=').next().unwrap_or(tunable);
    if current
        .split(':')
        .any(|t| t.split('=').next() == Some(name))
    {
        return None;
    }
    Some(if current.is_empty() {
        tunable.to_string()
    } else {
        format!("{current}:{tunable}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tunable_is_added_once_and_a_callers_own_value_kept() {
        let t = NO_THREAD_CACHES;
        let cases: &[(&str, Option<&str>)] = &[
            ("", Some(t)),
            (
                "glibc.malloc.arena_max=1",
                Some("glibc.malloc.arena_max=1:glibc.malloc.tcache_count=0"),
            ),
            ("glibc.malloc.tcache_count=0", None),
            ("glibc.malloc.tcache_count=7", None),
            ("glibc.malloc.arena_max=1:glibc.malloc.tcache_count=3", None),
            (
                "glibc.malloc.tcache_count_x=1",
                Some("glibc.malloc.tcache_count_x=1:glibc.malloc.tcache_count=0"),
            ),
        ];
        for (current, want) in cases {
            assert_eq!(
                with_tunable(current, t).as_deref(),
                *want,
                "GLIBC_TUNABLES={current:?}"
            );
        }
    }
}
