//! Pods outlive the agent: SIGKILL it, change things while it is down, start it again.

use std::time::Duration;

use tidelet_e2e::*;

use crate::pod_yaml;

#[test]
fn agent_sigkill_and_restart_adopts_pods_and_reports_exits_meanwhile() {
    if !privileged() {
        return;
    }
    let mut a = Agent::start();
    a.write(
        "stay.yaml",
        &pod_yaml("stay", "", &[("c", "sleep 3600", "")]),
    );
    a.write(
        "dies.yaml",
        &pod_yaml("dies", "", &[("c", "sleep 3600", "")]),
    );
    let (stay, dies) = (a.full_name("stay"), a.full_name("dies"));
    let stay1 = a.wait_running(&stay);
    a.wait_running(&dies);
    let stay_pid = a.container_pid(&stay, "c");
    let dies_pid = a.container_pid(&dies, "c");
    let sup_before = a.supervisor_pids();

    a.kill9();
    // While the agent is down: the pods keep running; one container is killed.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        std::path::Path::new(&format!("/proc/{stay_pid}")).exists(),
        "pod survives the agent"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(dies_pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(200));

    a.spawn();
    let p = a.wait_running(&stay);
    assert_eq!(p["metadata"]["uid"], stay1["metadata"]["uid"]);
    assert_eq!(
        a.container_pid(&stay, "c"),
        stay_pid,
        "adopted, not restarted"
    );
    assert_eq!(Agent::container_status(&p, "c")["restartCount"], 0);
    let d = a.wait_pod(&dies, "exit while down reported and restarted", |p| {
        p["status"]["containerStatuses"][0]["restartCount"] == 1 && all_running(p)
    });
    let last = &Agent::container_status(&d, "c")["lastState"]["terminated"];
    assert_eq!(last["exitCode"], 137, "{last}");
    let sup_after = a.supervisor_pids();
    assert_eq!(sup_before.len(), sup_after.len());
    for s in &sup_before {
        assert!(sup_after.contains(s), "supervisor {s} kept");
    }
    a.stop_all();
}

#[test]
fn two_agents_side_by_side_do_not_see_each_other() {
    if !privileged() {
        return;
    }
    let mut a = Agent::start();
    let mut b = Agent::start();
    a.write("p.yaml", &pod_yaml("p", "", &[("c", "sleep 3600", "")]));
    b.write("p.yaml", &pod_yaml("p", "", &[("c", "sleep 3600", "")]));
    a.wait_running(&a.full_name("p"));
    b.wait_running(&b.full_name("p"));
    assert_eq!(a.pods().len(), 1);
    assert_eq!(b.pods().len(), 1);
    assert_ne!(
        a.container_pid(&a.full_name("p"), "c"),
        b.container_pid(&b.full_name("p"), "c")
    );
    a.stop_all();
    assert!(
        all_running(&b.pod(&b.full_name("p")).unwrap()),
        "b's pod untouched by a's shutdown"
    );
    b.stop_all();
}

/// A host with a named network namespace (`ip netns add`, Podman's netavark) has an nsfs mount
/// whose root in mountinfo is `net:[inode]`, not a path; the agent refused to start there.
#[test]
fn the_agent_starts_on_a_host_with_a_bind_mounted_namespace() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("netns");
    std::fs::write(&target, "").unwrap();
    nix::mount::mount(
        Some("/proc/self/ns/net"),
        &target,
        None::<&str>,
        nix::mount::MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = nix::mount::umount2(&self.0, nix::mount::MntFlags::MNT_DETACH);
        }
    }
    let _unmount = Unmount(target.clone());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        mountinfo
            .lines()
            .any(|l| l.contains(" net:[") && l.contains(&*target.to_string_lossy())),
        "the namespace's mount is in mountinfo"
    );
    let mut a = Agent::start();
    a.write("p.yaml", &pod_yaml("p", "", &[("c", "sleep 3600", "")]));
    a.wait_running(&a.full_name("p"));
    a.stop_all();
}

