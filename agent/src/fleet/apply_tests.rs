use super::*;
use serde_json::json;

#[test]
fn manifests_are_checked_for_one_named_pod() {
    type Want<'a> = (&'a str, &'a str, Option<i64>, Option<&'a str>);
    let ok: &[(&str, Want)] = &[
        (
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: web\nspec: {}\n",
            ("default", "web", None, None),
        ),
        (
            "---\n# c\napiVersion: v1\nkind: Pod\nmetadata: {name: web, namespace: apps, generation: 4, resourceVersion: \"17\"}\n---\n",
            ("apps", "web", Some(4), Some("17")),
        ),
        (
            r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"j","namespace":""}}"#,
            ("default", "j", None, None),
        ),
    ];
    for (text, (ns, name, generation, rv)) in ok {
        let i = check_manifest(text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(
            (
                i.namespace.as_str(),
                i.name.as_str(),
                i.generation,
                i.resource_version.as_deref()
            ),
            (*ns, *name, *generation, *rv),
            "{text}"
        );
    }
    let bad: &[(&[u8], &str)] = &[
        (b"", "empty"),
        (b"  \n", "empty"),
        (b"# only a comment\n", "no document"),
        (b"kind: Pod\x00", "NUL byte"),
        (b"kind: \xff\xfe", "not UTF-8"),
        (b"- a\n- b\n", "not a mapping"),
        (b"just text", "not a mapping"),
        (b"kind: [unclosed", "not YAML or JSON"),
        (b"apiVersion: v1\nkind: Deployment\nmetadata: {name: x}\n", "\"Deployment\" is not Pod"),
        (b"apiVersion: v1\nmetadata: {name: x}\n", "kind: missing"),
        (b"apiVersion: apps/v1\nkind: Pod\nmetadata: {name: x}\n", "apiVersion: \"apps/v1\""),
        (b"apiVersion: v1\nkind: Pod\nmetadata: {}\n", "metadata.name: missing"),
        (b"apiVersion: v1\nkind: Pod\nmetadata: {name: 7}\n", "metadata.name: missing"),
        (b"apiVersion: v1\nkind: Pod\nmetadata: {name: a/b}\n", "cannot be a topic level"),
        (b"apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: '#'}\n", "metadata.namespace"),
        (b"apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: 3}\n", "not a string"),
        (b"apiVersion: v1\nkind: Pod\nmetadata: {name: a, generation: x}\n", "not an integer"),
        (
            b"apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: b}\n",
            "holds 2 documents",
        ),
    ];
    for (bytes, want) in bad {
        match check_manifest(bytes) {
            Err(e) => assert!(
                e.contains(want),
                "{:?}: {e:?} lacks {want:?}",
                String::from_utf8_lossy(bytes)
            ),
            Ok(i) => panic!("{:?} accepted: {i:?}", String::from_utf8_lossy(bytes)),
        }
    }
    let huge = vec![b'a'; crate::manifest::MAX_MANIFEST_BYTES as usize + 1];
    assert!(check_manifest(&huge).unwrap_err().contains("too large"));
}

#[test]
fn a_missing_file_is_named_by_the_caller() {
    let dir = tempfile::tempdir().unwrap();
    let e = read_manifest(&dir.path().join("nope.yaml")).unwrap_err();
    assert!(e.contains("cannot read"), "{e}");
    assert_eq!(read_manifest(dir.path()).unwrap_err(), "not a regular file");
}

fn result(v: Value) -> DesiredPodResult {
    let mut base = json!({"apiVersion": "tidelet.io/v1", "kind": "DesiredPodResult",
        "namespace": "default", "name": "web", "accepted": true, "reason": "Accepted",
        "message": "", "errors": [], "generation": null, "resourceVersion": null, "uid": null});
    for (k, x) in v.as_object().unwrap() {
        base[k] = x.clone();
    }
    serde_json::from_value(base).unwrap()
}

