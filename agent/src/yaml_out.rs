//! YAML output as kubectl prints it (`tidelet get ... -o yaml`): block style, and a string
//! left plain only when every YAML reader takes it back as that string.
//!
//! serde_yaml, which wrote it before, left a string plain unless YAML 1.2 would read it as
//! another type, so `startTime: 2026-11-26T04:58:12Z` came out bare. YAML 1.1 readers (PyYAML,
//! and with it kubernetes-validate; Ruby; go-yaml v2 into an untyped map) read that as a
//! timestamp, and the Pod then fails schema validation (`startTime: datetime(...) is not of
//! type 'string'`); kubectl quotes it (go-yaml quotes what its YAML 1.1 resolver would not read
//! back as a string). Here a string is plain only if it cannot be a null, boolean, number or
//! timestamp under either version, else it is written as a JSON string, which is valid
//! double-quoted YAML.

use std::fmt::Write;

use serde_json::Value;

/// `v` as a YAML document (no `---`), ending in a newline.
pub fn to_string(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => map(&mut out, m, 0),
        Value::Array(a) if !a.is_empty() => list(&mut out, a, 0),
        _ => {
            out.push_str(&scalar(v));
            out.push('\n');
        }
    }
    out
}

/// A scalar, or an empty collection in flow style.
fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => string(s),
        Value::Object(_) => "{}".into(),
        Value::Array(_) => "[]".into(),
    }
}

fn is_collection(v: &Value) -> bool {
    match v {
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => false,
    }
}

fn map(out: &mut String, m: &serde_json::Map<String, Value>, indent: usize) {
    for (k, v) in m {
        let _ = write!(out, "{:indent$}{}:", "", string(k));
        match v {
            // Lists sit at their key's indentation, as kubectl prints them.
            Value::Array(a) if !a.is_empty() => {
                out.push('\n');
                list(out, a, indent);
            }
            Value::Object(m) if !m.is_empty() => {
                out.push('\n');
                map(out, m, indent + 2);
            }
            _ => {
                let _ = writeln!(out, " {}", scalar(v));
            }
        }
    }
}

fn list(out: &mut String, a: &[Value], indent: usize) {
    for v in a {
        if is_collection(v) {
            // The item's first line goes after the dash: write it indented, then put the dash
            // in its first line's indentation.
            let mut item = String::new();
            match v {
                Value::Object(m) => map(&mut item, m, indent + 2),
                Value::Array(a) => list(&mut item, a, indent + 2),
                _ => unreachable!("is_collection"),
            }
            let _ = write!(out, "{:indent$}- ", "");
            out.push_str(&item[indent + 2..]);
        } else {
            let _ = writeln!(out, "{:indent$}- {}", "", scalar(v));
        }
    }
}

/// `s` plain when that is safe, else as a JSON (double-quoted YAML) string.
fn string(s: &str) -> String {
    if plain_is_safe(s) {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_default()
    }
}

