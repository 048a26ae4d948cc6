use super::*;
use serde_json::json;

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn lease(renew: &str, secs: i64) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
           "spec": {"holderIdentity": "n", "renewTime": renew, "leaseDurationSeconds": secs}})
}

#[test]
fn node_status_from_online_and_lease() {
    let now = ts("2026-01-01T00:10:00Z");
    let on = json!({"online": true});
    let off = json!({"online": false, "reason": "will"});
    let fresh = lease("2026-01-01T00:09:00.000000Z", 240);
    let edge = lease("2026-01-01T00:06:00Z", 240);
    let expired = lease("2026-01-01T00:05:59Z", 240);
    let unreadable = json!({"spec": {"renewTime": "yesterday"}});
    let cases: &[(Option<&Value>, Option<&Value>, NodeStatus)] = &[
        (None, None, NodeStatus::Unknown),
        (None, Some(&fresh), NodeStatus::Unknown),
        (Some(&on), None, NodeStatus::Online),
        (Some(&on), Some(&fresh), NodeStatus::Online),
        (Some(&on), Some(&edge), NodeStatus::Online),
        (Some(&on), Some(&expired), NodeStatus::Stale),
        (Some(&on), Some(&unreadable), NodeStatus::Online),
        (Some(&off), Some(&fresh), NodeStatus::Offline),
        (Some(&off), Some(&expired), NodeStatus::Offline),
        (Some(&json!({"online": "yes"})), None, NodeStatus::Unknown),
    ];
    for (i, (o, l, want)) in cases.iter().enumerate() {
        assert_eq!(node_status(*o, *l, now), *want, "case {i}");
    }
}

