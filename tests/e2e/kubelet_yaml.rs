//! Manifests in the YAML forms kubelet accepts (tests/manifests/kubelet-forms): `tidelet
//! validate -o json` reads them to the values kubelet decodes (go-yaml v2's YAML 1.1 scalars,
//! `\'` escapes, anchors and merge keys, empty documents), lists every type error with its
//! line, and the agent runs what it read. And the interop check: tidelet's reading against
//! kubelet's own, run (tests/yaml/go/yaml2json.go: apimachinery's ToJSON over
//! sigs.k8s.io/yaml and go-yaml v2, from Debian's packages).

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

/// kubelet's own reading, run: sigs.k8s.io/yaml's YAMLToJSON over go-yaml v2 (Debian's
/// packages, tests/yaml/go), on a batch of YAML texts: for each, the JSON or the refusal.
fn kubelet_reads(texts: &[String]) -> Vec<Result<Value, String>> {
    let bin = set_up("tests/yaml/go/build.sh");
    let mut child = Command::new(bin)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let input = serde_json::to_vec(texts).unwrap();
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), &input).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "yaml2json failed");
    let results: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    results
        .into_iter()
        .map(|r| match r.get("error") {
            Some(e) => Err(e.as_str().unwrap_or_default().to_string()),
            None => Ok(r["json"].clone()),
        })
        .collect()
}

/// tidelet's reading of the same text, as it reads a manifest, down to what kubelet reads of
/// it: the first document (`null` when empty). tidelet also runs the pods of the documents
/// after it, which kubelet ignores: a superset, tested in lifecycle.rs.
fn tidelet_reads(text: &str) -> Result<Value, String> {
    if text.trim_start().starts_with('{') {
        return tidelet::manifest::documents(text)
            .map(|docs| docs.into_iter().next().unwrap_or(Value::Null));
    }
    tidelet::yaml::load(text).map(|docs| {
        docs.into_iter()
            .next()
            .map(|d| d.value)
            .unwrap_or(Value::Null)
    })
}

/// Interop: tidelet's YAML reading against kubelet's, run (not written down): every scalar
/// form, quoting, tags, escapes, anchors, merge keys, keys and documents of the table, and the
/// manifests in tests/manifests/kubelet-forms, must give the same JSON or both be refused.
#[test]
fn tidelets_yaml_reading_agrees_with_sigs_k8s_io_yaml() {
    let plain = [
        "yes",
        "Yes",
        "YES",
        "y",
        "Y",
        "on",
        "On",
        "ON",
        "true",
        "True",
        "TRUE",
        "no",
        "n",
        "N",
        "off",
        "Off",
        "OFF",
        "false",
        "False",
        "FALSE",
        "yES",
        "yess",
        "o",
        "~",
        "null",
        "Null",
        "NULL",
        "nil",
        "0644",
        "0o644",
        "0O644",
        "0x1F",
        "0X1f",
        "0b101",
        "-0b101",
        "+0x1F",
        "1_000",
        "0x_1F",
        "0",
        "00",
        "-0",
        "+42",
        "-17",
        "9223372036854775807",
        "-9223372036854775808",
        "18446744073709551615",
        "08",
        "09.5",
        "0644.5",
        "80.0",
        "1e3",
        "1.5",
        "-2.5e-1",
        ".5",
        "5.",
        "1e400",
        "2001-12-14",
        "2001-12-14T21:59:43.10-05:00",
        "1:20",
        "0x",
        "0xG",
        "1e",
        "+",
        "1.2.3",
        "10Gi",
        "500m",
        "._",
        "v1",
        "0.0.0.0",
        "127.0.0.1",
        "1.0e+3",
        "+.5",
        "-.5",
        "0b",
        "0o",
        "1__0",
        "_1",
        "1_",
        "3.14_15",
        ".inf",
        "-.Inf",
        ".nan",
        "0x8000000000000000",
        "-0x8000000000000000",
    ];
    let mut texts: Vec<String> = plain.iter().map(|p| format!("k: {p}\n")).collect();
    for t in [
        "k: \"yes\"\n",
        "k: 'no'\n",
        "k: \"0644\"\n",
        "k: |\n  yes\n",
        "k: >-\n  0644\n",
        "k: !!str 0644\n",
        "k: !!str yes\n",
        "k: !!int \"0644\"\n",
        "k: !!bool \"on\"\n",
        "k: !!float 1\n",
        "k: !!null ''\n",
        "k:\n",
        "k: ''\n",
        "k: !!int yes\n",
        r#"k: "it\'s""#,
        r#"k: "\'a\' and \'b\'""#,
        r#"k: "tab\there\nnl \"q\" \\ \/ \x41\u00e9\U0001F600""#,
        "k: 'it\\'''\n",
        "k: |\n  echo \"it\\'s\"\n",
        "k: \"\\q\"\n",
        "a: &x [1, 2]\nb: *x\n",
        "a: &x yes\nb: *x\n",
        "base: &b {image: busybox, pull: Never}\nc:\n  <<: *b\n  pull: Always\n",
        "x: &x {a: 1, b: 1}\ny: &y {b: 2, c: 2}\nc: {<<: [*x, *y], d: 4}\n",
        "c: {<<: {a: 1}, b: 2}\n",
        "c: {'<<': 1}\n",
        "a: &x 1\nb: *x\nc: &x 2\nd: *x\n",
        "a: {<<: 1}\n",
        "a: *nope\n",
        "1: a\nyes: b\n0x10: c\n1.5: d\n",
        "~: a\n",
        "a: 1\nm:\n  x: 1\n  x: 2\na: 3\n",
        "---\n---\na: 1\n",
        "# only\n",
        r#"{"a": [1, 1.0, true, null, "x\/y"]}"#,
        r#" {"a": 1, "a": 2}"#,
        "{a: 1}\n",
        r#"{"a": "x"} trailing"#,
        "k: \"x\\/y\"\n",
        "a: [1, 2\n",
        "k: [sleep, 3600]\n",
    ] {
        texts.push(t.to_string());
    }
    let mut files: Vec<_> = std::fs::read_dir(forms())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in &files {
        texts.push(std::fs::read_to_string(f).unwrap());
    }
    let kubelet = kubelet_reads(&texts);
    let mut disagree = Vec::new();
    for (text, k) in texts.iter().zip(&kubelet) {
        let t = tidelet_reads(text);
        let same = match (&t, k) {
            (Ok(a), Ok(b)) => a == b,
            (Err(_), Err(_)) => true,
            _ => false,
        };
        if !same {
            disagree.push(format!("{text:?}\n  tidelet: {t:?}\n  kubelet: {k:?}"));
        }
    }
    assert!(
        disagree.is_empty(),
        "{} of {} texts read differently:\n{}",
        disagree.len(),
        texts.len(),
        disagree.join("\n")
    );
}
