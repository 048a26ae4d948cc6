//! Unit tests of the trigger setup that need no root: trigger lines, fallbacks, warnings
//! for missing files, and a plain file standing in for v2 `memory.events`.

use super::*;

#[test]
fn psi_trigger_lines() {
    let ms = Duration::from_millis;
    let cases: &[(Duration, Duration, Result<&str, &str>)] = &[
        (ms(100), ms(1000), Ok("some 100000 1000000")),
        (ms(150), ms(500), Ok("some 150000 500000")),
        (ms(10_000), ms(10_000), Ok("some 10000000 10000000")),
        (Duration::from_micros(1), ms(500), Ok("some 1 500000")),
        (ms(100), ms(499), Err("\"window\" has value \"499ms\"")),
        (ms(100), ms(10_001), Err("the kernel accepts 500ms to 10s")),
        (ms(0), ms(1000), Err("\"stall\" has value \"0ns\"")),
        (Duration::from_nanos(999), ms(1000), Err("at least 1us")),
        (ms(1001), ms(1000), Err("at most the window")),
    ];
    for (stall, window, want) in cases {
        match (psi_trigger_line(*stall, *window), want) {
            (Ok(got), Ok(want)) => assert_eq!(&got, want),
            (Err(e), Err(want)) => assert!(e.to_string().contains(want), "{e}"),
            (got, want) => panic!("{stall:?}/{window:?}: got {got:?}, want {want:?}"),
        }
    }
}

#[test]
fn unprivileged_psi_windows() {
    let ms = Duration::from_millis;
    type Case = (Duration, Duration, Option<(Duration, Duration)>);
    let cases: &[Case] = &[
        (ms(100), ms(1000), Some((ms(200), ms(2000)))),
        (ms(150), ms(500), Some((ms(600), ms(2000)))),
        (ms(500), ms(3000), Some((ms(667), ms(4000)))),
        (ms(9000), ms(9500), Some((ms(9474), ms(10_000)))),
        (ms(100), ms(2000), None),
        (ms(100), ms(10_000), None),
        (
            Duration::from_micros(1),
            ms(500),
            Some((Duration::from_micros(4), ms(2000))),
        ),
    ];
    for (stall, window, want) in cases {
        let got = psi_unprivileged_fallback(*stall, *window);
        // Compare at millisecond precision (the scaled stall rounds up in microseconds).
        let round = |d: Duration| Duration::from_micros(d.as_micros().div_ceil(1000) as u64 * 1000);
        let got_ms = got.map(|(s, w)| (if s < ms(1) { s } else { round(s) }, w));
        assert_eq!(got_ms, *want, "{stall:?}/{window:?}: {got:?}");
        if let Some((s, w)) = got {
            assert!(psi_trigger_line(s, w).is_ok(), "{s:?}/{w:?}");
        }
    }
}

#[test]
fn spec_for_each_cgroup_version() {
    let v1 = MemoryFiles::V1 {
        usage: "/cg/memory/k/memory.usage_in_bytes".into(),
        event_control: "/cg/memory/k/cgroup.event_control".into(),
    };
    let s = TriggerSpec::for_cgroup(&v1, Path::new("/proc/pressure/memory"), 42);
    assert_eq!(s.psi.as_deref(), Some(Path::new("/proc/pressure/memory")));
    assert_eq!(
        s.v1_threshold,
        Some(V1Threshold {
            usage_file: "/cg/memory/k/memory.usage_in_bytes".into(),
            event_control: "/cg/memory/k/cgroup.event_control".into(),
            bytes: 42,
        })
    );
    assert_eq!(s.v2_events, None);
    let v2 = MemoryFiles::V2 {
        events: "/cg/k/memory.events".into(),
        pressure: "/cg/k/memory.pressure".into(),
    };
    let s = TriggerSpec::for_cgroup(&v2, Path::new("/proc/pressure/memory"), 42);
    assert_eq!(s.psi.as_deref(), Some(Path::new("/cg/k/memory.pressure")));
    assert_eq!(
        s.v2_events.as_deref(),
        Some(Path::new("/cg/k/memory.events"))
    );
    assert_eq!(s.v1_threshold, None);
    assert!(psi_trigger_line(s.psi_stall, s.psi_window).is_ok());
}

fn spec() -> TriggerSpec {
    TriggerSpec::default()
}

