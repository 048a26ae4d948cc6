//! From manifest bytes to generic documents and typed Pods.
//!
//! Every document is first read into a generic `serde_json::Value`, as kubelet reads it
//! (`yaml`: YAML 1.1 scalars, aliases and merge keys expanded under a budget of values and
//! string bytes, which bounds time and memory whatever the input, "billion laughs" included).
//! The generic tree is then deserialised into a k8s-openapi `Pod`; every type error is listed
//! with its field path, and the Pod is serialised back and compared key by key with the
//! input: k8s-openapi silently ignores unknown fields, as kubelet's decoder does; tidelet names
//! each one (a warning, or an error under `tidelet validate --strict`).

use std::fmt;

use k8s_openapi::api::core::v1::Pod;
use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};
use serde_path_to_error::Segment;

use crate::yaml::{self, join, Budget, Doc, EXTRA_STRING_BYTES, MAX_VALUES};

/// serde's error for a budget exceeded while reading JSON.
fn charge_de<E: serde::de::Error>(b: &mut Budget, bytes: usize) -> Result<(), E> {
    b.charge(bytes).map_err(E::custom)
}

/// Builds a `Value` while charging every node to the budget.
struct Seed<'a>(&'a mut Budget);

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

/// Map keys must be strings (as in JSON and Kubernetes); charged like string values.
struct KeySeed<'a>(&'a mut Budget);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = String;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        let v = d.deserialize_any(Seed(self.0))?;
        match v {
            Value::String(s) => Ok(s),
            // YAML allows `1: x` or `true: x`; Kubernetes keys are strings.
            other => Err(D::Error::custom(format_args!(
                "mapping key {other} is not a string"
            ))),
        }
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML/JSON value")
    }
    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        charge_de(self.0, 0)?;
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        charge_de(self.0, 0)?;
        Ok(Value::Number(v.into()))
    }
    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        charge_de(self.0, 0)?;
        Ok(Value::Number(v.into()))
    }
    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        charge_de(self.0, 0)?;
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format_args!("{v} is not a finite number")))
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        charge_de(self.0, v.len())?;
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E: serde::de::Error>(self, v: String) -> Result<Value, E> {
        charge_de(self.0, v.len())?;
        Ok(Value::String(v))
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        charge_de(self.0, 0)?;
        Ok(Value::Null)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        charge_de(self.0, 0)?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Seed(&mut *self.0))? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        charge_de(self.0, 0)?;
        let mut out = Map::new();
        while let Some(k) = map.next_key_seed(KeySeed(&mut *self.0))? {
            let v = map.next_value_seed(Seed(&mut *self.0))?;
            // A repeated key: the last value, as Go's encoding/json (kubelet) keeps it;
            // `documents` reports it.
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}

/// The documents of a file, as kubelet reads them. Text that starts with `{` is JSON and only
/// JSON (apimachinery's `yaml.ToJSON` passes it through untouched, so `1.0` stays a float and
/// `\/` is an escape); anything else is YAML, one or more documents separated by `---`. Empty
/// documents come back as `Value::Null`, for the caller to skip. The error is a complete reason
/// (`invalid YAML: ... at line 3 column 5: `the line``).
pub(crate) fn documents(text: &str) -> Result<Vec<Doc>, String> {
    flow_depth_guard(text)?;
    if !text.trim_start().starts_with('{') {
        return yaml::load(text);
    }
    let value = json_document(text)?;
    // Lines and repeated keys, for the messages, from the same text read as YAML (which JSON
    // nearly always is); the values are JSON's.
    let (lines, duplicates) = match yaml::load(text) {
        Ok(mut docs) if docs.len() == 1 => {
            let d = docs.remove(0);
            (d.lines, d.duplicates)
        }
        _ => Default::default(),
    };
    Ok(vec![Doc {
        value,
        lines,
        duplicates,
    }])
}

