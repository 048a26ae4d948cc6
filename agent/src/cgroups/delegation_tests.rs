//! Tables for the placement decision and the missing-controller message, and `prepare` on a
//! temp dir laid out like a cgroup v2 hierarchy.

use super::*;

const SVC: &str = "system.slice/tidelet.service";

fn inputs<'a>(
    version: Version,
    own: Option<&'a str>,
    cgroup_root: &'a str,
    under_systemd: bool,
    recorded: Option<&'a str>,
) -> Inputs<'a> {
    Inputs {
        version,
        own,
        cgroup_root,
        under_systemd,
        recorded,
    }
}

fn placed(pods_root: &str, delegated: Option<&str>) -> Placement {
    Placement {
        pods_root: pods_root.into(),
        agent_leaf: delegated.map(|d| format!("{d}/{AGENT_LEAF}")),
        delegated: delegated.map(str::to_string),
    }
}

#[test]
fn placement_table() {
    use Version::{V1, V2};
    let svc = Some("/system.slice/tidelet.service");
    let cases: Vec<(&str, Inputs, std::result::Result<Placement, &str>)> = vec![
        // cgroup v1 host (this CI host): unchanged, systemd or not.
        ("v1 plain", inputs(V1, None, "/", false, None), Ok(placed("", None))),
        ("v1 systemd", inputs(V1, svc, "/tidelet", true, None), Ok(placed("tidelet", None))),
        // The initramfs guest: no systemd, PID 1 in /init.scope, pods below the root.
        ("v2 no systemd", inputs(V2, Some("/init.scope"), "/", false, None), Ok(placed("", None))),
        ("v2 no systemd, root", inputs(V2, Some("/"), "/t", false, Some(SVC)), Ok(placed("t", None))),
        // systemd, fresh start (and systemd 254+ restarts with DelegateSubgroup=agent).
        ("v2 service", inputs(V2, svc, "/", true, None), Ok(placed(SVC, Some(SVC)))),
        ("v2 service, sub root", inputs(V2, svc, "/tidelet", true, None), Ok(placed(&format!("{SVC}/tidelet"), Some(SVC)))),
        ("v2 root already inside", inputs(V2, svc, "/system.slice/tidelet.service/x", true, None), Ok(placed(&format!("{SVC}/x"), Some(SVC)))),
        ("v2 DelegateSubgroup", inputs(V2, Some("/system.slice/tidelet.service/agent"), "/", true, None), Ok(placed(SVC, Some(SVC)))),
        ("v2 scope", inputs(V2, Some("/machine.slice/t.scope"), "", true, None), Ok(placed("machine.slice/t.scope", Some("machine.slice/t.scope")))),
        ("v2 other unit recorded", inputs(V2, Some("/system.slice/other.service"), "/", true, Some(SVC)), Ok(placed("system.slice/other.service", Some("system.slice/other.service")))),
        // systemd 252 restart: the new process landed above the unit's cgroup.
        ("v2 landed in root", inputs(V2, Some("/"), "/", true, Some("/system.slice/tidelet.service\n")), Ok(placed(SVC, Some(SVC)))),
        ("v2 landed in slice", inputs(V2, Some("/system.slice"), "/", true, Some(SVC)), Ok(placed(SVC, Some(SVC)))),
        ("v2 landed, nothing recorded", inputs(V2, Some("/system.slice"), "/", true, None), Err("tidelet runs under systemd in cgroup \"/system.slice\", which is not a service's cgroup; run it as a service with Delegate=yes (dist/systemd/tidelet.service)")),
        ("v2 no 0:: line", inputs(V2, None, "/", true, None), Err("no `0::` line in /proc/self/cgroup: tidelet is not on cgroup v2")),
        ("v2 root in the leaf", inputs(V2, svc, "/agent/x", true, None), Err("cgroupRoot \"/agent/x\" lies inside tidelet's own leaf cgroup /system.slice/tidelet.service/agent; choose another")),
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

#[test]
fn missing_controller_messages() {
    let all = "cpuset cpu io memory hugetlb pids rdma misc";
    let cases: Vec<(&str, &str, Vec<&str>, &[&str], &[&str])> = vec![
        // available in the delegated cgroup, at the root, missing, must contain, must not.
        (all, all, vec![], &[], &[]),
        (
            "memory pids",
            all,
            vec!["cpu"],
            &[
                "cpu not delegated to /system.slice/tidelet.service",
                "Delegate=yes",
                "`echo \"+cpu\" > /sys/fs/cgroup/system.slice/cgroup.subtree_control`",
            ],
            &["kernel"],
        ),
        (
            "",
            all,
            vec!["memory", "cpu", "pids"],
            &[
                "memory, cpu, pids not delegated",
                "\"+memory +cpu +pids\"",
                "Delegate=memory cpu pids",
            ],
            &["cgroup_no_v1"],
        ),
        (
            "cpu pids",
            "cpu io pids",
            vec!["memory"],
            &[
                "memory missing from the root's cgroup.controllers (\"cpu io pids\")",
                "CONFIG_MEMCG",
                "systemd.unified_cgroup_hierarchy=1",
                "cgroup_no_v1=all",
            ],
            &["not delegated"],
        ),
        (
            "pids",
            "cpu pids",
            vec!["memory", "cpu"],
            &["cpu not delegated", "memory missing from the root's"],
            &["memory, cpu"],
        ),
    ];
    for (available, root, want_missing, has, hasnt) in cases {
        let missing = missing_controllers(available);
        assert_eq!(missing, want_missing, "{available:?}");
        let hint = missing_hint(SVC, &missing, root);
        for h in has {
            assert!(hint.contains(h), "{available:?}: {h:?} not in {hint}");
        }
        for h in hasnt {
            assert!(!hint.contains(h), "{available:?}: {h:?} in {hint}");
        }
    }
}

/// A temp dir laid out as the kernel would: the hierarchy root and the service's cgroup with
/// their interface files.
fn fake_hierarchy(svc_controllers: &str) -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    let svc = t.path().join(SVC);
    std::fs::create_dir_all(&svc).unwrap();
    std::fs::write(t.path().join("cgroup.controllers"), "cpu io memory pids\n").unwrap();
    std::fs::write(svc.join("cgroup.controllers"), svc_controllers).unwrap();
    t
}

#[test]
fn prepare_moves_into_the_leaf_and_records() {
    let t = fake_hierarchy("cpu io memory pids\n");
    let state = tempfile::tempdir().unwrap();
    let record = state.path().join(RECORD_FILE);
    let p = placed(SVC, Some(SVC));
    // The kernel creates cgroup.procs with the directory; lay it out as mkdir would.
    let leaf = t.path().join(SVC).join(AGENT_LEAF);
    std::fs::create_dir(&leaf).unwrap();
    std::fs::write(leaf.join("cgroup.procs"), "").unwrap();
    prepare(t.path(), &p, 4242, &record).unwrap();
    assert_eq!(
        std::fs::read_to_string(leaf.join("cgroup.procs")).unwrap(),
        "4242"
    );
    assert_eq!(
        read_record(&record).unwrap().as_deref(),
        Some("/system.slice/tidelet.service")
    );
    // Nothing to do (and nothing written) without a delegated cgroup.
    let other = state.path().join("other");
    prepare(t.path(), &placed("", None), 1, &other).unwrap();
    assert!(!other.exists());
    assert_eq!(read_record(&other).unwrap(), None);
}

#[test]
fn prepare_names_missing_controllers() {
    let t = fake_hierarchy("memory\n");
    let state = tempfile::tempdir().unwrap();
    let record = state.path().join(RECORD_FILE);
    let err = prepare(t.path(), &placed(SVC, Some(SVC)), 1, &record)
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing controller(s) cpu, pids"), "{err}");
    assert!(err.contains(SVC) && err.contains("Delegate=yes"), "{err}");
    assert!(
        !t.path().join(SVC).join(AGENT_LEAF).exists(),
        "moved despite the error"
    );
    assert!(!record.exists());
}
