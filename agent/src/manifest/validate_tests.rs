//! One row per rule, good and bad: each row patches a valid pod at a JSON pointer and says
//! which field must be reported (and a word of the reason), or that none is.

use super::*;
use serde_json::{json, Value};

fn base() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "containers": [{"name": "c", "image": "busybox:1.36",
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}],
            "volumes": [{"name": "data", "emptyDir": {}}]
        }
    })
}

/// Set `value` at `pointer`, creating objects on the way; an index equal to a list's length
/// appends.
fn patch(v: &mut Value, pointer: &str, value: Value) {
    let mut cur = v;
    let parts: Vec<&str> = pointer.trim_start_matches('/').split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        let last = i == parts.len() - 1;
        let part = part.replace("~1", "/").replace("~0", "~");
        cur = match cur {
            Value::Array(a) => {
                let n: usize = part.parse().unwrap();
                if n == a.len() {
                    a.push(if last { Value::Null } else { json!({}) });
                }
                &mut a[n]
            }
            Value::Object(o) => {
                o.entry(part)
                    .or_insert_with(|| if last { Value::Null } else { json!({}) })
            }
            other => panic!("cannot descend into {other}"),
        };
    }
    *cur = value;
}

fn check(pointer: &str, value: Value, want: Option<(&str, &str)>) {
    let mut v = base();
    if !pointer.is_empty() {
        patch(&mut v, pointer, value.clone());
    }
    let pod: Pod = serde_json::from_value(v).unwrap();
    let got = validate_pod(&pod, "node-1");
    match want {
        None => assert!(got.is_empty(), "{pointer} = {value}: unexpected {got:?}"),
        Some((field, word)) => {
            assert!(
                got.len() == 1 && got[0].field == field && got[0].reason.contains(word),
                "{pointer} = {value}: want one error at {field} mentioning {word:?}, got {got:?}"
            );
        }
    }
}

