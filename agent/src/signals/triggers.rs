//! Pressure triggers: wake the eviction monitor as soon as the kernel reports memory pressure,
//! instead of at its next periodic check (which stays as the safety net).
//!
//! Three sources, each optional, multiplexed in one `poll(2)`:
//! - PSI (`/proc/pressure/memory` on the host, or a v2 cgroup's `memory.pressure`): a trigger
//!   `some <stall_us> <window_us>` written to the file, `POLLPRI` when tasks stalled on memory
//!   for that long within the window; `POLLERR` means the file (its cgroup) went away.
//! - cgroup v1 memory thresholds: an eventfd registered through `cgroup.event_control` with
//!   the cgroup's `memory.usage_in_bytes`; the kernel signals it whenever usage crosses the
//!   value, upwards or downwards, and once more when the cgroup is removed.
//! - cgroup v2 `memory.events` (kernfs): `POLLPRI|POLLERR` when a counter (`high`, `max`,
//!   `oom`, `oom_kill`) changes; the file must be read again to re-arm.
//!
//! `Triggers::open` never fails: a source that cannot be set up (a kernel without PSI, a file
//! that is missing, a refused registration) becomes a `TriggerWarning` for the caller to log
//! once, and the other sources still work. A source that dies later (its cgroup removed) wakes
//! the monitor once, is dropped and is reported by `take_lost`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::{io_is_gone, SignalError, MAX_FILE};
use crate::cgroups::MemoryFiles;

/// The kernel accepts PSI trigger windows from 500 ms to 10 s.
pub const PSI_WINDOW_MIN: Duration = Duration::from_millis(500);
pub const PSI_WINDOW_MAX: Duration = Duration::from_secs(10);
/// Defaults for `TriggerSpec::for_cgroup`: 100 ms of "some" stall within 1 s.
pub const DEFAULT_PSI_STALL: Duration = Duration::from_millis(100);
pub const DEFAULT_PSI_WINDOW: Duration = Duration::from_secs(1);

const PSI: &str = "psi";
/// Lost-source reports kept until `take_lost`.
const MAX_LOST: usize = 8;
const THRESHOLD: &str = "v1 threshold";
const EVENTS: &str = "memory.events";

/// A v1 memory threshold: signal when `usage_file` crosses `bytes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Threshold {
    /// The cgroup's `memory.usage_in_bytes`.
    pub usage_file: PathBuf,
    /// The same cgroup's `cgroup.event_control`.
    pub event_control: PathBuf,
    pub bytes: u64,
}

/// Which triggers to set up; `None` leaves a source out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerSpec {
    /// `/proc/pressure/memory` (host, v1) or `<kubepods>/memory.pressure` (v2).
    pub psi: Option<PathBuf>,
    /// "some" stall time that fires the PSI trigger ...
    pub psi_stall: Duration,
    /// ... within this window (`PSI_WINDOW_MIN..=PSI_WINDOW_MAX`).
    pub psi_window: Duration,
    pub v1_threshold: Option<V1Threshold>,
    /// `<kubepods>/memory.events` (v2).
    pub v2_events: Option<PathBuf>,
}

impl Default for TriggerSpec {
    /// No sources; PSI stall and window at `DEFAULT_PSI_STALL` / `DEFAULT_PSI_WINDOW`.
    fn default() -> TriggerSpec {
        TriggerSpec {
            psi: None,
            psi_stall: DEFAULT_PSI_STALL,
            psi_window: DEFAULT_PSI_WINDOW,
            v1_threshold: None,
            v2_events: None,
        }
    }
}

impl TriggerSpec {
    /// The usual set for the pods' top cgroup, from `Cgroups::memory_files`: on v1 the host's
    /// PSI file (`host_psi`, normally `/proc/pressure/memory`) and a usage threshold at
    /// `v1_bytes`; on v2 the cgroup's own `memory.pressure` and `memory.events`. PSI fires on
    /// 100 ms of stall within 1 s.
    pub fn for_cgroup(files: &MemoryFiles, host_psi: &Path, v1_bytes: u64) -> TriggerSpec {
        let mut spec = TriggerSpec::default();
        match files {
            MemoryFiles::V1 {
                usage,
                event_control,
            } => {
                spec.psi = Some(host_psi.to_path_buf());
                spec.v1_threshold = Some(V1Threshold {
                    usage_file: usage.clone(),
                    event_control: event_control.clone(),
                    bytes: v1_bytes,
                });
            }
            MemoryFiles::V2 { events, pressure } => {
                spec.psi = Some(pressure.clone());
                spec.v2_events = Some(events.clone());
            }
        }
        spec
    }
}

