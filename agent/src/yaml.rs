//! YAML as kubelet reads it.
//!
//! kubelet turns a static-pod file into JSON with sigs.k8s.io/yaml (go-yaml v2 underneath,
//! YAML 1.1 scalars, no target type) and decodes that JSON without strictness. So:
//! - a *plain* scalar is typed by go-yaml v2's rules (`resolve_plain`): `yes`/`on`/`y` are
//!   `true`, `0644` is octal 420, `0o644` and `0x1A` and `1_000` are numbers, `~` is null;
//!   a quoted scalar is always a string. A boolean written into a string field (`value: no`)
//!   is then a type error, as in kubelet; a string into a boolean field (`"yes"`) too;
//! - `\'` in a double-quoted string is an apostrophe (go-yaml accepts it, YAML 1.2 does not);
//! - anchors and aliases are expanded, and merge keys (`<<: *base`) merge mappings, explicit
//!   keys first, then the merged mappings in order;
//! - mapping keys that are numbers or booleans become their text (`1`, `true`); a repeated
//!   key keeps its last value, and is reported (`Doc::duplicates`) for the caller to warn;
//! - a float with an integral value (`80.0`) is the integer JSON holds (`80`), as Go's JSON
//!   encoder writes it; `.inf` and `.nan` have no JSON form and are errors.
//!
//! The parser is saphyr-parser, a maintained pure-Rust YAML parser that hands out events with
//! each scalar's style (plain or quoted) and position: what a YAML 1.1 resolver needs and what
//! serde_yaml (unmaintained; libyaml underneath, which types scalars by YAML 1.2 before the
//! caller sees them) cannot give. The tree is built iteratively under a budget of values and
//! string bytes (aliases can make a small file expand enormously) and a nesting limit.

use std::borrow::Cow;
use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError, Span, Tag};
use serde_json::{Map, Number, Value};

/// Most values (scalars, sequences, mappings) one file may expand to: far more than any Pod
/// needs (the API server stores objects of at most ~1.5 MB).
pub const MAX_VALUES: usize = 100_000;
/// String bytes (keys and values) a file may expand to beyond its own length: without
/// aliases a document's strings never exceed the text they come from.
pub const EXTRA_STRING_BYTES: usize = 64 << 10;

/// What is left of a file's expansion budget.
#[derive(Debug)]
pub struct Budget {
    values: usize,
    bytes: usize,
}

impl Budget {
    pub fn new(values: usize, bytes: usize) -> Self {
        Budget { values, bytes }
    }

    /// One value holding `bytes` of strings.
    pub fn charge(&mut self, bytes: usize) -> Result<(), String> {
        self.charge_many(1, bytes)
    }

    /// `values` values holding `bytes` of strings (an alias' replay).
    pub fn charge_many(&mut self, values: usize, bytes: usize) -> Result<(), String> {
        if values > self.values {
            return Err(format!(
                "document expands to more than {MAX_VALUES} values (a YAML alias bomb?); refused"
            ));
        }
        if bytes > self.bytes {
            return Err(
                "document expands to more bytes of strings than the file holds (a YAML alias bomb?); refused"
                    .into(),
            );
        }
        self.values -= values;
        self.bytes -= bytes;
        Ok(())
    }
}

/// Deepest nesting of sequences and mappings in a document (serde_yaml's limit was 128 too;
/// a Pod nests about 10 levels).
pub const MAX_DEPTH: usize = 128;

/// Documents whose `\'` escapes may be rewritten before the file is refused: each costs a
/// parse of the whole file.
const MAX_APOSTROPHE_RETRIES: usize = 64;

/// One YAML document as JSON, with where its nodes start.
#[derive(Debug, Default)]
pub struct Doc {
    pub value: Value,
    /// Field path (`spec.containers[0].image`) -> 1-based line of the node's start, for every
    /// node written in the document (not for those an alias replays: see `line_of`).
    pub lines: HashMap<String, usize>,
    /// Paths of keys written twice in one mapping (the last value is kept).
    pub duplicates: Vec<String>,
}

impl Doc {
    /// The line of `path`, or of its nearest ancestor with one (a missing field's parent; a
    /// field inside an alias' replay is at the alias).
    pub fn line_of(&self, path: &str) -> Option<usize> {
        let mut p = path;
        loop {
            if let Some(l) = self.lines.get(p) {
                return Some(*l);
            }
            if p.is_empty() {
                return None;
            }
            p = parent(p);
        }
    }
}

