//! Supervised tasks (issue 16): a panic injected into each kind of long-lived task of the real
//! agent (`TIDELET_TEST_PANIC`, see agent/src/supervise/inject.rs) is logged with its message,
//! raised as a node event, and the task works again afterwards (the MQTT session losing
//! nothing the control plane needs); a task that keeps panicking makes the agent exit non-zero
//! while its pods keep running.
//!
//! Each injected panic fires once per agent process (`label*`: every time). Every check of
//! "works again" is one the task that panicked alone can pass.

use std::time::Duration;

use tidelet_e2e::broker::{Broker, BrokerOpts};
use tidelet_e2e::plugin::{healthy, FakePlugin};
use tidelet_e2e::*;

use crate::pod_yaml;

const WAIT: Duration = Duration::from_secs(30);

fn with_panic(label: &str) -> [(&'static str, String); 1] {
    [("TIDELET_TEST_PANIC", label.to_string())]
}

fn start(config: Option<&str>, label: &str) -> Agent {
    let env = with_panic(label);
    Agent::start_with(config, &[(env[0].0, env[0].1.as_str())])
}

/// The agent logged the injected panic of `label` as a structured line with its message,
/// and the task's restart.
fn logged(a: &Agent, label: &str, task: &str) {
    let line = a.wait_log_line("supervised task panicked; restarting it", WAIT);
    for field in [
        format!("task=\"{task}\""),
        format!("panic=injected panic (TIDELET_TEST_PANIC={label})"),
        "panics=1".to_string(),
    ] {
        assert!(line.contains(&field), "{field} in {line}");
    }
    a.wait_log_line(&format!("restarting supervised task task=\"{task}\""), WAIT);
}

/// `tidelet describe node` (through the API) shows a warning event `reason` whose message
/// names the task (`what`) and the injected panic's message.
fn node_event(a: &Agent, reason: &str, what: &str) {
    let line = wait_for(&format!("node event {reason}"), WAIT, || {
        let out = a.cli(&["describe", "node"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|l| l.contains(reason))
            .map(str::to_string)
    });
    assert!(line.contains("Warning"), "{line}");
    assert!(line.contains(what), "{line}");
    assert!(
        line.contains("injected panic (TIDELET_TEST_PANIC="),
        "{line}"
    );
}

#[test]
fn a_panicking_pod_worker_is_restarted_and_adopts_its_running_pod() {
    if !privileged() {
        return;
    }
    let label = "worker:default/web-e2e";
    let mut a = start(None, label);
    a.write("web.yaml", &pod_yaml("web", "", &[("c", "sleep 3600", "")]));
    // The worker panics once its pod is up.
    logged(&a, label, "worker");
    node_event(
        &a,
        "PodWorkerPanicked",
        "pod worker default/web-e2e panicked",
    );
    a.wait_log_line("adopted running pod", WAIT);
    let p = a.wait_running("web-e2e");
    let d = a.cli(&["describe", "pod", "web-e2e"]);
    let d = String::from_utf8_lossy(&d.stdout);
    assert!(
        d.contains("adopted after pod worker restart") && !d.contains("after agent restart"),
        "{d}"
    );
    assert_eq!(
        Agent::container_status(&p, "c")["restartCount"],
        0,
        "adopted, not restarted"
    );
    assert_eq!(
        a.supervisor_pids().len(),
        1,
        "one sandbox: adopted, not created twice"
    );

    // Managed again: a killed container is restarted, a deleted manifest removes the pod.
    let pid = a.container_pid("web-e2e", "c");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    a.wait_pod("web-e2e", "the killed container restarted", |p| {
        p["status"]["containerStatuses"][0]["restartCount"] == 1 && all_running(p)
    });
    a.remove("web.yaml");
    wait_for("the pod removed", WAIT, || {
        (a.pods().is_empty() && a.supervisor_pids().is_empty()).then_some(())
    });
    a.stop_all();
}

#[test]
fn a_panicking_api_server_is_restarted_and_answers() {
    if !privileged() {
        return;
    }
    let mut a = start(None, "api");
    logged(&a, "api", "api");
    // The event is read through the restarted API itself.
    node_event(&a, "APIServerPanicked", "local API server panicked");
    a.write("web.yaml", &pod_yaml("web", "", &[("c", "sleep 3600", "")]));
    a.wait_running("web-e2e");
    a.stop_all();
}

/// Leaves `PODS_MEMORY` to the pods with `memory.available<100Mi`, as tests/e2e/eviction.rs.
fn eviction_config() -> String {
    const PODS_MEMORY: u64 = 384 << 20;
    format!(
        "systemReserved:\n  memory: \"{}\"\nevictionHard:\n  memory.available: \"100Mi\"\nevictionPressureTransitionPeriod: 3s\n",
        mem_total() - PODS_MEMORY
    )
}

#[test]
fn a_panicking_eviction_monitor_is_restarted_and_evicts() {
    if !privileged() {
        return;
    }
    let mut a = start(Some(&eviction_config()), "monitor");
    logged(&a, "monitor", "monitor");
    node_event(&a, "EvictionManagerPanicked", "eviction monitor panicked");
    // 300 MiB of working set: over the 284 MiB where eviction acts, under the kernel's limit.
    a.write(
        "hog.yaml",
        &pod_yaml(
            "hog",
            "",
            &[(
                "c",
                "dd if=/dev/zero bs=300M count=1 2>/dev/null | sleep 3600 & wait",
                "",
            )],
        ),
    );
    let p = wait_for("the hog evicted", Duration::from_secs(60), || {
        a.pod("hog-e2e")
            .filter(|p| p["status"]["phase"] == "Failed" && p["status"]["reason"] == "Evicted")
    });
    assert!(
        p["status"]["message"].as_str().unwrap().contains("memory"),
        "{p}"
    );
    a.stop_all();
}

#[test]
fn a_panicking_mqtt_reporter_is_restarted_and_publishes() {
    if !privileged() {
        return;
    }
    let b = Broker::new(BrokerOpts::default());
    let mut events = b.subscribe("tidelet/e2e/events", "operator");
    let mut a = start(Some(&b.agent_config("e2e")), "reporter");
    logged(&a, "reporter", "reporter");
    a.write("web.yaml", &pod_yaml("web", "", &[("c", "sleep 3600", "")]));
    // The restarted reporter publishes the pod, the node and the panic's own event.
    b.wait_retained(
        "tidelet/e2e/pods/default/web-e2e",
        |p| {
            serde_json::from_slice::<serde_json::Value>(p).unwrap_or_default()["status"]["phase"]
                == "Running"
        },
        WAIT,
    );
    b.wait_retained("tidelet/e2e/node", |p| !p.is_empty(), WAIT);
    events.wait_for("the StatusReporterPanicked node event", WAIT, |m| {
        let e = m.json().unwrap_or_default();
        e["reason"] == "StatusReporterPanicked"
            && e["message"]
                .as_str()
                .is_some_and(|s| s.contains("TIDELET_TEST_PANIC=reporter"))
    });
    a.stop_all();
}

/// A desired pod from the control plane, as tests/e2e/mqtt.rs writes them.
fn desired(name: &str) -> String {
    pod_yaml(name, "", &[("c", "sleep 3600", "")]).replacen(
        &format!("  name: {name}\n"),
        &format!("  name: {name}\n  generation: 1\n"),
        1,
    )
}

fn phase(p: &[u8]) -> serde_json::Value {
    serde_json::from_slice::<serde_json::Value>(p).unwrap_or_default()["status"]["phase"].clone()
}

#[test]
fn a_panicking_mqtt_session_is_restarted_and_loses_nothing() {
    if !privileged() {
        return;
    }
    let b = Broker::new(BrokerOpts::default());
    // Retained before the agent starts: the first message the session takes in, so the one
    // the panic loses; only the restarted session's subscription brings it back.
    b.publish(
        "tidelet/e2e/desired/pods/default/early",
        desired("early").as_bytes(),
        true,
        "operator",
    );
    let mut events = b.subscribe("tidelet/e2e/events", "operator");
    let mut a = start(Some(&b.agent_config("e2e")), "session");
    logged(&a, "session", "session");
    // Raised while the session was down: kept in the outbox and published after the restart.
    events.wait_for("the MQTTSessionPanicked node event", WAIT, |m| {
        let e = m.json().unwrap_or_default();
        e["reason"] == "MQTTSessionPanicked"
            && e["message"].as_str().is_some_and(|s| {
                s.contains("MQTT session panicked") && s.contains("TIDELET_TEST_PANIC=session")
            })
    });
    // The panic dropped the connection (the broker published the will); the restarted
    // session says online again.
    b.wait_retained(
        "tidelet/e2e/online",
        |p| serde_json::from_slice::<serde_json::Value>(p).unwrap_or_default()["online"] == true,
        WAIT,
    );
    a.wait_running("early");
    // Up: a pod created after the restart reaches the broker.
    a.write("web.yaml", &pod_yaml("web", "", &[("c", "sleep 3600", "")]));
    b.wait_retained(
        "tidelet/e2e/pods/default/web-e2e",
        |p| phase(p) == "Running",
        WAIT,
    );
    // Down: a desired pod sent after the restart is answered and run.
    b.publish(
        "tidelet/e2e/desired/pods/default/late",
        desired("late").as_bytes(),
        true,
        "operator",
    );
    let r = b.wait_retained(
        "tidelet/e2e/desired/results/default/late",
        |p| !p.is_empty(),
        WAIT,
    );
    let r: serde_json::Value = serde_json::from_slice(&r).unwrap();
    assert_eq!(r["accepted"], true, "{r}");
    a.wait_running("late");
    b.wait_retained(
        "tidelet/e2e/pods/default/late",
        |p| phase(p) == "Running",
        WAIT,
    );
    b.wait_retained(
        "tidelet/e2e/pods/default/early",
        |p| phase(p) == "Running",
        WAIT,
    );
    // Removed by the control plane, so that `stop_all` finds the node empty.
    for name in ["early", "late"] {
        let topic = format!("tidelet/e2e/desired/pods/default/{name}");
        b.publish(&topic, b"", true, "operator");
    }
    a.stop_all();
}

#[test]
fn a_panicking_mqtt_lease_timer_is_restarted_and_renews() {
    if !privileged() {
        return;
    }
    let b = Broker::new(BrokerOpts::default());
    let mut events = b.subscribe("tidelet/e2e/events", "operator");
    let config = format!("{}  leasePeriod: 1s\n", b.agent_config("e2e"));
    // The timer panics at its first tick, before any lease is published.
    let mut a = start(Some(&config), "session-lease");
    logged(&a, "session-lease", "session-lease");
    events.wait_for("the MQTTLeasePanicked node event", WAIT, |m| {
        let e = m.json().unwrap_or_default();
        e["reason"] == "MQTTLeasePanicked"
            && e["message"]
                .as_str()
                .is_some_and(|s| s.contains("TIDELET_TEST_PANIC=session-lease"))
    });
    // Renewed, and renewed again: the restarted timer keeps ticking.
    let renew = |p: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(p).unwrap_or_default()["spec"]["renewTime"]
            .as_str()
            .map(str::to_string)
    };
    let first = renew(&b.wait_retained("tidelet/e2e/lease", |p| renew(p).is_some(), WAIT));
    b.wait_retained(
        "tidelet/e2e/lease",
        |p| renew(p).is_some_and(|t| Some(t) != first),
        WAIT,
    );
    a.stop_all();
}

const RES: &str = "example.com/fake";

fn counts(a: &Agent) -> Option<(String, String)> {
    let out = a.cli(&["get", "node", "-o", "json"]);
    let n: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    let st = &n["status"];
    Some((
        st["capacity"][RES].as_str()?.to_string(),
        st["allocatable"][RES].as_str()?.to_string(),
    ))
}

#[test]
fn a_panicking_device_plugin_stream_is_followed_again() {
    if !privileged() {
        return;
    }
    let mut a = start(None, "device-plugin");
    let p = FakePlugin::serve(
        &a.device_plugin_dir(),
        RES,
        "fake.sock",
        healthy(&["d0", "d1"]),
    );
    p.register().unwrap();
    logged(&a, "device-plugin", "device-plugin");
    node_event(
        &a,
        "DevicePluginPanicked",
        &format!("device-plugin stream {RES} panicked"),
    );
    // Only a stream followed again gets the plugin's devices into the node's capacity.
    wait_for("the plugin's devices in the node status", WAIT, || {
        (counts(&a) == Some(("2".into(), "2".into()))).then_some(())
    });
    p.stop();
    a.stop_all();
}

#[test]
fn a_panicking_device_plugin_registration_server_serves_again() {
    if !privileged() {
        return;
    }
    let mut a = start(None, "device-registration");
    logged(&a, "device-registration", "device-registration");
    node_event(
        &a,
        "DevicePluginRegistrationPanicked",
        "device-plugin registration server panicked",
    );
    let p = FakePlugin::serve(&a.device_plugin_dir(), RES, "fake.sock", healthy(&["d0"]));
    wait_for("a registration accepted", WAIT, || p.register().ok());
    wait_for("the plugin's devices in the node status", WAIT, || {
        (counts(&a) == Some(("1".into(), "1".into()))).then_some(())
    });
    p.stop();
    a.stop_all();
}

#[test]
fn a_task_that_keeps_panicking_makes_the_agent_exit_and_pods_survive() {
    if !privileged() {
        return;
    }
    let mut a = Agent::prepare(None, &[]);
    a.write("web.yaml", &pod_yaml("web", "", &[("c", "sleep 3600", "")]));
    // systemd's watchdog, petted every 100 ms while every supervised task is up.
    let notify = a.dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&notify).unwrap();
    // Read as systemd does, all along: a full socket queue would block the agent's loop.
    sock.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut pets, mut buf) = (0usize, [0u8; 256]);
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if let Ok(n) = sock.recv(&mut buf) {
                    pets += usize::from(&buf[..n] == b"WATCHDOG=1");
                }
            }
            pets
        })
    };
    a.env = vec![
        ("TIDELET_TEST_PANIC".into(), "monitor*".into()),
        ("NOTIFY_SOCKET".into(), notify.to_str().unwrap().into()),
        ("WATCHDOG_USEC".into(), "200000".into()),
    ];
    a.spawn();
    a.wait_running("web-e2e");
    let pid = a.container_pid("web-e2e", "c");
    // 0.5 + 1 + 2 + 4 + 8 s of back-off, then the sixth panic gives up.
    let status = a.wait_exit(Duration::from_secs(60));
    assert_eq!(status.code(), Some(70), "{status:?}");
    let log = a.agent_log();
    let lines = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(
        lines("supervised task panicked; restarting it task=\"monitor\""),
        5,
        "five restarts"
    );
    assert_eq!(
        lines("supervised task keeps panicking; giving up task=\"monitor\""),
        1,
        "then giving up"
    );
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the pod survives the agent's exit"
    );
    // The monitor was down for all but instants of the 15 s before the exit: the loop's
    // watchdog ticks (every 100 ms) found it down and did not pet. A pet may slip in at start
    // or between a restart and the next panic, but far fewer than the ticks skipped.
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let pets = reader.join().unwrap();
    let skipped = lines("not feeding the watchdog");
    assert!(
        skipped > 0 && pets < skipped,
        "{pets} pets, {skipped} ticks skipped"
    );
    // As systemd would: start it again (without the hook); the pod is adopted.
    a.env.clear();
    a.spawn();
    let p = a.wait_running("web-e2e");
    assert_eq!(
        a.container_pid("web-e2e", "c"),
        pid,
        "adopted, not restarted"
    );
    assert_eq!(Agent::container_status(&p, "c")["restartCount"], 0);
    a.stop_all();
}