#[test]
fn each_rule_accepts_good_and_refuses_bad_values() {
    let c0 = "/spec/containers/0";
    type Row<'a> = (String, Value, Option<(&'a str, &'a str)>);
    let rows: Vec<Row> = vec![
        // metadata
        ("".into(), Value::Null, None),
        // DNS and host aliases (validatePodDNSConfig, ValidateHostAliases)
        (
            "/spec/dnsConfig".into(),
            json!({"nameservers": ["10.0.0.10", "fd00::10"], "searches": ["a.example", "b.example."], "options": [{"name": "ndots", "value": "2"}]}),
            None,
        ),
        (
            "/spec/dnsPolicy".into(),
            json!("None"),
            Some(("spec.dnsConfig", "must provide `dnsConfig`")),
        ),
        (
            "/spec/dnsConfig/nameservers".into(),
            json!(["1.1.1.1", "2.2.2.2", "3.3.3.3", "4.4.4.4"]),
            Some(("spec.dnsConfig.nameservers", "more than 3")),
        ),
        (
            "/spec/dnsConfig/nameservers".into(),
            json!(["dns.local"]),
            Some(("spec.dnsConfig.nameservers[0]", "valid IP")),
        ),
        (
            "/spec/dnsConfig/searches".into(),
            json!(["Bad_Domain"]),
            Some(("spec.dnsConfig.searches[0]", "RFC 1123")),
        ),
        (
            "/spec/dnsConfig/searches".into(),
            json!((0..33).map(|i| format!("d{i}.example")).collect::<Vec<_>>()),
            Some(("spec.dnsConfig.searches", "more than 32")),
        ),
        (
            "/spec/dnsConfig/searches".into(),
            json!((0..12)
                .map(|i| format!("d{i}.{0}.{0}.{0}", "a".repeat(60)))
                .collect::<Vec<_>>()),
            Some(("spec.dnsConfig.searches", "2048 characters")),
        ),
        (
            "/spec/dnsConfig/options".into(),
            json!([{"value": "1"}]),
            Some(("spec.dnsConfig.options[0].name", "must not be empty")),
        ),
        (
            "/spec/hostAliases".into(),
            json!([{"ip": "10.1.2.3", "hostnames": ["db", "db.local"]}]),
            None,
        ),
        (
            "/spec/hostAliases".into(),
            json!([{"ip": "not-ip", "hostnames": ["db"]}]),
            Some(("spec.hostAliases[0].ip", "valid IP")),
        ),
        (
            "/spec/hostAliases".into(),
            json!([{"ip": "10.1.2.3", "hostnames": ["DB"]}]),
            Some(("spec.hostAliases[0].hostnames[0]", "RFC 1123")),
        ),
        (
            "/metadata/name".into(),
            Value::Null,
            Some(("metadata.name", "required")),
        ),
        (
            "/metadata/name".into(),
            json!("Web"),
            Some(("metadata.name", "RFC 1123")),
        ),
        (
            "/metadata/name".into(),
            json!("../etc"),
            Some(("metadata.name", "RFC 1123")),
        ),
        (
            "/metadata/name".into(),
            json!("a/b"),
            Some(("metadata.name", "RFC 1123")),
        ),
        ("/metadata/name".into(), json!("web.v1"), None),
        (
            "/metadata/name".into(),
            json!(vec!["a".repeat(49); 5].join(".")),
            Some(("metadata.name", "<name>-<node>")),
        ),
        ("/metadata/namespace".into(), json!("kube-system"), None),
        (
            "/metadata/namespace".into(),
            json!("a.b"),
            Some(("metadata.namespace", "RFC 1123")),
        ),
        // Replaced by the content hash (and reported as ignored), so never used in a path.
        ("/metadata/uid".into(), json!("../../x"), None),
        (
            "/metadata/labels/app.kubernetes.io~1name".into(),
            json!("x"),
            None,
        ),
        (
            "/metadata/labels/bad key".into(),
            json!("x"),
            Some(("metadata.labels[\"bad key\"]", "63 characters")),
        ),
        (
            "/metadata/labels/app".into(),
            json!("a b"),
            Some(("metadata.labels[\"app\"]", "value")),
        ),
        (
            "/metadata/annotations/a".into(),
            json!("x".repeat(300_000)),
            Some(("metadata.annotations", "in total")),
        ),
        (
            "/metadata/annotations/Some.Key".into(),
            json!("any value at all"),
            None,
        ),
        // containers
        (
            "/spec/containers".into(),
            json!([]),
            Some(("spec.containers", "at least one")),
        ),
        (
            format!("{c0}/name"),
            json!("C"),
            Some(("spec.containers[0].name", "RFC 1123")),
        ),
        (
            "/spec/containers/1".into(),
            json!({"name": "c", "image": "x"}),
            Some(("spec.containers[1].name", "duplicate")),
        ),
        (
            "/spec/initContainers".into(),
            json!([{"name": "c", "image": "x"}]),
            Some(("spec.initContainers[0].name", "duplicate")),
        ),
        (
            "/spec/initContainers".into(),
            json!([{"name": "init", "image": "x"}]),
            None,
        ),
        (
            format!("{c0}/image"),
            json!(""),
            Some(("spec.containers[0].image", "required")),
        ),
        (
            format!("{c0}/image"),
            json!("busy box"),
            Some(("spec.containers[0].image", "whitespace")),
        ),
        (format!("{c0}/imagePullPolicy"), json!("Never"), None),
        (
            format!("{c0}/imagePullPolicy"),
            json!("Sometimes"),
            Some(("spec.containers[0].imagePullPolicy", "must be one of")),
        ),
        (
            format!("{c0}/workingDir"),
            json!("rel"),
            Some(("spec.containers[0].workingDir", "absolute")),
        ),
        (
            format!("{c0}/terminationMessagePolicy"),
            json!("Nope"),
            Some(("spec.containers[0].terminationMessagePolicy", "one of")),
        ),
        // resources
        (
            format!("{c0}/resources"),
            json!({"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1", "memory": "64Mi"}}),
            None,
        ),
        (
            format!("{c0}/resources"),
            json!({"limits": {"cpu": 2, "memory": 1e9}}),
            None,
        ),
        (
            format!("{c0}/resources"),
            json!({"limits": {"cpu": "1x"}}),
            Some((
                "spec.containers[0].resources.limits[\"cpu\"]",
                "unknown suffix",
            )),
        ),
        (
            format!("{c0}/resources"),
            json!({"requests": {"memory": "-1"}}),
            Some((
                "spec.containers[0].resources.requests[\"memory\"]",
                "greater than or equal to 0",
            )),
        ),
        (
            format!("{c0}/resources"),
            json!({"requests": {"cpu": "2"}, "limits": {"cpu": "1"}}),
            Some((
                "spec.containers[0].resources.requests[\"cpu\"]",
                "less than or equal to cpu limit",
            )),
        ),
        (
            format!("{c0}/resources"),
            json!({"requests": {"cpu": "1500m"}, "limits": {"cpu": "1.5"}}),
            None,
        ),
        (
            format!("{c0}/resources"),
            json!({"limits": {"gpu": "1"}}),
            Some((
                "spec.containers[0].resources.limits[\"gpu\"]",
                "unknown resource",
            )),
        ),
        (
            format!("{c0}/resources"),
            json!({"limits": {"example.com/gpu": "1"}}),
            None,
        ),
        (
            format!("{c0}/resources"),
            json!({"requests": {"example.com/gpu": "1"}}),
            Some((
                "spec.containers[0].resources.limits[\"example.com/gpu\"]",
                "required",
            )),
        ),
        (
            format!("{c0}/resources"),
            json!({"requests": {"hugepages-2Mi": "2Mi"}, "limits": {"hugepages-2Mi": "4Mi"}}),
            Some((
                "spec.containers[0].resources.requests[\"hugepages-2Mi\"]",
                "must be equal",
            )),
        ),
        (
            format!("{c0}/resources"),
            json!({"requests": {"ephemeral-storage": "1Gi"}}),
            None,
        ),
        // env
        (
            format!("{c0}/env"),
            json!([{"name": "A_b.c-1", "value": "x"}]),
            None,
        ),
        (
            format!("{c0}/env"),
            json!([{"name": "1A", "value": "x"}]),
            Some((
                "spec.containers[0].env[0].name",
                "must not start with a digit",
            )),
        ),
        (
            format!("{c0}/env"),
            json!([{"name": "A", "value": "x", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]),
            Some(("spec.containers[0].env[0].valueFrom", "value")),
        ),
        (
            format!("{c0}/env"),
            json!([{"name": "A", "valueFrom": {}}]),
            Some(("spec.containers[0].env[0].valueFrom", "must specify one of")),
        ),
        (
            format!("{c0}/env"),
            json!([{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}}]),
            None,
        ),
        (
            format!("{c0}/env"),
            json!([{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "spec.hostname"}}}]),
            Some((
                "spec.containers[0].env[0].valueFrom.fieldRef.fieldPath",
                "not a supported",
            )),
        ),
        (
            format!("{c0}/env"),
            json!([{"name": "A", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}}]),
            None,
        ),
        (
            format!("{c0}/env"),
            json!([{"name": "A", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1Mi"}}}]),
            Some((
                "spec.containers[0].env[0].valueFrom.resourceFieldRef.divisor",
                "not a valid divisor",
            )),
        ),
        (
            format!("{c0}/env"),
            json!([{"name": "A", "valueFrom": {"resourceFieldRef": {"resource": "limits.pids"}}}]),
            Some((
                "spec.containers[0].env[0].valueFrom.resourceFieldRef.resource",
                "must be one of",
            )),
        ),
        // volumes and mounts
        (
            format!("{c0}/volumeMounts/1"),
            json!({"name": "nope", "mountPath": "/x"}),
            Some(("spec.containers[0].volumeMounts[1].name", "no volume")),
        ),
        (
            format!("{c0}/volumeMounts/1"),
            json!({"name": "data", "mountPath": "x"}),
            Some(("spec.containers[0].volumeMounts[1].mountPath", "absolute")),
        ),
        (
            format!("{c0}/volumeMounts/1"),
            json!({"name": "data", "mountPath": "/data/"}),
            Some(("spec.containers[0].volumeMounts[1].mountPath", "unique")),
        ),
        (
            format!("{c0}/volumeMounts/1"),
            json!({"name": "data", "mountPath": "/a/../b"}),
            Some(("spec.containers[0].volumeMounts[1].mountPath", "'..'")),
        ),
        (
            format!("{c0}/volumeMounts/1"),
            json!({"name": "data", "mountPath": "/other", "readOnly": true}),
            None,
        ),
        (
            "/spec/volumes/1".into(),
            json!({"name": "Data"}),
            Some(("spec.volumes[1].name", "RFC 1123")),
        ),
        (
            "/spec/volumes/1".into(),
            json!({"name": "data"}),
            Some(("spec.volumes[1].name", "duplicate")),
        ),
        (
            "/spec/volumes/1".into(),
            json!({"name": "host", "hostPath": {"path": "/var/log", "type": "Directory"}}),
            None,
        ),
        (
            "/spec/volumes/1".into(),
            json!({"name": "host", "hostPath": {"path": "/var/../etc"}}),
            Some(("spec.volumes[1].hostPath.path", "'..'")),
        ),
        (
            "/spec/volumes/1".into(),
            json!({"name": "host", "hostPath": {"path": "/x", "type": "Dir"}}),
            Some(("spec.volumes[1].hostPath.type", "one of")),
        ),
        // pod-level
        ("/spec/restartPolicy".into(), json!("OnFailure"), None),
        (
            "/spec/volumes/1".into(),
            json!({"name": "host", "hostPath": {"path": "var/log"}}),
            Some(("spec.volumes[1].hostPath.path", "absolute")),
        ),
        (
            "/spec/restartPolicy".into(),
            json!("Sometimes"),
            Some(("spec.restartPolicy", "must be one of")),
        ),
        (
            "/spec/dnsPolicy".into(),
            json!("Other"),
            Some(("spec.dnsPolicy", "must be one of")),
        ),
        ("/spec/terminationGracePeriodSeconds".into(), json!(0), None),
        (
            "/spec/terminationGracePeriodSeconds".into(),
            json!(-1),
            Some((
                "spec.terminationGracePeriodSeconds",
                "greater than or equal to 0",
            )),
        ),
        ("/spec/hostname".into(), json!("my-host"), None),
        (
            "/spec/hostname".into(),
            json!("my_host"),
            Some(("spec.hostname", "RFC 1123")),
        ),
        (
            "/spec/subdomain".into(),
            json!("a.b"),
            Some(("spec.subdomain", "RFC 1123")),
        ),
        (
            "/spec/securityContext".into(),
            json!({"runAsUser": 1000, "supplementalGroups": [5, 6]}),
            None,
        ),
        (
            "/spec/securityContext".into(),
            json!({"runAsUser": -1}),
            Some(("spec.securityContext.runAsUser", "between 0 and")),
        ),
        (
            "/spec/securityContext".into(),
            json!({"supplementalGroups": [1, 3000000000i64]}),
            Some((
                "spec.securityContext.supplementalGroups[1]",
                "between 0 and",
            )),
        ),
        (
            format!("{c0}/securityContext"),
            json!({"runAsGroup": -5}),
            Some((
                "spec.containers[0].securityContext.runAsGroup",
                "between 0 and",
            )),
        ),
        // ports
        (
            format!("{c0}/ports"),
            json!([{"containerPort": 80, "name": "http", "protocol": "TCP"}]),
            None,
        ),
        (
            format!("{c0}/ports"),
            json!([{"containerPort": 0}]),
            Some((
                "spec.containers[0].ports[0].containerPort",
                "between 1 and 65535",
            )),
        ),
        (
            format!("{c0}/ports"),
            json!([{"containerPort": 70000}]),
            Some((
                "spec.containers[0].ports[0].containerPort",
                "between 1 and 65535",
            )),
        ),
        (
            format!("{c0}/ports"),
            json!([{"containerPort": 80, "hostPort": 65536}]),
            Some((
                "spec.containers[0].ports[0].hostPort",
                "between 1 and 65535",
            )),
        ),
        ("/spec/hostNetwork".into(), json!(true), None),
        (
            format!("{c0}/ports"),
            json!([{"containerPort": 80, "hostPort": 8080}]),
            None,
        ),
        (
            format!("{c0}/ports"),
            json!([{"containerPort": 80, "protocol": "ICMP"}]),
            Some(("spec.containers[0].ports[0].protocol", "one of")),
        ),
        (
            format!("{c0}/ports"),
            json!([{"containerPort": 80, "name": "h"}, {"containerPort": 81, "name": "h"}]),
            Some(("spec.containers[0].ports[1].name", "duplicate")),
        ),
    ];
    for (pointer, value, want) in rows {
        check(&pointer, value, want);
    }
}

#[test]
fn host_network_ports_must_match() {
    let mut v = base();
    patch(&mut v, "/spec/hostNetwork", json!(true));
    patch(
        &mut v,
        "/spec/containers/0/ports",
        json!([{"containerPort": 80, "hostPort": 8080}, {"containerPort": 81, "hostPort": 81}]),
    );
    let pod: Pod = serde_json::from_value(v).unwrap();
    let errs = validate_pod(&pod, "n");
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].field, "spec.containers[0].ports[0].hostPort");
    assert!(
        errs[0].reason.contains("must match containerPort 80"),
        "{errs:?}"
    );
}

#[test]
fn collects_every_problem_not_just_the_first() {
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "Bad_Name"},
        "spec": {"restartPolicy": "Sometimes", "containers": [
            {"name": "a", "image": ""}, {"name": "a", "image": "x", "imagePullPolicy": "Maybe"}]}
    }))
    .unwrap();
    let fields: Vec<String> = validate_pod(&pod, "n")
        .into_iter()
        .map(|e| e.field)
        .collect();
    assert_eq!(
        fields,
        [
            "metadata.name",
            "spec.containers[0].image",
            "spec.containers[1].name",
            "spec.containers[1].imagePullPolicy",
            "spec.restartPolicy"
        ]
    );
}

#[test]
fn the_node_name_is_part_of_the_pod_name() {
    let pod: Pod = serde_json::from_value(base()).unwrap();
    assert!(
        validate_pod(&pod, "Node-1").is_empty(),
        "the node name is lowercased"
    );
    let errs = validate_pod(&pod, "node_1");
    assert_eq!(errs.len(), 1);
    assert!(errs[0].reason.contains("web-node_1"), "{errs:?}");
}