/// `a.b[2]` -> `a.b`; `a.b` -> `a`; `a` -> ``.
fn parent(path: &str) -> &str {
    let cut = match path.as_bytes().last() {
        Some(b']') => path.rfind('['),
        _ => path.rfind(['.', '[']),
    };
    cut.map_or("", |i| &path[..i])
}

/// What a plain (unquoted, untagged) scalar means to go-yaml v2 (its `resolve`), as JSON.
/// `Err` for values JSON cannot hold.
pub fn resolve_plain(s: &str) -> Result<Value, String> {
    const TRUE: [&str; 11] = [
        "y", "Y", "yes", "Yes", "YES", "true", "True", "TRUE", "on", "On", "ON",
    ];
    const FALSE: [&str; 11] = [
        "n", "N", "no", "No", "NO", "false", "False", "FALSE", "off", "Off", "OFF",
    ];
    if TRUE.contains(&s) {
        return Ok(Value::Bool(true));
    }
    if FALSE.contains(&s) {
        return Ok(Value::Bool(false));
    }
    if matches!(s, "" | "~" | "null" | "Null" | "NULL") {
        return Ok(Value::Null);
    }
    if matches!(
        s,
        ".nan" | ".NaN" | ".NAN" | ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF"
    ) || matches!(s, "-.inf" | "-.Inf" | "-.INF")
    {
        return Err(format!("{s} is not a number JSON can hold"));
    }
    match s.as_bytes()[0] {
        b'0'..=b'9' | b'+' | b'-' => Ok(number(s).unwrap_or_else(|| Value::String(s.into()))),
        // go-yaml tries a float for a leading dot (`.5`); strconv.ParseFloat's other forms
        // (hex floats, `inf`) never start with one.
        b'.' => Ok(decimal(s)
            .and_then(float)
            .unwrap_or_else(|| Value::String(s.into()))),
        _ => Ok(Value::String(s.into())),
    }
}

/// go-yaml v2 on a scalar starting with a digit or sign: underscores dropped, then Go's
/// `ParseInt(s, 0, 64)` (`0x`, `0o`, `0b` and a leading `0` for octal), `ParseUint`, then a
/// YAML-style float (`^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$`), then binary with
/// a leading minus. Timestamps (`2001-12-14`) come back as strings when the target is untyped,
/// as here, so they need no rule.
fn number(s: &str) -> Option<Value> {
    let plain: String = s.chars().filter(|c| *c != '_').collect();
    let (neg, digits) = match plain.as_bytes().first() {
        Some(b'-') => (true, &plain[1..]),
        Some(b'+') => (false, &plain[1..]),
        _ => (false, &plain[..]),
    };
    let (radix, body) = if let Some(r) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        (16, r)
    } else if let Some(r) = digits
        .strip_prefix("0o")
        .or_else(|| digits.strip_prefix("0O"))
    {
        (8, r)
    } else if let Some(r) = digits
        .strip_prefix("0b")
        .or_else(|| digits.strip_prefix("0B"))
    {
        (2, r)
    } else if digits.len() > 1 && digits.starts_with('0') {
        (8, &digits[1..])
    } else {
        (10, digits)
    };
    // from_str_radix takes a sign of its own; Go's does not after the prefix.
    if !body.is_empty() && body.bytes().all(|b| (b as char).is_digit(radix)) {
        if let Ok(u) = u64::from_str_radix(body, radix) {
            if !neg {
                return Some(Value::Number(u.into()));
            }
            if u <= i64::MAX as u64 + 1 {
                return Some(Value::Number((u as i64).wrapping_neg().into()));
            }
        }
    }
    decimal(&plain).and_then(float)
}

/// `plain` if it is a YAML-style float (go-yaml's `yamlStyleFloat`), parsed.
fn decimal(plain: &str) -> Option<f64> {
    let b = plain.as_bytes();
    let mut i = usize::from(matches!(b.first(), Some(b'-' | b'+')));
    let int_start = i;
    while i < b.len() && b[i].is_ascii_digit() {
        i += 1;
    }
    let int_digits = i - int_start;
    if i < b.len() && b[i] == b'.' {
        i += 1;
        let frac_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        // `.5` needs its fraction; `5.` does not.
        if int_digits == 0 && i == frac_start {
            return None;
        }
    } else if int_digits == 0 {
        return None;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'-' || b[i] == b'+') {
            i += 1;
        }
        let exp_start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == exp_start {
            return None;
        }
    }
    if i != b.len() {
        return None;
    }
    plain.parse().ok()
}