/// A source that could not be set up (from `open`) or that went away (from `take_lost`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TriggerWarning {
    /// `"psi"`, `"v1 threshold"` or `"memory.events"`.
    pub source: &'static str,
    pub path: PathBuf,
    pub reason: String,
}

impl std::fmt::Display for TriggerWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "memory pressure trigger {} at {} unavailable: {}; relying on the other triggers \
             and the periodic check",
            self.source,
            self.path.display(),
            self.reason
        )
    }
}

/// Why `Triggers::wait` returned; all false means the timeout passed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wake {
    pub psi: bool,
    /// The v1 threshold that follows the file cache (`set_v1_threshold`).
    pub threshold: bool,
    pub events: bool,
    /// The fixed v1 threshold at the spec's bytes (see `Triggers`).
    pub floor: bool,
}

impl Wake {
    pub fn timed_out(&self) -> bool {
        !(self.psi || self.threshold || self.events || self.floor)
    }
}

/// The PSI trigger text for `stall` within `window` (microseconds), checked against the
/// kernel's rules: the window within `PSI_WINDOW_MIN..=PSI_WINDOW_MAX`, the stall above 0 and
/// not longer than the window.
pub fn psi_trigger_line(stall: Duration, window: Duration) -> Result<String, SignalError> {
    let invalid = |field, value: Duration, reason| SignalError::Malformed {
        file: "psi trigger".into(),
        field,
        value: format!("{value:?}"),
        reason,
    };
    if !(PSI_WINDOW_MIN..=PSI_WINDOW_MAX).contains(&window) {
        return Err(invalid("window", window, "the kernel accepts 500ms to 10s"));
    }
    if stall.as_micros() == 0 || stall > window {
        return Err(invalid(
            "stall",
            stall,
            "must be at least 1us and at most the window",
        ));
    }
    Ok(format!("some {} {}", stall.as_micros(), window.as_micros()))
}

/// Without `CAP_SYS_RESOURCE` (Linux 6.5+ lets such callers register triggers at all) the
/// kernel only accepts windows that are whole multiples of 2 s. This gives the stall and
/// window to retry with: the window rounded up to the next multiple (at most
/// `PSI_WINDOW_MAX`) and the stall scaled to keep its share of the window; `None` when the
/// window already is such a multiple (then a refusal has another cause).
pub fn psi_unprivileged_fallback(
    stall: Duration,
    window: Duration,
) -> Option<(Duration, Duration)> {
    const STEP: u128 = 2_000_000;
    let window_us = window.as_micros();
    if window_us.is_multiple_of(STEP) {
        return None;
    }
    let new_window_us = window_us
        .div_ceil(STEP)
        .saturating_mul(STEP)
        .min(PSI_WINDOW_MAX.as_micros());
    let new_stall_us = (stall.as_micros() * new_window_us)
        .div_ceil(window_us.max(1))
        .clamp(1, new_window_us);
    let us = |v: u128| Duration::from_micros(v as u64);
    Some((us(new_stall_us), us(new_window_us)))
}

/// An open kernfs/procfs file that is polled for `POLLPRI`.
#[derive(Debug)]
struct Watched {
    file: File,
    path: PathBuf,
}

#[derive(Debug)]
struct Threshold {
    efd: EventFd,
    bytes: u64,
}

/// The live trigger sources; their file descriptors close on drop, which also unregisters
/// the kernel-side triggers.
///
/// On v1 two usage thresholds are registered at the spec's bytes (a little below the usage at
/// which the working set would meet the eviction threshold with no file cache): one that the
/// monitor moves as the file cache changes (`set_v1_threshold`, kubelet's placement), and a
/// fixed one, the floor. The moving one is placed for the file cache of the last look: when
/// the cache shrinks before the next look, it sits above the crossing, which then wakes nobody
/// (seen in scripts/bench-eviction.sh: decisions 30-70 ms late, from the 100 ms timer). Usage
/// is never below the working set, so the floor fires before any crossing, never after; with
/// a large file cache it fires early, once.
#[derive(Debug)]
pub struct Triggers {
    psi: Option<Watched>,
    /// The PSI window the kernel accepted (see `psi_unprivileged_fallback`).
    psi_window: Option<Duration>,
    threshold: Option<Threshold>,
    floor: Option<Threshold>,
    /// Where v1 thresholds are registered (kept even if the first registration failed, so
    /// `set_v1_threshold` can retry).
    v1_files: Option<(PathBuf, PathBuf)>,
    events: Option<Watched>,
    lost: Vec<TriggerWarning>,
}

