//! The agent against a real Mosquitto: status up (online, node, lease, pods, events) as
//! `mosquitto_sub` sees it, desired pods down with their answers, the local policy, offline
//! autonomy through broker outages and agent restarts, and brokers that refuse us.

use std::time::{Duration, Instant};

use serde_json::Value;
use tidelet_e2e::broker::{Broker, BrokerOpts};
use tidelet_e2e::*;

use crate::pod_yaml;

const WAIT: Duration = Duration::from_secs(30);

fn json(b: &[u8]) -> Value {
    serde_json::from_slice(b).unwrap_or(Value::Null)
}

fn phase(b: &[u8]) -> String {
    json(b)["status"]["phase"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

/// A desired pod manifest from the control plane (no `-<node>` suffix: kept as given).
fn desired(name: &str, generation: i64, cmd: &str, extra_spec: &str) -> String {
    pod_yaml(name, extra_spec, &[("c", cmd, "")]).replacen(
        &format!("  name: {name}\n"),
        &format!("  name: {name}\n  generation: {generation}\n"),
        1,
    )
}

/// Publish a desired pod as the operator and wait for the node's answer about this
/// generation.
fn apply(b: &Broker, node: &str, key: &str, payload: &[u8], generation: Option<i64>) -> Value {
    b.publish(
        &format!("tidelet/{node}/desired/pods/{key}"),
        payload,
        true,
        "operator",
    );
    let topic = format!("tidelet/{node}/desired/results/{key}");
    json(&b.wait_retained(
        &topic,
        |p| {
            let v = json(p);
            !p.is_empty() && (generation.is_none() || v["generation"].as_i64() == generation)
        },
        WAIT,
    ))
}

/// Mutual TLS with the shipped per-node ACL: the certificate's CN is the node.
fn mutual_tls() -> BrokerOpts {
    BrokerOpts {
        tls: true,
        require_client_cert: true,
        acl: true,
        ..Default::default()
    }
}

/// Remove a desired pod as the operator (an empty retained message) and wait for the node's
/// `Removed` answer (the topic may still hold the earlier answer meanwhile).
fn remove(b: &Broker, node: &str, key: &str) -> Value {
    b.publish(
        &format!("tidelet/{node}/desired/pods/{key}"),
        b"",
        true,
        "operator",
    );
    json(&b.wait_retained(
        &format!("tidelet/{node}/desired/results/{key}"),
        |p| json(p)["reason"] == "Removed",
        WAIT,
    ))
}

#[test]
fn status_goes_up_and_desired_pods_come_down_over_mutual_tls() {
    if !privileged() {
        return;
    }
    let b = Broker::new(BrokerOpts {
        persistence: true,
        ..mutual_tls()
    });
    let mut events = b.subscribe("tidelet/e2e/events", "operator");
    let config = format!("{}  leasePeriod: 2s\n", b.agent_config("e2e"));
    let mut a = Agent::prepare(Some(&config), &[]);
    a.write(
        "local.yaml",
        &pod_yaml("local", "", &[("c", "sleep 3600", "")]),
    );
    a.spawn();

    // Up: online, the node, the lease, the pod, events; all Kubernetes-shaped.
    let online = b.wait_retained("tidelet/e2e/online", |p| json(p)["online"] == true, WAIT);
    assert!(json(&online)["agent"]
        .as_str()
        .unwrap()
        .starts_with("tidelet"));
    let local = b.wait_retained(
        "tidelet/e2e/pods/default/local-e2e",
        |p| phase(p) == "Running",
        WAIT,
    );
    let local = json(&local);
    assert_eq!(
        (local["apiVersion"].as_str(), local["kind"].as_str()),
        (Some("v1"), Some("Pod"))
    );
    assert_eq!(
        local["metadata"]["uid"],
        a.pod("local-e2e").unwrap()["metadata"]["uid"]
    );
    // Its address on the pod network (issue 17), as the local API shows it.
    let ip = local["status"]["podIP"].as_str().unwrap_or_default();
    assert!(ip.starts_with("10.87."), "{local}");
    assert_eq!(local["status"]["podIPs"], serde_json::json!([{"ip": ip}]));
    assert_eq!(a.pod("local-e2e").unwrap()["status"]["podIP"], ip);
    let node = json(&b.wait_retained("tidelet/e2e/node", |p| !p.is_empty(), WAIT));
    assert_eq!(
        (node["apiVersion"].as_str(), node["kind"].as_str()),
        (Some("v1"), Some("Node"))
    );
    assert_eq!(node["metadata"]["name"], "e2e");
    assert!(
        node["status"]["allocatable"]["memory"].is_string(),
        "{node}"
    );
    assert!(node["status"]["capacity"]["cpu"].is_string(), "{node}");
    assert!(
        node["status"]["nodeInfo"]["kubeletVersion"].is_string(),
        "{node}"
    );
    let ready = node["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .cloned()
        .unwrap_or_default();
    assert_eq!(ready["status"], "True", "{node}");
    let lease1 = json(&b.wait_retained("tidelet/e2e/lease", |p| !p.is_empty(), WAIT));
    assert_eq!(lease1["kind"], "Lease");
    assert_eq!(lease1["spec"]["holderIdentity"], "e2e");
    let renew1 = lease1["spec"]["renewTime"].as_str().unwrap().to_string();
    b.wait_retained(
        "tidelet/e2e/lease",
        |p| json(p)["spec"]["renewTime"].as_str() > Some(renew1.as_str()),
        WAIT,
    );
    let started = events.wait_for("a Started event of the local pod", WAIT, |m| {
        let e = m.json().unwrap_or_default();
        e["kind"] == "Event"
            && e["involvedObject"]["name"] == "local-e2e"
            && e["reason"] == "Started"
    });
    assert!(!started.retained);

    // Down: a desired pod runs under the name given, and its answer echoes the generation.
    let r = apply(
        &b,
        "e2e",
        "default/web",
        desired("web", 3, "sleep 3600", "").as_bytes(),
        Some(3),
    );
    assert_eq!(
        (r["accepted"].as_bool(), r["reason"].as_str()),
        (Some(true), Some("Accepted")),
        "{r}"
    );
    let web = a.wait_running("web");
    assert_eq!(r["uid"], web["metadata"]["uid"]);
    b.wait_retained(
        "tidelet/e2e/pods/default/web",
        |p| phase(p) == "Running",
        WAIT,
    );
    // A new generation replaces the pod.
    let r = apply(
        &b,
        "e2e",
        "default/web",
        desired("web", 4, "sleep 3601", "").as_bytes(),
        Some(4),
    );
    assert_eq!(r["accepted"], true, "{r}");
    assert_ne!(r["uid"], web["metadata"]["uid"]);
    a.wait_pod("web", "the new generation running", |p| {
        p["metadata"]["uid"] == r["uid"] && all_running(p)
    });

    // Bad input: each rejected with the reason; the running pods are untouched.
    let huge = format!(
        "{}  annotations: {{big: \"{}\"}}\n",
        desired("big", 1, "true", ""),
        "x".repeat(300 << 10)
    );
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        ("default/svc", b"apiVersion: v1\nkind: Service\nmetadata: {name: svc}\n".to_vec(), "NotAPod", ""),
        ("default/bin", b"\x00\x01\x02binary".to_vec(), "NotAPod", "binary"),
        ("default/big", huge.into_bytes(), "TooLarge", ""),
        (
            "default/noimage",
            b"apiVersion: v1\nkind: Pod\nmetadata: {name: noimage}\nspec:\n  containers: [{name: c}]\n".to_vec(),
            "Invalid",
            "spec.containers[0].image",
        ),
        ("default/other", desired("mismatch", 1, "true", "").into_bytes(), "Invalid", "metadata.name"),
        ("default/away", desired("away", 1, "true", "  nodeName: another-node\n").into_bytes(), "WrongNode", "another-node"),
        ("default/local-e2e", desired("local-e2e", 1, "true", "").into_bytes(), "Conflict", "local"),
        ("default/hostnet", desired("hostnet", 1, "true", "  hostNetwork: true\n").into_bytes(), "PolicyViolation", "hostNetwork"),
        (
            "default/crit",
            desired("crit", 1, "true", "  priorityClassName: system-node-critical\n").into_bytes(),
            "PolicyViolation",
            "critical",
        ),
        (
            "default/etc",
            desired("etc", 1, "true", "  volumes: [{name: v, hostPath: {path: /etc}}]\n").into_bytes(),
            "PolicyViolation",
            "hostPath",
        ),
        (
            "default/unconfined",
            desired("unconfined", 1, "true", "  securityContext: {seccompProfile: {type: Unconfined}}\n").into_bytes(),
            "PolicyViolation",
            "seccomp Unconfined is not allowed",
        ),
        (
            "default/sysadmin",
            pod_yaml("sysadmin", "", &[("c", "true", "    securityContext: {capabilities: {add: [SYS_ADMIN]}}\n")]).into_bytes(),
            "PolicyViolation",
            "\\\"SYS_ADMIN\\\" is not allowed for remote pods",
        ),
        (
            "default/sysctl",
            desired("sysctl", 1, "true", "  securityContext: {sysctls: [{name: net.core.somaxconn, value: \"1024\"}]}\n").into_bytes(),
            "PolicyViolation",
            "unsafe sysctls are not allowed",
        ),
    ];
    for (key, payload, reason, mentions) in &cases {
        let r = apply(&b, "e2e", key, payload, None);
        assert_eq!(
            (r["accepted"].as_bool(), r["reason"].as_str()),
            (Some(false), Some(*reason)),
            "{key}: {r}"
        );
        let text = format!("{} {}", r["message"], r["errors"]);
        assert!(text.contains(mentions), "{key}: {text}");
    }
    // A pod a local file shadows is answered Conflict, and only that: a back-end takes the
    // first live answer (`tidelet fleet apply` did, and printed "accepted" for a pod that
    // never ran). A new name, so that no earlier answer is held for it.
    a.write(
        "clash.yaml",
        &pod_yaml("clash", "", &[("c", "sleep 3600", "")]),
    );
    a.wait_running(&a.full_name("clash"));
    let key = "default/clash-e2e";
    let mut live = b.subscribe(&format!("tidelet/e2e/desired/results/{key}"), "operator");
    b.publish(
        &format!("tidelet/e2e/desired/pods/{key}"),
        desired("clash-e2e", 7, "true", "").as_bytes(),
        true,
        "operator",
    );
    let mut answers = vec![];
    while let Some(m) = live.next(Duration::from_secs(3)) {
        answers.push(json(&m.payload));
    }
    let reasons: Vec<&str> = answers
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["Conflict"], "one answer, Conflict: {answers:?}");
    assert_eq!(answers[0]["generation"], 7, "{answers:?}");
    assert_eq!(remove(&b, "e2e", key)["reason"], "Removed");
    a.remove("clash.yaml");
    let privileged_pod = pod_yaml(
        "priv",
        "",
        &[("c", "true", "    securityContext: {privileged: true}\n")],
    );
    let r = apply(&b, "e2e", "default/priv", privileged_pod.as_bytes(), None);
    assert_eq!(r["reason"], "PolicyViolation", "{r}");
    assert!(r["errors"].to_string().contains("privileged"), "{r}");
    for (name, uid) in [
        ("local-e2e", &local["metadata"]["uid"]),
        ("web", &r_uid(&a, "web")),
    ] {
        let p = a.pod(name).unwrap();
        assert_eq!(&p["metadata"]["uid"], uid, "{name}");
        assert!(all_running(&p), "{name}: {p}");
        assert_eq!(
            Agent::container_status(&p, "c")["restartCount"],
            0,
            "{name}"
        );
    }
    for gone in [
        "svc",
        "bin",
        "big",
        "noimage",
        "mismatch",
        "away",
        "hostnet",
        "etc",
        "priv",
        "unconfined",
        "sysadmin",
        "sysctl",
    ] {
        assert!(a.pod(gone).is_none(), "{gone} must not run");
    }
    assert!(a.alive());

    // Removal: an empty retained message; the pod and its status topic go. The answer
    // carries the removed pod's uid.
    let web_uid = a.pod("web").unwrap()["metadata"]["uid"].clone();
    let r = remove(&b, "e2e", "default/web");
    assert_eq!(r["reason"], "Removed", "{r}");
    assert!(
        web_uid.is_string() && r["uid"] == web_uid,
        "{r}: uid {web_uid}"
    );
    wait_for("web gone", WAIT, || a.pod("web").is_none().then_some(()));
    b.wait_retained("tidelet/e2e/pods/default/web", |p| p.is_empty(), WAIT);
    // The local file goes: the remote pod it shadowed takes the name over (and is told so).
    a.remove("local.yaml");
    let r = json(&b.wait_retained(
        "tidelet/e2e/desired/results/default/local-e2e",
        |p| json(p)["reason"] == "Accepted",
        WAIT,
    ));
    b.wait_retained(
        "tidelet/e2e/pods/default/local-e2e",
        |p| json(p)["metadata"]["uid"] == r["uid"],
        WAIT,
    );
    // Removed by the control plane too: the pod's topic is cleared.
    let r = remove(&b, "e2e", "default/local-e2e");
    assert_eq!(r["reason"], "Removed", "{r}");
    b.wait_retained("tidelet/e2e/pods/default/local-e2e", |p| p.is_empty(), WAIT);
    wait_for("local-e2e gone", WAIT, || {
        a.pod("local-e2e").is_none().then_some(())
    });
    // A clean stop says offline (retained).
    a.kill_term();
    b.wait_retained("tidelet/e2e/online", |p| json(p)["online"] == false, WAIT);
}

fn r_uid(a: &Agent, name: &str) -> Value {
    a.pod(name).unwrap()["metadata"]["uid"].clone()
}

/// Offline autonomy: the broker goes away during pod churn, the agent restarts and even loses
/// its pods (a power cut) while it is away: the accepted remote pod runs again from the state
/// directory, and when the broker returns every retained topic converges to the truth with no
/// stale pod left.
#[test]
fn pods_run_through_broker_outages_and_topics_converge_when_it_returns() {
    if !privileged() {
        return;
    }
    // Username and password this time (the ACL keys on the user name).
    let mut b = Broker::new(BrokerOpts {
        persistence: true,
        acl: true,
        ..Default::default()
    });
    assert!(b.agent_config("e2e").contains("passwordFile"));
    let config = format!("{}  leasePeriod: 2s\n", b.agent_config("e2e"));
    let mut a = Agent::prepare(Some(&config), &[]);
    a.write("a.yaml", &pod_yaml("a", "", &[("c", "sleep 3600", "")]));
    a.spawn();
    let r = apply(
        &b,
        "e2e",
        "default/remote",
        desired("remote", 1, "sleep 3600", "").as_bytes(),
        Some(1),
    );
    assert_eq!(r["accepted"], true, "{r}");
    let uid = a.wait_running("remote")["metadata"]["uid"].clone();
    b.wait_retained(
        "tidelet/e2e/pods/default/a-e2e",
        |p| phase(p) == "Running",
        WAIT,
    );

    // The broker goes; churn; the agent restarts while it is away.
    b.stop();
    a.remove("a.yaml");
    a.write("b.yaml", &pod_yaml("b", "", &[("c", "sleep 3600", "")]));
    a.wait_running("b-e2e");
    wait_for("a gone", WAIT, || a.pod("a-e2e").is_none().then_some(()));
    a.kill9();
    a.spawn();
    let p = a.wait_running("remote");
    assert_eq!(p["metadata"]["uid"], uid, "adopted, not replaced");
    assert_eq!(Agent::container_status(&p, "c")["restartCount"], 0);
    // A power cut with no broker: the remote pod starts again from the state directory.
    a.power_cut();
    a.spawn();
    let p = a.wait_pod("remote", "running again after the power cut", |p| {
        all_running(p) && p["metadata"]["uid"] == uid
    });
    assert!(p["status"]["phase"] == "Running");
    a.wait_running("b-e2e");

    // The broker returns: the retained tree equals the agent's state, a's topic is gone.
    b.start();
    let t0 = Instant::now();
    wait_for("the retained pods to converge", WAIT, || {
        let pods = b.retained("tidelet/e2e/pods/#", "operator");
        let keys: Vec<&str> = pods.keys().map(String::as_str).collect();
        let ok =
            keys == [
                "tidelet/e2e/pods/default/b-e2e",
                "tidelet/e2e/pods/default/remote",
            ] && pods.values().all(|p| phase(p) == "Running");
        ok.then_some(())
    });
    eprintln!("converged {:?} after the broker's return", t0.elapsed());
    b.wait_retained("tidelet/e2e/online", |p| json(p)["online"] == true, WAIT);

    // Deleted by the control plane while the agent is down: gone once it is back.
    a.kill9();
    b.publish(
        "tidelet/e2e/desired/pods/default/remote",
        b"",
        true,
        "operator",
    );
    a.spawn();
    wait_for("remote removed", WAIT, || {
        a.pod("remote").is_none().then_some(())
    });
    b.wait_retained("tidelet/e2e/pods/default/remote", |p| p.is_empty(), WAIT);
    let r = json(&b.wait_retained(
        "tidelet/e2e/desired/results/default/remote",
        |p| json(p)["reason"] == "Removed",
        WAIT,
    ));
    assert_eq!(r["accepted"], true);
    assert!(!a.root.join("remote-pods/default_remote.json").exists());
}

/// A broker that refuses our certificate: a clear error, retries, and the local pods are not
/// affected; MQTT off entirely is the default.
#[test]
fn a_broker_refusing_the_certificate_leaves_local_pods_alone() {
    if !privileged() {
        return;
    }
    let b = Broker::new(mutual_tls());
    let config = format!(
        "mqtt:\n  broker: {}\n  caFile: {}\n  certFile: {}\n  keyFile: {}\n",
        b.url(),
        b.ca().display(),
        b.pki().foreign_cert("e2e").display(),
        b.pki().foreign_key("e2e").display()
    );
    let mut a = Agent::start_with_one_pod(Some(&config), "local");
    // A clear error, logged once per reason (not once per attempt), naming the broker.
    let failure = a.wait_log_line("MQTT connection failed", WAIT);
    assert!(
        failure.contains(&format!("127.0.0.1:{}", b.port())) && failure.contains("TLS"),
        "{failure}"
    );
    // Retried: the broker sees attempt after attempt.
    wait_for("three attempts seen by the broker", WAIT, || {
        (b.log().matches("New connection from 127.0.0.1").count() >= 3).then_some(())
    });
    assert!(b.retained("tidelet/e2e/#", "operator").is_empty());
    let p = a.pod("local-e2e").unwrap();
    assert!(all_running(&p));
    assert!(a.alive());
}

#[test]
fn bad_mqtt_config_stops_the_agent_at_start_naming_the_key() {
    if !privileged() {
        return;
    }
    assert_configs_refused(&[
        ("mqtt:\n  clientId: x\n", "mqtt.broker: is required"),
        ("mqtt:\n  broker: tcp://h:1883\n", "mqtt.broker"),
        ("mqtt:\n  broker: mqtt://h:99999\n", "mqtt.broker"),
        (
            "mqtt:\n  broker: mqtts://h\n  certFile: /c.pem\n",
            "mqtt.keyFile",
        ),
        (
            "mqtt:\n  broker: mqtt://h\n  caFile: /ca.pem\n",
            "mqtt.caFile",
        ),
        (
            "mqtt:\n  broker: mqtt://h\n  topicPrefix: a/#/\n",
            "mqtt.topicPrefix",
        ),
        (
            "mqtt:\n  broker: mqtt://h\n  keepAlive: often\n",
            "mqtt.keepAlive",
        ),
        (
            "mqtt:\n  broker: mqtt://h\n  maxPacketSize: 1Ki\n",
            "mqtt.maxPacketSize",
        ),
        (
            "mqtt:\n  broker: mqtt://h\n  eventBuffer: 0\n",
            "mqtt.eventBuffer",
        ),
        (
            "mqtt:\n  broker: mqtt://h\n  remotePodPolicy:\n    allowedHostPaths: [relative]\n",
            "mqtt.remotePodPolicy.allowedHostPaths[0]",
        ),
        (
            "mqtt:\n  broker: mqtt://h\n  remotePodPolicy:\n    allowEverything: true\n",
            "mqtt.remotePodPolicy",
        ),
    ]);
}

/// TLS files that cannot be read are not a reason to stop: the agent runs local-only, says
/// why in its log and as a node event, and its pods run.
#[test]
fn unreadable_tls_files_leave_the_agent_local_only() {
    if !privileged() {
        return;
    }
    let config = "mqtt:\n  broker: mqtts://127.0.0.1:1\n  caFile: /nonexistent/ca.pem\n";
    let a = Agent::start_with_one_pod(Some(config), "local");
    let line = a.wait_log_line("/nonexistent/ca.pem", WAIT);
    assert!(line.contains("local-only"), "{line}");
    let node = String::from_utf8_lossy(&a.cli(&["describe", "node"]).stdout).to_string();
    assert!(node.contains("MqttSetupFailed"), "{node}");
}