/// A float as JSON: an integral value within i64 is that integer, as Go's encoder writes
/// `80.0` as `80` (so it decodes into an integer field); infinities have no JSON form.
fn float(f: f64) -> Option<Value> {
    if f.is_finite() && f.fract() == 0.0 && f.abs() < 9.2e18 {
        return Some(Value::Number((f as i64).into()));
    }
    Number::from_f64(f).map(Value::Number)
}

/// The documents of `text`, as kubelet reads them. The error is a complete reason with the
/// line (`invalid YAML: ... at line 3 column 5: `the line``).
pub fn load(text: &str) -> Result<Vec<Doc>, String> {
    let mut text = Cow::Borrowed(text);
    for _ in 0..MAX_APOSTROPHE_RETRIES {
        let (failure, doc) = match load_once(&text) {
            Ok(docs) => return Ok(docs),
            Err(e) => e,
        };
        if let Failure::Scan(e) = &failure {
            if let Some(fixed) = apostrophe_fix(&text, e) {
                text = Cow::Owned(fixed);
                continue;
            }
        }
        // "document 1" of a file that has one reads as if there were more.
        let doc = if several_documents(&text) {
            format!("document {doc}: ")
        } else {
            String::new()
        };
        return Err(format!("{doc}{}", failure.explain(&text)));
    }
    Err(format!(
        "invalid YAML: more than {MAX_APOSTROPHE_RETRIES} double-quoted strings with \\' escapes; refused"
    ))
}

/// One document of `text` (a config file, a CDI spec) read as kubelet reads YAML and typed
/// as `T`; empty text or comments alone are an empty mapping. The error names the line and the
/// field: `line 7: evictionHard: invalid type: sequence, expected a map`.
pub fn from_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    let mut docs: Vec<Doc> = load(text)?
        .into_iter()
        .filter(|d| !d.value.is_null())
        .collect();
    let doc = match docs.len() {
        0 => Doc {
            value: Value::Object(Map::new()),
            ..Doc::default()
        },
        1 => docs.remove(0),
        n => return Err(format!("holds {n} documents, where one is read")),
    };
    serde_path_to_error::deserialize(&doc.value).map_err(|e| {
        let path = path_of(e.path());
        let at = doc
            .line_of(&path)
            .map(|l| format!("line {l}: "))
            .unwrap_or_default();
        let field = if path.is_empty() {
            String::new()
        } else {
            format!("{path}: ")
        };
        format!("{at}{field}{}", e.into_inner())
    })
}

/// A serde path in this module's spelling (`a.b[0].c`), as `Doc::lines` keys it.
pub fn path_of(p: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in p.iter() {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } => out = join(&out, key),
            Segment::Enum { variant } => out = join(&out, variant),
            Segment::Unknown => out = join(&out, "?"),
        }
    }
    out
}

/// go-yaml reads `\'` in a double-quoted string as `'`; YAML 1.2 parsers refuse it as an
/// unknown escape, at the start of the string. When that is the refusal and the string's
/// first unknown escape is `\'`, every `\'` of that string becomes `'` and the file is parsed
/// again. Only the string the parser pointed at is touched, so block scalars and comments
/// (where `\'` is text) keep theirs.
fn apostrophe_fix(text: &str, e: &ScanError) -> Option<String> {
    if !e.info().contains("unknown escape") {
        return None;
    }
    let start = text
        .char_indices()
        .nth(e.marker().index())
        .map(|(i, _)| i)?;
    let rest = &text[start..];
    if !rest.starts_with('"') {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    out.push_str(&text[..start + 1]);
    let mut chars = rest[1..].char_indices();
    let mut fixed = false;
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                out.push_str(&rest[1 + i..]);
                return fixed.then_some(out);
            }
            '\\' => match chars.next() {
                Some((_, '\'')) => {
                    out.push('\'');
                    fixed = true;
                }
                Some((_, n)) => {
                    out.push('\\');
                    out.push(n);
                }
                None => return None,
            },
            c => out.push(c),
        }
    }
    None
}

enum Failure {
    Scan(ScanError),
    /// A reason and the 1-based line it is about.
    At(String, usize),
}

