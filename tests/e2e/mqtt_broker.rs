//! The broker side of tidelet's MQTT security, with no agent: a real Mosquitto running the
//! shipped `dist/mosquitto/acl` behind mutual TLS, driven by the real `mosquitto_pub` and
//! `mosquitto_sub`. A node writes and reads only its own `tidelet/<node>/` tree, the operator
//! writes desired pods for any node and reads everything, and clients without a certificate
//! from the fleet CA are refused. Also the harness itself: payloads round-trip byte for byte,
//! empty retained messages clear a topic, persistence survives a restart. None needs root.

use std::process::Command;
use std::time::Duration;

use tidelet_e2e::broker::{tool, Broker, BrokerOpts, Identity};

const WAIT: Duration = Duration::from_secs(10);

fn fleet_broker() -> Broker {
    Broker::new(BrokerOpts {
        tls: true,
        require_client_cert: true,
        acl: true,
        persistence: false,
        users: vec![],
        shipped_conf: false,
    })
}

/// `mosquitto_pub` or `mosquitto_sub` (`name`) as `who`: the connection arguments of
/// [`Broker::client_args`], then `args` split on whitespace (an argument with spaces goes
/// through the returned command's `arg`). With `client_id`, that id instead of the harness's
/// fresh one, for the tests of a client id of one's own choosing.
fn client_tool(
    b: &Broker,
    name: &str,
    who: impl Into<Identity>,
    client_id: Option<&str>,
    args: &str,
) -> Command {
    let mut all = b.client_args(who);
    if let Some(client_id) = client_id {
        let id = all.iter().position(|a| a == "-i").unwrap() + 1;
        all[id] = client_id.into();
    }
    all.extend(args.split_whitespace().map(String::from));
    let mut c = Command::new(tool(name));
    c.args(all);
    c
}

/// Publish a marker as `who` on its own tree and wait until `sub` has it: every message the
/// broker routed to `sub` before the marker has then been received, so what `sub` got is
/// complete (the broker handles one client's publishes in order; `mosquitto_pub` returns after
/// the PUBACK, so an earlier publish by another client was routed first).
fn sync_through(
    b: &Broker,
    sub: &mut tidelet_e2e::broker::Subscription,
    who: &str,
    topic: &str,
) -> Vec<String> {
    let marker = format!("marker-{}", std::process::id());
    b.publish(topic, marker.as_bytes(), false, who);
    let mut before = Vec::new();
    loop {
        let m = sub.next(WAIT).unwrap_or_else(|| {
            panic!(
                "marker on {topic} never reached {}: {before:?}",
                sub.filter()
            )
        });
        if m.topic == topic && m.payload == marker.as_bytes() {
            return before;
        }
        before.push(format!("{} {}", m.topic, m.text()));
    }
}

