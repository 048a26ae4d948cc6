//! Manifests in the YAML forms kubelet accepts (tests/manifests/kubelet-forms): `tidelet
//! validate -o json` reads them to the values kubelet decodes (go-yaml v2's YAML 1.1 scalars,
//! `\'` escapes, anchors and merge keys, empty documents), lists every type error with its
//! line, and the agent runs what it read.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use tidelet_e2e::*;

fn forms() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("manifests/kubelet-forms")
}

/// `tidelet validate -o json [extra] FILE`: exit code, the pods read, the messages.
fn validate(file: &str, extra: &[&str]) -> (Option<i32>, Vec<Value>, String) {
    let path = forms().join(file);
    let out = Command::new(bin())
        .args(["validate", "-o", "json", "--node-name", "n"])
        .args(extra)
        .arg(&path)
        .output()
        .unwrap();
    let pods = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{file}: {e}: {l}")))
        .collect();
    let messages = String::from_utf8_lossy(&out.stderr).to_string();
    (out.status.code(), pods, messages)
}

/// The one pod of an accepted file.
fn read(file: &str) -> Value {
    let (code, mut pods, messages) = validate(file, &[]);
    assert_eq!(code, Some(0), "{file}: {messages}");
    assert!(
        messages.contains(&format!("{file}: ok (1 pod)")),
        "{messages}"
    );
    assert_eq!(pods.len(), 1, "{file}: {messages}");
    pods.remove(0)
}

#[test]
fn validate_reads_manifests_to_the_values_kubelet_decodes() {
    // (file, JSON pointer into the pod, the value kubelet decodes)
    let cases: &[(&str, &str, Value)] = &[
        (
            "octal-modes.yaml",
            "/spec/volumes/0/configMap/defaultMode",
            420.into(),
        ),
        (
            "octal-modes.yaml",
            "/spec/volumes/0/configMap/items/0/mode",
            384.into(),
        ),
        (
            "octal-modes.yaml",
            "/spec/volumes/1/projected/defaultMode",
            288.into(),
        ),
        ("yaml11-booleans.yaml", "/spec/hostNetwork", true.into()),
        (
            "yaml11-booleans.yaml",
            "/spec/enableServiceLinks",
            false.into(),
        ),
        (
            "yaml11-booleans.yaml",
            "/spec/automountServiceAccountToken",
            false.into(),
        ),
        (
            "yaml11-booleans.yaml",
            "/spec/containers/0/stdin",
            true.into(),
        ),
        // A quoted "no" and a tagged 0644 stay strings.
        (
            "yaml11-booleans.yaml",
            "/spec/containers/0/env/0/value",
            "no".into(),
        ),
        (
            "yaml11-booleans.yaml",
            "/spec/containers/0/env/1/value",
            "0644".into(),
        ),
        // go-yaml's `\'` in a double-quoted string.
        (
            "yaml11-booleans.yaml",
            "/spec/containers/0/command/2",
            "echo 'single quotes' && sleep 3600".into(),
        ),
        // Aliases and a merge key: the second container is the first with two keys changed.
        (
            "anchors-and-merges.yaml",
            "/metadata/labels/tier",
            "edge".into(),
        ),
        (
            "anchors-and-merges.yaml",
            "/spec/nodeSelector/app",
            "demo".into(),
        ),
        (
            "anchors-and-merges.yaml",
            "/spec/containers/1/name",
            "second".into(),
        ),
        (
            "anchors-and-merges.yaml",
            "/spec/containers/1/image",
            "localhost/busybox:1.35".into(),
        ),
        (
            "anchors-and-merges.yaml",
            "/spec/containers/1/imagePullPolicy",
            "Never".into(),
        ),
        (
            "anchors-and-merges.yaml",
            "/spec/containers/1/command/1",
            "7200".into(),
        ),
        (
            "anchors-and-merges.yaml",
            "/spec/containers/1/env/0/value",
            "edge".into(),
        ),
        (
            "anchors-and-merges.yaml",
            "/spec/containers/0/command/1",
            "3600".into(),
        ),
        // The last of a repeated key.
        (
            "duplicate-keys.yaml",
            "/spec/containers/0/image",
            "busybox:1.36".into(),
        ),
    ];
    for (file, pointer, want) in cases {
        let pod = read(file);
        assert_eq!(pod.pointer(pointer), Some(want), "{file} {pointer}: {pod}");
    }

    // Empty documents are skipped: two pods.
    let (code, pods, messages) = validate("empty-documents.yaml", &[]);
    assert_eq!(code, Some(0), "{messages}");
    let names: Vec<&str> = pods
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["doc-one-n", "doc-two-n"], "{messages}");

    // A repeated key is a warning naming its line, and an error under --strict.
    let (_, _, messages) = validate("duplicate-keys.yaml", &[]);
    assert!(
        messages.contains("warning: ")
            && messages.contains(
                "duplicate-keys.yaml: line 11: spec.containers[0].image: written more than once"
            ),
        "{messages}"
    );
    let (code, pods, messages) = validate("duplicate-keys.yaml", &["--strict"]);
    assert_eq!((code, pods.len()), (Some(1), 0), "{messages}");
    assert!(messages.contains("(--strict)"), "{messages}");
}

#[test]
fn every_type_error_is_listed_with_its_line_what_was_written_and_what_was_expected() {
    let (code, pods, messages) = validate("type-errors.yaml", &[]);
    assert_eq!((code, pods.len()), (Some(1), 0), "{messages}");
    let file = forms().join("type-errors.yaml");
    let errors: Vec<&str> = messages
        .lines()
        .filter(|l| l.starts_with("error: "))
        .collect();
    assert_eq!(
        errors,
        [
            format!("error: {}: line 7: spec.hostNetwork: invalid type: string \"yes\", expected a boolean", file.display()),
            format!("error: {}: line 13: spec.containers[0].env[0].value: invalid type: boolean `false`, expected a string", file.display()),
            format!("error: {}: line 15: spec.containers[0].ports[0].containerPort: invalid type: string \"eighty\", expected i32", file.display()),
        ],
        "{messages}"
    );
}

/// The agent runs what validate read: both containers of the merged definition, with their
/// own commands.
#[test]
fn the_agent_runs_a_pod_built_from_anchors_and_merge_keys() {
    if !privileged() {
        return;
    }
    let mut a = Agent::prepare(None, &[]);
    let text = std::fs::read_to_string(forms().join("anchors-and-merges.yaml")).unwrap();
    // The image is imported, never pulled.
    a.write("merged.yaml", &text);
    a.spawn();
    let pod = a.wait_running(&a.full_name("anchors-and-merges"));
    let names: Vec<&str> = pod["status"]["containerStatuses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["first", "second"], "{pod}");
    for (c, secs) in [("first", "3600"), ("second", "7200")] {
        let pid = a.container_pid(&a.full_name("anchors-and-merges"), c);
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
        let args: Vec<&[u8]> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .collect();
        assert_eq!(args, [b"sleep".as_slice(), secs.as_bytes()], "{c}");
    }
}
