//! The remote-pod policy: its config parser, and each rule allowed and denied.

use super::*;
use serde_json::json;

fn pod(spec: serde_json::Value) -> Pod {
    serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p"}, "spec": spec}))
    .unwrap()
}

fn c(extra: serde_json::Value) -> serde_json::Value {
    let mut base = json!({"name": "c", "image": "busybox:test"});
    base.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    base
}

fn yaml(s: &str) -> Value {
    crate::yaml::from_str(s).unwrap()
}

#[test]
fn parses_the_config_section() {
    assert_eq!(
        RemotePolicy::from_yaml(&Value::Null),
        Ok(RemotePolicy::default())
    );
    assert_eq!(
        RemotePolicy::from_yaml(&yaml(
            "allowPrivileged: true\nallowHostNamespaces: false\nallowedHostPaths: [/data, /var/lib/app]\n"
        )),
        Ok(RemotePolicy {
            allow_privileged: true,
            allow_host_namespaces: false,
            allowed_host_paths: vec!["/data".into(), "/var/lib/app".into()],
            ..Default::default()
        })
    );
    assert_eq!(
        RemotePolicy::from_yaml(&yaml("allowCritical: true")).map(|p| p.allow_critical),
        Ok(true)
    );
    let bad: &[(&str, &str, &str)] = &[
        ("[1]", "mqtt.remotePodPolicy", "must be a mapping"),
        (
            "allowPriviledged: true",
            "mqtt.remotePodPolicy.allowPriviledged",
            "unknown key (allowPrivileged, allowedCapabilities, allowUnconfined, allowUnmaskedProc, allowUnsafeSysctls, requireUserNamespaces, allowHostNamespaces, allowedHostPaths, allowCritical)",
        ),
        (
            "allowPrivileged: 'yes'",
            "mqtt.remotePodPolicy.allowPrivileged",
            "\"yes\": must be true or false",
        ),
        (
            "allowHostNamespaces: 1",
            "mqtt.remotePodPolicy.allowHostNamespaces",
            "1: must be true or false",
        ),
        (
            "allowedHostPaths: /data",
            "mqtt.remotePodPolicy.allowedHostPaths",
            "\"/data\": must be a list of absolute paths",
        ),
        (
            "allowedHostPaths: [/data, data]",
            "mqtt.remotePodPolicy.allowedHostPaths[1]",
            "\"data\": must be an absolute path",
        ),
        (
            "allowedHostPaths: [/data/../etc]",
            "mqtt.remotePodPolicy.allowedHostPaths[0]",
            "\"/data/../etc\": must be a clean path (write \"/etc\")",
        ),
        (
            "allowedHostPaths: [/data/]",
            "mqtt.remotePodPolicy.allowedHostPaths[0]",
            "\"/data/\": must be a clean path (write \"/data\")",
        ),
        (
            "allowedHostPaths: ['/a//b']",
            "mqtt.remotePodPolicy.allowedHostPaths[0]",
            "\"/a//b\": must be a clean path (write \"/a/b\")",
        ),
        (
            "allowedHostPaths: [7]",
            "mqtt.remotePodPolicy.allowedHostPaths[0]",
            "7: must be an absolute path",
        ),
    ];
    for (y, field, reason) in bad {
        assert_eq!(
            RemotePolicy::from_yaml(&yaml(y)),
            Err((field.to_string(), reason.to_string())),
            "{y}"
        );
    }
}

#[test]
fn normalises_lexically_without_escaping_the_root() {
    let cases = [
        ("/data", Some("/data")),
        ("/data/./x/", Some("/data/x")),
        ("/data/../etc", Some("/etc")),
        ("/../../etc", Some("/etc")),
        ("//data//x", Some("/data/x")),
        ("data", None),
        ("", None),
    ];
    for (p, want) in cases {
        assert_eq!(normalise(p), want.map(PathBuf::from), "{p}");
    }
}

