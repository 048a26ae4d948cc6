//! Network configuration lists: read from the config directory as the kubelet's CNI code
//! read them (files ending `.conflist`, `.conf` or `.json`, in name order, the first one that
//! is valid wins; a single-plugin `.conf` is wrapped into a list as libcni does), or tidelet's
//! built-in default.

use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

/// The largest config file read (a config list is a few KiB).
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// A network configuration list, as the plugins will be given it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfList {
    pub name: String,
    pub cni_version: String,
    /// `disableCheck`: CHECK is not run.
    pub disable_check: bool,
    /// Each plugin's object, as written (`type` checked present).
    pub plugins: Vec<Map<String, Value>>,
    /// The whole list as JSON, kept with each attachment: DEL must use the config ADD used.
    pub raw: Value,
    /// Where it came from: a file, or `None` for the built-in default.
    pub file: Option<PathBuf>,
}

impl ConfList {
    /// The plugin types, in order.
    pub fn types(&self) -> Vec<&str> {
        self.plugins
            .iter()
            .filter_map(|p| p.get("type").and_then(Value::as_str))
            .collect()
    }

    /// Where it came from, for messages.
    pub fn origin(&self) -> String {
        match &self.file {
            Some(f) => f.display().to_string(),
            None => "tidelet's built-in default network".into(),
        }
    }
}

/// Parse a config list (or a single-plugin config, which becomes a list of one). `what`
/// names the file in errors.
pub fn parse(bytes: &[u8], what: &Path) -> Result<ConfList, String> {
    let at = |m: String| format!("{}: {m}", what.display());
    let v: Value = serde_json::from_slice(bytes).map_err(|e| at(format!("not JSON: {e}")))?;
    let Value::Object(obj) = v else {
        return Err(at("not a JSON object".into()));
    };
    let conflist = what.extension().is_some_and(|e| e == "conflist") || obj.contains_key("plugins");
    let obj = if conflist {
        obj
    } else {
        // libcni's ConfListFromConf: the list takes the plugin's name and version.
        let mut list = Map::new();
        for k in ["name", "cniVersion"] {
            if let Some(v) = obj.get(k) {
                list.insert(k.into(), v.clone());
            }
        }
        list.insert("plugins".into(), Value::Array(vec![Value::Object(obj)]));
        list
    };
    from_object(obj, Some(what.to_path_buf())).map_err(at)
}

fn from_object(obj: Map<String, Value>, file: Option<PathBuf>) -> Result<ConfList, String> {
    let name = match obj.get("name") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) | None => return Err("name: missing".into()),
        Some(_) => return Err("name: not a string".into()),
    };
    if !valid_network_name(&name) {
        return Err(format!(
            "name: {name:?}: a network name is letters, digits, '_', '.' and '-', starting with a letter or digit"
        ));
    }
    let cni_version = match obj.get("cniVersion") {
        Some(Value::String(s)) => s.clone(),
        // The spec before 0.3 had no version in configs; results then used ip4/ip6.
        None => "0.2.0".into(),
        Some(_) => return Err("cniVersion: not a string".into()),
    };
    if !supported_version(&cni_version) {
        return Err(format!(
            "cniVersion: {cni_version:?}: tidelet reads results of CNI 0.3.0 to 1.1.0"
        ));
    }
    let disable_check = match obj.get("disableCheck") {
        None => false,
        Some(Value::Bool(b)) => *b,
        // libcni also accepts the string forms.
        Some(Value::String(s)) if s == "true" => true,
        Some(Value::String(s)) if s == "false" => false,
        Some(_) => return Err("disableCheck: not a boolean".into()),
    };
    let Some(Value::Array(list)) = obj.get("plugins") else {
        return Err("plugins: missing or not a list".into());
    };
    if list.is_empty() {
        return Err("plugins: empty".into());
    }
    let mut plugins = Vec::with_capacity(list.len());
    for (i, p) in list.iter().enumerate() {
        let Value::Object(p) = p else {
            return Err(format!("plugins[{i}]: not an object"));
        };
        match p.get("type") {
            Some(Value::String(t)) if valid_plugin_type(t) => {}
            Some(Value::String(t)) => {
                return Err(format!(
                    "plugins[{i}].type: {t:?} is not a plugin name (no '/', not empty)"
                ))
            }
            _ => return Err(format!("plugins[{i}].type: missing")),
        }
        plugins.push(p.clone());
    }
    Ok(ConfList {
        name,
        cni_version,
        disable_check,
        plugins,
        raw: Value::Object(obj),
        file,
    })
}

/// What the list's `raw` JSON says (an attachment's record keeps only that).
pub fn from_raw(raw: &Value) -> Result<ConfList, String> {
    match raw {
        Value::Object(o) => from_object(o.clone(), None),
        _ => Err("not a JSON object".into()),
    }
}

/// libcni's rule for network names (and container IDs).
pub fn valid_network_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

fn valid_plugin_type(t: &str) -> bool {
    !t.is_empty() && t != "." && t != ".." && !t.contains('/') && !t.contains('\0')
}

