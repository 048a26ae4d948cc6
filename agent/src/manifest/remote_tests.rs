//! Desired-pod payloads: the table of rejections (kind, field, reason), the API-pod defaults,
//! the UID, and the echo of generation and resourceVersion.

use super::*;
use crate::manifest::tests::POD;
use crate::manifest::{CONFIG_HASH_ANNOTATION, CONFIG_SOURCE_ANNOTATION};
use std::path::Path;

fn parse(ns: &str, name: &str, payload: &[u8]) -> RemoteManifest {
    parse_remote(ns, name, payload, "node1")
}

/// `field: reason` of every problem, after checking they all name the pseudo path.
fn fields(r: &RemoteManifest) -> (Option<RemoteRejection>, Vec<String>) {
    match &r.outcome {
        Ok(_) => (None, vec![]),
        Err((kind, probs)) => {
            for p in probs {
                assert_eq!(p.file, r.source, "{p}");
            }
            (
                Some(*kind),
                probs
                    .iter()
                    .map(|p| format!("{}: {}", p.field, p.reason))
                    .collect(),
            )
        }
    }
}

#[test]
fn a_valid_payload_is_defaulted_as_an_api_pod() {
    let r = parse("default", "web", POD.as_bytes());
    assert_eq!(r.source, Path::new("mqtt:desired/pods/default/web"));
    let p = r.outcome.as_ref().expect("accepted");
    assert_eq!(p.file, r.source);
    assert_eq!(
        p.pod.metadata.name.as_deref(),
        Some("web"),
        "no -<node> suffix"
    );
    assert_eq!(p.pod.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(p.pod.metadata.uid.as_deref(), Some(p.uid.as_str()));
    let ann = p.pod.metadata.annotations.as_ref().unwrap();
    assert_eq!(ann[CONFIG_SOURCE_ANNOTATION], "mqtt");
    assert_eq!(ann[CONFIG_HASH_ANNOTATION], p.uid);
    let spec = p.pod.spec.as_ref().unwrap();
    assert_eq!(spec.node_name.as_deref(), Some("node1"));
    assert_eq!(spec.restart_policy.as_deref(), Some("Always"));
    assert!(p.warnings.is_empty(), "{:?}", p.warnings);
    assert_eq!((r.generation, r.resource_version.as_deref()), (None, None));
}

#[test]
fn the_namespace_comes_from_the_topic_and_json_works_too() {
    let json = br#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web"},
        "spec":{"containers":[{"name":"c","image":"busybox:test"}]}}"#;
    let r = parse("edge", "web", json);
    let p = r.outcome.expect("accepted");
    assert_eq!(p.pod.metadata.namespace.as_deref(), Some("edge"));
    // A manifest without a name takes the topic's.
    let r = parse(
        "edge",
        "other",
        POD.replace("  name: web\n", "  labels: {a: b}\n")
            .as_bytes(),
    );
    assert_eq!(
        r.outcome.unwrap().pod.metadata.name.as_deref(),
        Some("other")
    );
}

#[test]
fn the_uid_follows_content_node_and_topic_but_not_server_fields() {
    let uid = |ns: &str, name: &str, text: &str, node: &str| {
        parse_remote(ns, name, text.as_bytes(), node)
            .outcome
            .unwrap()
            .uid
    };
    let a = uid("default", "web", POD, "node1");
    assert_eq!(a, uid("default", "web", POD, "node1"));
    assert_eq!(a.len(), 32);
    assert_ne!(
        a,
        uid("default", "web", &POD.replace("1000", "1001"), "node1")
    );
    assert_ne!(a, uid("default", "web", POD, "node2"));
    assert_ne!(a, uid("other", "web", POD, "node1"));
    let nameless = POD.replace("  name: web\n", "  labels: {a: b}\n");
    assert_ne!(
        uid("default", "web", &nameless, "node1"),
        uid("default", "web2", &nameless, "node1")
    );
    // A new resourceVersion or generation of the same spec must not restart the pod.
    let versioned = POD.replace(
        "  name: web\n",
        "  name: web\n  generation: 7\n  resourceVersion: \"123\"\n  uid: 0b8c\n  creationTimestamp: \"2024-01-01T00:00:00Z\"\n",
    );
    assert_eq!(a, uid("default", "web", &versioned, "node1"));
    // Unlike a static pod's file path, a file with the same content elsewhere is another pod.
    assert_ne!(
        a,
        crate::manifest::static_pod_uid(
            &crate::yaml::from_str::<k8s_openapi::api::core::v1::Pod>(POD).unwrap(),
            "node1",
            Path::new("mqtt:default/web")
        )
    );
}

