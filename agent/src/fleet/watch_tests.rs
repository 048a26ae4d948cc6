use super::*;

#[test]
fn filters_cover_one_node_or_all() {
    assert_eq!(
        filters("tidelet/", Some("n1")),
        vec![
            "tidelet/n1/online",
            "tidelet/n1/node",
            "tidelet/n1/pods/+/+",
            "tidelet/n1/events",
            "tidelet/n1/desired/results/+/+"
        ]
    );
    assert!(filters("site/", None)
        .iter()
        .all(|f| f.starts_with("site/+/")));
}

#[test]
fn only_changes_make_lines() {
    let mut w = Watch::default();
    let root = "tidelet/";
    let running = br#"{"spec":{"containers":[{"name":"a"}]},"status":{"phase":"Running","containerStatuses":[{"name":"a","ready":true,"restartCount":0,"state":{"running":{}}}]}}"#;
    let backoff = br#"{"spec":{"containers":[{"name":"a"}]},"status":{"phase":"Running","containerStatuses":[{"name":"a","ready":false,"restartCount":1,"state":{"waiting":{"reason":"CrashLoopBackOff"}}}]}}"#;
    let steps: &[(&str, &[u8], Option<&str>)] = &[
        ("tidelet/n1/online", br#"{"online":true}"#, Some("n1  online")),
        ("tidelet/n1/online", br#"{"online":true}"#, None),
        ("tidelet/n1/online", br#"{"online":false,"reason":"connection lost"}"#, Some("n1  offline (connection lost)")),
        ("tidelet/n1/lease", br#"{"spec":{}}"#, None),
        ("tidelet/n1/node", br#"{"status":{"conditions":[{"type":"Ready","status":"True"}]}}"#, Some("n1  node conditions: Ready")),
        ("tidelet/n1/node", br#"{"status":{"conditions":[{"type":"Ready","status":"True"}],"x":1}}"#, None),
        ("tidelet/n1/pods/default/web", running, Some("n1  pod default/web Running 1/1 restarts=0")),
        ("tidelet/n1/pods/default/web", running, None),
        ("tidelet/n1/pods/default/web", backoff, Some("n1  pod default/web Running 1/1 restarts=0 -> CrashLoopBackOff 0/1 restarts=1")),
        ("tidelet/n1/pods/default/web", b"", Some("n1  pod default/web gone")),
        ("tidelet/n1/pods/default/web", b"", None),
        (
            "tidelet/n1/events",
            br#"{"type":"Warning","reason":"BackOff","involvedObject":{"kind":"Pod","namespace":"default","name":"web"},"message":"Back-off restarting failed container"}"#,
            Some("n1  Warning BackOff pod/default/web: Back-off restarting failed container"),
        ),
        (
            "tidelet/n1/desired/results/default/web",
            br#"{"namespace":"default","name":"web","accepted":false,"reason":"Conflict","message":"a static pod has this name"}"#,
            Some("n1  desired default/web rejected: Conflict: a static pod has this name"),
        ),
        ("tidelet/n1/pods/default/web", b"{not json", Some("n1  unreadable message on tidelet/n1/pods/default/web")),
        ("elsewhere/n1/online", br#"{"online":true}"#, None),
    ];
    for (topic, payload, want) in steps {
        let got = w.line(root, topic, payload);
        match want {
            None => assert_eq!(got, None, "{topic}"),
            Some(w) => {
                let got = got.unwrap_or_else(|| panic!("{topic}: no line, want {w}"));
                assert!(
                    got.starts_with(w),
                    "{topic}: {got:?} does not start with {w:?}"
                );
            }
        }
    }
}

#[test]
fn json_lines_keep_topic_and_payload() {
    let v = json_line("t", "tidelet/n1/online", br#"{"online":true}"#, true);
    assert_eq!(
        v,
        json!({"time": "t", "topic": "tidelet/n1/online", "retained": true, "payload": {"online": true}})
    );
    assert_eq!(json_line("t", "x", b"", false)["payload"], Value::Null);
    assert_eq!(
        json_line("t", "x", b"plain", false)["payload"],
        json!("plain")
    );
}