impl Triggers {
    /// Set up every source `spec` names. Never fails: each source that cannot be set up is
    /// one warning naming the source, the path and the reason.
    pub fn open(spec: &TriggerSpec) -> (Triggers, Vec<TriggerWarning>) {
        let mut warnings = Vec::new();
        let mut trig = Triggers {
            psi: None,
            psi_window: None,
            threshold: None,
            floor: None,
            v1_files: None,
            events: None,
            lost: Vec::new(),
        };
        if let Some(path) = &spec.psi {
            match open_psi(path, spec.psi_stall, spec.psi_window) {
                Ok((w, window)) => {
                    trig.psi = Some(w);
                    trig.psi_window = Some(window);
                }
                Err(reason) => warnings.push(warning(PSI, path, reason)),
            }
        }
        if let Some(t) = &spec.v1_threshold {
            trig.v1_files = Some((t.usage_file.clone(), t.event_control.clone()));
            let register = || register_v1(&t.usage_file, &t.event_control, t.bytes);
            match register().and_then(|moving| Ok((moving, register()?))) {
                Ok((moving, floor)) => {
                    trig.threshold = Some(Threshold {
                        efd: moving,
                        bytes: t.bytes,
                    });
                    trig.floor = Some(Threshold {
                        efd: floor,
                        bytes: t.bytes,
                    });
                }
                Err(reason) => warnings.push(warning(THRESHOLD, &t.event_control, reason)),
            }
        }
        if let Some(path) = &spec.v2_events {
            match open_events(path) {
                Ok(w) => trig.events = Some(w),
                Err(reason) => warnings.push(warning(EVENTS, path, reason)),
            }
        }
        tracing::debug!(active = ?trig.active(), warnings = warnings.len(), "memory triggers open");
        (trig, warnings)
    }

    /// Which sources are live, for a start-up log line.
    pub fn active(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.psi.is_some() {
            out.push(PSI);
        }
        if self.threshold.is_some() {
            out.push(THRESHOLD);
        }
        if self.events.is_some() {
            out.push(EVENTS);
        }
        out
    }

    /// The window of the live PSI trigger: the spec's, or a multiple of 2 s where the kernel
    /// refused it for lack of `CAP_SYS_RESOURCE`.
    pub fn psi_window(&self) -> Option<Duration> {
        self.psi.as_ref().and(self.psi_window)
    }

    /// The bytes of the registered v1 threshold, if one is live.
    pub fn v1_threshold(&self) -> Option<u64> {
        self.threshold.as_ref().map(|t| t.bytes)
    }

    /// The bytes of the fixed v1 threshold (the floor), if one is live.
    pub fn v1_floor(&self) -> Option<u64> {
        self.floor.as_ref().map(|t| t.bytes)
    }

    /// Sources that went away since the last call (their cgroup was removed), each once.
    pub fn take_lost(&mut self) -> Vec<TriggerWarning> {
        std::mem::take(&mut self.lost)
    }

    /// Register a new v1 threshold at `bytes` in place of the current one (the kernel cannot
    /// move a threshold: a new eventfd is registered, then the old one is closed, which
    /// unregisters it). On failure the old threshold stays. Fails when the spec had no v1
    /// threshold.
    pub fn set_v1_threshold(&mut self, bytes: u64) -> Result<(), SignalError> {
        let Some((usage, control)) = &self.v1_files else {
            return Err(SignalError::Trigger {
                source_name: THRESHOLD,
                path: PathBuf::new(),
                reason: "no v1 threshold in the trigger spec".into(),
            });
        };
        let efd = register_v1(usage, control, bytes).map_err(|reason| SignalError::Trigger {
            source_name: THRESHOLD,
            path: control.clone(),
            reason,
        })?;
        self.threshold = Some(Threshold { efd, bytes });
        tracing::debug!(bytes, file = %control.display(), "v1 memory threshold moved");
        Ok(())
    }

