//! A pod's Kubernetes status (`phase`, conditions, `containerStatuses`) computed from what
//! tidelet knows of its containers: a pure function, shaped as kubelet's `getPhase` and
//! `generateAPIPodStatus` shape it.

use k8s_openapi::api::core::v1::{
    ContainerState as KState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Serialize};

/// A terminated run of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terminated {
    pub exit_code: i32,
    pub signal: Option<i32>,
    pub reason: String,
    pub message: String,
    pub started_at: i64,
    pub finished_at: i64,
    /// `tidelet://<pod-uid>/<name>/<attempt>`
    pub container_id: String,
}

/// What a container is doing now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Current {
    Waiting {
        reason: String,
        message: String,
    },
    Running {
        started_at: i64,
        container_id: String,
    },
    Terminated(Terminated),
}

/// Everything the status needs about one container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub restart_count: u32,
    pub current: Current,
    pub last_terminated: Option<Terminated>,
}

/// Pod phase by kubelet's `getPhase` rules (no init containers).
pub fn phase(restart_policy: &str, containers: &[ContainerView]) -> &'static str {
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in containers {
        match &c.current {
            Current::Running { .. } => running += 1,
            Current::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
            Current::Waiting { .. } => {
                if c.last_terminated.is_some() {
                    stopped += 1;
                } else {
                    waiting += 1;
                }
            }
        }
    }
    if waiting > 0 {
        return "Pending";
    }
    if running > 0 {
        return "Running";
    }
    if stopped == 0 {
        return "Pending";
    }
    match restart_policy {
        "Always" => "Running",
        "OnFailure" if stopped == succeeded => "Succeeded",
        "OnFailure" => "Running",
        _ if stopped == succeeded => "Succeeded",
        _ => "Failed",
    }
}

/// Nanoseconds since the epoch as a Kubernetes `Time` (whole seconds, as the API stores it).
pub fn time(ns: i64) -> Option<Time> {
    k8s_openapi::jiff::Timestamp::from_second(ns.div_euclid(1_000_000_000))
        .ok()
        .map(Time)
}

fn terminated(t: &Terminated) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit_code,
        signal: t.signal,
        reason: Some(t.reason.clone()),
        message: (!t.message.is_empty()).then(|| t.message.clone()),
        started_at: time(t.started_at),
        finished_at: time(t.finished_at),
        container_id: Some(t.container_id.clone()),
    }
}

