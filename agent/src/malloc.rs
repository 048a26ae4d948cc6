//! The C allocator's policy for tidelet's long-lived processes (the agent, the supervisors).
//!
//! glibc's defaults suit a server with many busy threads, not an agent that must come back to
//! its idle footprint: every thread that allocates gets its own arena (up to 8 per core: the
//! tokio workers and every blocking-pool thread), each keeps what it once held, and after a
//! large buffer is freed the mmap threshold rises (up to 32 MiB), so later large buffers are
//! carved from those heaps instead of being mapped and unmapped. [`tune`] sets one arena and
//! fixed thresholds; [`trim`] gives free pages inside the heap back (glibc only returns the
//! top of the heap by itself). Other C libraries: both are no-ops.

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