#[test]
fn mqtt_acl_node_writes_its_own_topics_but_not_another_nodes() {
    let b = fleet_broker();
    b.publish(
        "tidelet/node-a/node",
        br#"{"kind":"Node","metadata":{"name":"node-a"}}"#,
        true,
        "node-a",
    );
    b.publish(
        "tidelet/node-b/node",
        br#"{"kind":"Node","metadata":{"name":"node-b"}}"#,
        true,
        "node-b",
    );
    let (mut watch, initial) = b.subscribe_with_retained("tidelet/#", "operator");
    assert_eq!(initial.len(), 2, "{initial:?}");

    // node-a tries to forge node-b's status, online state and desired pods; the broker
    // accepts the packets (MQTT 3.1.1 cannot refuse a publish) and drops them.
    let forged: &[(&str, &[u8])] = &[
        (
            "tidelet/node-b/node",
            br#"{"kind":"Node","metadata":{"name":"forged"}}"#,
        ),
        (
            "tidelet/node-b/online",
            br#"{"online":false,"reason":"forged"}"#,
        ),
        (
            "tidelet/node-b/desired/pods/default/evil",
            b"apiVersion: v1\nkind: Pod\n",
        ),
        (
            "tidelet/node-b/desired/results/default/web",
            br#"{"accepted":true}"#,
        ),
        ("tidelet/node-b/pods/default/web", b""),
    ];
    for (topic, payload) in forged {
        b.publish(topic, payload, true, "node-a");
    }
    // The client id is the client's own choice: node-a connecting as client id "node-b"
    // is still node-a (the ACL keys on the certificate's CN, %u, not on the id, %c).
    let forged_by_id = "-q 1 -r -t tidelet/node-b/node -m forged-by-id";
    let out = client_tool(&b, "mosquitto_pub", "node-a", Some("node-b"), forged_by_id)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    b.publish(
        "tidelet/node-a/online",
        br#"{"online":true}"#,
        true,
        "node-a",
    );

    // The operator, subscribed to everything, saw node-a's own publish and none of the forgeries.
    let seen = sync_through(&b, &mut watch, "node-a", "tidelet/node-a/events");
    assert_eq!(
        seen,
        vec![r#"tidelet/node-a/online {"online":true}"#.to_string()]
    );

    let all = b.retained("tidelet/#", "operator");
    let topics: Vec<&str> = all.keys().map(String::as_str).collect();
    assert_eq!(
        topics,
        [
            "tidelet/node-a/node",
            "tidelet/node-a/online",
            "tidelet/node-b/node"
        ]
    );
    assert_eq!(
        all["tidelet/node-b/node"],
        br#"{"kind":"Node","metadata":{"name":"node-b"}}"#.to_vec(),
        "node-b's retained status must be unchanged"
    );
}

#[test]
fn mqtt_acl_node_cannot_read_another_nodes_topics() {
    let b = fleet_broker();
    b.publish(
        "tidelet/node-b/pods/default/db",
        br#"{"kind":"Pod"}"#,
        true,
        "node-b",
    );
    b.publish(
        "tidelet/node-a/pods/default/web",
        br#"{"kind":"Pod"}"#,
        true,
        "node-a",
    );
    b.publish(
        "tidelet/node-b/desired/pods/default/db",
        b"kind: Pod\n",
        true,
        "operator",
    );

    // Retained: node-a sees only its own tree, even when it asks for everything.
    assert!(b.retained("tidelet/node-b/#", "node-a").is_empty());
    let mine = b.retained("tidelet/#", "node-a");
    assert_eq!(
        mine.keys().collect::<Vec<_>>(),
        ["tidelet/node-a/pods/default/web"]
    );
    // The positive control: the same retained messages exist for the operator and node-b.
    assert_eq!(b.retained("tidelet/node-b/#", "operator").len(), 2);
    assert_eq!(b.retained("tidelet/node-b/#", "node-b").len(), 2);

    // Live: node-b's event does not reach node-a's subscription to everything.
    let mut a_sub = b.subscribe("#", "node-a");
    b.publish(
        "tidelet/node-b/events",
        br#"{"kind":"Event","reason":"Started"}"#,
        false,
        "node-b",
    );
    b.publish(
        "tidelet/node-b/desired/pods/default/x",
        b"kind: Pod\n",
        true,
        "operator",
    );
    let seen = sync_through(&b, &mut a_sub, "node-a", "tidelet/node-a/events");
    assert!(
        seen.iter().all(|s| s.starts_with("tidelet/node-a/")),
        "node-a received other nodes' messages: {seen:?}"
    );
}

#[test]
fn mqtt_acl_operator_writes_desired_for_any_node_and_reads_all() {
    let b = fleet_broker();
    let pod = b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\n";
    for node in ["node-a", "node-b"] {
        b.publish(
            &format!("tidelet/{node}/desired/pods/default/web"),
            pod,
            true,
            "operator",
        );
        b.publish(
            &format!("tidelet/{node}/online"),
            br#"{"online":true}"#,
            true,
            node,
        );
    }
    // Each node reads the desired pod addressed to it.
    for node in ["node-a", "node-b"] {
        let got = b.retained(&format!("tidelet/{node}/desired/pods/#"), node);
        assert_eq!(
            got.get(&format!("tidelet/{node}/desired/pods/default/web")),
            Some(&pod.to_vec())
        );
    }
    // The operator reads every node's state.
    let all = b.retained("tidelet/+/online", "operator");
    assert_eq!(all.len(), 2, "{all:?}");

    // The operator cannot forge a node's status nor a node's answer.
    b.publish(
        "tidelet/node-a/online",
        br#"{"online":false}"#,
        true,
        "operator",
    );
    b.publish(
        "tidelet/node-a/desired/results/default/web",
        br#"{"accepted":true}"#,
        true,
        "operator",
    );
    assert_eq!(
        b.retained("tidelet/node-a/online", "node-a")["tidelet/node-a/online"],
        br#"{"online":true}"#
    );
    assert!(b
        .retained("tidelet/node-a/desired/results/#", "operator")
        .is_empty());

    // An empty retained message removes the desired pod.
    b.publish(
        "tidelet/node-b/desired/pods/default/web",
        b"",
        true,
        "operator",
    );
    b.wait_retained(
        "tidelet/node-b/desired/pods/default/web",
        |p| p.is_empty(),
        WAIT,
    );
    assert!(b.retained("tidelet/node-b/desired/#", "node-b").is_empty());
    assert_eq!(b.retained("tidelet/node-a/desired/#", "node-a").len(), 1);
}

#[test]
fn mqtt_tls_client_without_certificate_is_refused() {
    let b = fleet_broker();
    // The positive control: the same operations with a certificate work.
    b.publish("tidelet/node-a/online", b"{}", true, "node-a");
    b.subscribe("tidelet/node-a/#", "node-a");

    let err = b
        .try_publish("tidelet/node-a/online", b"anon", true, Identity::Anonymous)
        .expect_err("a client without a certificate published");
    assert!(!err.is_empty());
    assert!(b.try_subscribe("tidelet/#", Identity::Anonymous).is_err());
    // A username and password are no substitute for the certificate.
    let guessed = "-u node-a -P guess -t tidelet/node-a/online -r -m x";
    let out = client_tool(&b, "mosquitto_pub", Identity::Anonymous, None, guessed)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "username without certificate accepted"
    );

    assert_eq!(
        b.retained("tidelet/node-a/online", "operator")["tidelet/node-a/online"],
        b"{}"
    );
}