fn container_status(c: &ContainerView) -> ContainerStatus {
    let (state, ready, id) = match &c.current {
        Current::Waiting { reason, message } => (
            KState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: (!message.is_empty()).then(|| message.clone()),
                }),
                ..Default::default()
            },
            false,
            None,
        ),
        Current::Running {
            started_at,
            container_id,
        } => (
            KState {
                running: Some(ContainerStateRunning {
                    started_at: time(*started_at),
                }),
                ..Default::default()
            },
            true,
            Some(container_id.clone()),
        ),
        Current::Terminated(t) => (
            KState {
                terminated: Some(terminated(t)),
                ..Default::default()
            },
            false,
            Some(t.container_id.clone()),
        ),
    };
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: c.image_id.clone(),
        container_id: id,
        ready,
        started: Some(ready),
        restart_count: c.restart_count as i32,
        state: Some(state),
        last_state: c.last_terminated.as_ref().map(|t| KState {
            terminated: Some(terminated(t)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Inputs of a pod status besides its containers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodFacts {
    pub restart_policy: String,
    pub qos_class: String,
    pub host_ip: String,
    /// The first of `pod_ips`, or empty.
    pub pod_ip: String,
    /// Every pod IP, IPv4 first (`status.podIPs`); empty means `[pod_ip]`.
    pub pod_ips: Vec<String>,
    pub start_time_ns: Option<i64>,
    /// Set while the pod cannot run at all (e.g. rejected at admission): phase Failed.
    pub failed: Option<(String, String)>,
    /// A problem to show without changing the phase (e.g. the manifest became invalid).
    pub notice: Option<(String, String)>,
}

fn condition(type_: &str, ok: bool, reason: Option<&str>, since_ns: Option<i64>) -> PodCondition {
    PodCondition {
        type_: type_.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: reason.map(str::to_string),
        last_transition_time: since_ns.and_then(time),
        ..Default::default()
    }
}

pub fn pod_status(facts: &PodFacts, containers: &[ContainerView]) -> PodStatus {
    let all_ready = !containers.is_empty()
        && containers
            .iter()
            .all(|c| matches!(c.current, Current::Running { .. }));
    let not_ready = (!all_ready).then_some("ContainersNotReady");
    let phase = match &facts.failed {
        Some(_) => "Failed",
        None => phase(&facts.restart_policy, containers),
    };
    let (reason, message) = match (&facts.failed, &facts.notice) {
        (Some((r, m)), _) | (None, Some((r, m))) => (Some(r.clone()), Some(m.clone())),
        _ => (None, None),
    };
    let started = facts.start_time_ns;
    PodStatus {
        phase: Some(phase.to_string()),
        reason,
        message,
        conditions: Some(vec![
            condition(
                "PodReadyToStartContainers",
                started.is_some(),
                None,
                started,
            ),
            condition("Initialized", true, None, started),
            condition("Ready", all_ready, not_ready, started),
            condition("ContainersReady", all_ready, not_ready, started),
            condition("PodScheduled", true, None, started),
        ]),
        container_statuses: Some(containers.iter().map(container_status).collect()),
        host_ip: (!facts.host_ip.is_empty()).then(|| facts.host_ip.clone()),
        // The lists beside the single addresses, as kubelet writes them: dual-stack-aware
        // clients read only these (and the API requires their first entry to match).
        host_ips: (!facts.host_ip.is_empty()).then(|| {
            vec![HostIP {
                ip: facts.host_ip.clone(),
            }]
        }),
        pod_ip: (!facts.pod_ip.is_empty()).then(|| facts.pod_ip.clone()),
        pod_ips: (!facts.pod_ip.is_empty()).then(|| {
            if facts.pod_ips.is_empty() {
                vec![PodIP {
                    ip: facts.pod_ip.clone(),
                }]
            } else {
                facts
                    .pod_ips
                    .iter()
                    .map(|ip| PodIP { ip: ip.clone() })
                    .collect()
            }
        }),
        qos_class: Some(facts.qos_class.clone()),
        start_time: started.and_then(time),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(current: Current, last: bool) -> ContainerView {
        ContainerView {
            name: "c".into(),
            image: "i".into(),
            image_id: "sha256:x".into(),
            restart_count: 0,
            current,
            last_terminated: last.then(|| term(1)),
        }
    }
    fn term(code: i32) -> Terminated {
        Terminated {
            exit_code: code,
            signal: None,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: String::new(),
            started_at: 0,
            finished_at: 1,
            container_id: "tidelet://u/c/0".into(),
        }
    }
    fn run() -> Current {
        Current::Running {
            started_at: 0,
            container_id: "x".into(),
        }
    }
    fn wait() -> Current {
        Current::Waiting {
            reason: "ContainerCreating".into(),
            message: String::new(),
        }
    }

    #[test]
    fn phase_table() {
        let t = |c| Current::Terminated(term(c));
        let cases: Vec<(&str, Vec<ContainerView>, &str)> = vec![
            ("Always", vec![view(run(), false)], "Running"),
            ("Always", vec![view(wait(), false)], "Pending"),
            (
                "Always",
                vec![view(run(), false), view(wait(), false)],
                "Pending",
            ),
            // crash-looping: waiting with a last state counts as stopped
            ("Always", vec![view(wait(), true)], "Running"),
            ("Always", vec![view(t(1), false)], "Running"),
            ("OnFailure", vec![view(t(0), false)], "Succeeded"),
            (
                "OnFailure",
                vec![view(t(0), false), view(t(2), false)],
                "Running",
            ),
            ("Never", vec![view(t(0), false)], "Succeeded"),
            (
                "Never",
                vec![view(t(0), false), view(t(3), false)],
                "Failed",
            ),
            (
                "Never",
                vec![view(run(), false), view(t(3), false)],
                "Running",
            ),
        ];
        for (policy, cs, want) in cases {
            assert_eq!(phase(policy, &cs), want, "{policy} {cs:?}");
        }
    }

    #[test]
    fn status_has_conditions_and_container_states() {
        let facts = PodFacts {
            restart_policy: "Always".into(),
            qos_class: "BestEffort".into(),
            host_ip: "10.0.0.1".into(),
            start_time_ns: Some(5_000_000_000),
            ..Default::default()
        };
        let s = pod_status(&facts, &[view(run(), true)]);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let ready = s
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        assert!(cs.ready);
        assert_eq!(
            cs.last_state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .exit_code,
            1
        );
        assert_eq!(s.start_time.unwrap().0.as_second(), 5);
        let ips = |l: Option<Vec<String>>| l.unwrap_or_default();
        assert_eq!(
            ips(s.host_ips.map(|l| l.into_iter().map(|i| i.ip).collect())),
            ["10.0.0.1"],
            "hostIPs beside hostIP"
        );
        assert_eq!(s.pod_ips, None, "no pod IP, no podIPs");
        let host_net = PodFacts {
            pod_ip: "10.0.0.1".into(),
            ..facts.clone()
        };
        let s = pod_status(&host_net, &[view(run(), false)]);
        assert_eq!(s.pod_ip.as_deref(), Some("10.0.0.1"));
        assert_eq!(
            ips(s.pod_ips.map(|l| l.into_iter().map(|i| i.ip).collect())),
            ["10.0.0.1"],
            "podIPs beside podIP"
        );

        let failed = PodFacts {
            failed: Some(("OutOfmemory".into(), "no".into())),
            ..facts
        };
        let s = pod_status(&failed, &[view(wait(), false)]);
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        assert_eq!(s.reason.as_deref(), Some("OutOfmemory"));
    }
}
