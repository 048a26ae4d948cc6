//! Issue 14: what confinement adds to the 2-container pod's start.
//!
//! Four variants of the same pod (the peer's `pod2.yaml`), each started by a fresh agent as in
//! part (a), in interleaved rounds (each round starts every variant once, in an order rotated
//! from round to round) so that a drift of the machine's speed falls on all of them alike:
//!
//! - **hardened**: the pod as written, so confined as every pod is by default: 14
//!   capabilities, RuntimeDefault seccomp, runc's masked and read-only `/proc` paths;
//! - **opted out**: `seccompProfile: Unconfined` and `capabilities: {add: [ALL]}` on both
//!   containers; the masks stay (`procMount: Unmasked` needs `hostUsers: false`);
//! - **privileged**: `privileged: true` on both: no filter, every capability, no masks;
//! - **hostUsers: false**: hardened, plus its own user namespace and idmapped image layers.
//!
//! Every agent has the same config (a `userNamespaces` section with 100 ranges), whichever
//! variant it starts. After the clock stops, each container is checked from the host
//! (`/proc/PID/status`, `uid_map`, `mountinfo`) to have the confinement its variant claims,
//! so the bench cannot measure the wrong thing quietly.
//!
//! A fresh agent compiles RuntimeDefault for the first container (the second hits its cache):
//! that compile is part of the hardened figure, and is also timed alone, in this process.

use std::path::Path;
use std::time::{Duration, Instant};

use tidelet::security::context::MASKED_PATHS;
use tidelet::security::profiles::Profiles;
use tidelet::security::{CapSet, SeccompChoice};
use tidelet_e2e::Agent;

use crate::{ms, settle, until};

/// `CapEff` of a root process with containerd's 14 capabilities.
const DEFAULT_CAPS: &str = "00000000a80425fb";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Hardened,
    OptedOut,
    Privileged,
    HostUsersFalse,
}

const VARIANTS: [Variant; 4] = [
    Variant::Hardened,
    Variant::OptedOut,
    Variant::Privileged,
    Variant::HostUsersFalse,
];

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::Hardened => "hardened (default: 14 caps, RuntimeDefault, masked /proc)",
            Variant::OptedOut => "opted out (Unconfined, capabilities add ALL; masks stay)",
            Variant::Privileged => "privileged (no filter, all caps, no masks)",
            Variant::HostUsersFalse => "hostUsers: false (hardened + user namespace)",
        }
    }

    /// `pod` (the peer's 2-container pod) changed into this variant.
    fn yaml(self, pod: &str) -> String {
        let (anchor, extra): (fn(&str) -> bool, &str) = match self {
            Variant::Hardened => return pod.to_string(),
            Variant::OptedOut => (
                |l| l.trim() == "imagePullPolicy: Never",
                "securityContext: {seccompProfile: {type: Unconfined}, capabilities: {add: [ALL]}}",
            ),
            Variant::Privileged => (
                |l| l.trim() == "imagePullPolicy: Never",
                "securityContext: {privileged: true}",
            ),
            Variant::HostUsersFalse => (|l| l.trim() == "spec:", "  hostUsers: false"),
        };
        let mut out = String::new();
        let mut edits = 0;
        for line in pod.lines() {
            out.push_str(line);
            out.push('\n');
            if anchor(line) {
                // A container's field goes at that container's indentation; the pod's one
                // is written indented already.
                let indent = if self == Variant::HostUsersFalse {
                    ""
                } else {
                    &line[..line.len() - line.trim_start().len()]
                };
                out.push_str(&format!("{indent}{extra}\n"));
                edits += 1;
            }
        }
        assert!(edits > 0, "{self:?}: nothing to change in the pod:\n{pod}");
        out
    }

    /// Panics unless every container of the running pod has what this variant claims.
    fn check(self, a: &Agent) {
        let pods = a.pods();
        let pod = &pods[0];
        let name = pod["metadata"]["name"].as_str().unwrap();
        let statuses = pod["status"]["containerStatuses"].as_array().unwrap();
        assert!(!statuses.is_empty(), "no containers in {pod}");
        for s in statuses {
            let c = s["name"].as_str().unwrap();
            let pid = a.container_pid(name, c);
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
            let field = |key: &str| {
                status
                    .lines()
                    .find_map(|l| l.strip_prefix(&format!("{key}:")))
                    .map(|v| v.trim().to_string())
                    .unwrap_or_default()
            };
            let uid_map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
            let own_userns =
                uid_map.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"];
            let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
            // Which of runc's paths a host has varies (no /proc/kcore in some VMs): any one.
            let masked = mountinfo.lines().any(|l| {
                l.split_whitespace()
                    .nth(4)
                    .is_some_and(|m| MASKED_PATHS.contains(&m))
            });
            let got = (
                field("Seccomp") == "2",
                field("CapEff") == DEFAULT_CAPS,
                masked,
                own_userns,
            );
            let want = match self {
                Variant::Hardened => (true, true, true, false),
                Variant::OptedOut => (false, false, true, false),
                Variant::Privileged => (false, false, false, false),
                Variant::HostUsersFalse => (true, true, true, true),
            };
            assert_eq!(
                got, want,
                "{self:?}: {name}/{c} (pid {pid}): (seccomp filter, 14 caps, /proc paths masked, own user namespace)"
            );
        }
    }
}

