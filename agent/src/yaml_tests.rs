use serde_json::json;

use super::*;

/// The one document of `text` as JSON.
fn one(text: &str) -> Value {
    let mut docs = load(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    assert_eq!(docs.len(), 1, "{text:?}");
    docs.remove(0).value
}

/// Plain scalars as go-yaml v2 resolves them (resolve.go) and sigs.k8s.io/yaml then writes
/// them as JSON: what kubelet sees of `key: <scalar>`.
#[test]
fn plain_scalars_resolve_as_go_yaml_v2() {
    let cases: &[(&str, Value)] = &[
        // Booleans: YAML 1.1's words, in go-yaml's three spellings each.
        ("yes", json!(true)),
        ("Yes", json!(true)),
        ("YES", json!(true)),
        ("y", json!(true)),
        ("Y", json!(true)),
        ("on", json!(true)),
        ("ON", json!(true)),
        ("true", json!(true)),
        ("True", json!(true)),
        ("no", json!(false)),
        ("n", json!(false)),
        ("N", json!(false)),
        ("off", json!(false)),
        ("Off", json!(false)),
        ("FALSE", json!(false)),
        ("yES", json!("yES")),
        ("yess", json!("yess")),
        ("o", json!("o")),
        // Null.
        ("~", Value::Null),
        ("null", Value::Null),
        ("NULL", Value::Null),
        ("nil", json!("nil")),
        // Integers: Go's ParseInt(s, 0, 64) after dropping underscores.
        ("0644", json!(420)),
        ("0o644", json!(420)),
        ("0O644", json!(420)),
        ("0x1F", json!(31)),
        ("0X1f", json!(31)),
        ("0b101", json!(5)),
        ("-0b101", json!(-5)),
        ("+0x1F", json!(31)),
        ("1_000", json!(1000)),
        ("0x_1F", json!(31)),
        ("0", json!(0)),
        ("00", json!(0)),
        ("-0", json!(0)),
        ("+42", json!(42)),
        ("-17", json!(-17)),
        ("9223372036854775807", json!(i64::MAX)),
        ("-9223372036854775808", json!(i64::MIN)),
        ("18446744073709551615", json!(u64::MAX)),
        // Not an octal number: a YAML-style float, which JSON writes as an integer.
        ("08", json!(8)),
        ("0644.5", json!(644.5)),
        // Floats: integral ones are integers in JSON, as Go's encoder writes them.
        ("80.0", json!(80)),
        ("1e3", json!(1000)),
        ("1.5", json!(1.5)),
        ("-2.5e-1", json!(-0.25)),
        (".5", json!(0.5)),
        ("5.", json!(5)),
        ("1e400", json!("1e400")),
        // Strings: timestamps (left as text for an untyped target), sexagesimal (not in
        // go-yaml), and things that only start like numbers.
        ("2001-12-14", json!("2001-12-14")),
        ("1:20", json!("1:20")),
        ("0x", json!("0x")),
        ("0xG", json!("0xG")),
        ("1e", json!("1e")),
        ("-", json!("-")),
        ("+", json!("+")),
        ("1.2.3", json!("1.2.3")),
        ("10Gi", json!("10Gi")),
        ("500m", json!("500m")),
        ("._", json!("._")),
        ("v1", json!("v1")),
    ];
    for (plain, want) in cases {
        assert_eq!(resolve_plain(plain).unwrap(), *want, "{plain}");
        // `-` alone is a sequence entry in a document, not a scalar.
        if *plain != "-" {
            assert_eq!(one(&format!("k: {plain}\n"))["k"], *want, "k: {plain}");
        }
    }
    for bad in [".inf", "-.Inf", "+.INF", ".nan", ".NaN"] {
        let e = resolve_plain(bad).unwrap_err();
        assert!(e.contains("not a number JSON can hold"), "{bad}: {e}");
        let e = load(&format!("a: 1\nk: {bad}\n")).unwrap_err();
        assert!(e.contains("at line 2"), "{e}");
    }
}

/// Quoting, block scalars and explicit tags: only plain scalars are resolved.
#[test]
fn quoted_block_and_tagged_scalars() {
    let cases: &[(&str, Value)] = &[
        ("k: \"yes\"\n", json!("yes")),
        ("k: 'no'\n", json!("no")),
        ("k: \"0644\"\n", json!("0644")),
        ("k: '~'\n", json!("~")),
        ("k: |\n  yes\n", json!("yes\n")),
        ("k: >-\n  0644\n", json!("0644")),
        ("k: !!str 0644\n", json!("0644")),
        ("k: !!str yes\n", json!("yes")),
        ("k: !!int \"0644\"\n", json!(420)),
        ("k: !!bool \"on\"\n", json!(true)),
        ("k: !!float 1\n", json!(1)),
        ("k: !!null ''\n", Value::Null),
        ("k: !!map {a: 1}\n", json!({"a": 1})),
        ("k: !!seq [1]\n", json!([1])),
        ("k:\n", Value::Null),
        ("k: ''\n", json!("")),
    ];
    for (text, want) in cases {
        assert_eq!(one(text)["k"], *want, "{text}");
    }
    let refused: &[(&str, &str)] = &[
        ("k: !!int yes\n", "\"yes\" is not an integer (tagged !!int)"),
        (
            "k: !!binary aGk=\n",
            "tag !!binary is not supported on a scalar",
        ),
        ("k: !local x\n", "tag !local is not supported"),
        ("k: !!map [1]\n", "tag !!map is not supported on a sequence"),
    ];
    for (text, want) in refused {
        let e = load(text).unwrap_err();
        assert!(e.contains(want), "{text}: {e}");
        assert!(e.contains("at line 1"), "{text}: {e}");
    }
}

/// go-yaml's escapes in double-quoted strings: YAML 1.2's, and `\'`.
#[test]
fn double_quoted_escapes_as_go_yaml() {
    let cases: &[(&str, &str)] = &[
        (r#"k: "it\'s""#, "it's"),
        (r#"k: "\'a\' and \'b\'""#, "'a' and 'b'"),
        (
            r#"k: "tab\there\nnl \"q\" \\ \x41\u00e9\U0001F600""#,
            "tab\there\nnl \"q\" \\ A\u{e9}\u{1F600}",
        ),
        // `\'` where it is not an escape stays as written.
        ("k: 'it\\'''\n", "it\\'"),
        ("k: |\n  echo \"it\\'s\"\n", "echo \"it\\'s\"\n"),
        ("# a \"\\'\" comment\nk: x\n", "x"),
    ];
    for (text, want) in cases {
        assert_eq!(one(text)["k"], *want, "{text}");
    }
    // Several strings to fix, in several documents; lines stay right after the fix.
    let docs = load("a: \"\\'1\\'\"\n---\nb: \"x\\'\"\nc: \"y\\'\"\nd: [\n").unwrap_err();
    assert!(docs.starts_with("document 2: invalid YAML: "), "{docs}");
    assert!(docs.contains("line 6") || docs.contains("line 5"), "{docs}");
    // YAML 1.2's `\/` is not go-yaml's: refused, naming the line; `\\/` is a backslash and `/`.
    for text in ["k: \"a\\/b\"\n", "a: 1\nk: \"x \\\\\\/\"\n"] {
        let e = load(text).unwrap_err();
        assert!(
            e.contains("is not an escape kubelet's YAML reader"),
            "{text}: {e}"
        );
    }
    assert_eq!(one("k: \"a\\\\/b\"\n")["k"], "a\\/b");
    assert_eq!(one("k: 'a\\/b'\n")["k"], "a\\/b");
    assert_eq!(one("k: a\\/b\n")["k"], "a\\/b");
    let e = load("k: \"\\q\"\n").unwrap_err();
    assert!(e.contains("unknown escape character at line 1"), "{e}");
    assert!(e.ends_with(": `k: \"\\q\"`"), "{e}");
}

#[test]
fn anchors_aliases_and_merge_keys() {
    let base = "base: &b {image: busybox, imagePullPolicy: Never, env: [{name: A, value: '1'}]}\n";
    let merged = json!({"image": "busybox", "imagePullPolicy": "Always", "env": [{"name": "A", "value": "1"}]});
    // (text, the key to look at, its value)
    let cases: &[(String, &str, Value)] = &[
        // An alias replays its anchor.
        ("a: &x [1, 2]\nb: *x\n".into(), "b", json!([1, 2])),
        ("a: &x yes\nb: *x\n".into(), "b", json!(true)),
        // Merge: explicit keys win, wherever they are written.
        (
            format!("{base}c:\n  <<: *b\n  imagePullPolicy: Always\n"),
            "c",
            merged.clone(),
        ),
        (
            format!("{base}c:\n  imagePullPolicy: Always\n  <<: *b\n"),
            "c",
            merged,
        ),
        // A list of mappings: earlier ones win.
        (
            "x: &x {a: 1, b: 1}\ny: &y {b: 2, c: 2}\nc: {<<: [*x, *y], d: 4}\n".into(),
            "c",
            json!({"a": 1, "b": 1, "c": 2, "d": 4}),
        ),
        // An inline mapping merges too.
        (
            "c: {<<: {a: 1}, b: 2}\n".into(),
            "c",
            json!({"a": 1, "b": 2}),
        ),
        // A quoted "<<" is a plain key.
        ("c: {'<<': 1}\n".into(), "c", json!({"<<": 1})),
        // A re-used anchor name means its latest node from there on.
        ("a: &x 1\nb: *x\nc: &x 2\nd: *x\n".into(), "b", json!(1)),
        ("a: &x 1\nb: *x\nc: &x 2\nd: *x\n".into(), "d", json!(2)),
    ];
    for (text, key, want) in cases {
        assert_eq!(one(text)[key], *want, "{text}");
    }
    let refused: &[(&str, &str)] = &[
        (
            "a: {<<: 1}\n",
            "`<<` in a merges a mapping or a sequence of mappings only at line 1",
        ),
        (
            "a: {<<: [{b: 1}, 2]}\n",
            "merges a mapping or a sequence of mappings only",
        ),
        ("a: *nope\n", "unknown anchor"),
    ];
    for (text, want) in refused {
        let e = load(text).unwrap_err();
        assert!(e.contains(want), "{text}: {e}");
    }
}

#[test]
fn keys_duplicates_and_documents() {
    // Keys are JSON strings: numbers and booleans as sigs.k8s.io/yaml writes them.
    assert_eq!(
        one("1: a\nyes: b\n0x10: c\n1.5: d\n"),
        json!({"1": "a", "true": "b", "16": "c", "1.5": "d"})
    );
    for (text, want) in [
        (
            "~: a\n",
            "a mapping key must be a string, number or boolean, not null at line 1",
        ),
        ("? [1]\n: a\n", "not a sequence"),
    ] {
        let e = load(text).unwrap_err();
        assert!(e.contains(want), "{text}: {e}");
    }
    // A repeated key: the last value, and the path reported.
    let docs = load("a: 1\nm:\n  x: 1\n  x: 2\na: 3\n").unwrap();
    assert_eq!(docs[0].value, json!({"a": 3, "m": {"x": 2}}));
    assert_eq!(docs[0].duplicates, ["m.x", "a"]);
    // Empty documents are nulls; a file of comments has none.
    let docs = load("---\n---\na: 1\n---\n# c\n...\n---\n").unwrap();
    let values: Vec<&Value> = docs.iter().map(|d| &d.value).collect();
    assert_eq!(
        values,
        [&Value::Null, &json!({"a": 1}), &Value::Null, &Value::Null]
    );
    assert!(load("# only\n").unwrap().is_empty());
    assert!(load("").unwrap().is_empty());
    // JSON is YAML, typed as go-yaml types it (`1.0` is the integer 1).
    assert_eq!(
        one(r#"{"a": [1, 1.0, true, null, "x/y"]}"#),
        json!({"a": [1, 1, true, null, "x/y"]})
    );
    // Anchors do not cross documents.
    let e = load("a: &x 1\n---\nb: *x\n").unwrap_err();
    assert!(e.starts_with("document 2: invalid YAML: "), "{e}");
}

#[test]
fn lines_of_fields() {
    let text = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\nspec:\n  containers:\n  - name: c\n    image: b\n    ports:\n    - containerPort: 80\n  - {name: d,\n     image: e}\n";
    let doc = load(text).unwrap().remove(0);
    let cases = [
        ("", Some(1)),
        ("kind", Some(2)),
        ("metadata.name", Some(4)),
        ("spec.containers", Some(6)),
        ("spec.containers[0]", Some(7)),
        ("spec.containers[0].image", Some(8)),
        ("spec.containers[0].ports[0].containerPort", Some(10)),
        ("spec.containers[1].image", Some(12)),
        // A missing field is at its nearest ancestor.
        ("spec.containers[1].resources.limits", Some(11)),
        ("spec.volumes[3]", Some(5)),
        ("metadata.labels[app.kubernetes.io/name]", Some(3)),
    ];
    for (path, want) in cases {
        assert_eq!(doc.line_of(path), want, "{path}");
    }
    // A field inside an alias' replay is at the alias.
    let doc = load("a: &x\n  b: 1\nc:\n  - *x\n").unwrap().remove(0);
    assert_eq!(doc.line_of("c[0].b"), Some(4));
    assert_eq!(doc.line_of("a.b"), Some(2));
}

#[test]
fn nesting_and_budget_limits() {
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let e = load(&deep).unwrap_err();
    assert!(e.contains("nested more than 128 levels deep"), "{e}");
    let deep: String = (0..200).map(|i| format!("{}k:\n", " ".repeat(i))).collect();
    assert!(load(&deep).unwrap_err().contains("nested more than 128"));
    assert!(load(&format!("{}1\n", "[".repeat(100) + &"]".repeat(100)))
        .is_err_and(|e| e.contains("invalid YAML")));
}

#[test]
fn document_numbers_only_where_there_are_several() {
    let cases = [
        ("a: 1\n", false),
        ("---\na: 1\n", false),
        ("# c\n---\na: 1\n", false),
        ("a: 1\n---\nb: 2\n", true),
        ("---\na: 1\n---\nb: 2\n", true),
        ("a: 1\n--- \nb: 2\n", true),
        ("a: |\n  ---\n", false),
        ("a: 1\n----\n", false),
    ];
    for (text, want) in cases {
        assert_eq!(several_documents(text), want, "{text:?}");
    }
    let one = load("apiVersion: v1\nkind: Pod\nmetadata: {name: [}\n").unwrap_err();
    assert!(one.starts_with("invalid YAML: "), "{one}");
    assert!(one.ends_with(": `metadata: {name: [}`"), "{one}");
    let two = load("a: 1\n---\nb: [\n").unwrap_err();
    assert!(two.starts_with("document 2: invalid YAML: "), "{two}");
    assert_eq!(offending_line("a\nb", 3), None);
    assert_eq!(offending_line("a\n  \n", 2), None);
    let long = format!("k: {}", "x".repeat(200));
    assert_eq!(
        offending_line(&long, 1).unwrap(),
        format!(": `k: {}...`", "x".repeat(117))
    );
}
