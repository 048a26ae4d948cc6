use super::*;
use serde_json::json;

fn pod(v: serde_json::Value) -> PodSpec {
    serde_json::from_value(v).unwrap()
}

const NODE: NodePolicy = NodePolicy {
    seccomp_default: true,
    available_caps: CapSet(0x1ff_ffff_ffff),
};

fn decide_json(spec: serde_json::Value, node: &NodePolicy) -> Result<Decision, FieldError> {
    let p = pod(spec);
    decide(&p, &p.containers[0], "spec.containers[0]", node)
}

fn caps_of(names: &[&str]) -> CapSet {
    let mut s = CapSet::EMPTY;
    for n in names {
        s.insert(caps::number(n).unwrap());
    }
    s
}

#[test]
fn defaults_and_merges_follow_kubernetes() {
    let c = |sc: serde_json::Value| json!({"containers": [{"name": "a", "securityContext": sc}]});
    let with_pod = |psc: serde_json::Value, sc: serde_json::Value| json!({"securityContext": psc, "containers": [{"name": "a", "securityContext": sc}]});
    let def = CapSet::default_set();
    // (spec, caps, no_new_privs, seccomp, readonly, masked, nonroot)
    let cases: Vec<(
        serde_json::Value,
        CapSet,
        bool,
        SeccompChoice,
        bool,
        bool,
        bool,
    )> = vec![
        (
            c(json!({})),
            def,
            false,
            SeccompChoice::RuntimeDefault,
            false,
            true,
            false,
        ),
        (
            c(json!({"privileged": true})),
            CapSet::all(40),
            false,
            SeccompChoice::Unconfined,
            false,
            false,
            false,
        ),
        (
            c(json!({"capabilities": {"drop": ["ALL"]}, "allowPrivilegeEscalation": false})),
            CapSet::EMPTY,
            true,
            SeccompChoice::RuntimeDefault,
            false,
            true,
            false,
        ),
        (
            c(json!({"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}})),
            caps_of(&["NET_BIND_SERVICE"]),
            false,
            SeccompChoice::RuntimeDefault,
            false,
            true,
            false,
        ),
        (
            c(json!({"readOnlyRootFilesystem": true, "seccompProfile": {"type": "Unconfined"}})),
            def,
            false,
            SeccompChoice::Unconfined,
            true,
            true,
            false,
        ),
        // The container's profile wins over the pod's; the pod's runAsNonRoot applies.
        (
            with_pod(
                json!({"seccompProfile": {"type": "Unconfined"}, "runAsNonRoot": true}),
                json!({"seccompProfile": {"type": "Localhost", "localhostProfile": "p/deny.json"}}),
            ),
            def,
            false,
            SeccompChoice::Localhost("p/deny.json".into()),
            false,
            true,
            true,
        ),
        (
            with_pod(json!({"seccompProfile": {"type": "Unconfined"}}), json!({})),
            def,
            false,
            SeccompChoice::Unconfined,
            false,
            true,
            false,
        ),
        // The container may lift the pod's runAsNonRoot.
        (
            with_pod(
                json!({"runAsNonRoot": true}),
                json!({"runAsNonRoot": false}),
            ),
            def,
            false,
            SeccompChoice::RuntimeDefault,
            false,
            true,
            false,
        ),
        (
            json!({"hostUsers": false, "containers": [{"name": "a", "securityContext": {"procMount": "Unmasked"}}]}),
            def,
            false,
            SeccompChoice::RuntimeDefault,
            false,
            false,
            false,
        ),
    ];
    for (spec, caps, nnp, seccomp, ro, masked, nonroot) in cases {
        let d = decide_json(spec.clone(), &NODE).unwrap();
        assert_eq!(d.caps, caps, "{spec}");
        assert_eq!(d.no_new_privs, nnp, "{spec}");
        assert_eq!(d.seccomp, seccomp, "{spec}");
        assert_eq!(d.readonly_rootfs, ro, "{spec}");
        assert_eq!(!d.masked_paths().is_empty(), masked, "{spec}");
        assert_eq!(!d.readonly_paths().is_empty(), masked, "{spec}");
        assert_eq!(d.run_as_non_root, nonroot, "{spec}");
    }
}

#[test]
fn seccomp_default_off_means_unconfined_unless_asked() {
    let node = NodePolicy {
        seccomp_default: false,
        ..NODE
    };
    let d = decide_json(json!({"containers": [{"name": "a"}]}), &node).unwrap();
    assert_eq!(d.seccomp, SeccompChoice::Unconfined);
    let d = decide_json(
        json!({"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}, "containers": [{"name": "a"}]}),
        &node,
    )
    .unwrap();
    assert_eq!(d.seccomp, SeccompChoice::RuntimeDefault);
}

#[test]
fn bad_fields_are_named_with_their_reason() {
    let c = |sc: serde_json::Value| json!({"containers": [{"name": "a", "securityContext": sc}]});
    let cases = [
        (
            c(json!({"capabilities": {"add": ["NET_ADMIN", "CAP_BOGUS"]}})),
            "spec.containers[0].securityContext.capabilities.add[1]",
            "\"CAP_BOGUS\" is not a Linux capability",
        ),
        (
            c(json!({"capabilities": {"drop": ["WIZARD"]}})),
            "spec.containers[0].securityContext.capabilities.drop[0]",
            "\"WIZARD\" is not a Linux capability",
        ),
        (
            c(json!({"procMount": "Unmasked"})),
            "spec.containers[0].securityContext.procMount",
            "spec.hostUsers: false",
        ),
        (
            c(json!({"procMount": "Open"})),
            "spec.containers[0].securityContext.procMount",
            "must be Default or Unmasked",
        ),
        (
            c(json!({"seccompProfile": {"type": "Localhost"}})),
            "spec.containers[0].securityContext.seccompProfile.localhostProfile",
            "must be set",
        ),
        (
            c(
                json!({"seccompProfile": {"type": "Localhost", "localhostProfile": "../etc/x.json"}}),
            ),
            "spec.containers[0].securityContext.seccompProfile.localhostProfile",
            "\"..\"",
        ),
        (
            c(json!({"seccompProfile": {"type": "Localhost", "localhostProfile": "/etc/x.json"}})),
            "spec.containers[0].securityContext.seccompProfile.localhostProfile",
            "relative",
        ),
        (
            json!({"securityContext": {"seccompProfile": {"type": "Strict"}}, "containers": [{"name": "a"}]}),
            "spec.securityContext.seccompProfile.type",
            "\"Strict\"",
        ),
    ];
    for (spec, field, reason) in cases {
        let e = decide_json(spec.clone(), &NODE).unwrap_err();
        assert_eq!(e.field, field, "{spec}");
        assert!(e.reason.contains(reason), "{spec}: {e}");
    }
}

#[test]
fn run_as_non_root_uses_kubelets_messages() {
    let d = |nonroot: bool, user: Option<i64>| Decision {
        run_as_non_root: nonroot,
        run_as_user: user,
        ..Decision::unconfigured()
    };
    let cases = [
        (d(false, None), "", 0, None),
        (d(true, Some(1000)), "", 0, None),
        (
            d(true, Some(0)),
            "",
            0,
            Some("container's runAsUser breaks non-root policy"),
        ),
        (d(true, None), "", 0, Some("image will run as root")),
        (
            d(true, None),
            "root",
            0,
            Some("image has non-numeric user (root)"),
        ),
        (
            d(true, None),
            "nobody:nogroup",
            65534,
            Some("non-numeric user (nobody)"),
        ),
        (d(true, None), "0", 0, Some("image will run as root")),
        (d(true, None), "1000:1000", 1000, None),
    ];
    for (dec, user, uid, want) in cases {
        let got = verify_run_as_non_root(&dec, user, uid, "p", "c");
        match want {
            None => assert!(got.is_ok(), "{user}: {got:?}"),
            Some(w) => {
                let e = got.unwrap_err();
                assert!(
                    e.contains(w) && e.contains("(pod: \"p\", container: c)"),
                    "{user}: {e}"
                );
            }
        }
    }
}