#[test]
fn snapshot_takes_retained_topics_and_clears() {
    let mut s = Snapshot::default();
    let root = "tidelet/";
    let pod = br#"{"status":{"phase":"Running"}}"#;
    let ok: &[(&str, &[u8])] = &[
        ("tidelet/n1/online", br#"{"online":true}"#),
        ("tidelet/n1/node", br#"{"status":{}}"#),
        ("tidelet/n1/lease", br#"{"spec":{}}"#),
        ("tidelet/n1/pods/default/web", pod),
        ("tidelet/n1/pods/kube-system/dns", pod),
        ("tidelet/n2/pods/default/x", pod),
    ];
    for (t, p) in ok {
        assert_eq!(s.ingest(root, t, p), Ok(()), "{t}");
    }
    assert_eq!(s.nodes.len(), 2);
    assert_eq!(s.nodes["n1"].pods.len(), 2);
    // An empty payload clears the pod topic.
    assert_eq!(s.ingest(root, "tidelet/n1/pods/default/web", b""), Ok(()));
    assert_eq!(
        s.nodes["n1"].pods.keys().collect::<Vec<_>>(),
        vec!["kube-system/dns"]
    );
    let bad: &[(&str, &[u8])] = &[
        ("other/n1/online", b"{}"),
        ("tidelet/n1/pods/default", pod),
        ("tidelet/n1/pods/a/b/c", pod),
        ("tidelet/n1/desired/pods/a/b", pod),
    ];
    for (t, p) in bad {
        assert_eq!(s.ingest(root, t, p), Err(Skipped::NotOurs), "{t}");
    }
    assert!(matches!(
        s.ingest(root, "tidelet/n1/online", b"\xff\x00"),
        Err(Skipped::BadJson(_))
    ));
    // A node whose only pod topic is cleared before anything else is not invented.
    assert_eq!(s.ingest(root, "tidelet/n9/pods/default/web", b""), Ok(()));
    assert!(!s.nodes.contains_key("n9"));
}

#[test]
fn node_rows_count_pods_and_read_the_node() {
    let mut s = Snapshot::default();
    let root = "tidelet/";
    let node = json!({"status": {"allocatable": {"cpu": "1500m", "memory": "900Mi"},
        "conditions": [{"type": "Ready", "status": "True"},
                       {"type": "MemoryPressure", "status": "True"},
                       {"type": "DiskPressure", "status": "False"}]}});
    s.ingest(root, "tidelet/a/node", node.to_string().as_bytes())
        .unwrap();
    s.ingest(root, "tidelet/a/online", br#"{"online":true}"#)
        .unwrap();
    s.ingest(
        root,
        "tidelet/a/lease",
        lease("2026-01-01T00:00:00Z", 40).to_string().as_bytes(),
    )
    .unwrap();
    for (n, phase) in [("p1", "Running"), ("p2", "Pending"), ("p3", "Running")] {
        let t = format!("tidelet/a/pods/default/{n}");
        s.ingest(
            root,
            &t,
            json!({"status": {"phase": phase}}).to_string().as_bytes(),
        )
        .unwrap();
    }
    s.ingest(
        root,
        "tidelet/b/online",
        br#"{"online":false,"reason":"stopped"}"#,
    )
    .unwrap();
    let now = ts("2026-01-01T00:01:00Z");
    let rows = node_rows(&s, now);
    assert_eq!(rows.len(), 2);
    let a = &rows[0];
    assert_eq!(a.status, NodeStatus::Stale);
    assert_eq!(a.conditions, vec!["Ready", "MemoryPressure"]);
    assert_eq!((a.pods_running, a.pods_total), (2, 3));
    assert_eq!(
        node_cells(a, now),
        vec![
            "a",
            "Stale",
            "Ready,MemoryPressure",
            "2/3",
            "1500m",
            "900Mi",
            "60s"
        ]
    );
    let b = &rows[1];
    assert_eq!(b.offline_reason.as_deref(), Some("stopped"));
    assert_eq!(
        node_cells(b, now),
        vec![
            "b",
            "Offline",
            "<none>",
            "0/0",
            "<none>",
            "<none>",
            "<unknown>"
        ]
    );
}

fn cs(name: &str, state: Value, ready: bool, restarts: i64) -> Value {
    json!({"name": name, "state": state, "ready": ready, "restartCount": restarts})
}

#[test]
fn pod_columns_as_kubectl_shows_them() {
    let running = json!({"running": {"startedAt": "2026-01-01T00:00:00Z"}});
    let pod = |phase: &str, inits: Vec<Value>, cs: Vec<Value>, n: usize| {
        let containers: Vec<Value> = (0..n).map(|i| json!({"name": format!("c{i}")})).collect();
        json!({"spec": {"containers": containers},
               "status": {"phase": phase, "initContainerStatuses": inits, "containerStatuses": cs}})
    };
    type Want<'a> = (usize, usize, &'a str, i64);
    let cases: Vec<(&str, Value, Want)> = vec![
        (
            "all running",
            pod(
                "Running",
                vec![],
                vec![
                    cs("a", running.clone(), true, 0),
                    cs("b", running.clone(), true, 3),
                ],
                2,
            ),
            (2, 2, "Running", 3),
        ),
        (
            "one waiting in back-off",
            pod(
                "Running",
                vec![],
                vec![
                    cs("a", running.clone(), true, 0),
                    cs(
                        "b",
                        json!({"waiting": {"reason": "CrashLoopBackOff"}}),
                        false,
                        5,
                    ),
                ],
                2,
            ),
            (1, 2, "CrashLoopBackOff", 5),
        ),
        (
            "image not there yet",
            pod(
                "Pending",
                vec![],
                vec![cs(
                    "a",
                    json!({"waiting": {"reason": "ErrImageNeverPull"}}),
                    false,
                    0,
                )],
                1,
            ),
            (0, 1, "ErrImageNeverPull", 0),
        ),
        (
            "no statuses yet",
            pod("Pending", vec![], vec![], 2),
            (0, 2, "Pending", 0),
        ),
        (
            "completed",
            pod(
                "Succeeded",
                vec![],
                vec![cs(
                    "a",
                    json!({"terminated": {"exitCode": 0, "reason": "Completed"}}),
                    false,
                    0,
                )],
                1,
            ),
            (0, 1, "Completed", 0),
        ),
        (
            "completed beside a running one",
            pod(
                "Running",
                vec![],
                vec![
                    cs(
                        "a",
                        json!({"terminated": {"exitCode": 0, "reason": "Completed"}}),
                        false,
                        0,
                    ),
                    cs("b", running.clone(), true, 0),
                ],
                2,
            ),
            (1, 2, "Running", 0),
        ),
        (
            "killed by a signal, no reason",
            pod(
                "Failed",
                vec![],
                vec![cs(
                    "a",
                    json!({"terminated": {"exitCode": 137, "signal": 9}}),
                    false,
                    1,
                )],
                1,
            ),
            (0, 1, "Signal:9", 1),
        ),
        (
            "exit code, no reason",
            pod(
                "Failed",
                vec![],
                vec![cs("a", json!({"terminated": {"exitCode": 3}}), false, 0)],
                1,
            ),
            (0, 1, "ExitCode:3", 0),
        ),
        (
            "init running",
            pod(
                "Pending",
                vec![
                    cs("i1", json!({"terminated": {"exitCode": 0}}), false, 0),
                    cs("i2", running.clone(), false, 0),
                ],
                vec![cs(
                    "a",
                    json!({"waiting": {"reason": "PodInitializing"}}),
                    false,
                    0,
                )],
                1,
            ),
            (0, 1, "Init:1/2", 0),
        ),
        (
            "init failing",
            pod(
                "Pending",
                vec![cs(
                    "i1",
                    json!({"terminated": {"exitCode": 1, "reason": "Error"}}),
                    false,
                    4,
                )],
                vec![],
                1,
            ),
            (0, 1, "Init:Error", 4),
        ),
        (
            "init in back-off",
            pod(
                "Pending",
                vec![cs(
                    "i1",
                    json!({"waiting": {"reason": "CrashLoopBackOff"}}),
                    false,
                    2,
                )],
                vec![],
                1,
            ),
            (0, 1, "Init:CrashLoopBackOff", 2),
        ),
    ];
    for (what, p, (ready, total, status, restarts)) in cases {
        let c = pod_columns(&p);
        assert_eq!(
            (c.ready, c.total, c.status.as_str(), c.restarts),
            (ready, total, status, restarts),
            "{what}"
        );
    }
    let evicted = json!({"status": {"phase": "Failed", "reason": "Evicted"}});
    assert_eq!(pod_columns(&evicted).status, "Evicted");
    let deleting = json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"},
                          "status": {"phase": "Running"}});
    assert_eq!(pod_columns(&deleting).status, "Terminating");
}

#[test]
fn human_durations() {
    let cases: &[(i64, &str)] = &[
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (119, "119s"),
        (120, "2m"),
        (200, "3m20s"),
        (600, "10m"),
        (179 * 60, "179m"),
        (3 * 3600, "3h"),
        (5 * 3600 + 4 * 60, "5h4m"),
        (20 * 3600, "20h"),
        (3 * 86400 + 2 * 3600, "3d2h"),
        (8 * 86400, "8d"),
        (400 * 86400, "400d"),
        (3 * 365 * 86400 + 30 * 86400, "3y30d"),
        (9 * 365 * 86400, "9y"),
    ];
    for (secs, want) in cases {
        assert_eq!(human_duration(*secs), *want, "{secs}");
    }
    let now = ts("2026-01-01T00:01:00Z");
    assert_eq!(age_since("2026-01-01T00:00:30Z", now), "30s");
    assert_eq!(age_since("garbage", now), "<invalid>");
}

#[test]
fn tables_align_columns() {
    let t = table(
        &["A", "LONGER"],
        &[
            vec!["wide-cell".into(), "x".into()],
            vec!["b".into(), "".into()],
        ],
    );
    assert_eq!(t, "A           LONGER\nwide-cell   x\nb\n");
}

#[test]
fn pods_of_filters_by_node() {
    let mut s = Snapshot::default();
    for t in [
        "tidelet/a/pods/default/x",
        "tidelet/b/pods/default/y",
        "tidelet/b/pods/ns/z",
    ] {
        s.ingest("tidelet/", t, b"{}").unwrap();
    }
    let keys = |only| {
        pods_of(&s, only)
            .iter()
            .map(|(n, k, _)| format!("{n} {k}"))
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(None), vec!["a default/x", "b default/y", "b ns/z"]);
    assert_eq!(keys(Some("b")), vec!["b default/y", "b ns/z"]);
    assert!(keys(Some("c")).is_empty());
}