    /// Block in `poll(2)` until a source fires or `timeout` passes (signals interrupting the
    /// poll are retried with the time left). Drains the eventfd and re-arms `memory.events`
    /// before returning. Without live sources this is a plain sleep.
    pub fn wait(&mut self, timeout: Duration) -> Wake {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (result, revents) = self.poll_once(left);
            match result {
                Ok(_) => {
                    let wake = self.handle(revents);
                    if !wake.timed_out() || Instant::now() >= deadline {
                        return wake;
                    }
                    // Nothing of interest (e.g. a woken poll with no flag we asked for).
                }
                Err(Errno::EINTR) => {}
                Err(e) => {
                    // EINVAL/ENOMEM: nothing to retry usefully; do not spin.
                    tracing::warn!(error = %e, "poll on memory triggers failed");
                    std::thread::sleep(left);
                    return Wake::default();
                }
            }
            if Instant::now() >= deadline {
                return Wake::default();
            }
        }
    }

    /// One `poll(2)`; the revents per source (psi, threshold, events, floor).
    fn poll_once(&self, left: Duration) -> (nix::Result<i32>, [Option<PollFlags>; 4]) {
        // Round up: a 0.4 ms remainder must not turn into a busy 0 ms poll.
        let ms = left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
        let mut fds = Vec::with_capacity(4);
        let mut slots = [None; 4];
        if let Some(w) = &self.psi {
            slots[0] = Some(fds.len());
            fds.push(PollFd::new(w.file.as_fd(), PollFlags::POLLPRI));
        }
        if let Some(t) = &self.threshold {
            slots[1] = Some(fds.len());
            fds.push(PollFd::new(t.efd.as_fd(), PollFlags::POLLIN));
        }
        if let Some(w) = &self.events {
            slots[2] = Some(fds.len());
            fds.push(PollFd::new(w.file.as_fd(), PollFlags::POLLPRI));
        }
        if let Some(t) = &self.floor {
            slots[3] = Some(fds.len());
            fds.push(PollFd::new(t.efd.as_fd(), PollFlags::POLLIN));
        }
        let result = poll(&mut fds, timeout);
        let mut revents = [None; 4];
        if result.is_ok() {
            for (i, slot) in slots.iter().enumerate() {
                revents[i] = slot
                    .and_then(|s| fds[s].revents())
                    .filter(|r| !r.is_empty());
            }
        }
        (result, revents)
    }

    fn handle(&mut self, revents: [Option<PollFlags>; 4]) -> Wake {
        let gone = PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL;
        let mut wake = Wake::default();
        if let Some(r) = revents[0] {
            wake.psi = true;
            if r.intersects(gone) {
                // A PSI trigger never reports POLLERR while its file exists.
                self.lose_psi("the file went away (POLLERR)".into());
            }
        }
        if let Some(r) = revents[1] {
            wake.threshold = true;
            if let Some(t) = &self.threshold {
                drain(&t.efd);
            }
            if r.intersects(gone) {
                self.lose_threshold(format!("poll reported {r:?}"));
            }
        }
        if let Some(r) = revents[3] {
            wake.floor = true;
            if let Some(t) = &self.floor {
                drain(&t.efd);
            }
            if r.intersects(gone) {
                self.lose_threshold(format!("poll reported {r:?}"));
            }
        }
        if revents[2].is_some() {
            // kernfs reports a change as POLLPRI|POLLERR; reading re-arms. A read that fails
            // (ENODEV) means the cgroup was removed.
            wake.events = true;
            let failed = self.events.as_mut().and_then(|w| rearm(&mut w.file).err());
            if let Some(e) = failed {
                let reason = if io_is_gone(&e) {
                    format!("the cgroup went away ({e})")
                } else {
                    format!("re-reading failed: {e}")
                };
                self.lose_events(reason);
            }
        }
        wake
    }

    fn lose_psi(&mut self, reason: String) {
        if let Some(w) = self.psi.take() {
            self.lost_source(PSI, &w.path, reason);
        }
    }

    fn lose_threshold(&mut self, reason: String) {
        // The floor is on the same cgroup: it goes with it.
        self.floor = None;
        if self.threshold.take().is_some() {
            let path = self
                .v1_files
                .as_ref()
                .map(|f| f.1.clone())
                .unwrap_or_default();
            self.lost_source(THRESHOLD, &path, reason);
        }
    }

    fn lose_events(&mut self, reason: String) {
        if let Some(w) = self.events.take() {
            self.lost_source(EVENTS, &w.path, reason);
        }
    }

    fn lost_source(&mut self, source: &'static str, path: &Path, reason: String) {
        let w = warning(source, path, reason);
        tracing::warn!(source, path = %path.display(), reason = %w.reason, "memory trigger lost");
        // Bounded: a caller that never takes them keeps the first few.
        if self.lost.len() < MAX_LOST {
            self.lost.push(w);
        }
    }
}

