//! Tables for the placement decision and the missing-controller message, and `prepare` on a
//! temp dir laid out like a cgroup v2 hierarchy.

use super::*;

const SVC: &str = "tidelet.slice/tidelet.service";

fn inputs<'a>(
    version: Version,
    own: Option<&'a str>,
    cgroup_root: &'a str,
    under_systemd: bool,
) -> Inputs<'a> {
    Inputs {
        version,
        own,
        cgroup_root,
        under_systemd,
    }
}

fn plain(pods_root: &str) -> Placement {
    Placement {
        layout: Layout::Plain,
        pods_root: pods_root.into(),
        agent_leaf: None,
        provider: None,
    }
}

fn inside(unit: &str, pods_root: &str) -> Placement {
    Placement {
        layout: Layout::InsideUnit,
        pods_root: pods_root.into(),
        agent_leaf: Some(format!("{unit}/{AGENT_LEAF}")),
        provider: Some(unit.into()),
    }
}

fn beside(slice: &str, pods_root: &str) -> Placement {
    Placement {
        layout: Layout::BesideUnit,
        pods_root: pods_root.into(),
        agent_leaf: None,
        provider: Some(slice.into()),
    }
}

#[test]
fn placement_table() {
    use Version::{V1, V2};
    let svc = Some("/tidelet.slice/tidelet.service");
    let leaf = Some("/tidelet.slice/tidelet.service/agent");
    #[rustfmt::skip]
    let cases: Vec<(&str, Inputs, std::result::Result<Placement, &str>)> = vec![
        // cgroup v1 host (this CI host): unchanged, under systemd or not.
        ("v1 plain", inputs(V1, None, "/", false), Ok(plain(""))),
        ("v1 systemd", inputs(V1, svc, "/tidelet", true), Ok(plain("tidelet"))),
        // The initramfs guest: no systemd, PID 1 in /init.scope, pods below the root.
        ("v2 no systemd", inputs(V2, Some("/init.scope"), "/", false), Ok(plain(""))),
        ("v2 no systemd, root", inputs(V2, Some("/"), "/t", false), Ok(plain("t"))),
        // systemd 254+ with DelegateSubgroup=agent: pods inside the delegated unit.
        ("254 leaf", inputs(V2, leaf, "/", true), Ok(inside(SVC, SVC))),
        ("254 leaf, sub root", inputs(V2, leaf, "/pods", true), Ok(inside(SVC, &format!("{SVC}/pods")))),
        ("254 root already inside", inputs(V2, leaf, "/tidelet.slice/tidelet.service/x", true), Ok(inside(SVC, &format!("{SVC}/x")))),
        ("254 scope", inputs(V2, Some("/machine.slice/t.scope/agent"), "", true), Ok(inside("machine.slice/t.scope", "machine.slice/t.scope"))),
        ("254 root in the leaf", inputs(V2, leaf, "/agent/x", true), Err("cgroupRoot \"/agent/x\" lies inside tidelet's own leaf cgroup /tidelet.slice/tidelet.service/agent; choose another")),
        // systemd 252 (no DelegateSubgroup=): the unit's cgroup stays a leaf, pods beside it.
        ("252 unit", inputs(V2, svc, "/", true), Ok(beside("tidelet.slice", "tidelet.slice"))),
        ("252 unit, sub root", inputs(V2, svc, "/pods", true), Ok(beside("tidelet.slice", "tidelet.slice/pods"))),
        ("252 system.slice", inputs(V2, Some("/system.slice/tidelet.service"), "/", true), Ok(beside("system.slice", "system.slice"))),
        ("252 unit at the root", inputs(V2, Some("/t.service"), "/", true), Ok(beside("", ""))),
        ("252 root in the unit", inputs(V2, svc, "/tidelet.slice/tidelet.service/k", true), Err("cgroupRoot \"/tidelet.slice/tidelet.service/k\" lies inside tidelet's own cgroup /tidelet.slice/tidelet.service, which systemd < 254 (no DelegateSubgroup=) must be able to restart tidelet into; choose another")),
        // Not a unit's cgroup, or no cgroup v2 line.
        ("v2 in a slice", inputs(V2, Some("/system.slice"), "/", true), Err("tidelet runs under systemd in cgroup \"/system.slice\", which is not a service's cgroup; run it as a service with Delegate=yes (dist/systemd/tidelet.service)")),
        ("v2 leaf of a slice", inputs(V2, Some("/system.slice/agent"), "/", true), Err("tidelet runs under systemd in cgroup \"/system.slice/agent\", which is not a service's cgroup; run it as a service with Delegate=yes (dist/systemd/tidelet.service)")),
        ("v2 no 0:: line", inputs(V2, None, "/", true), Err("no `0::` line in /proc/self/cgroup: tidelet is not on cgroup v2")),
    ];
    for (name, i, want) in cases {
        assert_eq!(place(&i), want.map_err(str::to_string), "{name}");
    }
}

#[test]
fn reads_the_v2_line_and_the_environment() {
    let cases = [
        (
            "0::/system.slice/tidelet.service\n",
            Some("/system.slice/tidelet.service"),
        ),
        (
            "12:memory:/x\n1:name=systemd:/y\n0::/init.scope\n",
            Some("/init.scope"),
        ),
        ("12:memory:/x\n", None),
        ("", None),
    ];
    for (text, want) in cases {
        assert_eq!(own_v2_path(text), want, "{text:?}");
    }
    let env = [
        (None, None, false),
        (Some(""), Some(""), false),
        (Some("/run/systemd/notify"), None, true),
        (None, Some("0123abcd"), true),
    ];
    for (n, i, want) in env {
        assert_eq!(under_systemd(n, i), want, "{n:?} {i:?}");
    }
}