/// Versions whose results tidelet reads: 0.3.0 and later use the `ips`/`interfaces` shape.
pub fn supported_version(v: &str) -> bool {
    matches!(v, "0.3.0" | "0.3.1" | "0.4.0" | "1.0.0" | "1.1.0")
}

/// Whether the list's version has CHECK (0.4.0 and later).
pub fn has_check(v: &str) -> bool {
    matches!(v, "0.4.0" | "1.0.0" | "1.1.0")
}

/// Whether the list's version has STATUS and GC (1.1.0).
pub fn has_status_and_gc(v: &str) -> bool {
    v == "1.1.0"
}

/// The config files of `dir`, in the order they are tried.
fn config_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .is_some_and(|e| e == "conf" || e == "conflist" || e == "json")
                && p.is_file()
        })
        .collect();
    files.sort();
    Ok(files)
}

/// What the config directory holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// No config file (or no directory): the built-in default applies.
    Nothing,
    /// The first valid list, and why each file before it was skipped.
    List(Box<ConfList>, Vec<String>),
    /// Files, but none valid: why each was refused.
    Invalid(Vec<String>),
}

/// Read the first valid config list of `dir`, as the kubelet's CNI code did: files in name
/// order, a file that cannot be read or parsed is skipped (and said), the first good one wins.
pub fn load_dir(dir: &Path) -> Found {
    let files = match config_files(dir) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Found::Nothing,
        Err(e) => return Found::Invalid(vec![format!("{}: {e}", dir.display())]),
    };
    if files.is_empty() {
        return Found::Nothing;
    }
    let mut skipped = Vec::new();
    for f in files {
        match read_bounded(&f).and_then(|b| parse(&b, &f)) {
            Ok(list) => return Found::List(Box::new(list), skipped),
            Err(e) => skipped.push(e),
        }
    }
    Found::Invalid(skipped)
}

fn read_bounded(f: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(f).map_err(|e| format!("{}: {e}", f.display()))?;
    let mut out = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("{}: {e}", f.display()))?;
    if out.len() as u64 > MAX_CONFIG_BYTES {
        return Err(format!(
            "{}: larger than {MAX_CONFIG_BYTES} bytes",
            f.display()
        ));
    }
    Ok(out)
}

/// What the built-in default network is made of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultNetwork {
    pub name: String,
    pub bridge: String,
    /// The pods' subnet (`podCIDR`).
    pub subnet: String,
    /// Where host-local keeps its leases.
    pub ipam_dir: String,
}

/// tidelet's default network, used when the config directory has none: a bridge with the
/// gateway on the host (containerd's and Podman's CNI default), host-local addresses from
/// `podCIDR`, `hostPort`s through portmap, the bandwidth annotations through bandwidth, and
/// loopback (which passes the result through; the supervisor has brought `lo` up already).
///
/// Masquerading to the outside is not the bridge plugin's `ipMasq`, which makes a chain and
/// three rules per pod (17 ms of each ADD and 50 ms of each DEL with iptables-nft): tidelet
/// adds one rule for the whole subnet when it first attaches a pod (`net::masq`), as Podman's
/// netavark does per network.
pub fn default_list(d: &DefaultNetwork) -> ConfList {
    let raw = json!({
        "cniVersion": "1.0.0",
        "name": d.name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": d.bridge,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": d.subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": d.ipam_dir
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "bandwidth", "capabilities": {"bandwidth": true}},
            {"type": "loopback"},
        ]
    });
    match raw {
        Value::Object(o) => from_object(o, None).expect("the built-in list is valid"),
        _ => unreachable!("a JSON object literal"),
    }
}