fn json_document(text: &str) -> Result<Value, String> {
    let mut budget = Budget::new(MAX_VALUES, text.len() + EXTRA_STRING_BYTES);
    let mut de = serde_json::Deserializer::from_str(text);
    let v = Seed(&mut budget)
        .deserialize(&mut de)
        .map_err(|e| format!("invalid JSON: {e}"))?;
    de.end().map_err(|e| format!("invalid JSON: {e}"))?;
    Ok(v)
}

/// Deepest bracket nesting accepted before YAML parsing (see `flow_depth_guard`).
pub(crate) const MAX_FLOW_DEPTH: usize = 1000;

/// A YAML parser keeps a stack entry per open bracket, so a 10 MiB file of `[[[[...` costs
/// memory and time before the loader's depth limit (`yaml::MAX_DEPTH`) sees it. Refuse such
/// text up front with a plain count of brackets; it ignores quoting, so a manifest would need
/// a thousand unbalanced brackets inside strings to be refused wrongly.
fn flow_depth_guard(text: &str) -> Result<(), String> {
    let mut depth = 0usize;
    for (line, l) in text.lines().enumerate() {
        for b in l.bytes() {
            match b {
                b'[' | b'{' => depth += 1,
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
            if depth > MAX_FLOW_DEPTH {
                return Err(format!(
                    "invalid YAML: nested more than {MAX_FLOW_DEPTH} levels deep at line {}",
                    line + 1
                ));
            }
        }
    }
    Ok(())
}

/// A problem inside one document: field path (may be empty) and reason.
pub(crate) type FieldProblem = (String, String);

/// Typed Pod from a generic document, after checking `apiVersion`/`kind`, with the paths of
/// the fields the Pod API does not have (all of them; kubelet's decoder drops them, and so does
/// the typed Pod: the caller warns).
pub(crate) fn pod_from_value(doc: &Value) -> Result<(Pod, Vec<String>), Vec<FieldProblem>> {
    let Value::Object(obj) = doc else {
        return Err(vec![(
            String::new(),
            format!("a document must be a mapping (a Pod), got {}", kind_of(doc)),
        )]);
    };
    let mut problems = Vec::new();
    match obj.get("apiVersion") {
        Some(Value::String(v)) if v == "v1" => {}
        None | Some(Value::Null) => {
            problems.push(("apiVersion".into(), "required (must be \"v1\")".into()))
        }
        Some(v) => problems.push((
            "apiVersion".into(),
            format!("{v} is not supported (must be \"v1\")"),
        )),
    }
    match obj.get("kind") {
        Some(Value::String(k)) if k == "Pod" => {}
        None | Some(Value::Null) => {
            problems.push(("kind".into(), "required (must be \"Pod\")".into()))
        }
        Some(k) => problems.push(("kind".into(), format!("{k} is not supported (only Pod)"))),
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let pod = typed_pod(doc)?;
    let back = serde_json::to_value(&pod)
        .map_err(|e| vec![(String::new(), format!("cannot re-encode the Pod: {e}"))])?;
    let mut unknown = Vec::new();
    unknown_fields(doc, &back, &mut String::new(), &mut unknown);
    Ok((pod, unknown))
}

/// Most type errors listed for one document: past a few dozen, the rest are noise.
pub(crate) const MAX_TYPE_ERRORS: usize = 50;

/// The typed Pod, or every type error in `doc` (up to `MAX_TYPE_ERRORS`): serde stops at the
/// first, so each erroneous value is taken out of a copy and the copy decoded again.
fn typed_pod(doc: &Value) -> Result<Pod, Vec<FieldProblem>> {
    let first = match serde_path_to_error::deserialize(doc) {
        Ok(p) => return Ok(p),
        Err(e) => e,
    };
    let mut doc = doc.clone();
    let mut removed = Removed::default();
    let mut problems = Vec::new();
    let mut next = Some(first);
    while let Some(e) = next.take() {
        let segments: Vec<Segment> = e.path().iter().cloned().collect();
        let (path, taken) = removed.take(&mut doc, &segments);
        problems.push((path, e.into_inner().to_string()));
        if !taken || problems.len() >= MAX_TYPE_ERRORS {
            break;
        }
        next = serde_path_to_error::deserialize::<_, Pod>(&doc).err();
    }
    Err(problems)
}

/// Values taken out of a document, so that the indices of later errors are those written in
/// the file: a list element taken out shifts the ones after it.
#[derive(Default)]
struct Removed {
    /// Original path of a list -> the original indices taken out of it, sorted.
    indices: std::collections::HashMap<String, Vec<usize>>,
}

impl Removed {
    /// The original path of the value at `segments` in `doc`, and whether it could be taken
    /// out (a map entry or a list element; not the whole document).
    fn take(&mut self, doc: &mut Value, segments: &[Segment]) -> (String, bool) {
        let mut path = String::new();
        let mut node = doc;
        for (i, seg) in segments.iter().enumerate() {
            let last = i + 1 == segments.len();
            match (seg, node) {
                (Segment::Map { key }, Value::Object(m)) => {
                    path = join(&path, key);
                    if last {
                        return (path, m.remove(key).is_some());
                    }
                    match m.get_mut(key) {
                        Some(v) => node = v,
                        None => return (path, false),
                    }
                }
                (Segment::Seq { index }, Value::Array(a)) => {
                    let gone = self.indices.entry(path.clone()).or_default();
                    let mut orig = *index;
                    for g in gone.iter() {
                        if *g <= orig {
                            orig += 1;
                        }
                    }
                    path = format!("{path}[{orig}]");
                    if last {
                        if *index >= a.len() {
                            return (path, false);
                        }
                        a.remove(*index);
                        let at = gone.partition_point(|g| *g < orig);
                        gone.insert(at, orig);
                        return (path, true);
                    }
                    match a.get_mut(*index) {
                        Some(v) => node = v,
                        None => return (path, false),
                    }
                }
                (seg, _) => {
                    path = join(&path, &seg.to_string());
                    return (path, false);
                }
            }
        }
        (path, false)
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// Key paths present in `input` but absent from `output` (the Pod re-encoded). Nulls in the
/// input are absent values (`creationTimestamp: null`); only keys are compared, never values,
/// so quantities' and numbers' forms do not matter.
fn unknown_fields(input: &Value, output: &Value, path: &mut String, out: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(i), Value::Object(o)) => {
            for (k, v) in i {
                if v.is_null() {
                    continue;
                }
                let p = join(path, k);
                match o.get(k) {
                    Some(ov) => {
                        let mut p = p;
                        unknown_fields(v, ov, &mut p, out);
                    }
                    None => out.push(p),
                }
            }
        }
        (Value::Array(i), Value::Array(o)) => {
            for (n, (iv, ov)) in i.iter().zip(o).enumerate() {
                let mut p = format!("{path}[{n}]");
                unknown_fields(iv, ov, &mut p, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_yaml_documents_and_json() {
        let values = |t: &str| -> Vec<Value> {
            documents(t).unwrap().into_iter().map(|d| d.value).collect()
        };
        let docs = values("a: 1\n---\n---\nb: [x]\n");
        assert_eq!(docs.len(), 3);
        assert!(docs[1].is_null());
        assert_eq!(docs[2]["b"][0], "x");
        let docs = values(" {\"a\": {\"b\": 2}}");
        assert_eq!(docs, vec![serde_json::json!({"a": {"b": 2}})]);
        // Text meant as JSON gets serde_json's error.
        assert!(documents("{\"a\": 1} {\"b\": 2}")
            .unwrap_err()
            .contains("invalid JSON"));
        assert!(documents("a: [1, 2\n")
            .unwrap_err()
            .contains("invalid YAML"));
        // Mapping keys are strings in JSON: go-yaml's numbers and booleans are written out.
        assert_eq!(values("1: x\n"), vec![serde_json::json!({"1": "x"})]);
    }

    #[test]
    fn refuses_billion_laughs_quickly() {
        let mut y = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        for (prev, cur) in ["a", "b", "c", "d", "e", "f", "g", "h", "i"]
            .iter()
            .zip(["b", "c", "d", "e", "f", "g", "h", "i", "j"])
        {
            y.push_str(&format!("{cur}: &{cur} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
        }
        let err = documents(&y).unwrap_err();
        assert!(err.contains("alias bomb"), "{err}");
    }

    #[test]
    fn refuses_wide_alias_fan_out_quickly() {
        // One large anchor referenced many times: few aliases, but quadratic in size without
        // the budget.
        let mut y = String::from("big: &big [");
        for i in 0..20_000 {
            y.push_str(&format!("{i},"));
        }
        y.push_str("0]\nrefs: [");
        for _ in 0..2_000 {
            y.push_str("*big,");
        }
        y.push_str("*big]\n");
        let err = documents(&y).unwrap_err();
        assert!(err.contains("alias bomb"), "{err}");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let y = format!("{}1{}", "[".repeat(5_000_000), "]".repeat(5_000_000));
        assert!(documents(&y)
            .unwrap_err()
            .contains("nested more than 1000 levels deep at line 1"));
        let y = format!("{}1", "- ".repeat(100_000));
        assert!(documents(&y).is_err());
        let j = format!("{{\"a\":{}1{}}}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(documents(&j).is_err());
    }

    /// The errors, or the unknown fields as (path, "unknown field").
    fn pod_problems(y: &str) -> Vec<FieldProblem> {
        let doc = documents(y).unwrap().remove(0).value;
        match pod_from_value(&doc) {
            Ok((_, unknown)) => unknown
                .into_iter()
                .map(|f| (f, "unknown field".to_string()))
                .collect(),
            Err(e) => e,
        }
    }

    #[test]
    fn typed_pods_and_their_errors() {
        let base = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: a\n  creationTimestamp: null\nspec:\n  containers:\n  - name: c\n    image: busybox\n";
        assert_eq!(pod_problems(base), vec![]);
        let cases: &[(&str, &[(&str, &str)])] = &[
            ("apiVersion: v1\nkind: Deployment\n", &[("kind", "\"Deployment\" is not supported (only Pod)")]),
            ("apiVersion: apps/v1\nkind: Pod\n", &[("apiVersion", "\"apps/v1\" is not supported (must be \"v1\")")]),
            ("kind: Pod\n", &[("apiVersion", "required (must be \"v1\")")]),
            ("- 1\n", &[("", "a document must be a mapping (a Pod), got a list")]),
            (
                "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n  containers:\n  - name: c\n    image: b\n    imagePullPolicyy: Always\n  - name: d\n    image: b\n    resources: {limits: {cpu: 1}, foo: 2}\n  bogus: {x: 1}\n",
                &[
                    ("spec.bogus", "unknown field"),
                    ("spec.containers[0].imagePullPolicyy", "unknown field"),
                    ("spec.containers[1].resources.foo", "unknown field"),
                ],
            ),
            (
                "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n  containers:\n  - name: c\n    image: b\n    ports: [{containerPort: eighty}]\n",
                &[("spec.containers[0].ports[0].containerPort", "invalid type: string \"eighty\", expected i32")],
            ),
            ("apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: {}}\n", &[("spec.containers", "invalid type: map, expected a sequence")]),
        ];
        for (y, want) in cases {
            let got = pod_problems(y);
            let want: Vec<FieldProblem> = want
                .iter()
                .map(|(f, r)| (f.to_string(), r.to_string()))
                .collect();
            assert_eq!(got, want, "{y}");
        }
    }
}