/// available, enable_in, root's controllers, missing, must contain, must not contain.
type HintCase<'a> = (
    &'a str,
    &'a str,
    &'a str,
    Vec<&'a str>,
    &'a [&'a str],
    &'a [&'a str],
);

#[test]
fn missing_controller_messages() {
    let all = "cpuset cpu io memory hugetlb pids rdma misc";
    #[rustfmt::skip]
    let cases: Vec<HintCase> = vec![
        (all, "tidelet.slice", all, vec![], &[], &[]),
        (
            "memory pids", "tidelet.slice", all, vec!["cpu"],
            &["cpu not delegated to /tidelet.slice/tidelet.service", "Delegate=yes",
              "`echo \"+cpu\" > /sys/fs/cgroup/tidelet.slice/cgroup.subtree_control`"],
            &["kernel"],
        ),
        (
            "", "", all, vec!["memory", "cpu", "pids"],
            &["memory, cpu, pids not delegated", "`echo \"+memory +cpu +pids\" > /sys/fs/cgroup/cgroup.subtree_control`",
              "Delegate=memory cpu pids"],
            &["cgroup_no_v1"],
        ),
        (
            "cpu pids", "tidelet.slice", "cpu io pids", vec!["memory"],
            &["memory missing from the root's cgroup.controllers (\"cpu io pids\")", "CONFIG_MEMCG",
              "systemd.unified_cgroup_hierarchy=1", "cgroup_no_v1=all"],
            &["not delegated"],
        ),
        (
            "pids", "tidelet.slice", "cpu pids", vec!["memory", "cpu"],
            &["cpu not delegated", "memory missing from the root's"],
            &["memory, cpu"],
        ),
    ];
    for (available, enable_in, root, want_missing, has, hasnt) in cases {
        let missing = missing_controllers(available);
        assert_eq!(missing, want_missing, "{available:?}");
        let hint = missing_hint(SVC, enable_in, &missing, root);
        for h in has {
            assert!(hint.contains(h), "{available:?}: {h:?} not in {hint}");
        }
        for h in hasnt {
            assert!(!hint.contains(h), "{available:?}: {h:?} in {hint}");
        }
    }
}

/// A temp dir laid out as the kernel would: the hierarchy root, the slice and the service's
/// cgroup with their interface files.
fn fake_hierarchy(svc_controllers: &str, slice_subtree: &str) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let svc = t.path().join(SVC);
    std::fs::create_dir_all(&svc).unwrap();
    std::fs::write(t.path().join("cgroup.controllers"), "cpu io memory pids\n").unwrap();
    std::fs::write(
        t.path().join("tidelet.slice/cgroup.subtree_control"),
        slice_subtree,
    )
    .unwrap();
    std::fs::write(svc.join("cgroup.controllers"), svc_controllers).unwrap();
    t
}

#[test]
fn prepare_moves_into_the_leaf_only_inside_the_unit() {
    let t = fake_hierarchy("cpu io memory pids\n", "cpu io memory pids\n");
    // The kernel creates cgroup.procs with the directory; lay it out as mkdir would.
    let leaf = t.path().join(SVC).join(AGENT_LEAF);
    std::fs::create_dir(&leaf).unwrap();
    std::fs::write(leaf.join("cgroup.procs"), "").unwrap();
    prepare(t.path(), &inside(SVC, SVC), 4242).unwrap();
    assert_eq!(
        std::fs::read_to_string(leaf.join("cgroup.procs")).unwrap(),
        "4242"
    );
    std::fs::write(leaf.join("cgroup.procs"), "").unwrap();
    prepare(t.path(), &beside("tidelet.slice", "tidelet.slice"), 7).unwrap();
    prepare(t.path(), &plain(""), 7).unwrap();
    assert_eq!(
        std::fs::read_to_string(leaf.join("cgroup.procs")).unwrap(),
        ""
    );
}

#[test]
fn prepare_names_missing_controllers() {
    // Inside the unit: the unit's cgroup.controllers lacks cpu and pids.
    let t = fake_hierarchy("memory\n", "cpu memory pids\n");
    let err = prepare(t.path(), &inside(SVC, SVC), 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing controller(s) cpu, pids"), "{err}");
    assert!(
        err.contains("not delegated to /tidelet.slice/tidelet.service")
            && err.contains("Delegate=yes"),
        "{err}"
    );
    assert!(
        !t.path().join(SVC).join(AGENT_LEAF).exists(),
        "moved despite the error"
    );
    // Beside the unit: systemd enabled only memory and pids in the slice (no delegation).
    let t = fake_hierarchy("cpu memory pids\n", "memory pids\n");
    let err = prepare(t.path(), &beside("tidelet.slice", "tidelet.slice"), 1)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tidelet.slice/cgroup.subtree_control: missing controller(s) cpu"),
        "{err}"
    );
    assert!(
        err.contains("echo \"+cpu\" > /sys/fs/cgroup/tidelet.slice/cgroup.subtree_control"),
        "{err}"
    );
}