#[test]
fn systemd_ready_and_watchdog_notifications_are_sent() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut a = Agent::start_with(
        None,
        &[
            ("NOTIFY_SOCKET", sock_path.to_str().unwrap()),
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    a.write("p.yaml", &pod_yaml("p", "", &[("c", "sleep 3600", "")]));
    let mut got = vec![];
    let t0 = std::time::Instant::now();
    let mut buf = [0u8; 256];
    while got
        .iter()
        .filter(|m: &&String| m.as_str() == "WATCHDOG=1")
        .count()
        < 4
    {
        let n = sock.recv(&mut buf).expect("a notification within 10 s");
        got.push(String::from_utf8_lossy(&buf[..n]).to_string());
    }
    assert!(got[0].starts_with("READY=1"), "READY=1 first: {got:?}");
    // Four pets of a 200 ms watchdog (every 100 ms) come within about 0.4 s, not seconds.
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
    a.wait_running(&a.full_name("p"));
    a.stop_all();
}

/// `READY=1` means the pods that were running are under control again: while a pod's
/// supervisor cannot answer (stopped), the restarted agent does not report ready; once it
/// answers, READY=1 comes and the pod is at once Running with the same container.
#[test]
fn systemd_ready_waits_for_adoption() {
    if !privileged() {
        return;
    }
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let mut a = Agent::start();
    a.write("p.yaml", &pod_yaml("p", "", &[("c", "sleep 3600", "")]));
    let p = a.full_name("p");
    a.wait_running(&p);
    let pid = a.container_pid(&p, "c");
    let sups = a.supervisor_pids();
    assert_eq!(sups.len(), 1, "{sups:?}");
    a.kill9();

    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    a.env
        .push(("NOTIFY_SOCKET".into(), sock_path.to_str().unwrap().into()));
    kill(Pid::from_raw(sups[0]), Signal::SIGSTOP).unwrap();
    a.spawn();
    // The supervisor is stopped: adoption waits for its answer, and so does READY=1.
    sock.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let mut buf = [0u8; 256];
    let early = sock.recv(&mut buf).map(|n| buf[..n].to_vec());
    kill(Pid::from_raw(sups[0]), Signal::SIGCONT).unwrap();
    assert!(
        early.is_err(),
        "READY=1 before the pod was adopted: {:?}",
        early.map(|b| String::from_utf8_lossy(&b).to_string())
    );
    sock.set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let n = sock
        .recv(&mut buf)
        .expect("READY=1 once the supervisor answers");
    assert!(
        buf[..n].starts_with(b"READY=1"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
    // No waiting here: the adopted pod is known as soon as READY=1 is sent.
    let now = a.pod(&p).expect("the adopted pod is known at READY=1");
    assert!(all_running(&now), "{now}");
    assert_eq!(a.container_pid(&p, "c"), pid, "adopted, not restarted");
    a.stop_all();
}

/// Under systemd, stderr is the journal: lines carry a syslog priority (`<6>` for info,
/// `<4>` for warnings) for journald and no timestamp of their own (journald stamps them).
/// Elsewhere lines keep their timestamp.
#[test]
fn journal_stream_gets_priorities_and_no_timestamps() {
    if !privileged() {
        return;
    }
    use std::os::unix::fs::MetadataExt;
    let mut a = Agent::start();
    wait_for("ready in the log", Duration::from_secs(10), || {
        a.agent_log().contains("tidelet ready").then_some(())
    });
    let plain = a.agent_log();
    let line = plain.lines().find(|l| l.contains("tidelet ready")).unwrap();
    assert!(
        line.starts_with("20"),
        "a timestamp off the journal: {line}"
    );
    a.kill9();
    std::fs::write(a.log_path(), "").unwrap();
    let st = std::fs::metadata(a.log_path()).unwrap();
    a.env.push((
        "JOURNAL_STREAM".into(),
        format!("{}:{}", st.dev(), st.ino()),
    ));
    a.spawn();
    wait_for("ready in the log", Duration::from_secs(10), || {
        a.agent_log().contains("tidelet ready").then_some(())
    });
    let log = a.agent_log();
    let line = log.lines().find(|l| l.contains("tidelet ready")).unwrap();
    assert!(line.starts_with("<6> INFO "), "{line}");
    for l in log.lines().filter(|l| !l.is_empty()) {
        assert!(
            l.starts_with('<') && !l.split_whitespace().any(is_timestamp),
            "journal line with a prefix, without a timestamp: {l}"
        );
    }
    a.stop_all();
}

/// `2026-11-25T22:17:37.123456Z` and the like.
fn is_timestamp(w: &str) -> bool {
    let b = w.as_bytes();
    b.len() >= 19
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[..4].iter().all(u8::is_ascii_digit)
}
