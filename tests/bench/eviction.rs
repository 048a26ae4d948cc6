//! Eviction figures of tidelet (issue 4), measured from outside the agent on the host's
//! cgroup v1, with the real binary, as root:
//!
//! 1. latency: from the moment the pods' working set (`kubepods` `memory.usage_in_bytes`
//!    minus `total_inactive_file`, as kubelet counts it) crosses the hard threshold to the
//!    victim pod's cgroup tree having no process left; n repetitions with one agent, beside
//!    the agent's own `killed_in_ms` log field and its wake-up reason;
//! 2. safety: kernel OOM kills of the Guaranteed and Burstable pods over those repetitions
//!    (v1 counts a kill in the victim's own cgroup only, so their trees are summed), and their
//!    restartCount;
//! 3. idle cost: CPU time of the agent (all threads) and of its `eviction` thread alone over
//!    an idle minute with 3 pods running and the default configuration, then over 30 s with
//!    memory thresholds only (`IDLE2_SECS`).
//!
//! The scenario is the one of tests/e2e/eviction.rs: `kubepods` limited to 384 MiB through
//! `systemReserved`, `memory.available<100Mi`, a Guaranteed pod (64Mi, holding 32 MiB), a
//! Burstable pod within its requests and a BestEffort hog growing by 8 MiB every 0.2 s. Each
//! repetition writes a new hog manifest once the previous hog was evicted, its manifest removed
//! and `MemoryPressure` cleared.
//!
//! Run with `scripts/bench-eviction.sh`, or
//! `TIDELET_BIN=target/release/tidelet cargo bench -p tidelet-e2e --bench eviction`
//! (`REPS`, `IDLE_SECS` to change the defaults of 20 and 60).
//!
//! Without `--bench` (`cargo test -p tidelet-e2e --bench eviction`, against the debug build) it
//! is a smoke run: one repetition, idle windows of 1 s with no warm-up, whatever `REPS` and
//! `IDLE_SECS` say; every part runs and everything asserted here is asserted the same.

// Test code: an unwrap that fails is a failed test, named with its location.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tidelet_e2e::{cgroup_tree_pids, privileged, processes_mentioning, wait_for, Agent};

const MI: u64 = 1 << 20;
const PODS_MEMORY: u64 = 384 * MI;
const THRESHOLD: u64 = 100 * MI;
/// How often the sampler reads the cgroup files.
const SAMPLE_EVERY: Duration = Duration::from_millis(2);
/// The victim's memory counts as released below this (it holds over 100 MiB before).
const RELEASED: u64 = 4 * MI;

fn pod_yaml(name: &str, cmd: &str, resources: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  terminationGracePeriodSeconds: 2\n  containers:\n  - name: c\n    image: localhost/busybox:1.35\n    imagePullPolicy: Never\n    command: [\"sh\", \"-c\", {cmd:?}]\n{resources}")
}

/// Holds `mib` MiB (a `dd` blocked writing its buffer into a pipe nobody reads) and sleeps.
fn hold(mib: u64) -> String {
    format!("dd if=/dev/zero bs={mib}M count=1 2>/dev/null | sleep 3600 & wait")
}

/// Grows by 8 MiB every 0.2 s (about 40 MiB/s), as the e2e test's `grow(8)`.
const GROW: &str =
    "while true; do dd if=/dev/zero bs=8M count=1 2>/dev/null | sleep 3600 & sleep 0.2; done";
const GUARANTEED: &str =
    "    resources:\n      requests: {cpu: 100m, memory: 64Mi}\n      limits: {cpu: 100m, memory: 64Mi}\n";
const BURSTABLE: &str =
    "    resources:\n      requests: {memory: 64Mi}\n      limits: {memory: 128Mi}\n";

fn read_u64(p: &Path) -> Option<u64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn stat_field(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

fn vmstat_oom_kills() -> u64 {
    std::fs::read_to_string("/proc/vmstat")
        .ok()
        .and_then(|s| stat_field(&s, "oom_kill"))
        .unwrap_or(0)
}

/// Seconds since the Unix epoch.
fn wall(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH).unwrap().as_secs_f64()
}

