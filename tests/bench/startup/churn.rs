//! Issue 16: does the agent come back to its idle footprint once a churn has ended?
//!
//! A fresh agent is measured idle; then, for a number of rounds, it is given `pods` pods (one
//! file each), half of them are edited (a new label and command, so a new static-pod UID: the
//! old pod is torn down and a new one started), and all of them are deleted; each step waits
//! until the agent's API shows it done. With no pod and no supervisor left, after the
//! blocking pool's idle threads have ended (tokio keeps them 10 s) and the agent's periodic
//! file check (20 s; it trims the heap) has come, the agent is measured again. Memory is `/proc/PID/status`'s VmRSS, split into RssAnon (heap, stacks: what a
//! churn could leave behind) and RssFile (the executable's code and read-only data that
//! the agent has run by then: page-cache pages, not a leak).

use std::path::Path;
use std::time::{Duration, Instant};

use tidelet_e2e::Agent;

use crate::{api, kib};

/// An agent's memory, in KiB.
#[derive(Clone, Copy)]
pub(crate) struct Mem {
    pub rss: u64,
    pub anon: u64,
    pub file: u64,
}

impl Mem {
    pub(crate) fn of(pid: i32) -> Mem {
        let status = format!("/proc/{pid}/status");
        Mem {
            rss: kib(&status, "VmRSS:"),
            anon: kib(&status, "RssAnon:"),
            file: kib(&status, "RssFile:"),
        }
    }
}

impl std::fmt::Display for Mem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |k: u64| k as f64 / 1024.0;
        write!(
            f,
            "{:.1} MiB (anon {:.2} MiB, file {:.2} MiB)",
            mib(self.rss),
            mib(self.anon),
            mib(self.file)
        )
    }
}

/// The agent process of `a` (its command line names its manifest directory).
pub(crate) fn agent_pid(a: &Agent) -> i32 {
    let pids = tidelet_e2e::processes_mentioning(&format!(
        "run\0--static-pod-path\0{}",
        a.manifests.display()
    ));
    *pids.first().expect("the agent's process")
}

/// Pod `i` of the churn in version `v`: a short grace period, so that deletes and edits do
/// not wait out busybox's `sleep`, which ignores SIGTERM as pid 1.
fn pod(i: usize, v: usize) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: churn{i:02}, labels: {{v: \"{v}\"}}}}\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: c\n    image: localhost/busybox:1.35\n    imagePullPolicy: Never\n    command: [\"sleep\", \"{}\"]\n    resources: {{limits: {{memory: \"64Mi\", cpu: \"50m\"}}}}\n",
        3600 + v
    )
}

/// Pods the API lists, as `(name, label v, all containers running)`.
fn listed(root: &Path) -> Vec<(String, String, bool)> {
    let v = api(root, r#"{"op":"listPods"}"#);
    v["pods"]
        .as_array()
        .map(|ps| {
            ps.iter()
                .map(|p| {
                    let pod = &p["pod"];
                    (
                        pod["metadata"]["name"].as_str().unwrap_or("").to_string(),
                        pod["metadata"]["labels"]["v"]
                            .as_str()
                            .unwrap_or("")
                            .to_string(),
                        tidelet_e2e::all_running(pod),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Wait (at most 120 s) until the API lists exactly `want`: `(name, version)` pods, all
/// running.
fn until_exactly(a: &Agent, want: &[(String, String)]) {
    let t0 = Instant::now();
    loop {
        let mut got: Vec<(String, String)> = listed(&a.root)
            .into_iter()
            .filter(|(_, _, running)| *running)
            .map(|(n, v, _)| (n, v))
            .collect();
        got.sort();
        let all = listed(&a.root).len();
        if got == want && all == want.len() {
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "churn: after 120 s the agent lists {got:?} ({all} pods), not {want:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run the churn; prints the figures.
pub(crate) fn run(rounds: usize, pods: usize, smoke: bool) {
    let a = Agent::start();
    let quiet = if smoke {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(5)
    };
    std::thread::sleep(quiet);
    let pid = agent_pid(&a);
    let idle = Mem::of(pid);
    let (mut creates, mut edits, mut deletes) = (0, 0, 0);
    let file = |i: usize| a.manifests.join(format!("churn{i:02}.yaml"));
    let want = |vs: &[usize]| {
        let mut w: Vec<(String, String)> = vs
            .iter()
            .enumerate()
            .map(|(i, v)| (format!("churn{i:02}-e2e"), v.to_string()))
            .collect();
        w.sort();
        w
    };
    let t0 = Instant::now();
    for round in 0..rounds {
        let mut version = vec![round * 2; pods];
        for (i, v) in version.iter().enumerate() {
            std::fs::write(file(i), pod(i, *v)).unwrap();
            creates += 1;
        }
        until_exactly(&a, &want(&version));
        for (i, v) in version.iter_mut().enumerate().step_by(2) {
            *v += 1;
            std::fs::write(file(i), pod(i, *v)).unwrap();
            edits += 1;
        }
        until_exactly(&a, &want(&version));
        for i in 0..pods {
            std::fs::remove_file(file(i)).unwrap();
            deletes += 1;
        }
        until_exactly(&a, &[]);
    }
    let churn_time = t0.elapsed();
    tidelet_e2e::wait_for(
        "the churn's supervisors to end",
        Duration::from_secs(60),
        || a.supervisor_pids().is_empty().then_some(()),
    );
    // The blocking pool's threads end 10 s after their last task, and the agent gives its
    // heap's free pages back at its periodic file check (20 s by default): measured once both
    // have passed.
    std::thread::sleep(if smoke {
        Duration::from_millis(200)
    } else {
        Duration::from_secs(22)
    });
    let after = Mem::of(pid);
    println!(
        "(e) agent idle at start: {idle}; after a churn of {creates} creates, {edits} edits and {deletes} deletes ({rounds} rounds of {pods} pods, {:.1} s), no pods left: {after}; difference {:+} KiB (anon {:+} KiB, file {:+} KiB)",
        churn_time.as_secs_f64(),
        after.rss as i64 - idle.rss as i64,
        after.anon as i64 - idle.anon as i64,
        after.file as i64 - idle.file as i64,
    );
}
