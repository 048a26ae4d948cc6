//! MQTT figures of tidelet (issue 5), measured from outside the agent with the real binary
//! against a real Mosquitto started by the harness ([`tidelet_e2e::broker::Broker`]), as root:
//!
//! 1. latency: an agent with 3 background pods; each repetition writes a fresh victim pod
//!    (`restartPolicy: Never`), waits until a live subscriber (`mosquitto_sub` on
//!    `tidelet/<node>/pods/#`) sees it Running, SIGKILLs its container's init at t0, and stops
//!    the clock at t1, when the subscriber receives the pod's topic with the container no longer
//!    running (or restarted); the victim is then removed and its topic cleared before the next;
//! 2. idle cost on the wire: an agent with the default MQTT settings (keepAlive 60s,
//!    leasePeriod 60s) and 10 running pods, after the topics went quiet, over `IDLE_SECS`:
//!    TCP payload both ways of the agent's one connection to the broker plus one TCP/IP header
//!    per segment both ways, from `ss -tinp` (`bytes_sent + bytes_received + (segs_out +
//!    segs_in) x header`); beside it, in the same run, a kubelet-style peer (one rumqttc
//!    connection in this process) publishing the node and every pod object (the retained
//!    payloads of the agent's topics) every 10 s, measured the same way;
//! 3. convergence: an agent with 7 static and 3 remote (desired) pods on a persistent broker;
//!    the broker stops, 60 s of churn (static pods added, changed, removed; containers
//!    SIGKILLed), the broker starts at t0; t1 is the first poll at which every retained
//!    `pods/#` topic, `node` and `online` of the node equal the agent's own state (`tidelet get
//!    pods -o json`: same keys, uid and phase; `online: true`; no stale pod topic);
//! 4. fleet: `FLEET` (100) agents with one pod each against one Mosquitto without ACL: the
//!    broker's message rates over `FLEET_WINDOW_SECS` (from its `$SYS` counters), its RSS,
//!    and each agent's Rss and Pss (`/proc/PID/smaps_rollup`) at the end of the window; then
//!    the same agents without the `mqtt:` section, for the memory difference.
//!
//! Nothing here asserts a timing: the figures are printed. It panics when a measurement is
//! impossible (a pod never runs, a topic never comes, a connection is not found).
//!
//! Run with `scripts/bench-mqtt.sh`, or
//! `TIDELET_BIN=target/release/tidelet cargo bench -p tidelet-e2e --bench mqtt` (`PHASES`
//! (`1234`), `REPS`, `IDLE_SECS`, `CHURN_SECS`, `CONV_REPS`, `FLEET`, `FLEET_WINDOW_SECS`).
//!
//! Without `--bench` (`cargo test -p tidelet-e2e --bench mqtt`, against the debug build) it is
//! a smoke run of every phase `PHASES` names, whatever the other variables say: 1 repetition;
//! 3 pods idle for 1 s after 1 s of quiet; a 1 s outage whose churn takes each kind of step
//! (add, change, remove, kill) at least once, 250 ms apart; 3 agents with 1 s windows.
//! Everything checked here is checked the same; only where `ss` (iproute2, which
//! scripts/bench-mqtt.sh installs and scripts/test.sh does not) cannot run are the wire
//! counters of part 2 left out, with a note.

// Test code: an unwrap that fails is a failed test, named with its location.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tidelet_e2e::broker::{Broker, BrokerOpts, Subscription};
use tidelet_e2e::{all_running, privileged, processes_mentioning, wait_for, Agent};

const WAIT: Duration = Duration::from_secs(60);
/// kubelet's `nodeStatusUpdateFrequency` default.
const PEER_PERIOD: Duration = Duration::from_secs(10);

fn pod_yaml(name: &str, cmd: &str, extra_spec: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{extra_spec}  terminationGracePeriodSeconds: 2\n  containers:\n  - name: c\n    image: localhost/busybox:1.35\n    imagePullPolicy: Never\n    command: [\"sh\", \"-c\", {cmd:?}]\n")
}