/// Seconds since the epoch of a log line's RFC 3339 UTC timestamp
/// (`2026-11-26T01:41:21.123456Z ...`), by days from the civil date (Howard Hinnant's
/// `days_from_civil`).
fn log_time(line: &str) -> Option<f64> {
    let ts = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = ts.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (hh, mm) = (
        t.next()?.parse::<f64>().ok()?,
        t.next()?.parse::<f64>().ok()?,
    );
    let ss: f64 = t.next()?.parse().ok()?;
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + hh * 3600.0 + mm * 60.0 + ss)
}

/// The value of `key=` in a log line (up to the next space).
fn log_field<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(&format!(" {key}="))? + key.len() + 2;
    line[at..].split(' ').next()
}

/// What the sampler saw in one repetition.
#[derive(Debug, Default)]
struct Sample {
    /// First sample with the working set above the threshold: monotonic and wall time, bytes.
    crossed: Option<(Instant, f64, u64)>,
    /// `total_inactive_file` of `kubepods` at that sample: usage runs ahead of the working set
    /// by this much, so a usage threshold at the same number fires that much earlier.
    inactive_at_crossing: u64,
    /// First sample with the usage (not the working set) above the threshold, which is where
    /// a v1 usage threshold at `limit - threshold` fires.
    usage_crossed: Option<Instant>,
    /// The last upward crossing before the end: differs from `crossed` when the working set
    /// fell back under the threshold in between (a `sleep` of the hog exiting).
    last_crossed: Option<Instant>,
    /// Samples after the first crossing with the working set back under the threshold (also
    /// those after the kill, as the victim's memory is freed).
    dips: u64,
    /// Samples above the threshold from the first crossing to the first dip: a crossing by a
    /// few pages that lasts one sample (2 ms) is seen by no monitor that samples, and gone
    /// before any look it could cause.
    first_stretch: u64,
    /// First sample after the crossing with no process left in the victim's tree.
    gone: Option<Instant>,
    /// First sample after the crossing with the victim's memory (`memory.usage_in_bytes` of its
    /// cgroup) under `RELEASED`: its processes may still be exiting (the last one out of the
    /// pod's mount namespace unmounts the overlay root, which syncs the upper file system).
    released: Option<Instant>,
    /// The victim's processes vanished before any crossing was seen.
    gone_early: bool,
    /// The most OOM kills seen in the victim's tree (v1 keeps them there until rmdir).
    victim_oom_kills: u64,
    samples: u64,
    /// The victim's processes (pid, state, comm) still there about every 50 ms after the
    /// crossing: the last such list, to say what kept a slow eviction waiting.
    left: String,
    /// Longest gap between two samples (the resolution actually achieved).
    max_gap: Duration,
}