impl Failure {
    fn explain(self, text: &str) -> String {
        let (reason, line) = match self {
            Failure::Scan(e) => {
                let m = e.marker();
                (
                    format!("{} at line {} column {}", e.info(), m.line(), m.col() + 1),
                    m.line(),
                )
            }
            Failure::At(r, line) => (format!("{r} at line {line}"), line),
        };
        let quoted = offending_line(text, line).unwrap_or_default();
        if reason.contains("alias bomb") {
            format!("invalid YAML: {reason}")
        } else {
            format!("invalid YAML: {reason}{quoted}")
        }
    }
}

/// A sequence or mapping being built.
enum Frame {
    Seq {
        items: Vec<Value>,
        anchor: usize,
        path: String,
    },
    Map {
        map: Map<String, Value>,
        anchor: usize,
        path: String,
        /// The key read, waiting for its value.
        key: Option<Key>,
        /// `<<` values, merged at the end.
        merges: Vec<(Value, usize)>,
    },
}

enum Key {
    Name(String),
    Merge,
}

/// Size of an anchored node, charged again at each alias.
struct Anchored {
    value: Value,
    values: usize,
    bytes: usize,
}

/// The documents, or why not and in which document (1-based).
fn load_once(text: &str) -> Result<Vec<Doc>, (Failure, usize)> {
    let mut docs = Vec::new();
    match load_into(text, &mut docs) {
        Ok(()) => Ok(docs),
        Err(f) => Err((f, docs.len() + 1)),
    }
}

fn load_into(text: &str, docs: &mut Vec<Doc>) -> Result<(), Failure> {
    let mut budget = Budget::new(MAX_VALUES, text.len() + EXTRA_STRING_BYTES);
    let mut anchors: HashMap<usize, Anchored> = HashMap::new();
    let mut doc = Doc::default();
    let mut stack: Vec<Frame> = Vec::new();
    let mut slashes = SlashEscapes::find(text);
    for ev in Parser::new_from_str(text) {
        let (ev, span): (Event, Span) = ev.map_err(Failure::Scan)?;
        let line = span.start.line();
        let seq = matches!(ev, Event::SequenceStart(..));
        let at = |r: String| Failure::At(r, line);
        // The node this event completes, with its anchor.
        let done: Option<(Value, usize)> = match ev {
            Event::StreamStart | Event::StreamEnd | Event::Nothing => None,
            Event::DocumentStart(_) => {
                doc = Doc::default();
                anchors.clear();
                None
            }
            Event::DocumentEnd => {
                docs.push(std::mem::take(&mut doc));
                None
            }
            Event::Alias(id) => {
                let a = anchors
                    .get(&id)
                    .ok_or_else(|| at("an alias to an unknown anchor".into()))?;
                budget.charge_many(a.values, a.bytes).map_err(at)?;
                Some((a.value.clone(), 0))
            }
            Event::Scalar(v, style, anchor, tag) => {
                if style == ScalarStyle::DoubleQuoted
                    && slashes.within(span.start.index(), span.end.index())
                {
                    return Err(at(
                        "`\\/` in a double-quoted string is not an escape kubelet's YAML reader \
                         (go-yaml) knows; write `/`"
                            .into(),
                    ));
                }
                let value = scalar(&v, style, tag.as_deref()).map_err(at)?;
                if let Value::String(s) = &value {
                    budget.charge(s.len()).map_err(at)?;
                } else {
                    budget.charge(0).map_err(at)?;
                }
                // A merge key is a plain `<<`, not a quoted one.
                if style == ScalarStyle::Plain && tag.is_none() && v == "<<" {
                    if let Some(Frame::Map { key: k @ None, .. }) = stack.last_mut() {
                        *k = Some(Key::Merge);
                        continue;
                    }
                }
                Some((value, anchor))
            }
            Event::SequenceStart(anchor, tag) | Event::MappingStart(anchor, tag) => {
                collection_tag(tag.as_deref(), seq).map_err(at)?;
                budget.charge(0).map_err(at)?;
                if stack.len() >= MAX_DEPTH {
                    return Err(at(format!("nested more than {MAX_DEPTH} levels deep")));
                }
                let path = child_path(&stack);
                doc.lines.entry(path.clone()).or_insert(line);
                stack.push(if seq {
                    Frame::Seq {
                        items: Vec::new(),
                        anchor,
                        path,
                    }
                } else {
                    Frame::Map {
                        map: Map::new(),
                        anchor,
                        path,
                        key: None,
                        merges: Vec::new(),
                    }
                });
                None
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Frame::Seq { items, anchor, .. }) => Some((Value::Array(items), anchor)),
                Some(Frame::Map {
                    mut map,
                    anchor,
                    merges,
                    path,
                    ..
                }) => {
                    for (m, l) in merges {
                        merge(&mut map, m, &path).map_err(|r| Failure::At(r, l))?;
                    }
                    Some((Value::Object(map), anchor))
                }
                None => None,
            },
        };
        let Some((value, anchor)) = done else {
            continue;
        };
        if anchor > 0 {
            let (values, bytes) = size(&value);
            anchors.insert(
                anchor,
                Anchored {
                    value: value.clone(),
                    values,
                    bytes,
                },
            );
        }
        let path = child_path(&stack);
        match stack.last_mut() {
            None => doc.value = value,
            Some(Frame::Seq { items, .. }) => {
                doc.lines.entry(path).or_insert(line);
                items.push(value);
            }
            Some(Frame::Map {
                map,
                key,
                merges,
                path: map_path,
                ..
            }) => match key.take() {
                None => {
                    let k = key_text(value).map_err(at)?;
                    let p = join(map_path, &k);
                    if map.contains_key(&k) {
                        doc.duplicates.push(p.clone());
                    }
                    doc.lines.insert(p, line);
                    *key = Some(Key::Name(k));
                }
                Some(Key::Name(k)) => {
                    map.insert(k, value);
                }
                Some(Key::Merge) => merges.push((value, line)),
            },
        }
    }
    Ok(())
}