#[test]
fn mqtt_tls_client_with_certificate_from_another_ca_is_refused() {
    let b = fleet_broker();
    b.publish("tidelet/node-a/online", b"{}", true, "node-a");
    let foreign = Identity::ForeignCa("node-a".into());
    let err = b
        .try_publish("tidelet/node-a/online", b"impostor", true, foreign.clone())
        .expect_err("a certificate from another CA was accepted");
    assert!(!err.is_empty());
    assert!(b.try_subscribe("tidelet/node-a/#", foreign).is_err());
    assert_eq!(
        b.retained("tidelet/node-a/online", "operator")["tidelet/node-a/online"],
        b"{}"
    );
}

#[test]
fn mqtt_acl_with_passwords_confines_nodes_and_refuses_a_wrong_password() {
    let b = Broker::new(BrokerOpts {
        acl: true,
        ..BrokerOpts::default()
    });
    assert!(b.url().starts_with("mqtt://127.0.0.1:"));
    b.publish("tidelet/node-a/node", b"a", true, "node-a");
    b.publish("tidelet/node-b/node", b"forged", true, "node-a");
    assert_eq!(
        b.retained("tidelet/#", "operator")
            .keys()
            .collect::<Vec<_>>(),
        ["tidelet/node-a/node"]
    );
    assert!(b
        .try_publish("tidelet/x", b"x", false, Identity::Anonymous)
        .is_err());
    let wrong = "-u node-a -P wrong -t tidelet/node-a/node -m x";
    let out = client_tool(&b, "mosquitto_pub", Identity::Anonymous, None, wrong)
        .output()
        .unwrap();
    assert!(!out.status.success(), "a wrong password was accepted");
    // The harness's agent config names the identity tidelet would use.
    let cfg = b.agent_config("node-a");
    assert!(
        cfg.contains("username: node-a") && cfg.contains("passwordFile: "),
        "{cfg}"
    );
}