fn p90(sorted: &[Duration]) -> Duration {
    sorted[(sorted.len() * 9).div_ceil(10) - 1]
}

fn signed_ms(a: Duration, b: Duration) -> f64 {
    (a.as_secs_f64() - b.as_secs_f64()) * 1000.0
}

fn median_f64(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Part (d): `runs` interleaved rounds of the four variants of `pod`, then the compile alone.
pub fn run(pod: &str, runs: usize) {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join("subid");
    std::fs::write(&sub, "tidelet:1000000:6553600\n").unwrap();
    let config = format!(
        "userNamespaces: {{user: tidelet, subuidFile: {0}, subgidFile: {0}}}\n",
        sub.display()
    );
    let mut times: Vec<Vec<Duration>> = vec![vec![]; VARIANTS.len()];
    for round in 0..runs {
        for k in 0..VARIANTS.len() {
            let i = (round + k) % VARIANTS.len();
            let v = VARIANTS[i];
            let yaml = v.yaml(pod);
            let a = Agent::start_with_config(Some(&config));
            settle();
            let t0 = Instant::now();
            std::fs::write(a.manifests.join("pod.yaml"), &yaml).unwrap();
            times[i].push(until(1, &a.root, t0));
            v.check(&a);
        }
    }
    println!("(d) issue 14: manifest written -> both containers of the 2-container pod running, by confinement ({runs} interleaved rounds)");
    let mut sorted = times.clone();
    for (i, v) in VARIANTS.iter().enumerate() {
        let t = &mut sorted[i];
        t.sort();
        println!(
            "(d)   {:<60} median {:>8}  p90 {:>8}  min {:>8}  max {:>8}  n={}",
            v.label(),
            ms(t[t.len() / 2]),
            ms(p90(t)),
            ms(t[0]),
            ms(t[t.len() - 1]),
            t.len()
        );
    }
    let med = |i: usize| sorted[i][sorted[i].len() / 2];
    // Round by round: the variant's start minus the hardened pod's of the same round.
    let per_round = |i: usize| {
        median_f64(
            times[i]
                .iter()
                .zip(&times[0])
                .map(|(t, h)| signed_ms(*t, *h))
                .collect(),
        )
    };
    let verdict = |d: f64, limit: f64| if d <= limit { "met" } else { "NOT met" };
    for (i, than) in [(1, "opted out"), (2, "privileged")] {
        let d = signed_ms(med(0), med(i));
        println!(
            "(d) hardening adds to the median vs {than}: {d:+.1} ms (p90 {:+.1} ms; median of per-round differences {:+.1} ms); target <= 3 ms: {}",
            signed_ms(p90(&sorted[0]), p90(&sorted[i])),
            -per_round(i),
            verdict(d, 3.0)
        );
    }
    let d = signed_ms(med(3), med(0));
    println!(
        "(d) hostUsers: false adds to the hardened pod's median: {d:+.1} ms (p90 {:+.1} ms; median of per-round differences {:+.1} ms); target <= +10 ms: {}",
        signed_ms(p90(&sorted[3]), p90(&sorted[0])),
        per_round(3),
        verdict(d, 10.0)
    );
    compile_alone(dir.path());
}

/// RuntimeDefault compiled for the default capabilities, as a fresh agent does for its first
/// hardened container: in this process, a new cache each time.
fn compile_alone(root: &Path) {
    let mut t = vec![];
    let mut len = 0;
    for _ in 0..51 {
        let profiles = Profiles::new(root);
        let t0 = Instant::now();
        let p = profiles
            .program(&SeccompChoice::RuntimeDefault, CapSet::default_set())
            .unwrap()
            .unwrap();
        t.push(t0.elapsed());
        len = p.len();
    }
    t.sort();
    println!(
        "(d) RuntimeDefault compiled alone (once per agent and capability set): median {:.0} µs, max {:.0} µs, {len} BPF instructions",
        t[t.len() / 2].as_secs_f64() * 1e6,
        t[t.len() - 1].as_secs_f64() * 1e6
    );
}