/// Whether `s`, written plain after `key: ` or `- `, reads back as the string `s` under YAML
/// 1.1 and 1.2. Conservative: a string that needs no quotes may still get them.
fn plain_is_safe(s: &str) -> bool {
    let Some(first) = s.chars().next() else {
        return false;
    };
    let allowed = |c: char| c.is_ascii_alphanumeric() || " -_./:=,()+@".contains(c);
    if !(first.is_ascii_alphanumeric() || first == '/')
        || !s.chars().all(allowed)
        || s.ends_with([' ', ':'])
        || s.contains(": ")
        || s.contains(" #")
    {
        return false;
    }
    // YAML 1.1's null and boolean words (1.2's are among them).
    const WORDS: &[&str] = &["null", "y", "yes", "n", "no", "true", "false", "on", "off"];
    if WORDS.contains(&s.to_ascii_lowercase().as_str()) {
        return false;
    }
    // Numbers (decimal, octal, hex, binary, `1_000`, `1e3`, sexagesimal `1:30`) and timestamps
    // start with a digit and use only these characters: such a string is quoted; one with any
    // other character (`100m`, `32Mi`) cannot be either.
    if first.is_ascii_digit() {
        let numeric_or_time = |c: char| c.is_ascii_hexdigit() || "xXoObB._:+- tTzZ".contains(c);
        return !s.chars().all(numeric_or_time);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strings_a_yaml_reader_would_type_are_quoted() {
        let cases = [
            // A timestamp: YAML 1.1 readers (PyYAML) made it a datetime.
            ("2026-11-26T04:58:12Z", "\"2026-11-26T04:58:12Z\""),
            ("2026-11-26", "\"2026-11-26\""),
            ("110", "\"110\""),
            ("0644", "\"0644\""),
            ("1e3", "\"1e3\""),
            ("0x1A", "\"0x1A\""),
            ("1:30", "\"1:30\""),
            ("yes", "\"yes\""),
            ("Off", "\"Off\""),
            ("null", "\"null\""),
            ("~", "\"~\""),
            ("", "\"\""),
            ("-1", "\"-1\""),
            ("a: b", "\"a: b\""),
            ("a #b", "\"a #b\""),
            ("*x", "\"*x\""),
            ("tail ", "\"tail \""),
            ("two\nlines", "\"two\\nlines\""),
            ("quote\"d", "\"quote\\\"d\""),
            // Left plain, as kubectl leaves them.
            ("100m", "100m"),
            ("32Mi", "32Mi"),
            ("25171324928Ki", "25171324928Ki"),
            ("Running", "Running"),
            ("kubernetes.io/hostname", "kubernetes.io/hostname"),
            ("tidelet://abc/c/0", "tidelet://abc/c/0"),
            (
                "back-off 10s restarting failed container=c",
                "back-off 10s restarting failed container=c",
            ),
        ];
        for (s, want) in cases {
            assert_eq!(string(s), want, "{s:?}");
        }
    }

    #[test]
    fn prints_kubectl_block_style() {
        let v = json!({
            "kind": "Pod",
            "metadata": {"labels": {"app": "web"}, "annotations": {}},
            "spec": {"containers": [{"name": "c", "command": ["sh", "-c"], "ports": []}]},
            "status": {"startTime": "2026-11-26T04:58:12Z", "podIPs": [{"ip": "10.0.0.1"}]},
        });
        let want = "\
kind: Pod
metadata:
  annotations: {}
  labels:
    app: web
spec:
  containers:
  - command:
    - sh
    - \"-c\"
    name: c
    ports: []
status:
  podIPs:
  - ip: \"10.0.0.1\"
  startTime: \"2026-11-26T04:58:12Z\"
";
        assert_eq!(to_string(&v), want);
    }

    /// `text`'s one document as go-yaml v2 (kubelet's YAML 1.1 reading) types it.
    fn read_back(text: &str) -> Value {
        let mut docs = crate::yaml::load(text).unwrap();
        assert_eq!(docs.len(), 1, "{text}");
        docs.remove(0).value
    }

    #[test]
    fn reads_back_as_the_same_value_under_yaml_1_1() {
        let v = json!({
            "apiVersion": "v1",
            "kind": "List",
            "items": [
                {"a": [[1, 2], [], [{"b": null}]], "t": true, "f": 1.5, "n": -3,
                 "s": ["yes", "on", "2026-01-01T00:00:00Z", "10.0.0.1", "0o17", "1_000", "ünïcode",
                       "tab\there", "x: y", "[a]", "{b}", "&c", "!d", "%e", "@f", "`g", "'h'",
                       "|i", ">j", "?k", "-", "--- x", "...", "<<", "="],
                 "weird key: #": {"": "empty key"}},
                "top-level scalar item",
                [],
            ],
        });
        let text = to_string(&v);
        assert_eq!(read_back(&text), v, "{text}");
        for scalar in [
            json!(null),
            json!("2026-01-01"),
            json!(7),
            json!({}),
            json!([]),
        ] {
            assert_eq!(read_back(&to_string(&scalar)), scalar);
        }
    }

    #[test]
    fn what_is_left_plain_is_a_string_to_go_yaml() {
        for s in [
            "100m",
            "32Mi",
            "Running",
            "kubernetes.io/hostname",
            "tidelet://u/c/0",
            "a-b_c.d",
        ] {
            assert!(plain_is_safe(s), "{s}");
            assert_eq!(
                crate::yaml::resolve_plain(s),
                Ok(Value::String(s.into())),
                "{s}"
            );
        }
    }
}