#[test]
fn missing_files_become_warnings_naming_source_and_path() {
    let t = tempfile::tempdir().unwrap();
    let missing = t.path().join("no-such-dir");
    let mut s = spec();
    s.psi = Some(missing.join("memory.pressure"));
    s.v1_threshold = Some(V1Threshold {
        usage_file: missing.join("memory.usage_in_bytes"),
        event_control: missing.join("cgroup.event_control"),
        bytes: 1 << 20,
    });
    s.v2_events = Some(missing.join("memory.events"));
    let (mut trig, warnings) = Triggers::open(&s);
    assert!(trig.active().is_empty());
    let got: Vec<(&str, PathBuf)> = warnings
        .iter()
        .map(|w| (w.source, w.path.clone()))
        .collect();
    assert_eq!(
        got,
        vec![
            ("psi", missing.join("memory.pressure")),
            ("v1 threshold", missing.join("cgroup.event_control")),
            ("memory.events", missing.join("memory.events")),
        ]
    );
    for w in &warnings {
        let text = w.to_string();
        assert!(
            text.contains("No such file") && text.contains("periodic check"),
            "{text}"
        );
    }
    // Without sources, wait is a sleep of the whole timeout.
    let start = Instant::now();
    assert!(trig.wait(Duration::from_millis(50)).timed_out());
    assert!(start.elapsed() >= Duration::from_millis(50));
    // The threshold paths are kept: a later registration is tried and names the file.
    let err = trig.set_v1_threshold(2 << 20).unwrap_err().to_string();
    assert!(
        err.contains("cgroup.event_control") && err.contains("No such file"),
        "{err}"
    );
    assert_eq!(trig.v1_threshold(), None);
}

#[test]
fn bad_psi_window_is_a_warning() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("memory.pressure");
    std::fs::write(&f, "").unwrap();
    let mut s = spec();
    s.psi = Some(f.clone());
    s.psi_window = Duration::from_millis(100);
    let (trig, warnings) = Triggers::open(&s);
    assert!(trig.active().is_empty());
    assert_eq!(warnings.len(), 1);
    assert!(
        warnings[0].reason.contains("500ms to 10s"),
        "{}",
        warnings[0]
    );
    // Nothing was written to the file.
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "");
}

#[test]
fn set_threshold_without_v1_spec_fails() {
    let (mut trig, warnings) = Triggers::open(&spec());
    assert!(warnings.is_empty() && trig.active().is_empty());
    let err = trig.set_v1_threshold(1).unwrap_err().to_string();
    assert!(err.contains("no v1 threshold"), "{err}");
}

/// A plain file stands in for v2 `memory.events` (the host has no v2 memory controller):
/// it opens, counts as live, and never raises POLLPRI, so wait times out rather than spin.
#[test]
fn v2_events_on_a_plain_file_is_live_and_quiet() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("memory.events");
    std::fs::write(&f, "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\n").unwrap();
    let mut s = spec();
    s.v2_events = Some(f);
    let (mut trig, warnings) = Triggers::open(&s);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(trig.active(), vec!["memory.events"]);
    let start = Instant::now();
    assert!(trig.wait(Duration::from_millis(100)).timed_out());
    assert!(start.elapsed() >= Duration::from_millis(100));
    assert!(trig.take_lost().is_empty());
}

#[test]
fn triggers_move_to_the_monitor_thread() {
    fn send<T: Send>() {}
    send::<Triggers>();
    send::<Wake>();
    send::<TriggerWarning>();
}

extern "C" fn ignore_signal(_: libc::c_int) {}

/// A signal that interrupts poll(2) (EINTR) must not end the wait early: the wait goes on
/// for the time left.
#[test]
fn wait_retries_after_a_signal_for_the_time_left() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let act = SigAction::new(
        SigHandler::Handler(ignore_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    // SAFETY: the handler does nothing (async-signal-safe), and nothing else in tidelet
    // uses SIGUSR2; without SA_RESTART, poll(2) returns EINTR when it arrives.
    unsafe { sigaction(Signal::SIGUSR2, &act) }.unwrap();
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("memory.events");
    std::fs::write(&f, "oom 0\n").unwrap();
    let mut s = spec();
    s.v2_events = Some(f);
    let (mut trig, warnings) = Triggers::open(&s);
    assert!(warnings.is_empty(), "{warnings:?}");

    // SAFETY: pthread_self has no preconditions.
    let me = unsafe { libc::pthread_self() };
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let kicker = std::thread::spawn(move || {
        // Interrupt the waiter several times until it says it is done.
        let mut sent = 0;
        while rx.recv_timeout(Duration::from_millis(30)).is_err() && sent < 10 {
            // SAFETY: `me` is the test thread, alive until it joins this one; SIGUSR2 has the
            // no-op handler installed above.
            let rc = unsafe { libc::pthread_kill(me, libc::SIGUSR2) };
            assert_eq!(rc, 0);
            sent += 1;
        }
        sent
    });
    let start = Instant::now();
    let wake = trig.wait(Duration::from_millis(400));
    let took = start.elapsed();
    let _ = tx.send(());
    let sent = kicker.join().unwrap();
    assert!(sent >= 2, "the wait was interrupted ({sent} signals)");
    assert!(wake.timed_out(), "{wake:?}");
    assert!(
        took >= Duration::from_millis(400),
        "ended early after a signal: {took:?}"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
}