fn warning(source: &'static str, path: &Path, reason: String) -> TriggerWarning {
    TriggerWarning {
        source,
        path: path.to_path_buf(),
        reason,
    }
}

/// Open a PSI file and register the trigger. The kernel turns the last byte written into the
/// string's terminator (`buf[nbytes - 1] = '\0'` in `psi_write`), so the NUL is written too:
/// without it the window would lose its last digit.
///
/// A refused window that is not a multiple of 2 s is retried once with
/// `psi_unprivileged_fallback` (tidelet without `CAP_SYS_RESOURCE`, e.g. in a container); the
/// window in force is returned.
fn open_psi(path: &Path, stall: Duration, window: Duration) -> Result<(Watched, Duration), String> {
    let line = psi_trigger_line(stall, window).map_err(|e| e.to_string())?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| format!("opening: {e}"))?;
    let write_trigger = |file: &mut File, line: &str| {
        let mut bytes = line.as_bytes().to_vec();
        bytes.push(0);
        file.write_all(&bytes)
    };
    let mut in_force = window;
    if let Err(e) = write_trigger(&mut file, &line) {
        let fallback = psi_unprivileged_fallback(stall, window)
            .filter(|_| e.raw_os_error() == Some(libc::EINVAL));
        let Some((stall2, window2)) = fallback else {
            return Err(format!("writing trigger {line:?}: {e}"));
        };
        // A refused write leaves no trigger on the file, so the same file takes the retry.
        let line2 = psi_trigger_line(stall2, window2).map_err(|e| e.to_string())?;
        write_trigger(&mut file, &line2).map_err(|e2| {
            format!("writing trigger {line:?}: {e}; and {line2:?} (2 s multiple): {e2}")
        })?;
        tracing::info!(
            file = %path.display(),
            refused = %line,
            registered = %line2,
            "PSI trigger window rounded to a multiple of 2s (no CAP_SYS_RESOURCE)"
        );
        in_force = window2;
    }
    Ok((
        Watched {
            file,
            path: path.to_path_buf(),
        },
        in_force,
    ))
}

/// Open `memory.events` and read it once, so the next change raises `POLLPRI`.
fn open_events(path: &Path) -> Result<Watched, String> {
    let mut file = File::open(path).map_err(|e| format!("opening: {e}"))?;
    rearm(&mut file).map_err(|e| format!("reading: {e}"))?;
    Ok(Watched {
        file,
        path: path.to_path_buf(),
    })
}

/// Read a kernfs file from the start (bounded): kernfs records the event count seen by this
/// open file when it is read, which clears the pending `POLLPRI`.
fn rearm(file: &mut File) -> std::io::Result<()> {
    file.seek(SeekFrom::Start(0))?;
    let mut buf = [0u8; 1024];
    let mut total = 0;
    loop {
        let n = file.read(&mut buf)?;
        total += n;
        if n == 0 || total > MAX_FILE {
            return Ok(());
        }
    }
}

/// `eventfd` + the open usage file + `"<efd> <ufd> <bytes>"` into `cgroup.event_control`. The
/// usage file's descriptor is only needed while registering.
/// One read resets an eventfd's counter; EAGAIN (already drained) is fine.
fn drain(efd: &EventFd) {
    match efd.read() {
        Ok(_) | Err(Errno::EAGAIN) => {}
        Err(e) => tracing::debug!(error = %e, "draining threshold eventfd"),
    }
}

fn register_v1(usage: &Path, control: &Path, bytes: u64) -> Result<EventFd, String> {
    let efd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map_err(|e| format!("eventfd: {e}"))?;
    let ufd = File::open(usage).map_err(|e| format!("opening {}: {e}", usage.display()))?;
    let line = format!("{} {} {bytes}", efd.as_raw_fd(), ufd.as_raw_fd());
    let mut ctl = OpenOptions::new()
        .write(true)
        .open(control)
        .map_err(|e| format!("opening: {e}"))?;
    ctl.write_all(line.as_bytes())
        .map_err(|e| format!("registering {line:?}: {e}"))?;
    tracing::debug!(bytes, file = %control.display(), "v1 memory threshold registered");
    Ok(efd)
}

#[cfg(test)]
#[path = "triggers_tests.rs"]
mod tests;