/// Read `kubepods` and the victim's tree every `SAMPLE_EVERY` until the victim is gone after
/// the crossing, `stop` is set, or 120 s passed.
fn sample(kubepods: PathBuf, victim: PathBuf, stop: Arc<AtomicBool>) -> Sample {
    realtime();
    let wake_at = PODS_MEMORY - THRESHOLD;
    let mut s = Sample::default();
    let start = Instant::now();
    let mut last = start;
    let mut above = false;
    while !stop.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(120) {
        let now = Instant::now();
        let now_wall = wall(SystemTime::now());
        s.max_gap = s.max_gap.max(now - last);
        last = now;
        s.samples += 1;
        let usage = read_u64(&kubepods.join("memory.usage_in_bytes")).unwrap_or(0);
        let inactive = std::fs::read_to_string(kubepods.join("memory.stat"))
            .ok()
            .and_then(|t| stat_field(&t, "total_inactive_file"))
            .unwrap_or(0);
        let ws = usage.saturating_sub(inactive);
        if usage > wake_at && s.usage_crossed.is_none() {
            s.usage_crossed = Some(now);
        }
        if ws > wake_at {
            if s.crossed.is_none() {
                s.crossed = Some((now, now_wall, ws));
                s.inactive_at_crossing = inactive;
            }
            if !above {
                s.last_crossed = Some(now);
            }
            if s.dips == 0 {
                s.first_stretch += 1;
            }
            above = true;
        } else {
            if s.crossed.is_some() {
                s.dips += 1;
            }
            above = false;
        }
        if s.samples % 16 == 0 {
            s.victim_oom_kills = s
                .victim_oom_kills
                .max(tidelet_e2e::v1_oom_kills_under(&victim));
        }
        if s.crossed.is_some() && s.released.is_none() {
            let held = read_u64(&victim.join("memory.usage_in_bytes")).unwrap_or(0);
            if held < RELEASED {
                s.released = Some(now);
            }
        }
        let pids = cgroup_tree_pids(&victim);
        if s.crossed
            .is_some_and(|c| (now - c.0) > Duration::from_millis(40))
            && s.samples % 25 == 0
            && !pids.is_empty()
        {
            s.left = format!(
                "{} ms: {}",
                (now - s.crossed.unwrap().0).as_millis(),
                describe(&pids)
            );
        }
        if pids.is_empty() {
            if s.crossed.is_some() {
                s.gone = Some(now);
            } else {
                s.gone_early = true;
            }
            break;
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
    s.victim_oom_kills = s
        .victim_oom_kills
        .max(tidelet_e2e::v1_oom_kills_under(&victim));
    s
}

/// Make the calling thread `SCHED_FIFO` (priority 10): on a loaded machine a normal thread
/// can be kept off the CPU for 100 ms and more, longer than a whole eviction. It sleeps
/// `SAMPLE_EVERY` between samples, so it takes little from the agent. True when it worked.
fn realtime() -> bool {
    let param = libc::sched_param { sched_priority: 10 };
    // SAFETY: `param` is a valid sched_param living across the call; 0 names this thread.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) == 0 }
}

/// `pid:state[:wchan]:comm:runq` of up to 8 processes (runq: how long it waited for a CPU in
/// all), and how many there are.
fn describe(pids: &[i32]) -> String {
    let mut out: Vec<String> = pids
        .iter()
        .take(8)
        .map(|p| {
            let st = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let comm = st
                .find('(')
                .zip(st.rfind(')'))
                .map(|(a, b)| &st[a + 1..b])
                .unwrap_or("?");
            let state = st
                .rfind(')')
                .and_then(|b| st[b + 1..].split_whitespace().next())
                .unwrap_or("?");
            // Time spent runnable but waiting for a CPU, over the process's life.
            let rq_ms = std::fs::read_to_string(format!("/proc/{p}/schedstat"))
                .ok()
                .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
                .map_or("?".into(), |ns| format!("{}", ns / 1_000_000));
            // Where a sleeping one waits in the kernel (e.g. `wb_wait_for_completion`: the last
            // process of the pod's mount namespace syncing the overlay root as it unmounts).
            let wchan = std::fs::read_to_string(format!("/proc/{p}/wchan"))
                .ok()
                .filter(|w| !w.is_empty() && w != "0")
                .map_or(String::new(), |w| format!(":{w}"));
            format!("{p}:{state}{wchan}:{comm}:runq {rq_ms} ms")
        })
        .collect();
    out.push(format!("({} in all)", pids.len()));
    out.join(" ")
}

fn node_condition(a: &Agent, t: &str) -> String {
    let out = a.cli(&["get", "node", "-o", "json"]);
    let n: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    n["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == t))
        .and_then(|c| c["status"].as_str())
        .unwrap_or("?")
        .to_string()
}

fn evicted(p: &Value) -> bool {
    p["status"]["phase"] == "Failed" && p["status"]["reason"] == "Evicted"
}

fn restarts(p: &Value) -> u64 {
    p["status"]["containerStatuses"]
        .as_array()
        .map(|cs| cs.iter().filter_map(|c| c["restartCount"].as_u64()).sum())
        .unwrap_or(u64::MAX)
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn summary(label: &str, v: &[f64]) {
    if v.is_empty() {
        println!("{label}: no values");
        return;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    println!(
        "{label}: median {:.1} ms, p90 {:.1} ms, max {:.1} ms, min {:.1} ms (n={})",
        pct(&s, 0.5),
        pct(&s, 0.9),
        s[s.len() - 1],
        s[0],
        s.len()
    );
}

fn agent_pid(a: &Agent) -> i32 {
    let pids = processes_mentioning(&format!(
        "run\0--static-pod-path\0{}",
        a.manifests.display()
    ));
    assert_eq!(pids.len(), 1, "agent processes: {pids:?}");
    pids[0]
}

/// After a hog's manifest was removed: wait for `MemoryPressure` to clear and the pod to go.
fn settle(a: &Agent, name: &str) {
    wait_for("MemoryPressure cleared", Duration::from_secs(60), || {
        (node_condition(a, "MemoryPressure") == "False").then_some(())
    });
    wait_for(&format!("{name} gone"), Duration::from_secs(60), || {
        a.pod(&a.full_name(name)).is_none().then_some(())
    });
}

/// Repetitions of the hog scenario; prints the latency and safety figures.
fn latency_and_safety(reps: usize) {
    let config = format!(
        "systemReserved:\n  memory: \"{}\"\nevictionHard:\n  memory.available: \"100Mi\"\nevictionPressureTransitionPeriod: 1s\n",
        tidelet_e2e::mem_total() - PODS_MEMORY
    );
    // The monitor's debug line "threshold met" says what woke it.
    let mut a = Agent::start_with(
        Some(&config),
        &[("TIDELET_LOG", "info,tidelet::eviction=debug")],
    );
    let kubepods = a.memory_cgroup("kubepods");
    assert_eq!(
        read_u64(&kubepods.join("memory.limit_in_bytes")),
        Some(PODS_MEMORY)
    );
    a.write(
        "guaranteed.yaml",
        &pod_yaml("guaranteed", &hold(32), GUARANTEED),
    );
    a.write(
        "burstable.yaml",
        &pod_yaml("burstable", &hold(16), BURSTABLE),
    );
    let g = a.wait_running(&a.full_name("guaranteed"));
    let b = a.wait_running(&a.full_name("burstable"));
    let cg = |p: &Value, qos: &str| {
        kubepods.join(format!(
            "{qos}pod{}",
            p["metadata"]["uid"].as_str().unwrap()
        ))
    };
    let (g_cg, b_cg) = (cg(&g, ""), cg(&b, "burstable/"));
    std::thread::sleep(Duration::from_secs(1));
    let oom_before =
        tidelet_e2e::v1_oom_kills_under(&g_cg) + tidelet_e2e::v1_oom_kills_under(&b_cg);
    let vm_before = vmstat_oom_kills();

    let (mut total, mut agent_kill, mut to_log) = (vec![], vec![], vec![]);
    let mut to_released = vec![];
    let mut wakes = std::collections::BTreeMap::<String, usize>::new();
    let mut slow = vec![];
    let mut sustained = vec![];
    let (mut victim_ooms, mut wrong, mut max_gap, mut samples) = (0, 0, Duration::ZERO, 0);
    let mut unmeasured = 0;
    println!(
        "sampler thread: {}",
        if std::thread::spawn(realtime).join().unwrap() {
            "SCHED_FIFO priority 10"
        } else {
            "normal priority (SCHED_FIFO refused)"
        }
    );
    println!(
        "rep  ws_at_crossing  crossing->gone  agent_killed_in  crossing->'threshold met'  wake"
    );
    for i in 1..=reps {
        let name = format!("hog{i:02}");
        let file = format!("{name}.yaml");
        a.write(&file, &pod_yaml(&name, GROW, ""));
        let p = a.wait_running(&a.full_name(&name));
        let victim = cg(&p, "besteffort/");
        if i == 1 {
            let shares = |rel: &str| {
                read_u64(&a.cpu_cgroup(rel).join("cpu.shares"))
                    .map_or("?".into(), |v| v.to_string())
            };
            println!(
                "cpu.shares: kubepods {}, kubepods/besteffort {}, kubepods/burstable {}; loadavg {}",
                shares("kubepods"),
                shares("kubepods/besteffort"),
                shares("kubepods/burstable"),
                std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim()
            );
        }
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (k, v, s) = (kubepods.clone(), victim.clone(), stop.clone());
            std::thread::spawn(move || sample(k, v, s))
        };
        let hog = wait_for(&format!("{name} evicted"), Duration::from_secs(120), || {
            a.pod(&a.full_name(&name)).filter(evicted)
        });
        stop.store(true, Ordering::Relaxed);
        let s = sampler.join().unwrap();
        samples += s.samples;
        max_gap = max_gap.max(s.max_gap);
        victim_ooms += s.victim_oom_kills;
        let (Some((c_at, c_wall, ws)), Some(gone)) = (s.crossed, s.gone) else {
            // The sampler was kept off the CPU across the whole eviction (gone_early), or
            // saw no end: say so, and do not count the repetition.
            println!("{i:>3}  not measured: {s:?}; {}", hog["status"]["message"]);
            unmeasured += 1;
            a.remove(&file);
            settle(&a, &name);
            continue;
        };
        let ms = (gone - c_at).as_secs_f64() * 1e3;
        total.push(ms);
        // Gone implies released (a cgroup without processes holds no anonymous memory).
        let released_ms = (s.released.unwrap_or(gone) - c_at).as_secs_f64() * 1e3;
        to_released.push(released_ms);
        let last_ms = s
            .last_crossed
            .map_or(ms, |l| (gone - l).as_secs_f64() * 1e3);
        sustained.push(last_ms);
        let dipped = if s.dips > 0 {
            format!(
                " (first above it for {} samples, by {} KiB at first; under the threshold again for {} samples, also counting those after the kill; from the last upward crossing {last_ms:.1} ms)",
                s.first_stretch,
                ws.saturating_sub(PODS_MEMORY - THRESHOLD) >> 10,
                s.dips
            )
        } else {
            String::new()
        };
        if ms > 100.0 && !s.left.is_empty() {
            slow.push(format!("{name}: {ms:.0} ms; still there at {}", s.left));
        }
        // The agent's own view: its "pod evicted" line for this pod, and the "threshold met"
        // line before it.
        // The agent logs it when its kill loop returns, which can be after the pod's status
        // (the worker reaps the processes) already says Evicted.
        let full = a.full_name(&name);
        let is_line = |l: &str| l.contains("pod evicted") && l.contains(&format!("/{full} "));
        let log = wait_for(
            "the 'pod evicted' log line",
            Duration::from_secs(10),
            || {
                let log = a.agent_log();
                log.lines().any(is_line).then_some(log)
            },
        );
        let lines: Vec<&str> = log.lines().collect();
        let ev = lines.iter().position(|l| is_line(l));
        let (mut kill_s, mut met_s, mut wake_s) = ("?".to_string(), "?".to_string(), "?".into());
        if let Some(ev) = ev {
            if let Some(k) =
                log_field(lines[ev], "killed_in_ms").and_then(|v| v.parse::<f64>().ok())
            {
                agent_kill.push(k);
                kill_s = format!("{k:.1} ms");
            }
            if let Some(met) = lines[..ev]
                .iter()
                .rev()
                .find(|l| l.contains("threshold met"))
            {
                if let Some(t) = log_time(met) {
                    let d = (t - c_wall) * 1e3;
                    to_log.push(d);
                    met_s = format!("{d:.1} ms");
                }
                let w = met
                    .find("wake=")
                    .map(|at| met[at + 5..].split(" signal=").next().unwrap_or(""))
                    .unwrap_or("?")
                    .to_string();
                *wakes.entry(w.clone()).or_default() += 1;
                wake_s = w;
            }
        }
        // Only the hog may go.
        for other in ["guaranteed", "burstable"] {
            if a.pod(&a.full_name(other)).is_some_and(|p| evicted(&p)) {
                wrong += 1;
            }
        }
        let usage_first = s.usage_crossed.map_or(String::new(), |u| {
            format!(
                "; memory released at {released_ms:.1} ms; usage crossed {:.1} ms before, inactive_file {:.1} MiB",
                c_at.saturating_duration_since(u).as_secs_f64() * 1e3,
                s.inactive_at_crossing as f64 / MI as f64
            )
        });
        println!(
            "{i:>3}  {:>10.1} MiB  {ms:>11.1} ms  {kill_s:>15}  {met_s:>24}  {wake_s}{dipped}{usage_first}",
            ws as f64 / MI as f64
        );
        a.remove(&file);
        settle(&a, &name);
    }
    println!(
        "loadavg after the repetitions: {}",
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
    );
    let oom_after = tidelet_e2e::v1_oom_kills_under(&g_cg) + tidelet_e2e::v1_oom_kills_under(&b_cg);
    let vm_after = vmstat_oom_kills();
    let (g, b) = (
        a.pod(&a.full_name("guaranteed")).unwrap(),
        a.pod(&a.full_name("burstable")).unwrap(),
    );
    println!();
    println!(
        "sampler: {samples} samples every {SAMPLE_EVERY:?} (longest gap {:.1} ms); crossing = working set > {} MiB",
        max_gap.as_secs_f64() * 1e3,
        (PODS_MEMORY - THRESHOLD) / MI
    );
    if unmeasured > 0 {
        println!("(1) {unmeasured} repetitions not measured (the sampler missed them)");
    }
    summary("(1) crossing -> victim's processes gone", &total);
    summary(
        "(1) crossing -> victim's memory released (its cgroup's usage < 4 MiB)",
        &to_released,
    );
    summary(
        "(1) last upward crossing (the working set stayed above) -> victim's processes gone",
        &sustained,
    );
    summary(
        "(1) agent killed_in_ms (SIGKILL until its cgroup is empty)",
        &agent_kill,
    );
    summary("(1) crossing -> agent's 'threshold met' log line", &to_log);
    println!("(1) what woke the monitor: {wakes:?}");
    for l in &slow {
        println!("(1) slow: {l}");
    }
    println!(
        "(2) kernel OOM kills in the Guaranteed and Burstable pods: {} over {reps} repetitions; in the hogs: {victim_ooms}; host-wide (/proc/vmstat, includes anything else on the machine): {}",
        oom_after - oom_before,
        vm_after - vm_before
    );
    println!(
        "(2) restartCount: guaranteed {} ({}), burstable {} ({}); wrong pod evicted: {wrong} times",
        restarts(&g),
        g["status"]["phase"],
        restarts(&b),
        b["status"]["phase"]
    );
    a.stop_all();
}

/// Clock ticks (utime + stime) of a `/proc/.../stat` file.
fn stat_ticks(path: &str) -> u64 {
    let s = std::fs::read_to_string(path).unwrap_or_default();
    let Some(at) = s.rfind(')') else { return 0 };
    let f: Vec<u64> = s[at + 2..]
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // After the comm: state is field 3, utime 14, stime 15 (1-based).
    f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0)
}

/// Nanoseconds on the CPU (`schedstat`'s first field), finer than clock ticks.
fn sched_ns(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// `voluntary_ctxt_switches` of a `/proc/.../status` file: how often the thread slept.
fn switches(path: &str) -> u64 {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn eviction_tid(pid: i32) -> Option<String> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .find(|t| {
            std::fs::read_to_string(format!("/proc/{pid}/task/{t}/comm"))
                .is_ok_and(|c| c.trim() == "eviction")
        })
}

/// CPU of the agent over `secs` idle seconds with 3 pods and the config `config` (None: the
/// defaults), described as `label`, after `warm_up` with the pods running.
fn idle_cost(secs: u64, warm_up: Duration, label: &str, config: Option<&str>) {
    let mut a = Agent::start_with(config, &[("TIDELET_LOG", "info")]);
    a.write(
        "guaranteed.yaml",
        &pod_yaml("guaranteed", &hold(32), GUARANTEED),
    );
    a.write(
        "burstable.yaml",
        &pod_yaml("burstable", &hold(16), BURSTABLE),
    );
    a.write("besteffort.yaml", &pod_yaml("besteffort", "sleep 3600", ""));
    for p in ["guaranteed", "burstable", "besteffort"] {
        a.wait_running(&a.full_name(p));
    }
    std::thread::sleep(warm_up);
    let pid = agent_pid(&a);
    let tid = eviction_tid(pid).expect("the agent has a thread named eviction");
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let (p_stat, t_stat) = (
        format!("/proc/{pid}/stat"),
        format!("/proc/{pid}/task/{tid}/stat"),
    );
    let t_sched = format!("/proc/{pid}/task/{tid}/schedstat");
    let sups = a.supervisor_pids();
    let sup_ticks = || -> u64 {
        sups.iter()
            .map(|p| stat_ticks(&format!("/proc/{p}/stat")))
            .sum()
    };
    let t_status = format!("/proc/{pid}/task/{tid}/status");
    let w0 = switches(&t_status);
    let t0 = Instant::now();
    let (p0, t0ticks, tn0, s0) = (
        stat_ticks(&p_stat),
        stat_ticks(&t_stat),
        sched_ns(&t_sched),
        sup_ticks(),
    );
    std::thread::sleep(Duration::from_secs(secs));
    let (p1, t1ticks, tn1, s1) = (
        stat_ticks(&p_stat),
        stat_ticks(&t_stat),
        sched_ns(&t_sched),
        sup_ticks(),
    );
    let el = t0.elapsed().as_secs_f64();
    let pct_ticks = |d: u64| d as f64 / hz / el * 100.0;
    let pct_ns = |d: u64| d as f64 / 1e9 / el * 100.0;
    println!(
        "(3) idle {el:.1} s, 3 pods, {label}: agent (all threads, also those that exited) {:.3} % of one core ({} ticks of {} ms); eviction thread {:.3} % ({} ticks; schedstat {:.4} %); the 3 supervisors together {:.3} %",
        pct_ticks(p1 - p0),
        p1 - p0,
        1000.0 / hz,
        pct_ticks(t1ticks - t0ticks),
        t1ticks - t0ticks,
        pct_ns(tn1 - tn0),
        pct_ticks(s1 - s0)
    );
    println!(
        "(3) eviction thread: {:.1} wake-ups/s (voluntary context switches over the window)",
        (switches(&t_status) - w0) as f64 / el
    );
    a.stop_all();
}

fn main() {
    if !privileged() {
        return;
    }
    let mode = tidelet_e2e::BenchMode::from_args();
    let smoke = mode.smoke;
    let knob = |key: &str, default: u64, smoke_value: u64| mode.knob(key, default, smoke_value);
    let reps = knob("REPS", 20, 1) as usize;
    let idle = knob("IDLE_SECS", 60, 1);
    let idle2 = knob("IDLE2_SECS", 30, 1);
    let warm_up = Duration::from_secs(if smoke { 0 } else { 5 });
    if smoke {
        println!("smoke run (no --bench): 1 repetition, 1 s idle windows, no warm-up; the figures mean nothing");
    }
    let bin = tidelet_e2e::bin();
    println!("tidelet binary: {}", bin.display());
    println!(
        "kubepods limit {} MiB (systemReserved = MemTotal - that), evictionHard memory.available<{} MiB, hog +8 MiB / 0.2 s",
        PODS_MEMORY / MI,
        THRESHOLD / MI
    );
    latency_and_safety(reps);
    idle_cost(idle, warm_up, "default config", None);
    // kubelet's default `nodefs.inodesFree<5%` keeps the monitor on its 100 ms period on most
    // file systems (see the report); with memory thresholds only it runs on its 1 s period.
    idle_cost(
        idle2,
        warm_up,
        "evictionHard memory.available<100Mi only",
        Some("evictionHard:\n  memory.available: \"100Mi\"\n"),
    );
}
