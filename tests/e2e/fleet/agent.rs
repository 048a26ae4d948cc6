//! `tidelet fleet` against the real agent, as root: over mutual TLS with the shipped ACL,
//! `fleet` as the `operator` drives a node named `e2e` (apply, nodes, pods, a policy
//! rejection, delete) and sees it go Offline when the agent is SIGKILLed (its last will).

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use tidelet_e2e::broker::{Broker, BrokerOpts};
use tidelet_e2e::*;

use super::{apply_as, fleet_as, rows, text};

/// How long the real agent may take to start a pod or to answer.
const AGENT_WAIT: Duration = Duration::from_secs(30);

/// The broker of the agent tests: mutual TLS, certificate CN as username, the shipped ACL.
fn acl_broker() -> Broker {
    Broker::new(BrokerOpts {
        tls: true,
        require_client_cert: true,
        acl: true,
        ..Default::default()
    })
}

/// The row of `node` in `fleet nodes` (as the operator), if it is listed.
fn node_row(b: &Broker, node: &str) -> Option<Vec<String>> {
    let out = fleet_as(b, "operator", &["nodes"]);
    let (so, se) = text(&out);
    assert!(out.status.success(), "fleet nodes: {so}{se}");
    rows(&so).into_iter().skip(1).find(|r| r[0] == node)
}

/// A manifest for `fleet apply` in `dir`.
fn manifest_file(dir: &Path, name: &str, yaml: &str) -> String {
    let f = dir.join(format!("{name}.yaml"));
    std::fs::write(&f, yaml).unwrap();
    f.to_str().unwrap().to_string()
}

#[test]
fn fleet_drives_the_real_agent_over_mutual_tls_with_the_shipped_acl() {
    if !privileged() {
        return;
    }
    let b = acl_broker();
    let mut a = Agent::prepare(Some(&b.agent_config("e2e")), &[]);
    a.write(
        "local.yaml",
        &crate::pod_yaml("local", "", &[("c", "sleep 3600", "")]),
    );
    a.spawn();
    a.wait_running("local-e2e");
    let dir = tempfile::tempdir().unwrap();

    // apply: accepted, with the uid the agent runs the pod under, and the pod runs.
    let web = manifest_file(
        dir.path(),
        "web",
        &crate::pod_yaml("web", "", &[("c", "sleep 3600", "")]),
    );
    let out = apply_as(&b, "operator", "e2e", &web, "30s");
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{so}{se}\n{}", a.agent_log());
    let pod = a.wait_running("web");
    let uid = pod["metadata"]["uid"].as_str().unwrap();
    assert_eq!(so.trim(), format!("pod/web accepted on e2e (uid {uid})"));
    // The same manifest again: answered live again (the broker held that answer already),
    // and the pod is not replaced.
    let out = apply_as(&b, "operator", "e2e", &web, "30s");
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{so}{se}");
    assert_eq!(so.trim(), format!("pod/web accepted on e2e (uid {uid})"));

    // nodes: Online, both pods ready once their status topics say Running.
    let row = wait_for("e2e Online with 2/2 pods ready", AGENT_WAIT, || {
        node_row(&b, "e2e").filter(|r| r[1] == "Online" && r[3] == "2/2")
    });
    assert!(row[2].split(',').any(|c| c == "Ready"), "{row:?}");

    // pods: both listed Running, under the names the agent gives them.
    wait_for(
        "fleet pods --node e2e lists both Running",
        AGENT_WAIT,
        || {
            let out = fleet_as(&b, "operator", &["pods", "--node", "e2e"]);
            assert!(out.status.success(), "{:?}", text(&out));
            let r = rows(&text(&out).0);
            let running: Vec<(&str, &str)> = r
                .iter()
                .skip(1)
                .filter(|r| r[0] == "e2e" && r[4] == "Running" && r[3] == "1/1")
                .map(|r| (r[1].as_str(), r[2].as_str()))
                .collect();
            (running == [("default", "local-e2e"), ("default", "web")]).then_some(())
        },
    );

    // A privileged pod: rejected by the node's policy, exit 1, never started.
    let privileged_pod = manifest_file(
        dir.path(),
        "priv",
        &crate::pod_yaml(
            "priv",
            "",
            &[("c", "true", "    securityContext: {privileged: true}\n")],
        ),
    );
    let out = apply_as(&b, "operator", "e2e", &privileged_pod, "30s");
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{so}{se}");
    assert!(
        so.starts_with("pod/priv rejected on e2e: PolicyViolation: "),
        "{so}"
    );
    assert!(so.contains("privileged"), "{so}");
    assert!(a.pod("priv").is_none(), "the rejected pod does not run");

    // delete: removed, exit 0, and the agent stops the pod; the local pod stays.
    let out = fleet_as(
        &b,
        "operator",
        &["delete", "--node", "e2e", "web", "--timeout", "30s"],
    );
    let (so, se) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{so}{se}");
    assert_eq!(so.trim(), "pod/web removed from e2e");
    wait_for("web gone from the agent", AGENT_WAIT, || {
        a.pod("web").is_none().then_some(())
    });
    assert!(a.pod("local-e2e").is_some());
    wait_for("fleet nodes counts 1/1", AGENT_WAIT, || {
        node_row(&b, "e2e").filter(|r| r[3] == "1/1")
    });
}

#[test]
fn fleet_nodes_shows_a_killed_agent_offline_once_its_keep_alive_expires() {
    if !privileged() {
        return;
    }
    let b = acl_broker();
    let config = format!("{}  keepAlive: 2s\n", b.agent_config("e2e"));
    let mut a = Agent::prepare(Some(&config), &[]);
    a.spawn();
    wait_for("e2e Online", AGENT_WAIT, || {
        node_row(&b, "e2e").filter(|r| r[1] == "Online")
    });
    a.kill9();
    // No DISCONNECT: the broker publishes the last will once 1.5 x keepAlive passes silent.
    let killed = Instant::now();
    wait_for(
        "e2e Offline after the kill",
        Duration::from_secs(20),
        || node_row(&b, "e2e").filter(|r| r[1] == "Offline"),
    );
    eprintln!("offline {:?} after SIGKILL", killed.elapsed());
    let out = fleet_as(&b, "operator", &["nodes", "-o", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let e2e = v
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "e2e")
        .cloned()
        .unwrap_or_default();
    assert_eq!(e2e["offlineReason"], "connection lost", "{v}");
}