#[test]
fn generation_and_resource_version_are_echoed_even_when_rejected() {
    let versioned = POD.replace(
        "  name: web\n",
        "  name: web\n  generation: 4\n  resourceVersion: \"99\"\n",
    );
    let r = parse("default", "web", versioned.as_bytes());
    assert_eq!(
        (r.generation, r.resource_version.as_deref()),
        (Some(4), Some("99"))
    );
    let p = r.outcome.unwrap();
    assert!(
        p.warnings.is_empty(),
        "echoed fields are honoured: {:?}",
        p.warnings
    );
    assert_eq!(p.pod.metadata.generation, None);
    let bad = versioned.replace("image: busybox:1.36", "image: ''");
    let r = parse("default", "web", bad.as_bytes());
    assert!(r.outcome.is_err());
    assert_eq!(
        (r.generation, r.resource_version.as_deref()),
        (Some(4), Some("99"))
    );
}

#[test]
fn unsupported_fields_are_warnings_naming_the_topic() {
    let y = POD.replace(
        "    command:",
        "    livenessProbe: {exec: {command: ['true']}}\n    command:",
    );
    let r = parse("default", "web", y.as_bytes());
    let p = r.outcome.unwrap();
    let w: Vec<String> = p.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        w,
        vec!["mqtt:desired/pods/default/web: spec.containers[0].livenessProbe: not supported by tidelet yet; ignored"]
    );
    // A field not in the Pod API is dropped and named, as in a file.
    let y = POD.replace("    command:", "    bogus: 1\n    command:");
    let p = parse("default", "web", y.as_bytes()).outcome.unwrap();
    let w: Vec<String> = p.warnings.iter().map(|w| w.to_string()).collect();
    assert_eq!(
        w,
        vec!["mqtt:desired/pods/default/web: spec.containers[0].bogus: not in the Kubernetes 1.37 Pod API that tidelet knows; ignored"]
    );
}