#[test]
fn host_paths_are_allowed_component_wise() {
    let policy = RemotePolicy {
        allowed_host_paths: vec!["/data".into(), "/var/log/app".into()],
        ..Default::default()
    };
    let cases = [
        ("/data", true),
        ("/data/x", true),
        ("/data/x/../y", true),
        ("/database", false),
        ("/data/../etc", false),
        ("/data/x/../../etc/shadow", false),
        ("/var/log/app/a.log", true),
        ("/var/log", false),
        ("/var/log/application", false),
        ("/", false),
        ("data/x", false),
    ];
    for (p, want) in cases {
        assert_eq!(policy.host_path_allowed(p), want, "{p}");
    }
    let root = RemotePolicy {
        allowed_host_paths: vec!["/".into()],
        ..Default::default()
    };
    assert!(root.host_path_allowed("/etc"));
}

#[test]
fn each_rule_denies_by_default_and_allows_when_configured() {
    let deny = RemotePolicy {
        allowed_host_paths: vec!["/data".into()],
        ..Default::default()
    };
    let allow = RemotePolicy {
        allow_privileged: true,
        allow_host_namespaces: true,
        allowed_host_paths: vec!["/".into()],
        allow_critical: true,
        allowed_capabilities: vec![],
        allow_unconfined: true,
        allow_unmasked_proc: true,
        allow_unsafe_sysctls: true,
        require_user_namespaces: false,
    };
    let host_path = |p: &str| {
        json!({"containers": [c(json!({}))],
               "volumes": [{"name": "e", "emptyDir": {}}, {"name": "h", "hostPath": {"path": p}}]})
    };
    let cases: Vec<(&str, serde_json::Value, Vec<&str>)> = vec![
        ("plain", json!({"containers": [c(json!({}))]}), vec![]),
        (
            "privileged",
            json!({"containers": [c(json!({})), c(json!({"name": "d", "securityContext": {"privileged": true}}))]}),
            vec!["spec.containers[1].securityContext.privileged"],
        ),
        (
            "privileged false",
            json!({"containers": [c(json!({"securityContext": {"privileged": false, "allowPrivilegeEscalation": true}}))]}),
            vec![],
        ),
        (
            "privileged init container",
            json!({"initContainers": [c(json!({"name": "i", "securityContext": {"privileged": true}}))], "containers": [c(json!({}))]}),
            vec!["spec.initContainers[0].securityContext.privileged"],
        ),
        (
            "capabilities",
            json!({"containers": [c(json!({"securityContext": {"capabilities": {"add": ["NET_ADMIN", "CAP_SYS_ADMIN", "all", "chown", "CAP_KILL"]}}}))]}),
            vec![
                "spec.containers[0].securityContext.capabilities.add[0]",
                "spec.containers[0].securityContext.capabilities.add[1]",
                "spec.containers[0].securityContext.capabilities.add[2]",
            ],
        ),
        (
            "seccomp unconfined",
            json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}},
                   "containers": [c(json!({"securityContext": {"seccompProfile": {"type": "Unconfined"}}})),
                                  c(json!({"name": "d", "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}}))]}),
            vec![
                "spec.containers[0].securityContext.seccompProfile.type",
                "spec.securityContext.seccompProfile.type",
            ],
        ),
        (
            "seccomp localhost",
            json!({"containers": [c(json!({"securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "a.json"}}}))]}),
            vec![],
        ),
        (
            "unmasked proc",
            json!({"hostUsers": false, "containers": [c(json!({"securityContext": {"procMount": "Unmasked"}}))]}),
            vec!["spec.containers[0].securityContext.procMount"],
        ),
        (
            "sysctls",
            json!({"securityContext": {"sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"},
                                                    {"name": "net.core.somaxconn", "value": "1024"},
                                                    {"name": "net/ipv4/tcp_syncookies", "value": "1"}]},
                   "containers": [c(json!({}))]}),
            vec!["spec.securityContext.sysctls[1].name"],
        ),
        (
            "hostNetwork",
            json!({"hostNetwork": true, "containers": [c(json!({}))]}),
            vec!["spec.hostNetwork"],
        ),
        (
            "all host namespaces",
            json!({"hostNetwork": true, "hostPID": true, "hostIPC": true, "containers": [c(json!({}))]}),
            vec!["spec.hostNetwork", "spec.hostPID", "spec.hostIPC"],
        ),
        (
            "hostNetwork false",
            json!({"hostNetwork": false, "containers": [c(json!({}))]}),
            vec![],
        ),
        ("hostPath allowed", host_path("/data/app"), vec![]),
        (
            "hostPath prefix lookalike",
            host_path("/database"),
            vec!["spec.volumes[1].hostPath.path"],
        ),
        (
            "hostPath escape",
            host_path("/data/../etc"),
            vec!["spec.volumes[1].hostPath.path"],
        ),
        (
            "hostPath elsewhere",
            host_path("/etc"),
            vec!["spec.volumes[1].hostPath.path"],
        ),
        (
            "critical priority class",
            json!({"priorityClassName": "system-node-critical", "containers": [c(json!({}))]}),
            vec!["spec.priorityClassName"],
        ),
        (
            "critical priority",
            json!({"priority": 2000000000, "containers": [c(json!({}))]}),
            vec!["spec.priority"],
        ),
        (
            "high but not critical",
            json!({"priority": 1999999999, "containers": [c(json!({}))]}),
            vec![],
        ),
    ];
    for (what, spec, want) in cases {
        let p = pod(spec);
        let got: Vec<String> = deny.check(&p).into_iter().map(|(f, _)| f).collect();
        assert_eq!(got, want, "{what} (denied)");
        assert_eq!(allow.check(&p), vec![], "{what} (allowed)");
    }
    let mut annotated = pod(json!({"containers": [c(json!({}))]}));
    annotated.metadata.annotations =
        Some([("tidelet.io/critical".to_string(), "true".to_string())].into());
    let got: Vec<String> = deny.check(&annotated).into_iter().map(|(f, _)| f).collect();
    assert_eq!(got, ["metadata.annotations[tidelet.io/critical]"]);
    // Once, also through the on-host check (which adds only resolved host paths).
    let got: Vec<String> = deny
        .check_on_host(&annotated)
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    assert_eq!(got, ["metadata.annotations[tidelet.io/critical]"]);
    assert_eq!(allow.check(&annotated), vec![]);
}

#[test]
fn allowed_capabilities_and_user_namespaces_are_the_owners_choice() {
    let policy = RemotePolicy::from_yaml(
        &crate::yaml::from_str(
            "{allowedCapabilities: [net_admin, CAP_NET_BROADCAST], requireUserNamespaces: true}",
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(policy.allowed_capabilities, ["NET_ADMIN", "NET_BROADCAST"]);
    let p = pod(
        json!({"containers": [c(json!({"securityContext": {"capabilities": {"add": ["NET_ADMIN", "SYS_ADMIN"]}}}))]}),
    );
    assert_eq!(
        policy.check(&p),
        vec![
            ("spec.containers[0].securityContext.capabilities.add[1]".to_string(),
             "\"SYS_ADMIN\" is not allowed for remote pods: only the default capabilities and those in mqtt.remotePodPolicy.allowedCapabilities (NET_ADMIN, NET_BROADCAST) may be added".to_string()),
            ("spec.hostUsers".to_string(),
             "remote pods must run in their own user namespace (hostUsers: false), as mqtt.remotePodPolicy.requireUserNamespaces is true".to_string()),
        ]
    );
    let p = pod(
        json!({"hostUsers": false, "containers": [c(json!({"securityContext": {"capabilities": {"add": ["NET_ADMIN"]}}}))]}),
    );
    assert_eq!(policy.check(&p), vec![]);
    let bad = RemotePolicy::from_yaml(
        &crate::yaml::from_str("{allowedCapabilities: [NET_ADMIN, WIZARD]}").unwrap(),
    )
    .unwrap_err();
    assert_eq!(
        bad,
        (
            "mqtt.remotePodPolicy.allowedCapabilities[1]".to_string(),
            "\"WIZARD\" is not a Linux capability".to_string()
        )
    );
}

#[test]
fn reasons_say_which_setting_to_change() {
    let p = pod(json!({"hostPID": true,
        "containers": [c(json!({"securityContext": {"privileged": true}}))],
        "volumes": [{"name": "h", "hostPath": {"path": "/etc"}}]}));
    assert_eq!(
        RemotePolicy::default().check(&p),
        vec![
            ("spec.containers[0].securityContext.privileged".to_string(),
             "privileged containers are not allowed for remote pods (mqtt.remotePodPolicy.allowPrivileged is false)".to_string()),
            ("spec.hostPID".to_string(),
             "host namespaces are not allowed for remote pods (mqtt.remotePodPolicy.allowHostNamespaces is false)".to_string()),
            ("spec.volumes[0].hostPath.path".to_string(),
             "\"/etc\": hostPath volumes are not allowed for remote pods (mqtt.remotePodPolicy.allowedHostPaths is empty)".to_string()),
        ]
    );
    let some = RemotePolicy {
        allowed_host_paths: vec!["/data".into(), "/srv".into()],
        ..Default::default()
    };
    assert_eq!(
        some.check(&p).last().unwrap().1,
        "\"/etc\": not under a host path allowed for remote pods (mqtt.remotePodPolicy.allowedHostPaths: /data, /srv)"
    );
}

#[test]
fn host_paths_that_leave_the_prefix_through_a_link_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let data = root.join("data");
    std::fs::create_dir_all(data.join("app")).unwrap();
    std::fs::create_dir_all(root.join("secret")).unwrap();
    std::os::unix::fs::symlink(root.join("secret"), data.join("escape")).unwrap();
    std::os::unix::fs::symlink("app", data.join("inside")).unwrap();
    // An allowed prefix that is itself a link is honoured where it points.
    std::os::unix::fs::symlink(&data, root.join("alias")).unwrap();
    let policy = RemotePolicy {
        allowed_host_paths: vec![data.clone(), root.join("alias")],
        ..Default::default()
    };
    let at = |p: &Path| p.display().to_string();
    let cases = [
        (at(&data.join("app")), true),
        (at(&data.join("app/not-yet/created")), true),
        (at(&data.join("inside/x")), true),
        (at(&root.join("alias/app")), true),
        (at(&data.join("escape")), false),
        (at(&data.join("escape/not-yet")), false),
        (at(&root.join("alias/escape")), false),
        (at(&root.join("secret")), false),
    ];
    for (path, ok) in cases {
        let p = pod(json!({"containers": [c(json!({}))],
                           "volumes": [{"name": "h", "hostPath": {"path": path}}]}));
        let got = policy.check_on_host(&p);
        assert_eq!(got.is_empty(), ok, "{path}: {got:?}");
        if !ok {
            assert_eq!(got.len(), 1, "{got:?}");
            assert_eq!(got[0].0, "spec.volumes[0].hostPath.path");
        }
    }
    let p = pod(json!({"containers": [c(json!({}))],
                       "volumes": [{"name": "h", "hostPath": {"path": at(&data.join("escape"))}}]}));
    assert_eq!(
        policy.check_on_host(&p)[0].1,
        format!(
            "{:?}: resolves to {:?} through a symbolic link, which is not under a host path allowed for remote pods (mqtt.remotePodPolicy.allowedHostPaths)",
            at(&data.join("escape")),
            at(&std::fs::canonicalize(root.join("secret")).unwrap())
        )
    );
}
