//! Privileged tests on this host's real kernel interfaces (a cgroup v1 hybrid: v1 memory,
//! cgroup2 without controllers at `/sys/fs/cgroup/unified`, PSI on). They create
//! `tidelet-test-<pid>-<nanos>` cgroups, move real processes in and check what the kernel
//! reports and how fast the triggers wake. Without root they skip, unless
//! `TIDELET_REQUIRE_PRIVILEGED` is set (CI), where they fail.
//!
//! The v2 `memory.events`/`memory.pressure` paths cannot run on the controllers they are meant
//! for here (no v2 memory controller); the unified hierarchy still has the same kernfs change
//! notification (`cgroup.events`) and per-cgroup PSI files (`memory.pressure`), which exercise
//! the same code.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::*;
use crate::cgroups::{self, Cgroups, MemoryFiles, Resources};

use crate::cgroups::testing::*;

const MIB: u64 = 1 << 20;

fn sample_until(
    cg: &dyn Cgroups,
    path: &str,
    limit: Duration,
    done: impl Fn(&MemorySample) -> bool,
) -> MemorySample {
    let deadline = Instant::now() + limit;
    loop {
        let s = cg.memory_sample(path).unwrap();
        if done(&s) || Instant::now() >= deadline {
            return s;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Bit 24 (`CAP_SYS_RESOURCE`, linux/capability.h) of this process's effective capabilities.
fn has_cap_sys_resource() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .unwrap()
        .trim();
    u64::from_str_radix(hex, 16).unwrap() & (1 << 24) != 0
}

fn spec() -> TriggerSpec {
    TriggerSpec {
        psi: None,
        psi_stall: Duration::from_millis(100),
        psi_window: Duration::from_secs(1),
        v1_threshold: None,
        v2_events: None,
    }
}

#[test]
fn v1_threshold_wakes_on_crossings_and_working_set_follows_a_hog() {
    if !privileged("v1_threshold_wakes_on_crossings_and_working_set_follows_a_hog") {
        return;
    }
    let cg = cgroups::detect(Path::new(MOUNT_ROOT), Path::new(MOUNTINFO)).unwrap();
    assert_eq!(
        cg.version(),
        cgroups::Version::V1,
        "this host is a cgroup v1 hybrid"
    );
    let base = unique_base();
    let _cleanup = Cleanup {
        cg: cg.as_ref(),
        base: base.clone(),
    };
    let path = format!("{base}/kubepods");
    // A limit well above the hog keeps the host safe and the hog alive.
    let limit = 512 * MIB;
    cg.apply(
        &path,
        &Resources {
            memory_limit: Some(limit as i64),
            ..Default::default()
        },
    )
    .unwrap();

    // tail keeps a newline-free input in memory: 64 MiB of anonymous memory, held until the
    // cgroup is killed.
    let mut child = gated("(head -c 64M /dev/zero; sleep 100) | tail > /dev/null");
    join(cg.as_ref(), &path, child.id());
    let before = cg.memory_sample(&path).unwrap();
    assert_eq!(before.capacity, limit, "{before:?}");
    assert!(before.usage < 32 * MIB, "an idle shell: {before:?}");

    let MemoryFiles::V1 {
        usage,
        event_control,
    } = cg.memory_files(&path)
    else {
        panic!("v1 host gives v1 files");
    };
    let mut s = spec();
    let bytes = before.usage + 32 * MIB;
    s.v1_threshold = Some(V1Threshold {
        usage_file: usage,
        event_control,
        bytes,
    });
    let (mut trig, warnings) = Triggers::open(&s);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(trig.active(), vec!["v1 threshold"]);
    assert_eq!(trig.v1_threshold(), Some(bytes));
    assert_eq!(trig.v1_floor(), Some(bytes));
    // Nothing crossed yet.
    assert!(trig.wait(Duration::from_millis(200)).timed_out());

    writeln!(child.stdin.as_mut().unwrap(), "go").unwrap();
    let start = Instant::now();
    let wake = trig.wait(Duration::from_secs(60));
    let took = start.elapsed();
    // Both thresholds are at `bytes`: either may be first to tell.
    assert!(
        (wake.threshold || wake.floor) && !wake.psi && !wake.events,
        "{wake:?} after {took:?}"
    );
    assert!(
        took < Duration::from_secs(30),
        "woken by the crossing, not the timeout: {took:?}"
    );
    let crossed = cg.memory_sample(&path).unwrap();
    eprintln!(
        "threshold {bytes}: woken after {took:?} (from the go), usage then {}",
        crossed.usage
    );
    assert!(
        crossed.usage >= bytes - 4 * MIB,
        "{crossed:?} vs threshold {bytes}"
    );

    let full = sample_until(cg.as_ref(), &path, Duration::from_secs(20), |s| {
        s.working_set >= before.working_set + 60 * MIB
    });
    assert!(
        full.working_set >= before.working_set + 60 * MIB && full.working_set <= full.usage,
        "working set follows the hog: {before:?} -> {full:?}"
    );
    assert_eq!(full.available(), limit - full.working_set);
    // Let the remaining upward events settle, then move the threshold below the usage: the
    // kernel fires the new one when usage falls under it, and the floor (still at `bytes`,
    // further down) when usage falls under that.
    while !trig.wait(Duration::from_millis(300)).timed_out() {}
    let lower = full.usage - 16 * MIB;
    trig.set_v1_threshold(lower).unwrap();
    assert_eq!(trig.v1_threshold(), Some(lower));
    assert!(
        trig.wait(Duration::from_millis(200)).timed_out(),
        "no crossing yet"
    );

    cg.kill_all(&base).unwrap();
    let start = Instant::now();
    let (mut moved, mut floor) = (false, false);
    while !(moved && floor) && start.elapsed() < Duration::from_secs(30) {
        let wake = trig.wait(Duration::from_secs(30));
        moved |= wake.threshold;
        floor |= wake.floor;
    }
    eprintln!(
        "downward crossings of {lower} and {bytes}: woken {:?} after kill_all",
        start.elapsed()
    );
    assert!(moved && floor, "moved {moved}, floor {floor}");
    let _ = child.wait();
    let after = sample_until(cg.as_ref(), &path, Duration::from_secs(5), |s| {
        s.usage < lower
    });
    assert!(after.usage < lower, "{after:?}");

    // A removed cgroup: the sample says gone, not a bogus value.
    cg.remove(&base).unwrap();
    let err = cg.memory_sample(&path).unwrap_err();
    assert!(err.is_gone(), "{err}");
    drop(trig);
}

/// Sets the flag when dropped, so that a failing assertion still stops the helper thread
/// (otherwise the scope would wait for it forever).
struct StopOnDrop<'a>(&'a AtomicBool);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A pod's cgroup removed again and again while it is sampled: every reading is either a
/// sample or an error that says the cgroup is gone, never another error or a panic.
#[test]
fn v1_sampling_a_cgroup_that_keeps_vanishing() {
    if !privileged("v1_sampling_a_cgroup_that_keeps_vanishing") {
        return;
    }
    let cg = cgroups::detect(Path::new(MOUNT_ROOT), Path::new(MOUNTINFO)).unwrap();
    let base = unique_base();
    let _cleanup = Cleanup {
        cg: cg.as_ref(),
        base: base.clone(),
    };
    let pod = format!("{base}/kubepods/pod1");
    let stop = AtomicBool::new(false);
    let (mut samples, mut gone) = (0u64, 0u64);
    let cycles = std::thread::scope(|scope| {
        let churn = scope.spawn(|| {
            let mut cycles = 0u64;
            while !stop.load(Ordering::Relaxed) {
                cg.apply(&pod, &Resources::default()).unwrap();
                cg.remove(&pod).unwrap();
                cycles += 1;
            }
            cycles
        });
        let stop_guard = StopOnDrop(&stop);
        let deadline = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < deadline {
            match cg.memory_sample(&pod) {
                Ok(s) => {
                    assert!(s.working_set <= s.usage && s.capacity == u64::MAX, "{s:?}");
                    samples += 1;
                }
                Err(e) => {
                    assert!(e.is_gone(), "only `gone` errors: {e}");
                    gone += 1;
                }
            }
        }
        drop(stop_guard);
        churn.join().unwrap()
    });
    eprintln!("{cycles} create/remove cycles: {samples} samples, {gone} gone");
    assert!(
        cycles > 10 && samples > 0 && gone > 0,
        "{cycles} {samples} {gone}"
    );
}

#[test]
fn psi_trigger_on_host_memory_and_fallback_for_a_missing_file() {
    if !privileged("psi_trigger_on_host_memory_and_fallback_for_a_missing_file") {
        return;
    }
    let host = Path::new("/proc/pressure/memory");
    assert!(host.exists(), "this host has PSI");
    let mut s = spec();
    s.psi = Some(host.to_path_buf());
    // A 1 s window registers only if the NUL terminator is written (see open_psi): without
    // it the kernel would read a 100 ms window and refuse it.
    let (mut trig, warnings) = Triggers::open(&s);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(trig.active(), vec!["psi"]);
    // Without CAP_SYS_RESOURCE (as in this test container) the kernel takes 2 s multiples only.
    let want = if has_cap_sys_resource() { 1 } else { 2 };
    assert_eq!(trig.psi_window(), Some(Duration::from_secs(want)));
    let start = Instant::now();
    let wake = trig.wait(Duration::from_millis(300));
    assert!(start.elapsed() < Duration::from_secs(2), "{wake:?}");
    assert!(trig.take_lost().is_empty());
    assert_eq!(trig.active(), vec!["psi"]);

    // Older kernels have no /proc/pressure: one warning naming the source and the path.
    let missing = Path::new("/proc/pressure/tidelet-missing");
    s.psi = Some(missing.to_path_buf());
    let (mut trig, warnings) = Triggers::open(&s);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(warnings[0].source, "psi");
    assert_eq!(warnings[0].path, missing);
    assert!(warnings[0]
        .to_string()
        .contains("/proc/pressure/tidelet-missing"));
    assert!(trig.active().is_empty());
    assert!(trig.wait(Duration::from_millis(50)).timed_out());
}

/// The unified hierarchy's kernfs files behave as v2 `memory.events` and `memory.pressure` do:
/// `cgroup.events` changes when the cgroup becomes (un)populated, and a removed cgroup's open
/// files report POLLERR, which must drop the source rather than spin.
#[test]
fn kernfs_events_and_cgroup_psi_wake_and_go_away_with_the_cgroup() {
    if !privileged("kernfs_events_and_cgroup_psi_wake_and_go_away_with_the_cgroup") {
        return;
    }
    let unified = Path::new(MOUNT_ROOT).join("unified");
    let cg = cgroups::V2::with_controllers(&unified, &[]);
    let base = unique_base();
    let _cleanup = Cleanup {
        cg: &cg,
        base: base.clone(),
    };
    let path = format!("{base}/kubepods");
    cg.apply(&path, &Resources::default()).unwrap();
    let MemoryFiles::V2 { events, pressure } = cg.memory_files(&path) else {
        panic!("v2 files");
    };
    let dir = unified.join(&path);
    assert_eq!(pressure, dir.join("memory.pressure"));

    // No memory controller here: the real memory.events is missing, and says so.
    let mut s = spec();
    s.v2_events = Some(events.clone());
    let (_t, warnings) = Triggers::open(&s);
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert_eq!(
        (warnings[0].source, &warnings[0].path),
        ("memory.events", &events)
    );

    s.psi = Some(pressure);
    s.v2_events = Some(dir.join("cgroup.events"));
    let (mut trig, warnings) = Triggers::open(&s);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(trig.active(), vec!["psi", "memory.events"]);
    // Armed by the first read: quiet until something changes.
    assert!(trig.wait(Duration::from_millis(200)).timed_out());

    let mut child = Command::new("sleep").arg("100").spawn().unwrap();
    join(&cg, &path, child.id());
    let start = Instant::now();
    let wake = trig.wait(Duration::from_secs(30));
    assert!(wake.events, "populated: {wake:?}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    // Re-armed: no busy loop on the same change.
    assert!(trig.wait(Duration::from_millis(200)).timed_out());

    cg.kill_all(&base).unwrap();
    let _ = child.wait();
    let wake = trig.wait(Duration::from_secs(30));
    assert!(wake.events, "unpopulated: {wake:?}");
    assert!(trig.take_lost().is_empty());

    // Remove the cgroup under the open files: each source wakes once and is dropped.
    cg.remove(&base).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !trig.active().is_empty() && Instant::now() < deadline {
        let _ = trig.wait(Duration::from_millis(500));
    }
    assert!(trig.active().is_empty(), "{:?}", trig.active());
    let lost = trig.take_lost();
    for w in &lost {
        assert!(w.reason.contains("went away"), "{w}");
        assert!(w.path.starts_with(&dir), "{w}");
    }
    let mut lost: Vec<&str> = lost.iter().map(|w| w.source).collect();
    lost.sort_unstable();
    assert_eq!(lost, vec!["memory.events", "psi"]);
    let start = Instant::now();
    assert!(trig.wait(Duration::from_millis(100)).timed_out());
    assert!(
        start.elapsed() >= Duration::from_millis(100),
        "a sleep, not a spin"
    );
}

/// Unmounts the test's tmpfs even when an assertion fails.
struct Unmount<'a>(&'a Path);

impl Drop for Unmount<'_> {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(self.0, nix::mount::MntFlags::MNT_DETACH);
    }
}

#[test]
fn fs_sample_of_a_sized_tmpfs() {
    if !privileged("fs_sample_of_a_sized_tmpfs") {
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let mnt = t.path();
    nix::mount::mount(
        Some("tmpfs"),
        mnt,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=16m,nr_inodes=1000"),
    )
    .unwrap();
    let _umount = Unmount(mnt);
    let empty = fs_sample(mnt).unwrap();
    assert_eq!(empty.capacity, 16 * MIB, "{empty:?}");
    assert_eq!(empty.available, 16 * MIB, "{empty:?}");
    assert_eq!(empty.inodes, 1000, "{empty:?}");
    std::fs::write(mnt.join("data"), vec![7u8; 4 << 20]).unwrap();
    let used = fs_sample(mnt).unwrap();
    assert_eq!(used.available, 12 * MIB, "{used:?}");
    assert_eq!(used.inodes_free, empty.inodes_free - 1, "{used:?}");
}