#[test]
fn rejections_say_which_kind_and_where() {
    use RemoteRejection::*;
    let huge = format!("{POD}# {}\n", "x".repeat(MAX_REMOTE_MANIFEST_BYTES));
    let two = format!("{POD}---\n{}", POD.replace("web", "web2"));
    /// Topic namespace, topic name, payload, kind, `field: reason` of each problem.
    type Case<'a> = (&'a str, &'a str, Vec<u8>, RemoteRejection, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        ("default", "web", b"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\n".to_vec(), NotAPod,
            vec!["apiVersion: \"apps/v1\" is not supported (must be \"v1\")", "kind: \"Deployment\" is not supported (only Pod)"]),
        ("default", "web", b"just some text\n".to_vec(), NotAPod,
            vec![": a document must be a mapping (a Pod), got a string"]),
        ("default", "web", b"metadata: {name: web}\n".to_vec(), NotAPod,
            vec!["apiVersion: required (must be \"v1\")", "kind: required (must be \"Pod\")"]),
        ("default", "web", b"[1, 2]".to_vec(), NotAPod, vec![": a document must be a mapping (a Pod), got a list"]),
        ("default", "web", b"# only a comment\n".to_vec(), NotAPod, vec![": payload holds no Pod (only empty documents or comments)"]),
        ("default", "web", b"\x7fELF\x02\x01\x01\x00\x00".to_vec(), NotAPod, vec![": binary data, not a manifest (NUL byte at offset 7)"]),
        ("default", "web", b"kind: Pod\nx: \xff\xfe\n".to_vec(), NotAPod, vec![": binary data, not a manifest (not UTF-8 at offset 13)"]),
        ("default", "web", huge.into_bytes(), TooLarge,
            vec![": payload is too large (262279 bytes; the limit is 262144 bytes)"]),
        ("default", "web", two.into_bytes(), Invalid,
            vec![": payload holds 2 documents; a desired-pod message holds exactly one Pod"]),
        ("default", "web", b"apiVersion: v1\nkind: Pod\nspec: [".to_vec(), Invalid,
            vec![": invalid YAML: while parsing a node, did not find expected node content at line 4 column 1"]),
        ("default", "web", POD.replace("image: busybox:1.36", "image: ''").into_bytes(), Invalid,
            vec!["spec.containers[0].image: required"]),
        ("default", "api", POD.as_bytes().to_vec(), Invalid, vec!["metadata.name: \"web\" is not the name in the topic (\"api\")"]),
        ("edge", "web", POD.replace("  name: web\n", "  name: web\n  namespace: prod\n").into_bytes(), Invalid,
            vec!["metadata.namespace: \"prod\" is not the namespace in the topic (\"edge\")"]),
        ("default", "web", POD.replace("spec:\n", "spec:\n  nodeName: node2\n").into_bytes(), WrongNode,
            vec!["spec.nodeName: \"node2\": this pod is for another node (this node is \"node1\")"]),
        ("default", "web", POD.replace("spec:\n", "spec:\n  nodeName: node2\n").replace("image: busybox:1.36", "image: ''").into_bytes(), WrongNode,
            vec!["spec.nodeName: \"node2\": this pod is for another node (this node is \"node1\")", "spec.containers[0].image: required"]),
        ("Default", "web", POD.as_bytes().to_vec(), Invalid,
            vec!["topic namespace: \"Default\": must be a lowercase RFC 1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit"]),
        ("default", "we b", POD.as_bytes().to_vec(), Invalid,
            vec!["topic name: \"we b\": must be a lowercase RFC 1123 subdomain: lowercase letters, digits, '-' and '.', each part starting and ending with a letter or digit"]),
        ("default", "..", POD.as_bytes().to_vec(), Invalid,
            vec!["topic name: \"..\": must be a lowercase RFC 1123 subdomain: lowercase letters, digits, '-' and '.', each part starting and ending with a letter or digit"]),
        ("", "web", POD.as_bytes().to_vec(), Invalid, vec!["topic namespace: must not be empty"]),
    ];
    for (ns, name, payload, kind, want) in cases {
        let r = parse(ns, name, &payload);
        let (got_kind, got) = fields(&r);
        assert_eq!(got_kind, Some(kind), "{ns}/{name}: {got:?}");
        assert_eq!(got, want, "{ns}/{name}");
    }
}

#[test]
fn a_remote_name_near_the_limit_is_not_checked_as_name_dash_node() {
    let long = vec!["a".repeat(62); 4].join(".");
    assert_eq!(long.len(), 251);
    let y = POD.replace("name: web", &format!("name: {long}"));
    let r = parse_remote("default", &long, y.as_bytes(), "node-with-a-long-name");
    assert!(r.outcome.is_ok(), "{:?}", r.outcome.err());
    // The same manifest as a file is refused: `<name>-<node>` would be too long.
    let f = crate::manifest::parse_manifest(
        Path::new("/p.yaml"),
        y.as_bytes(),
        "node-with-a-long-name",
    );
    assert_eq!(f.errors.len(), 1, "{:?}", f.errors);
}

/// A payload's type errors are all listed, each with its line, as a file's are.
#[test]
fn every_type_error_of_a_payload_is_listed_with_its_line() {
    let payload = POD.replace("spec:\n", "spec:\n  hostNetwork: \"yes\"\n")
        + "    ports: [{containerPort: eighty}]\n";
    let r = parse("default", "web", payload.as_bytes());
    let Err((RemoteRejection::Invalid, probs)) = &r.outcome else {
        panic!("{:?}", r.outcome);
    };
    let got: Vec<String> = probs
        .iter()
        .map(|p| format!("{}: {}: {}", p.at, p.field, p.reason))
        .collect();
    assert_eq!(
        got,
        [
            "line 6: spec.hostNetwork: invalid type: string \"yes\", expected a boolean",
            "line 11: spec.containers[0].ports[0].containerPort: invalid type: string \"eighty\", expected i32",
        ]
    );
}