fn json(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or(Value::Null)
}

/// An agent on node `node` with these static pods (`name`, command), started.
fn agent(config: Option<&str>, node: &str, pods: &[(String, &str)]) -> Agent {
    let mut a = Agent::prepare(config, &[]);
    a.node = node.to_string();
    for (name, cmd) in pods {
        a.write(&format!("{name}.yaml"), &pod_yaml(name, cmd, ""));
    }
    a.spawn();
    a
}

/// The agent process itself (not its shims): its command line names its root dir.
fn agent_pid(a: &Agent) -> i32 {
    let needle = format!("--root-dir\0{}\0run\0", a.root.display());
    let pids = processes_mentioning(&needle);
    assert_eq!(pids.len(), 1, "agent processes for {}: {pids:?}", a.node);
    pids[0]
}

/// The host pid of a pod's container init from `tidelet describe pod`, if it runs.
fn container_pid(a: &Agent, pod: &str) -> Option<i32> {
    let out = a.cli(&["describe", "pod", pod]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut in_c = false;
    for line in text.lines() {
        if line.trim_end() == "  c:" {
            in_c = true;
        } else if in_c && line.trim_start().starts_with("PID:") {
            return line
                .split_whitespace()
                .last()?
                .parse()
                .ok()
                .filter(|p| *p > 0);
        }
    }
    None
}

fn sigkill(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Median, p90 and max of milliseconds, as text.
fn summary(ms: &[f64]) -> String {
    let mut v = ms.to_vec();
    v.sort_by(f64::total_cmp);
    let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
    format!(
        "n={} median {:.1} ms, p90 {:.1} ms, max {:.1} ms, min {:.1} ms",
        v.len(),
        at(0.5),
        at(0.9),
        v[v.len() - 1],
        v[0]
    )
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The next message on `topic` whose JSON payload satisfies `f`, and when it came.
fn wait_msg(
    sub: &mut Subscription,
    topic: &str,
    what: &str,
    mut f: impl FnMut(&[u8]) -> bool,
) -> (Instant, Vec<u8>) {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match sub.next(left) {
            Some(m) if m.topic == topic && f(&m.payload) => return (Instant::now(), m.payload),
            Some(_) => {}
            None => panic!("no message on {topic} with {what} within {WAIT:?}"),
        }
    }
}

fn container0(pod: &Value) -> &Value {
    &pod["status"]["containerStatuses"][0]
}

// ---------------------------------------------------------------------------------------
// 1. State change -> retained status on the broker.

fn latency(b: &Broker, reps: u64) {
    println!("=== 1. pod state change -> its topic at a live subscriber ({reps} repetitions)");
    let node = "lat";
    let bg: Vec<(String, &str)> = (0..3).map(|i| (format!("bg{i}"), "sleep 3600")).collect();
    let mut a = agent(Some(&b.agent_config(node)), node, &bg);
    for (n, _) in &bg {
        a.wait_running(&a.full_name(n));
    }
    let mut sub = b.subscribe(&format!("tidelet/{node}/pods/#"), "operator");
    let mut ms = vec![];
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    for i in 0..reps {
        let name = format!("v{i}");
        let full = a.full_name(&name);
        let topic = format!("tidelet/{node}/pods/default/{full}");
        a.write(
            &format!("{name}.yaml"),
            &pod_yaml(&name, "sleep 3600", "  restartPolicy: Never\n"),
        );
        wait_msg(&mut sub, &topic, "the victim running", |p| {
            all_running(&json(p))
        });
        let pid = wait_for("the victim's pid", WAIT, || container_pid(&a, &full));
        // Let anything behind the Running status land before the clock starts.
        std::thread::sleep(Duration::from_millis(300));
        sub.drain();
        let t0 = Instant::now();
        sigkill(pid);
        let (t1, p) = wait_msg(&mut sub, &topic, "the container stopped", |p| {
            let c = container0(&json(p)).clone();
            !c["state"]["running"].is_object() || c["restartCount"].as_u64() > Some(0)
        });
        ms.push((t1 - t0).as_secs_f64() * 1e3);
        let v = json(&p);
        let state = container0(&v)["state"]
            .as_object()
            .and_then(|o| o.keys().next().cloned())
            .unwrap_or_default();
        *seen
            .entry(format!("phase {} / {state}", v["status"]["phase"]))
            .or_default() += 1;
        a.remove(&format!("{name}.yaml"));
        wait_msg(&mut sub, &topic, "the topic cleared", |p| p.is_empty());
    }
    println!("  kill -> status received: {}", summary(&ms));
    println!("  status first seen: {seen:?}");
    println!("  each (ms): {}", fmt_list(&ms));
    println!("  loadavg {}", loadavg());
    a.stop_all();
}

fn fmt_list(ms: &[f64]) -> String {
    ms.iter()
        .map(|m| format!("{m:.1}"))
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------
// 2. Idle cost on the wire, with a kubelet-style peer beside it.

/// One TCP connection's counters from `ss -tinp`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Sock {
    local: String,
    bytes_sent: u64,
    bytes_received: u64,
    segs_out: u64,
    segs_in: u64,
}

/// The established connections to `127.0.0.1:port` owned by process `pid`.
fn sockets(port: u16, pid: i32) -> Vec<Sock> {
    let out = Command::new("ss")
        .args(["-tinpH", "state", "established"])
        .output()
        .expect("run ss");
    parse_ss(&String::from_utf8_lossy(&out.stdout), port, pid)
}

fn parse_ss(text: &str, port: u16, pid: i32) -> Vec<Sock> {
    let mut out = vec![];
    let mut current: Option<Sock> = None;
    let peer = format!("127.0.0.1:{port}");
    let owner = format!("pid={pid},");
    for line in text.lines() {
        if !line.starts_with(char::is_whitespace) {
            let f: Vec<&str> = line.split_whitespace().collect();
            current = (f.len() >= 5 && f[3] == peer && line.contains(&owner)).then(|| Sock {
                local: f[2].to_string(),
                ..Sock::default()
            });
        } else if let Some(mut s) = current.take() {
            for tok in line.split_whitespace() {
                let Some((k, v)) = tok.split_once(':') else {
                    continue;
                };
                let v = v.parse().unwrap_or(0);
                match k {
                    "bytes_sent" => s.bytes_sent = v,
                    "bytes_received" => s.bytes_received = v,
                    "segs_out" => s.segs_out = v,
                    "segs_in" => s.segs_in = v,
                    _ => {}
                }
            }
            out.push(s);
        }
    }
    out
}

/// IPv4 (20) + TCP (20) + the timestamp option (12) when `tcp_timestamps` is on.
fn header_bytes() -> u64 {
    let ts = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_timestamps")
        .map(|s| s.trim() != "0")
        .unwrap_or(true);
    40 + if ts { 12 } else { 0 }
}

fn the_socket(port: u16, pid: i32, who: &str) -> Sock {
    let s = sockets(port, pid);
    assert_eq!(s.len(), 1, "{who}: connections to the broker: {s:?}");
    s[0].clone()
}

/// A kubelet-style reporter: one MQTT connection publishing every object every 10 s.
struct Peer {
    stop: Arc<AtomicBool>,
    cycles: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
    client: rumqttc::Client,
}

impl Peer {
    fn start(port: u16, node: &str, objects: Vec<(String, Vec<u8>)>) -> Peer {
        let mut o = rumqttc::MqttOptions::new(format!("kubelet-peer-{node}"), "127.0.0.1", port);
        o.set_keep_alive(Duration::from_secs(60));
        o.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut conn) = rumqttc::Client::new(o, 256);
        let stop = Arc::new(AtomicBool::new(false));
        let cycles = Arc::new(AtomicU64::new(0));
        let driver = std::thread::spawn(move || {
            for ev in conn.iter() {
                if ev.is_err() {
                    break;
                }
            }
        });
        let (c, st, cy, node) = (
            client.clone(),
            stop.clone(),
            cycles.clone(),
            node.to_string(),
        );
        let publisher = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let start = Instant::now();
                for (suffix, payload) in &objects {
                    c.publish(
                        format!("kubelet/{node}/{suffix}"),
                        rumqttc::QoS::AtLeastOnce,
                        true,
                        payload.clone(),
                    )
                    .expect("peer publish");
                }
                cy.fetch_add(1, Ordering::Relaxed);
                while !st.load(Ordering::Relaxed) && start.elapsed() < PEER_PERIOD {
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        });
        Peer {
            stop,
            cycles,
            threads: vec![publisher, driver],
            client,
        }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.client.disconnect();
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// Bytes on the wire between two snapshots of one connection, and the parts.
fn wire(a: &Sock, b: &Sock, hdr: u64) -> (u64, String) {
    assert_eq!(a.local, b.local, "the connection changed during the window");
    let payload = (b.bytes_sent - a.bytes_sent) + (b.bytes_received - a.bytes_received);
    let segs = (b.segs_out - a.segs_out) + (b.segs_in - a.segs_in);
    let total = payload + segs * hdr;
    (
        total,
        format!(
            "TCP payload {} B out + {} B in, {} + {} segments",
            b.bytes_sent - a.bytes_sent,
            b.bytes_received - a.bytes_received,
            b.segs_out - a.segs_out,
            b.segs_in - a.segs_in
        ),
    )
}

/// Part 2 with `n_pods` pods, after `quiet` without a message on the node's topics; without
/// the wire counters when `ss` cannot run in a smoke run.
fn idle(b: &Broker, secs: u64, n_pods: usize, quiet: Duration, smoke: bool) {
    println!("=== 2. idle cost on the wire: {n_pods} pods, default keepAlive 60s / leasePeriod 60s, {secs} s window");
    let node = "idle";
    let pods: Vec<(String, &str)> = (0..n_pods)
        .map(|i| (format!("p{i}"), "sleep 3600"))
        .collect();
    let mut a = agent(Some(&b.agent_config(node)), node, &pods);
    for (n, _) in &pods {
        let topic = format!("tidelet/{node}/pods/default/{}", a.full_name(n));
        b.wait_retained(&topic, |p| all_running(&json(p)), WAIT);
    }
    // Quiet: nothing on the node's topics for `quiet` (10 s; at most 120 s of waiting).
    let mut sub = b.subscribe(&format!("tidelet/{node}/#"), "operator");
    let start = Instant::now();
    while sub.next(quiet).is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the agent's topics never went quiet"
        );
    }
    let retained = b.retained(&format!("tidelet/{node}/#"), "operator");
    let prefix = format!("tidelet/{node}/");
    let objects: Vec<(String, Vec<u8>)> = retained
        .into_iter()
        .filter_map(|(t, p)| Some((t.strip_prefix(&prefix)?.to_string(), p)))
        .filter(|(t, p)| (t == "node" || t.starts_with("pods/")) && !p.is_empty())
        .collect();
    assert_eq!(
        objects.len(),
        n_pods + 1,
        "node + {n_pods} pods retained: {:?}",
        objects.iter().map(|o| &o.0).collect::<Vec<_>>()
    );
    let cycle_bytes: usize = objects.iter().map(|(t, p)| t.len() + p.len()).sum();
    let node_bytes = objects
        .iter()
        .find(|o| o.0 == "node")
        .map_or(0, |o| o.1.len());
    let peer = Peer::start(b.port(), node, objects);
    wait_for("the peer's first cycle", WAIT, || {
        (peer.cycles.load(Ordering::Relaxed) > 0).then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    let hdr = header_bytes();
    let apid = agent_pid(&a);
    let me = std::process::id() as i32;
    // The agent's and the peer's connection counters; a smoke run goes on without them where
    // `ss` cannot run (scripts/test.sh does not install iproute2).
    let counted = !smoke
        || Command::new("ss")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success());
    let snapshot = || {
        counted.then(|| {
            (
                the_socket(b.port(), apid, "agent"),
                the_socket(b.port(), me, "peer"),
            )
        })
    };
    let s0 = snapshot();
    let c0 = peer.cycles.load(Ordering::Relaxed);
    let t0 = Instant::now();
    // What the agent publishes meanwhile, by topic (another connection, not the measured one).
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    while t0.elapsed() < Duration::from_secs(secs) {
        let left = Duration::from_secs(secs).saturating_sub(t0.elapsed());
        if let Some(m) = sub.next(left) {
            let t = m.topic.strip_prefix(&prefix).unwrap_or(&m.topic);
            let t = if t.starts_with("pods/") { "pods/*" } else { t };
            *counts.entry(t.to_string()).or_default() += 1;
        }
    }
    let s1 = snapshot();
    let minutes = t0.elapsed().as_secs_f64() / 60.0;
    let cycles = peer.cycles.load(Ordering::Relaxed) - c0;
    peer.stop();
    let (Some((a0, p0)), Some((a1, p1))) = (s0, s1) else {
        println!("  not counted: `ss` (iproute2) cannot run here; agent messages seen: {counts:?}; peer cycles {cycles}");
        a.stop_all();
        return;
    };
    let publishes = n_pods + 1;
    let (at, ad) = wire(&a0, &a1, hdr);
    let (pt, pd) = wire(&p0, &p1, hdr);
    println!("  counted: TCP payload both ways + (segs_out + segs_in) x {hdr} B (IPv4 20 + TCP 20 + timestamps 12), from `ss -tinp` on the client's socket");
    println!(
        "  tidelet:            {:>8.0} B/min ({:.2} KiB/min); {ad}; agent messages seen: {counts:?}",
        at as f64 / minutes,
        at as f64 / minutes / 1024.0
    );
    println!(
        "  kubelet-style peer: {:>8.0} B/min ({:.1} KiB/min); {pd}; {cycles} cycles of {publishes} QoS 1 publishes ({cycle_bytes} B of topics + payloads per cycle, node object {node_bytes} B)",
        pt as f64 / minutes,
        pt as f64 / minutes / 1024.0
    );
    println!(
        "  ratio peer / tidelet: {:.0}x",
        pt as f64 / at.max(1) as f64
    );
    println!("  loadavg {}", loadavg());
    a.stop_all();
}

// ---------------------------------------------------------------------------------------
// 3. Convergence after a broker outage during churn.

/// `Ok` when the retained tree of `node` equals the agent's state; else what differs.
fn converged(a: &Agent, b: &Broker, node: &str) -> Result<(), String> {
    let out = a.cli(&["get", "pods", "-o", "json"]);
    if !out.status.success() {
        return Err("get pods failed".into());
    }
    let items = json(&out.stdout)["items"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let want: BTreeMap<String, (Value, Value)> = items
        .iter()
        .map(|p| {
            let ns = p["metadata"]["namespace"].as_str().unwrap_or("default");
            let key = format!("{ns}/{}", p["metadata"]["name"].as_str().unwrap_or(""));
            (
                key,
                (p["metadata"]["uid"].clone(), p["status"]["phase"].clone()),
            )
        })
        .collect();
    let retained = b.try_retained(&format!("tidelet/{node}/#"), "operator")?;
    let pods_prefix = format!("tidelet/{node}/pods/");
    let got: BTreeMap<String, (Value, Value)> = retained
        .iter()
        .filter(|(_, p)| !p.is_empty())
        .filter_map(|(t, p)| {
            let key = t.strip_prefix(&pods_prefix)?.to_string();
            let v = json(p);
            Some((
                key,
                (v["metadata"]["uid"].clone(), v["status"]["phase"].clone()),
            ))
        })
        .collect();
    let online = retained
        .get(&format!("tidelet/{node}/online"))
        .map(|p| json(p)["online"] == true)
        .unwrap_or(false);
    let node_ok = retained
        .get(&format!("tidelet/{node}/node"))
        .is_some_and(|p| json(p)["metadata"]["name"] == node);
    if want == got && online && node_ok {
        Ok(())
    } else {
        Err(format!(
            "online {online}, node {node_ok}; agent {want:?}; broker {got:?}"
        ))
    }
}

fn desired(name: &str, generation: u64, cmd: &str) -> String {
    pod_yaml(name, cmd, "").replacen(
        &format!("  name: {name}\n"),
        &format!("  name: {name}\n  generation: {generation}\n"),
        1,
    )
}

/// Part 3; a smoke run's churn takes each kind of step (add, change, remove, kill) at least
/// once, 250 ms apart.
fn convergence(reps: u64, churn: u64, smoke: bool) {
    let (pause, min_steps) = if smoke { (250, 4) } else { (2500, 0) };
    let pause = Duration::from_millis(pause);
    println!(
        "=== 3. convergence after a {churn} s broker outage during churn ({reps} repetitions)"
    );
    let mut b = Broker::new(BrokerOpts {
        persistence: true,
        ..Default::default()
    });
    let node = "conv";
    let statics: Vec<(String, &str)> = (0..7).map(|i| (format!("s{i}"), "sleep 3600")).collect();
    let mut a = agent(Some(&b.agent_config(node)), node, &statics);
    for i in 0..3 {
        let name = format!("r{i}");
        b.publish(
            &format!("tidelet/{node}/desired/pods/default/{name}"),
            desired(&name, 1, "sleep 3600").as_bytes(),
            true,
            "operator",
        );
        let r = json(&b.wait_retained(
            &format!("tidelet/{node}/desired/results/default/{name}"),
            |p| !p.is_empty(),
            WAIT,
        ));
        assert_eq!(r["accepted"], true, "desired {name}: {r}");
        a.wait_running(&name);
    }
    let mut live: Vec<String> = statics.iter().map(|s| s.0.clone()).collect();
    let mut next = 7;
    let mut ms = vec![];
    for rep in 0..reps {
        wait_for("converged before the outage", WAIT, || {
            converged(&a, &b, node).ok()
        });
        b.stop();
        let start = Instant::now();
        let mut actions: BTreeMap<&str, u64> = BTreeMap::new();
        let mut step = 0u64;
        while step < min_steps || start.elapsed() < Duration::from_secs(churn) {
            match step % 4 {
                0 => {
                    let n = format!("s{next}");
                    next += 1;
                    a.write(&format!("{n}.yaml"), &pod_yaml(&n, "sleep 3600", ""));
                    live.push(n);
                    *actions.entry("add").or_default() += 1;
                }
                1 => {
                    let n = &live[(step as usize / 4) % live.len()];
                    let cmd = format!("sleep {}", 3600 + step);
                    a.write(&format!("{n}.yaml"), &pod_yaml(n, &cmd, ""));
                    *actions.entry("change").or_default() += 1;
                }
                2 if live.len() > 5 => {
                    let n = live.remove(0);
                    a.remove(&format!("{n}.yaml"));
                    *actions.entry("remove").or_default() += 1;
                }
                _ => {
                    let target = if step % 8 == 3 {
                        format!("r{}", (step / 8) % 3)
                    } else {
                        a.full_name(&live[live.len() - 1])
                    };
                    if let Some(pid) = container_pid(&a, &target) {
                        sigkill(pid);
                        *actions.entry("kill").or_default() += 1;
                    }
                }
            }
            step += 1;
            std::thread::sleep(pause);
        }
        let t0 = Instant::now();
        b.start();
        let mut n = 0u64;
        loop {
            n += 1;
            let Err(e) = converged(&a, &b, node) else {
                break;
            };
            assert!(
                t0.elapsed() < WAIT,
                "not converged {WAIT:?} after the broker's return: {e}"
            );
        }
        let t = t0.elapsed().as_secs_f64() * 1e3;
        println!(
            "  rep {rep}: converged {t:.0} ms after the broker's start ({n} polls; churn {actions:?}; {} pods)",
            a.pods().len()
        );
        ms.push(t);
    }
    println!(
        "  broker start -> retained tree equal to the agent: {}",
        summary(&ms)
    );
    println!("  loadavg {}", loadavg());
    if smoke {
        // `stop_all` removes the static manifests only: it would wait out its 60 s for the
        // remote pods, which go when their desired topics are cleared.
        for i in 0..3 {
            b.publish(
                &format!("tidelet/{node}/desired/pods/default/r{i}"),
                b"",
                true,
                "operator",
            );
        }
    }
    a.stop_all();
}

// ---------------------------------------------------------------------------------------
// 4. 100 agents against one broker.

/// Rss, Pss and Anonymous (kB) of a process, from `smaps_rollup`.
fn memory_kb(pid: i32) -> [u64; 3] {
    let t = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |k: &str| {
        t.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in /proc/{pid}/smaps_rollup"))
    };
    [field("Rss:"), field("Pss:"), field("Anonymous:")]
}

fn vm_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS of mosquitto")
}

/// Start `n` agents (one pod each), wait until their pods run (and, with MQTT, until the broker
/// holds every node online), wait `window`, and return their mean Rss, Pss and Anonymous in
/// kB.
fn fleet_round(b: &mut Broker, n: usize, mqtt: bool, window: Duration) -> [f64; 3] {
    let t = Instant::now();
    let mut agents: Vec<Agent> = Vec::with_capacity(n);
    for i in 0..n {
        let node = format!("n{i:03}");
        let config = mqtt.then(|| b.agent_config(&node));
        agents.push(agent(
            config.as_deref(),
            &node,
            &[("p".into(), "sleep 3600")],
        ));
    }
    for a in &agents {
        a.wait_running(&a.full_name("p"));
    }
    println!(
        "  {n} agents {} MQTT started, pods running, in {:.0} s",
        if mqtt { "with" } else { "without" },
        t.elapsed().as_secs_f64()
    );
    if mqtt {
        wait_for(
            "every node online and its pod on the broker",
            WAIT * 2,
            || {
                let on = b.try_retained("tidelet/+/online", "operator").ok()?;
                let pods = b.try_retained("tidelet/+/pods/#", "operator").ok()?;
                let online = on.values().filter(|p| json(p)["online"] == true).count();
                let running = pods.values().filter(|p| all_running(&json(p))).count();
                (online == n && running == n).then_some(())
            },
        );
        // What the agents publish in the window, by topic kind, as a subscriber sees it; and
        // how many connections the broker accepted meanwhile (reconnects).
        let (mut sub, _) = b.subscribe_with_retained("tidelet/#", "operator");
        let connects = |b: &Broker| b.log().matches("New client connected").count();
        let c0 = connects(b);
        let s0 = b.sys_stats();
        let t0 = Instant::now();
        let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
        while t0.elapsed() < window {
            if let Some(m) = sub.next(window.saturating_sub(t0.elapsed())) {
                let kind = m.topic.splitn(3, '/').nth(2).unwrap_or("");
                let kind = kind.split('/').next().unwrap_or("");
                *kinds.entry(kind.to_string()).or_default() += 1;
            }
        }
        let s1 = b.sys_stats();
        let secs = t0.elapsed().as_secs_f64();
        drop(sub);
        println!(
            "  agents' messages seen by a subscriber on tidelet/# in the window: {kinds:?}; \
             connections accepted meanwhile (the bench's 2 $SYS probes \
             make 4): {}",
            connects(b) - c0
        );
        let num = |s: &BTreeMap<String, String>, k: &str| -> Option<f64> {
            s.get(k).and_then(|v| v.trim().parse().ok())
        };
        assert!(
            num(&s1, "messages/received").is_some(),
            "no $SYS/broker/messages/received: {:?}",
            s1.keys().collect::<Vec<_>>()
        );
        for k in [
            "messages/received",
            "messages/sent",
            "publish/messages/received",
            "publish/messages/sent",
            "bytes/received",
            "bytes/sent",
        ] {
            let (Some(v0), Some(v1)) = (num(&s0, k), num(&s1, k)) else {
                println!("  broker {k}: not reported");
                continue;
            };
            println!(
                "  broker {k}: {:.2}/s over {secs:.0} s ({:.3}/s per agent)",
                (v1 - v0) / secs,
                (v1 - v0) / secs / n as f64
            );
        }
        for k in [
            "load/messages/received/1min",
            "load/messages/sent/1min",
            "load/publish/received/1min",
            "load/publish/sent/1min",
        ] {
            println!("  broker $SYS {k}: {}", s1.get(k).map_or("-", |v| v.trim()));
        }
        println!(
            "  mosquitto RSS: {} kB; clients connected: {}",
            vm_rss_kb(b.pid().expect("broker running")),
            s1.get("clients/connected").map_or("-", |v| v.trim())
        );
    } else {
        std::thread::sleep(window);
    }
    let mem: Vec<[u64; 3]> = agents.iter().map(|a| memory_kb(agent_pid(a))).collect();
    let mean = |i: usize| mem.iter().map(|m| m[i]).sum::<u64>() as f64 / n as f64;
    let m = [mean(0), mean(1), mean(2)];
    println!(
        "  agents' mean Rss {:.0} kB, Pss {:.0} kB, Anonymous {:.0} kB (loadavg {})",
        m[0],
        m[1],
        m[2],
        loadavg()
    );
    // Clean stop: every manifest removed, every pod gone, then the agents go.
    for a in &agents {
        for e in std::fs::read_dir(&a.manifests).unwrap().flatten() {
            let _ = std::fs::remove_file(e.path());
        }
    }
    for a in &mut agents {
        a.stop_all();
    }
    m
}

fn fleet(n: usize, window: u64) {
    println!("=== 4. {n} agents, one pod each, against one Mosquitto (no ACL), {window} s windows");
    let mut b = Broker::new(BrokerOpts::default());
    let w = Duration::from_secs(window);
    let with = fleet_round(&mut b, n, true, w);
    let without = fleet_round(&mut b, n, false, w);
    let d: Vec<String> = ["Rss", "Pss", "Anonymous"]
        .iter()
        .enumerate()
        .map(|(i, k)| {
            let d = with[i] - without[i];
            format!("{k} {d:+.0} kB ({:+.2} MiB)", d / 1024.0)
        })
        .collect();
    println!(
        "  memory cost of MQTT per agent (mean with - mean without): {}",
        d.join(", ")
    );
}

fn main() {
    if !privileged() {
        return;
    }
    let mode = tidelet_e2e::BenchMode::from_args();
    let smoke = mode.smoke;
    let knob = |key: &str, default: u64, smoke_value: u64| mode.knob(key, default, smoke_value);
    let phases = std::env::var("PHASES").unwrap_or_else(|_| "1234".into());
    if smoke {
        println!("smoke run (no --bench): each phase in PHASES once, 1 repetition, 3 pods or agents, 1 s windows; the figures mean nothing");
    }
    println!("tidelet binary: {}", tidelet_e2e::bin().display());
    println!("loadavg at start {}", loadavg());
    let started = Instant::now();
    if phases.contains('1') || phases.contains('2') {
        let b = Broker::new(BrokerOpts::default());
        if phases.contains('1') {
            latency(&b, knob("REPS", 20, 1));
        }
        if phases.contains('2') {
            let (pods, quiet) = if smoke { (3, 1) } else { (10, 10) };
            idle(
                &b,
                knob("IDLE_SECS", 180, 1),
                pods,
                Duration::from_secs(quiet),
                smoke,
            );
        }
    }
    if phases.contains('3') {
        convergence(knob("CONV_REPS", 3, 1), knob("CHURN_SECS", 60, 1), smoke);
    }
    if phases.contains('4') {
        fleet(
            knob("FLEET", 100, 3) as usize,
            knob("FLEET_WINDOW_SECS", 60, 1),
        );
    }
    println!(
        "bench took {:.0} s; loadavg at the end {}",
        started.elapsed().as_secs_f64(),
        loadavg()
    );
}