#[test]
fn results_are_matched_to_what_was_published() {
    let apply = |generation: Option<i64>, rv: Option<&str>| Expect {
        namespace: "default".into(),
        name: "web".into(),
        generation,
        resource_version: rv.map(str::to_string),
        delete: false,
    };
    let delete = Expect {
        delete: true,
        ..apply(None, None)
    };
    let answer = Verdict::Answer;
    let cases: Vec<(&str, Expect, Value, bool, bool)> = vec![
        (
            "live accept, no versions",
            apply(None, None),
            json!({}),
            false,
            true,
        ),
        (
            "retained accept is history",
            apply(None, None),
            json!({}),
            true,
            false,
        ),
        (
            "same generation",
            apply(Some(3), None),
            json!({"generation": 3}),
            false,
            true,
        ),
        (
            "older generation",
            apply(Some(3), None),
            json!({"generation": 2}),
            false,
            false,
        ),
        (
            "node did not echo",
            apply(Some(3), None),
            json!({}),
            false,
            true,
        ),
        (
            "we had none, node has one",
            apply(None, None),
            json!({"generation": 9}),
            false,
            true,
        ),
        (
            "same rv",
            apply(None, Some("10")),
            json!({"resourceVersion": "10"}),
            false,
            true,
        ),
        (
            "other rv",
            apply(None, Some("10")),
            json!({"resourceVersion": "9"}),
            false,
            false,
        ),
        (
            "another pod",
            apply(None, None),
            json!({"name": "db"}),
            false,
            false,
        ),
        (
            "another namespace",
            apply(None, None),
            json!({"namespace": "x"}),
            false,
            false,
        ),
        (
            "rejection without versions (unreadable manifest)",
            apply(Some(3), None),
            json!({"accepted": false, "reason": "NotAPod"}),
            false,
            true,
        ),
        (
            "a Removed while applying",
            apply(None, None),
            json!({"reason": "Removed"}),
            false,
            false,
        ),
        (
            "delete: Removed",
            delete.clone(),
            json!({"reason": "Removed"}),
            false,
            true,
        ),
        (
            "delete: retained Removed",
            delete.clone(),
            json!({"reason": "Removed"}),
            true,
            false,
        ),
        (
            "delete: a late Accepted",
            delete.clone(),
            json!({"generation": 3}),
            false,
            false,
        ),
        (
            "delete: rejected",
            delete.clone(),
            json!({"accepted": false, "reason": "Conflict"}),
            false,
            true,
        ),
    ];
    for (what, expect, r, retained, ours) in cases {
        let v = judge(&expect, &result(r), retained);
        assert_eq!(v == answer, ours, "{what}: {v:?}");
    }
}

#[test]
fn answers_and_timeouts_are_worded_for_the_operator() {
    let ok = result(json!({"uid": "u-1"}));
    assert_eq!(
        answer_lines(&ok, "n1", false),
        vec!["pod/web accepted on n1 (uid u-1)"]
    );
    let removed = result(json!({"reason": "Removed"}));
    assert_eq!(
        answer_lines(&removed, "n1", true),
        vec!["pod/web removed from n1"]
    );
    let no = result(json!({"accepted": false, "reason": "PolicyViolation",
        "message": "remote pods may not be privileged",
        "errors": ["spec.containers[0].securityContext.privileged: not allowed"]}));
    assert_eq!(
        answer_lines(&no, "n1", false),
        vec![
            "pod/web rejected on n1: PolicyViolation: remote pods may not be privileged",
            "  - spec.containers[0].securityContext.privileged: not allowed"
        ]
    );
    let t = std::time::Duration::from_secs(5);
    let off = json!({"online": false, "reason": "connection lost"});
    let l = timeout_lines(
        "n2",
        t,
        Some(&off),
        "tidelet/n2/desired/pods/default/web",
        false,
    );
    assert_eq!(
        l[0],
        "no answer from n2 within 5s: n2 is offline (connection lost)"
    );
    assert!(
        l[1].contains("stays retained on tidelet/n2/desired/pods/default/web"),
        "{}",
        l[1]
    );
    let l = timeout_lines("n3", t, None, "x", true);
    assert!(l[0].contains("never reported"), "{}", l[0]);
    assert!(l[1].starts_with("the removal stays retained"), "{}", l[1]);
    let l = timeout_lines("n4", t, Some(&json!({"online": true})), "x", false);
    assert!(l[0].contains("n4 is online"), "{}", l[0]);
}