/// Where `\/` stands in a text, as character indices (the parser's positions): YAML 1.2 (and
/// saphyr-parser) read it as `/` in a double-quoted string, go-yaml v2 refuses it, so tidelet
/// does too. Found in one pass; the parser's scalars come in order, so a cursor answers each.
struct SlashEscapes {
    at: Vec<usize>,
    next: usize,
}

impl SlashEscapes {
    fn find(text: &str) -> Self {
        let mut at = Vec::new();
        if text.contains("\\/") {
            let mut run = 0usize;
            for (i, c) in text.chars().enumerate() {
                match c {
                    '\\' => run += 1,
                    // An odd run of backslashes before `/` ends in an escaping one.
                    '/' if run % 2 == 1 => {
                        at.push(i - 1);
                        run = 0;
                    }
                    _ => run = 0,
                }
            }
        }
        SlashEscapes { at, next: 0 }
    }

    /// Whether one lies in `[start, end)`; positions before `start` are passed for good.
    fn within(&mut self, start: usize, end: usize) -> bool {
        while self.at.get(self.next).is_some_and(|&i| i < start) {
            self.next += 1;
        }
        self.at.get(self.next).is_some_and(|&i| i < end)
    }
}

/// The path of the node that goes next into the innermost open collection.
fn child_path(stack: &[Frame]) -> String {
    match stack.last() {
        None => String::new(),
        Some(Frame::Seq { items, path, .. }) => format!("{path}[{}]", items.len()),
        Some(Frame::Map { key, path, .. }) => match key {
            Some(Key::Name(k)) => join(path, k),
            _ => path.clone(),
        },
    }
}

/// A mapping key as JSON's string, as sigs.k8s.io/yaml writes numbers and booleans.
fn key_text(v: Value) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        other => Err(format!(
            "a mapping key must be a string, number or boolean, not {}",
            match other {
                Value::Null => "null",
                Value::Array(_) => "a sequence",
                _ => "a mapping",
            }
        )),
    }
}

/// Merge a `<<` value into `map`: a mapping, or a sequence of mappings (earlier ones win);
/// keys the mapping has already (written in it, or merged before) are kept.
fn merge(map: &mut Map<String, Value>, from: Value, path: &str) -> Result<(), String> {
    let sources = match from {
        Value::Object(m) => vec![m],
        Value::Array(items) => items
            .into_iter()
            .map(|i| match i {
                Value::Object(m) => Ok(m),
                _ => Err(()),
            })
            .collect::<Result<_, _>>()
            .map_err(|()| merge_error(path))?,
        _ => return Err(merge_error(path)),
    };
    for m in sources {
        for (k, v) in m {
            map.entry(k).or_insert(v);
        }
    }
    Ok(())
}

fn merge_error(path: &str) -> String {
    let at = if path.is_empty() {
        String::new()
    } else {
        format!(" in {path}")
    };
    format!("`<<`{at} merges a mapping or a sequence of mappings only")
}