#[test]
fn mqtt_harness_round_trips_payloads_byte_for_byte_and_clears_with_empty_retained() {
    let b = Broker::new(BrokerOpts::default());
    let payloads: &[(&str, &[u8])] = &[
        ("t/json", br#"{"a": "b c", "d": [1, 2]}"#),
        (
            "t/yaml",
            b"apiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n",
        ),
        ("t/binary", &[0, 1, 2, 0xff, b'\n', b'\t', 0x80]),
        ("t/with space", b"  leading and trailing  "),
    ];
    for (t, p) in payloads {
        b.publish(t, p, true, "node-a");
    }
    let got = b.retained("t/#", "node-b");
    let want = payloads
        .iter()
        .map(|(t, p)| (t.to_string(), p.to_vec()))
        .collect();
    assert_eq!(got, want);

    // Live messages reach a subscription, with the retain flag cleared as 3.1.1 requires.
    let mut sub = b.subscribe("t/live", "node-b");
    b.publish("t/live", b"one\ntwo", true, "node-a");
    let m = sub.wait_for("t/live", WAIT, |m| m.topic == "t/live");
    assert_eq!((m.text().as_str(), m.retained), ("one\ntwo", false));

    b.publish("t/json", b"", true, "node-a");
    assert_eq!(b.wait_retained("t/json", |p| p.is_empty(), WAIT), b"");
    assert!(!b.retained("t/#", "node-b").contains_key("t/json"));
}

#[test]
fn mqtt_harness_broker_restart_keeps_port_and_persisted_retained_messages() {
    let mut b = Broker::new(BrokerOpts {
        tls: true,
        require_client_cert: true,
        acl: true,
        persistence: true,
        users: vec![],
        shipped_conf: false,
    });
    let port = b.port();
    b.publish("tidelet/node-a/node", b"status-1", true, "node-a");
    b.stop();
    assert!(!b.running());
    assert!(b
        .try_publish("tidelet/node-a/node", b"x", true, "node-a")
        .is_err());
    b.start();
    assert_eq!(b.port(), port);
    assert_eq!(b.url(), format!("mqtts://127.0.0.1:{port}"));
    assert_eq!(
        b.retained("tidelet/node-a/#", "node-a")["tidelet/node-a/node"],
        b"status-1"
    );
    // Across a crash too, once the autosave (1 s) has run.
    let db = b.dir().join("data/mosquitto.db");
    let published = std::time::SystemTime::now();
    b.publish("tidelet/node-a/node", b"status-2", true, "node-a");
    // Wait for an autosave (every second) that began after the publish.
    tidelet_e2e::wait_for("an autosave after the publish", WAIT, || {
        let modified = std::fs::metadata(&db).and_then(|m| m.modified()).ok()?;
        (modified > published + Duration::from_millis(50)).then_some(())
    });
    b.kill();
    b.start();
    assert_eq!(
        b.retained("tidelet/node-a/#", "node-a")["tidelet/node-a/node"],
        b"status-2"
    );
}

#[test]
fn mqtt_shipped_mosquitto_conf_enforces_mutual_tls_and_the_per_node_acl() {
    let mut b = Broker::new(BrokerOpts::shipped());
    assert!(b.url().starts_with("mqtts://127.0.0.1:"));
    b.publish("tidelet/node-a/node", b"a", true, "node-a");
    b.publish("tidelet/node-b/node", b"forged", true, "node-a");
    b.publish(
        "tidelet/node-b/desired/pods/default/web",
        b"kind: Pod\n",
        true,
        "operator",
    );
    assert!(b
        .try_publish("tidelet/node-a/node", b"x", true, Identity::Anonymous)
        .is_err());
    assert!(b
        .try_publish(
            "tidelet/node-a/node",
            b"x",
            true,
            Identity::ForeignCa("node-a".into())
        )
        .is_err());
    let want = [
        "tidelet/node-a/node",
        "tidelet/node-b/desired/pods/default/web",
    ];
    assert_eq!(
        b.retained("tidelet/#", "operator")
            .keys()
            .collect::<Vec<_>>(),
        want
    );
    // What the agent and `tidelet fleet` are given for this broker: files that exist.
    let cfg = b.agent_config("node-a");
    for key in ["caFile", "certFile", "keyFile"] {
        let line = cfg
            .lines()
            .find(|l| l.trim_start().starts_with(key))
            .unwrap_or_else(|| panic!("{key} in {cfg}"));
        let path = line.split_once(": ").unwrap().1;
        assert!(std::path::Path::new(path).is_file(), "{line}");
    }
    assert!(cfg.contains(&format!("broker: \"{}\"", b.url())), "{cfg}");
    let fleet = b.fleet_args("operator");
    assert_eq!(fleet[..2], ["--broker".to_string(), b.url()]);
    assert!(fleet.contains(&"--cert".to_string()) && fleet.contains(&"--key".to_string()));
    // Its persistence keeps the retained tree across a restart.
    b.stop();
    b.start();
    assert_eq!(
        b.retained("tidelet/#", "operator")
            .keys()
            .collect::<Vec<_>>(),
        want
    );
}

#[test]
fn mqtt_harness_tracks_clients_counters_and_a_frozen_broker() {
    let mut b = Broker::new(BrokerOpts::default());
    // A client id of our choosing, as an agent's would be.
    let mut sub = client_tool(&b, "mosquitto_sub", "node-a", Some("watcher-1"), "-t t/#")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    b.wait_client("watcher-1", true, WAIT);
    assert!(b
        .wait_log("as watcher-1 (", WAIT)
        .contains("New client connected"));
    sub.kill().unwrap();
    sub.wait().unwrap();
    b.wait_client("watcher-1", false, WAIT);

    // The broker's own counters move when messages flow.
    b.publish("t/x", b"1", false, "node-a");
    let before: u64 = b.sys_stats()["messages/received"].parse().unwrap();
    for i in 0..5 {
        b.publish("t/x", i.to_string().as_bytes(), false, "node-a");
    }
    tidelet_e2e::wait_for("$SYS messages/received to count 5 more", WAIT, || {
        let now: u64 = b.sys_stats()["messages/received"].parse().ok()?;
        (now >= before + 5).then_some(())
    });

    // Frozen, it holds the connection but answers nothing; thawed, what was sent arrives.
    let mut live = b.subscribe("t/#", "node-b");
    b.freeze();
    assert!(b.frozen());
    // A client started now connects (the kernel accepts) but gets no CONNACK, so it
    // cannot publish yet.
    let mut publisher = client_tool(&b, "mosquitto_pub", "node-a", None, "-q 1 -t t/during")
        .args(["-m", "sent while frozen"])
        .spawn()
        .unwrap();
    assert!(live.next(Duration::from_millis(500)).is_none());
    assert!(
        publisher.try_wait().unwrap().is_none(),
        "mosquitto_pub finished against a frozen broker"
    );
    b.thaw();
    assert!(!b.frozen());
    live.wait_for("the publish of the client that waited", WAIT, |m| {
        m.topic == "t/during"
    });
    assert!(publisher.wait().unwrap().success());
}