/// The built-in list as one pod runs it: without portmap when it maps no port and without
/// bandwidth when it asks for no limit (each passes the result through, for 3 ms a run).
/// The attachment records the list it ran, so its DEL and CHECK run the same.
pub fn default_for_pod(d: &DefaultNetwork, ports: bool, bandwidth: bool) -> ConfList {
    let mut l = default_list(d);
    l.plugins
        .retain(|p| match p.get("type").and_then(Value::as_str) {
            Some("portmap") => ports,
            Some("bandwidth") => bandwidth,
            _ => true,
        });
    if let Value::Object(o) = &mut l.raw {
        o.insert(
            "plugins".into(),
            Value::Array(l.plugins.iter().cloned().map(Value::Object).collect()),
        );
    }
    l
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) {
        std::fs::write(dir.join(name), text).unwrap();
    }

    #[test]
    fn lists_and_single_configs_parse_or_say_why_not() {
        type Case<'a> = (&'a str, &'a str, Result<(&'a str, &'a str, usize), &'a str>);
        let cases: &[Case] = &[
            (
                "a.conflist",
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"bridge"},{"type":"portmap"}]}"#,
                Ok(("n", "1.0.0", 2)),
            ),
            (
                "b.conf",
                r#"{"cniVersion":"0.4.0","name":"one","type":"bridge","bridge":"x"}"#,
                Ok(("one", "0.4.0", 1)),
            ),
            (
                "c.json",
                r#"{"cniVersion":"0.3.1","name":"j","plugins":[{"type":"ptp"}]}"#,
                Ok(("j", "0.3.1", 1)),
            ),
            ("d.conflist", "{", Err("d.conflist: not JSON")),
            ("e.conflist", "[]", Err("e.conflist: not a JSON object")),
            (
                "f.conflist",
                r#"{"cniVersion":"1.0.0","plugins":[{"type":"bridge"}]}"#,
                Err("name: missing"),
            ),
            (
                "g.conflist",
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[]}"#,
                Err("plugins: empty"),
            ),
            (
                "h.conflist",
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"bridge":"x"}]}"#,
                Err("plugins[0].type: missing"),
            ),
            (
                "i.conflist",
                r#"{"cniVersion":"1.0.0","name":"n","plugins":[{"type":"../../bin/sh"}]}"#,
                Err("plugins[0].type: \"../../bin/sh\" is not a plugin name"),
            ),
            (
                "j.conflist",
                r#"{"cniVersion":"9.9.9","name":"n","plugins":[{"type":"bridge"}]}"#,
                Err("cniVersion: \"9.9.9\""),
            ),
            (
                "k.conf",
                r#"{"name":"old","type":"bridge"}"#,
                Err("cniVersion: \"0.2.0\""),
            ),
            (
                "l.conflist",
                r#"{"cniVersion":"1.0.0","name":"bad name","plugins":[{"type":"bridge"}]}"#,
                Err("name: \"bad name\""),
            ),
        ];
        for (file, text, want) in cases {
            let got = parse(text.as_bytes(), Path::new(file));
            match (want, got) {
                (Ok((name, version, n)), Ok(l)) => {
                    assert_eq!(
                        (l.name.as_str(), l.cni_version.as_str(), l.plugins.len()),
                        (*name, *version, *n),
                        "{file}"
                    );
                }
                (Err(part), Err(e)) => {
                    assert!(e.contains(part) && e.starts_with(file), "{file}: {e}")
                }
                (w, g) => panic!("{file}: want {w:?}, got {g:?}"),
            }
        }
    }

    #[test]
    fn the_first_valid_file_in_name_order_wins_and_the_skipped_are_said() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load_dir(&dir.path().join("missing")), Found::Nothing);
        assert_eq!(load_dir(dir.path()), Found::Nothing);
        write(dir.path(), "README", "not a config");
        assert_eq!(load_dir(dir.path()), Found::Nothing);
        write(
            dir.path(),
            "20-b.conflist",
            r#"{"cniVersion":"1.0.0","name":"b","plugins":[{"type":"bridge"}]}"#,
        );
        write(dir.path(), "10-a.conflist", "{ not json");
        write(
            dir.path(),
            "30-c.conflist",
            r#"{"cniVersion":"1.0.0","name":"c","plugins":[{"type":"bridge"}]}"#,
        );
        let Found::List(l, skipped) = load_dir(dir.path()) else {
            panic!()
        };
        assert_eq!(l.name, "b");
        assert_eq!(skipped.len(), 1);
        assert!(skipped[0].contains("10-a.conflist"), "{skipped:?}");
        std::fs::remove_file(dir.path().join("20-b.conflist")).unwrap();
        std::fs::remove_file(dir.path().join("30-c.conflist")).unwrap();
        let Found::Invalid(why) = load_dir(dir.path()) else {
            panic!()
        };
        assert!(why[0].contains("10-a.conflist: not JSON"), "{why:?}");
    }

    #[test]
    fn an_oversized_file_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(MAX_CONFIG_BYTES as usize));
        write(dir.path(), "a.conflist", &big);
        let Found::Invalid(why) = load_dir(dir.path()) else {
            panic!()
        };
        assert!(why[0].contains("larger than"), "{why:?}");
    }

    #[test]
    fn the_default_list_is_bridge_portmap_bandwidth_loopback_on_the_pod_cidr() {
        let d = DefaultNetwork {
            name: "tidelet".into(),
            bridge: "tidelet0".into(),
            subnet: "10.87.0.0/16".into(),
            ipam_dir: "/run/tidelet/networks".into(),
        };
        let l = default_list(&d);
        assert_eq!(l.types(), ["bridge", "portmap", "bandwidth", "loopback"]);
        assert_eq!(
            l.raw["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.87.0.0/16"
        );
        assert_eq!(from_raw(&l.raw).unwrap().types(), l.types());
        for (ports, bw, want) in [
            (false, false, &["bridge", "loopback"][..]),
            (true, false, &["bridge", "portmap", "loopback"]),
            (false, true, &["bridge", "bandwidth", "loopback"]),
            (true, true, &["bridge", "portmap", "bandwidth", "loopback"]),
        ] {
            let l = default_for_pod(&d, ports, bw);
            assert_eq!(l.types(), want);
            assert_eq!(
                from_raw(&l.raw).unwrap().types(),
                want,
                "the recorded list matches"
            );
        }
    }
}