/// Values and string bytes of `v`, as the budget counts them.
fn size(v: &Value) -> (usize, usize) {
    let mut stack = vec![v];
    let (mut values, mut bytes) = (0, 0);
    while let Some(v) = stack.pop() {
        values += 1;
        match v {
            Value::String(s) => bytes += s.len(),
            Value::Array(a) => stack.extend(a),
            Value::Object(m) => {
                for (k, v) in m {
                    bytes += k.len();
                    stack.push(v);
                }
            }
            _ => {}
        }
    }
    (values, bytes)
}

/// A scalar's JSON value: a quoted or block scalar is a string; a plain one is typed by
/// `resolve_plain`; an explicit core tag (`!!str 0644`, `!!int "8"`) decides for itself.
fn scalar(v: &str, style: ScalarStyle, tag: Option<&Tag>) -> Result<Value, String> {
    let Some(tag) = tag else {
        return match style {
            ScalarStyle::Plain => resolve_plain(v),
            _ => Ok(Value::String(v.to_string())),
        };
    };
    let name = core_tag(tag)?;
    let typed = |want: fn(&Value) -> bool, what: &str| {
        let r = resolve_plain(v)?;
        if want(&r) {
            Ok(r)
        } else {
            Err(format!("{v:?} is not {what} (tagged {})", tag_name(tag)))
        }
    };
    match name {
        "str" => Ok(Value::String(v.to_string())),
        "int" => typed(|r| r.is_i64() || r.is_u64(), "an integer"),
        "float" => typed(Value::is_number, "a number"),
        "bool" => typed(Value::is_boolean, "a boolean"),
        "null" => typed(Value::is_null, "null"),
        _ => Err(format!(
            "tag {} is not supported on a scalar",
            tag_name(tag)
        )),
    }
}

/// The check of a collection's tag: `!!seq` on a sequence, `!!map` on a mapping.
fn collection_tag(tag: Option<&Tag>, seq: bool) -> Result<(), String> {
    let Some(tag) = tag else { return Ok(()) };
    match (core_tag(tag)?, seq) {
        ("seq", true) | ("map", false) => Ok(()),
        _ => Err(format!(
            "tag {} is not supported on a {}",
            tag_name(tag),
            if seq { "sequence" } else { "mapping" }
        )),
    }
}

/// `!!int` -> `int`; any other tag (`!local`, `!<tag:example.com,2000:x>`) is refused, as
/// JSON has no place for it.
fn core_tag(tag: &Tag) -> Result<&str, String> {
    if tag.is_yaml_core_schema() {
        Ok(&tag.suffix)
    } else {
        Err(format!(
            "tag {} is not supported (only YAML's own: !!str, !!int, !!float, !!bool, !!null, !!seq, !!map)",
            tag_name(tag)
        ))
    }
}

/// A tag as it is usually written: `!!int`, `!local`, `!<tag:example.com,2000:x>`.
fn tag_name(tag: &Tag) -> String {
    if tag.is_yaml_core_schema() {
        format!("!!{}", tag.suffix)
    } else if tag.handle == "!" {
        format!("!{}", tag.suffix)
    } else {
        format!("!<{}{}>", tag.handle, tag.suffix)
    }
}

/// Whether `text` has a document separator (`---` at the start of a line) after its first
/// document's content: a leading `---` alone still makes one document.
pub fn several_documents(text: &str) -> bool {
    let mut content = false;
    for line in text.lines() {
        let separator = line == "---" || line.starts_with("--- ") || line.starts_with("---\t");
        if separator && content {
            return true;
        }
        let t = line.trim();
        if !separator && !t.is_empty() && !t.starts_with('#') && !t.starts_with('%') {
            content = true;
        }
    }
    false
}

/// `: `line`` for line `n` (1-based) of `text`, cut to 120 characters, for an error message;
/// `None` for a line out of range or blank.
pub fn offending_line(text: &str, n: usize) -> Option<String> {
    let line = text.lines().nth(n.checked_sub(1)?)?.trim_end();
    if line.trim().is_empty() {
        return None;
    }
    let cut: String = line.chars().take(120).collect();
    let more = if cut.len() < line.len() { "..." } else { "" };
    Some(format!(": `{cut}{more}`"))
}

/// Append `key` to a field path (`spec` + `containers` -> `spec.containers`).
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

#[cfg(test)]
#[path = "yaml_tests.rs"]
mod tests;
