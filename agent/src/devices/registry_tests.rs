use super::*;

fn dev(id: &str, health: &str) -> Device {
    Device {
        id: id.into(),
        health: health.into(),
        topology: None,
    }
}

fn listed(ids: &[(&str, bool)]) -> BTreeMap<String, bool> {
    ids.iter().map(|(i, h)| (i.to_string(), *h)).collect()
}

const S: Duration = Duration::from_secs(1);

#[test]
fn resource_names_follow_kubernetes_extended_resource_rules() {
    for (name, ok) in [
        ("nvidia.com/gpu", true),
        ("dri.tidelet.io/panfrost", true),
        ("example.com/a_b.c-1", true),
        ("gpu", false),
        ("/gpu", false),
        ("example.com/", false),
        ("Example.com/gpu", false),
        ("example..com/gpu", false),
        ("-example.com/gpu", false),
        ("kubernetes.io/gpu", false),
        ("node.kubernetes.io/gpu", false),
        ("example.com/-gpu", false),
        ("example.com/gpu/x", false),
        ("example.com/g pu", false),
        (&format!("example.com/{}", "a".repeat(64)), false),
        (&format!("{}.com/a", "a".repeat(64)), false),
    ] {
        assert_eq!(check_resource_name(name).is_ok(), ok, "{name}");
    }
    let e = check_resource_name("gpu").unwrap_err();
    assert!(e.contains("<domain>/<name>"), "{e}");
}

#[test]
fn device_lists_are_checked() {
    let ok = check_devices(&[dev("a", "Healthy"), dev("b", "Unhealthy"), dev("c", "sick")]).unwrap();
    assert_eq!(ok, listed(&[("a", true), ("b", false), ("c", false)]));
    let many: Vec<Device> = (0..10_000).map(|i| dev(&format!("d{i}"), "Healthy")).collect();
    assert_eq!(
        check_devices(&many),
        Err(ListError::TooMany { count: 10_000 })
    );
    assert!(check_devices(&many[..MAX_DEVICES]).is_ok());
    for (list, want) in [
        (vec![dev("", "Healthy")], ListError::EmptyId { index: 0 }),
        (
            vec![dev("a", "Healthy"), dev("a", "Healthy")],
            ListError::Duplicate { id: "a".into() },
        ),
        (
            vec![dev(&"x".repeat(64), "Healthy")],
            ListError::LongId { id: "x".repeat(64) },
        ),
        (vec![dev("a b", "Healthy")], ListError::BadId { id: "a b".into() }),
    ] {
        assert_eq!(check_devices(&list), Err(want));
    }
    assert!(ListError::TooMany { count: 10_000 }
        .to_string()
        .contains("10000 devices, more than the 1024"));
}

#[test]
fn a_live_holder_keeps_its_name_and_a_restarted_plugin_replaces_it() {
    let mut r = Registry::default();
    let g1 = r.register("x.io/a", "a.sock", Default::default(), |_| true).unwrap();
    // Another endpoint while the first is live and its socket exists: refused.
    let e = r.register("x.io/a", "b.sock", Default::default(), |_| true).unwrap_err();
    assert!(e.contains("already registered by the plugin at \"a.sock\""), "{e}");
    // Its socket is gone (the plugin died before its stream ended): replaced.
    let g2 = r.register("x.io/a", "b.sock", Default::default(), |_| false).unwrap();
    assert!(g2 > g1);
    // The same endpoint again (a quick restart): replaced.
    let g3 = r.register("x.io/a", "b.sock", Default::default(), |_| true).unwrap();
    // A stream of an older registration cannot change the resource.
    assert!(!r.update("x.io/a", g2, listed(&[("d0", true)])));
    assert!(!r.stopped("x.io/a", g2, S));
    assert!(r.update("x.io/a", g3, listed(&[("d0", true), ("d1", true)])));
    assert_eq!(r.counts()["x.io/a"], (2, 2));
    // After a stop, another endpoint may take the name even if the old socket is there.
    assert!(r.stopped("x.io/a", g3, S));
    assert!(r.register("x.io/a", "c.sock", Default::default(), |_| true).is_ok());
    // Devices stay in capacity, unhealthy, until the new plugin lists them.
    assert_eq!(r.counts()["x.io/a"], (2, 0));
}

#[test]
fn a_gone_plugin_keeps_capacity_for_the_grace_period() {
    let mut r = Registry::default();
    let g = r.register("x.io/a", "a.sock", Default::default(), |_| true).unwrap();
    r.update("x.io/a", g, listed(&[("d0", true), ("d1", false)]));
    assert_eq!(r.counts()["x.io/a"], (2, 1));
    assert!(r.stopped("x.io/a", g, 10 * S));
    assert!(!r.stopped("x.io/a", g, 11 * S), "stopping twice changes nothing");
    assert_eq!(r.counts()["x.io/a"], (2, 0));
    assert_eq!(r.next_expiry(300 * S), Some(310 * S));
    assert!(r.expire(309 * S, 300 * S).is_empty());
    assert_eq!(r.expire(310 * S, 300 * S), vec!["x.io/a".to_string()]);
    assert!(r.counts().is_empty());
    assert_eq!(r.next_expiry(300 * S), None);
}

#[test]
fn admission_counts_healthy_free_devices() {
    let mut r = Registry::default();
    assert_eq!(
        r.check("x.io/a", 1),
        Err(AdmitError::Unknown {
            resource: "x.io/a".into(),
            requested: 1
        })
    );
    let g = r.register("x.io/a", "a.sock", Default::default(), |_| true).unwrap();
    r.update("x.io/a", g, listed(&[("d0", true), ("d1", true), ("d2", false)]));
    assert_eq!(r.check("x.io/a", 2).unwrap(), vec!["d0", "d1"]);
    r.reserve("p1", "c", "x.io/a", vec!["d0".into()]);
    assert_eq!(r.free("x.io/a"), vec!["d1"]);
    let e = r.check("x.io/a", 2).unwrap_err();
    assert_eq!(e.reason(), "UnexpectedAdmissionError");
    assert_eq!(
        e.to_string(),
        "Allocate failed due to requested number of devices unavailable for x.io/a. Requested: 2, Available: 1, which is unexpected"
    );
    assert_eq!(
        AdmitError::Unknown {
            resource: "x.io/a".into(),
            requested: 1
        }
        .reason(),
        "OutOfx.io/a"
    );
    // A held device that turns unhealthy stays held; freeing the pod frees it.
    r.update("x.io/a", g, listed(&[("d0", false), ("d1", true)]));
    assert_eq!(r.held("p1", "c", "x.io/a").unwrap().ids, vec!["d0"]);
    assert!(r.release("p1"));
    assert!(!r.release("p1"));
    assert_eq!(r.free("x.io/a"), vec!["d1"]);
}

#[test]
fn unreserve_and_retain_clean_up_empty_entries() {
    let mut r = Registry::default();
    r.reserve("p1", "c", "x.io/a", vec!["d0".into()]);
    r.reserve("p1", "c", "x.io/b", vec!["e0".into()]);
    r.reserve("p2", "c", "x.io/a", vec!["d1".into()]);
    r.answered("p1", "c", "x.io/a", Default::default());
    assert!(r.held("p1", "c", "x.io/a").unwrap().response.is_some());
    r.unreserve("p1", "c", "x.io/b");
    r.unreserve("p1", "c", "x.io/a");
    assert!(!r.allocations.contains_key("p1"));
    let keep: BTreeSet<String> = ["p3".to_string()].into();
    assert_eq!(r.retain_pods(&keep), vec!["p2".to_string()]);
    assert!(r.allocations.is_empty());
}
