//! Container Device Interface (CDI) specs: the files vendors drop in `/etc/cdi` and
//! `/var/run/cdi` to describe what a device needs in a container (device nodes, mounts, env,
//! hooks), and the resolution of fully qualified names (`vendor.com/class=name`), which device
//! plugins hand back from `Allocate`, into those edits.
//!
//! Loading is forgiving per file and strict per field: an invalid file is skipped with an
//! error naming the file, the field (`devices[2].containerEdits.deviceNodes[0].path`) and the
//! reason, and the other files still load. Later directories take priority over earlier ones
//! for the same device (as the CDI cache does); two files of one directory defining the same
//! device is an error for the second. Hooks are kept, never run here: the caller decides.
//! What is left to the host (a device node's type, numbers and mode when the spec omits them)
//! is filled in by `edits`, which stats through its `HostFs`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::runtime::hooks::Stage;

/// Where CDI specs live by default, lowest priority first.
pub const DEFAULT_DIRS: [&str; 2] = ["/etc/cdi", "/var/run/cdi"];

/// A spec file larger than this is refused unread.
pub const MAX_SPEC_BYTES: u64 = 1 << 20;

/// At most this many spec files are read from one directory (the rest are reported).
pub const MAX_SPECS_PER_DIR: usize = 1024;

/// The CDI versions this reader understands (0.1/0.2 had another layout).
pub const KNOWN_VERSIONS: [&str; 7] = [
    "0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0",
];

/// Why a spec file (or a directory) was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// The directory exists but cannot be listed.
    #[error("CDI directory {}: cannot list it: {source}", path.display())]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file cannot be read.
    #[error("CDI spec {}: cannot read it: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is over `MAX_SPEC_BYTES`.
    #[error("CDI spec {}: {size} bytes or more, over the limit of {limit}", path.display())]
    TooLarge {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    /// A directory holds more than `MAX_SPECS_PER_DIR` spec files.
    #[error("CDI directory {}: more than {limit} spec files; {} and later ignored", path.display(), first_ignored.display())]
    TooMany {
        path: PathBuf,
        first_ignored: PathBuf,
        limit: usize,
    },
    /// JSON/YAML that does not fit the CDI schema.
    #[error("CDI spec {}: field {field}: {reason}", path.display())]
    Parse {
        path: PathBuf,
        field: String,
        reason: String,
    },
    /// A value the CDI spec does not allow.
    #[error("CDI spec {}: field {field} = {value:?}: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        field: String,
        value: String,
        reason: String,
    },
    /// Another file of the same directory already defines this device.
    #[error("CDI spec {}: device {name:?} is already defined by {} (same directory, same priority); this one is ignored", path.display(), other.display())]
    Conflict {
        path: PathBuf,
        name: String,
        other: PathBuf,
    },
}

/// Why qualified names could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Not of the form `vendor/class=name`, or with characters CDI does not allow.
    #[error("CDI device name {name:?}: {reason}")]
    BadName { name: String, reason: String },
    /// No loaded spec defines it.
    #[error("CDI device {name:?} is not defined by any spec in {dirs}")]
    Unknown { name: String, dirs: String },
}

/// A hook as the spec gives it; `runtime::hooks` runs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hook {
    pub hook_name: String,
    pub path: PathBuf,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub timeout: Option<i64>,
}

/// A device node of a spec. `None` fields are for the host to fill in (stat of `host_path`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdiDeviceNode {
    /// Path in the container (absolute).
    pub path: String,
    /// Host node (`path` when the spec has no `hostPath`).
    pub host_path: PathBuf,
    /// `b`, `c`, `u` (unbuffered char) or `p` (FIFO), when given.
    pub kind: Option<String>,
    pub major: Option<i64>,
    pub minor: Option<i64>,
    pub file_mode: Option<u32>,
    /// cgroup access (`rwm` when not given).
    pub permissions: Option<String>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// `vendor/class=name (file)` or `vendor/class (file)` for top-level edits: for errors.
    pub origin: String,
}

/// A mount of a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CdiMount {
    pub host_path: PathBuf,
    pub container_path: String,
    pub options: Vec<String>,
    pub kind: Option<String>,
    pub origin: String,
}

/// The edits of a set of CDI devices: the devices' own in the order the names were given,
/// then the top-level ones of each spec used (once per spec).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CdiEdits {
    /// `KEY=VALUE`, in order; a later entry for a key overrides an earlier one.
    pub env: Vec<String>,
    pub device_nodes: Vec<CdiDeviceNode>,
    pub mounts: Vec<CdiMount>,
    pub hooks: Vec<Hook>,
    pub additional_gids: Vec<u32>,
}

// ---- the file format (serde) ----

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSpec {
    cdi_version: String,
    kind: String,
    /// Checked for type and version only; tidelet has no use for spec annotations.
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    devices: Vec<RawDevice>,
    #[serde(default)]
    container_edits: RawEdits,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDevice {
    name: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    container_edits: RawEdits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEdits {
    #[serde(default)]
    env: Vec<String>,
    #[serde(default)]
    device_nodes: Vec<RawNode>,
    #[serde(default)]
    mounts: Vec<RawMount>,
    #[serde(default)]
    hooks: Vec<Hook>,
    #[serde(default)]
    additional_gids: Vec<u32>,
    /// Only noticed (version check, a warning): tidelet does not apply these.
    #[serde(default)]
    intel_rdt: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    net_devices: Option<serde::de::IgnoredAny>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawNode {
    path: String,
    #[serde(default)]
    host_path: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    major: Option<i64>,
    #[serde(default)]
    minor: Option<i64>,
    #[serde(default)]
    file_mode: Option<u32>,
    #[serde(default)]
    permissions: Option<String>,
    #[serde(default)]
    uid: Option<u32>,
    #[serde(default)]
    gid: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawMount {
    host_path: String,
    container_path: String,
    #[serde(default)]
    options: Vec<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

/// One loaded, valid spec file.
#[derive(Debug)]
struct Loaded {
    path: PathBuf,
    kind: String,
    raw: RawSpec,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    spec: usize,
    device: usize,
    priority: usize,
}

/// The devices of all valid specs found in the directories.
#[derive(Debug, Default)]
pub struct Registry {
    dirs: Vec<PathBuf>,
    specs: Vec<Loaded>,
    devices: BTreeMap<String, Entry>,
}

impl Registry {
    /// Read every `*.json` and `*.yaml` (`*.yml`) file of `dirs` (a missing directory is
    /// fine), lowest priority first. Invalid files are skipped; their errors are returned.
    pub fn load(dirs: &[PathBuf]) -> (Registry, Vec<SpecError>) {
        let mut reg = Registry {
            dirs: dirs.to_vec(),
            ..Registry::default()
        };
        let mut errors = Vec::new();
        for (priority, dir) in dirs.iter().enumerate() {
            for path in spec_files(dir, &mut errors) {
                match read_spec(&path) {
                    Ok(raw) => reg.add(path, raw, priority, &mut errors),
                    Err(e) => {
                        tracing::warn!(error = %e, "CDI spec skipped");
                        errors.push(e);
                    }
                }
            }
        }
        (reg, errors)
    }

    fn add(&mut self, path: PathBuf, raw: RawSpec, priority: usize, errors: &mut Vec<SpecError>) {
        let idx = self.specs.len();
        for (d, dev) in raw.devices.iter().enumerate() {
            let name = format!("{}={}", raw.kind, dev.name);
            match self.devices.get(&name) {
                Some(old) if old.priority == priority => {
                    let e = SpecError::Conflict {
                        path: path.clone(),
                        name,
                        other: self.specs[old.spec].path.clone(),
                    };
                    tracing::warn!(error = %e, "CDI device ignored");
                    errors.push(e);
                    continue;
                }
                Some(old) => tracing::debug!(
                    device = %name,
                    file = %path.display(),
                    overrides = %self.specs[old.spec].path.display(),
                    "CDI device from a higher-priority directory"
                ),
                None => {}
            }
            let entry = Entry {
                spec: idx,
                device: d,
                priority,
            };
            self.devices.insert(name, entry);
        }
        let unapplied = std::iter::once(&raw.container_edits)
            .chain(raw.devices.iter().map(|d| &d.container_edits))
            .any(|e| e.intel_rdt.is_some() || e.net_devices.is_some());
        if unapplied {
            tracing::warn!(
                file = %path.display(),
                "CDI spec has intelRdt or netDevices edits, which tidelet does not apply"
            );
        }
        self.specs.push(Loaded {
            kind: raw.kind.clone(),
            path,
            raw,
        });
    }

    /// Fully qualified names of every device known, sorted.
    pub fn device_names(&self) -> Vec<String> {
        self.devices.keys().cloned().collect()
    }

    /// The spec file that defines `qualified_name`, if any.
    pub fn spec_file(&self, qualified_name: &str) -> Option<&Path> {
        let e = self.devices.get(qualified_name)?;
        Some(&self.specs[e.spec].path)
    }

    /// The edits for these devices (`vendor.com/class=name`): each device's own, in the order
    /// given (a repeated name counts once), then the top-level edits of each spec used, once,
    /// as the CDI cache applies them (so a spec's top-level env wins over its devices').
    pub fn resolve(&self, qualified_names: &[String]) -> Result<CdiEdits, ResolveError> {
        let mut out = CdiEdits::default();
        let mut specs_used: Vec<usize> = Vec::new();
        let mut seen = BTreeSet::new();
        for name in qualified_names {
            parse_qualified(name).map_err(|reason| ResolveError::BadName {
                name: name.clone(),
                reason,
            })?;
            if !seen.insert(name.as_str()) {
                continue;
            }
            let e = self
                .devices
                .get(name)
                .ok_or_else(|| ResolveError::Unknown {
                    name: name.clone(),
                    dirs: self
                        .dirs
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                })?;
            let spec = &self.specs[e.spec];
            let dev = &spec.raw.devices[e.device];
            let origin = format!("{name} ({})", spec.path.display());
            append(&mut out, &dev.container_edits, &origin);
            if !specs_used.contains(&e.spec) {
                specs_used.push(e.spec);
            }
        }
        for i in specs_used {
            let spec = &self.specs[i];
            let origin = format!("{} ({})", spec.kind, spec.path.display());
            append(&mut out, &spec.raw.container_edits, &origin);
        }
        Ok(out)
    }
}

fn append(out: &mut CdiEdits, e: &RawEdits, origin: &str) {
    out.env.extend(e.env.iter().cloned());
    out.device_nodes
        .extend(e.device_nodes.iter().map(|n| CdiDeviceNode {
            path: n.path.clone(),
            host_path: PathBuf::from(n.host_path.as_deref().unwrap_or(&n.path)),
            kind: n.kind.clone().filter(|k| !k.is_empty()),
            major: n.major,
            minor: n.minor,
            file_mode: n.file_mode,
            permissions: n.permissions.clone().filter(|p| !p.is_empty()),
            uid: n.uid,
            gid: n.gid,
            origin: origin.to_string(),
        }));
    out.mounts.extend(e.mounts.iter().map(|m| CdiMount {
        host_path: PathBuf::from(&m.host_path),
        container_path: m.container_path.clone(),
        options: m.options.clone(),
        kind: m.kind.clone().filter(|k| !k.is_empty()),
        origin: origin.to_string(),
    }));
    out.hooks.extend(e.hooks.iter().cloned());
    out.additional_gids
        .extend(e.additional_gids.iter().copied());
}

/// The spec files of `dir`, sorted by name, at most `MAX_SPECS_PER_DIR`.
fn spec_files(dir: &Path, errors: &mut Vec<SpecError>) -> Vec<PathBuf> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(source) => {
            errors.push(SpecError::ReadDir {
                path: dir.to_path_buf(),
                source,
            });
            return Vec::new();
        }
    };
    let mut files: Vec<PathBuf> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|x| x.to_str()),
                Some("json" | "yaml" | "yml")
            ) && p.is_file()
        })
        .collect();
    files.sort();
    if files.len() > MAX_SPECS_PER_DIR {
        errors.push(SpecError::TooMany {
            path: dir.to_path_buf(),
            first_ignored: files[MAX_SPECS_PER_DIR].clone(),
            limit: MAX_SPECS_PER_DIR,
        });
        files.truncate(MAX_SPECS_PER_DIR);
    }
    files
}

/// Read (bounded), parse and validate one spec file.
fn read_spec(path: &Path) -> Result<RawSpec, SpecError> {
    let read_err = |source| SpecError::Read {
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::File::open(path).map_err(read_err)?;
    let mut bytes = Vec::new();
    f.take(MAX_SPEC_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_err)?;
    if bytes.len() as u64 > MAX_SPEC_BYTES {
        return Err(SpecError::TooLarge {
            path: path.to_path_buf(),
            size: bytes.len() as u64,
            limit: MAX_SPEC_BYTES,
        });
    }
    let json = path.extension().and_then(|x| x.to_str()) == Some("json");
    let raw = parse_spec(&bytes, json).map_err(|(field, reason)| SpecError::Parse {
        path: path.to_path_buf(),
        field,
        reason,
    })?;
    validate(&raw).map_err(|(field, value, reason)| SpecError::Invalid {
        path: path.to_path_buf(),
        field,
        value,
        reason,
    })?;
    Ok(raw)
}

/// Parse JSON or YAML; on error the field path and the reason.
fn parse_spec(bytes: &[u8], json: bool) -> Result<RawSpec, (String, String)> {
    if json {
        let de = &mut serde_json::Deserializer::from_slice(bytes);
        serde_path_to_error::deserialize(de).map_err(|e| {
            let field = e.path().to_string();
            (field, e.into_inner().to_string())
        })
    } else {
        // As kubelet's CDI library reads YAML (sigs.k8s.io/yaml); the field is in the reason.
        let text =
            std::str::from_utf8(bytes).map_err(|e| (String::new(), format!("not UTF-8: {e}")))?;
        crate::yaml::from_str(text).map_err(|e| (String::new(), e))
    }
}

type Invalid = (String, String, String);

fn invalid(field: impl Into<String>, value: &str, reason: impl Into<String>) -> Invalid {
    (field.into(), value.to_string(), reason.into())
}

/// Check what the CDI spec requires beyond the shape. Pure.
fn validate(s: &RawSpec) -> Result<(), Invalid> {
    let version = s.cdi_version.strip_prefix('v').unwrap_or(&s.cdi_version);
    let Some(have) = KNOWN_VERSIONS.iter().position(|v| *v == version) else {
        return Err(invalid(
            "cdiVersion",
            &s.cdi_version,
            format!("unknown version (known: {})", KNOWN_VERSIONS.join(", ")),
        ));
    };
    let (need, feature) = required_version(s);
    if need > have {
        return Err(invalid(
            "cdiVersion",
            &s.cdi_version,
            format!("{feature} needs version {} or later", KNOWN_VERSIONS[need]),
        ));
    }
    validate_kind(&s.kind).map_err(|r| invalid("kind", &s.kind, r))?;
    if s.devices.is_empty() {
        return Err(invalid(
            "devices",
            "[]",
            "a spec must define at least one device",
        ));
    }
    let mut names = BTreeSet::new();
    for (i, d) in s.devices.iter().enumerate() {
        let field = format!("devices[{i}].name");
        validate_device_name(&d.name).map_err(|r| invalid(&field, &d.name, r))?;
        if !names.insert(d.name.as_str()) {
            return Err(invalid(
                field,
                &d.name,
                "duplicate device name in this spec",
            ));
        }
        validate_edits(&d.container_edits, &format!("devices[{i}].containerEdits"))?;
    }
    validate_edits(&s.container_edits, "containerEdits")
}

/// The lowest version (index in `KNOWN_VERSIONS`) whose schema has every field the spec
/// uses, and the field that needs it, as the CDI library checks it. Pure.
fn required_version(s: &RawSpec) -> (usize, &'static str) {
    let idx = |v: &str| KNOWN_VERSIONS.iter().position(|k| *k == v).unwrap_or(0);
    let edits: Vec<&RawEdits> = std::iter::once(&s.container_edits)
        .chain(s.devices.iter().map(|d| &d.container_edits))
        .collect();
    let any = |f: &dyn Fn(&RawEdits) -> bool| edits.iter().any(|e| f(e));
    let checks: [(&str, &'static str, bool); 7] = [
        ("1.0.0", "netDevices", any(&|e| e.net_devices.is_some())),
        ("0.7.0", "intelRdt", any(&|e| e.intel_rdt.is_some())),
        (
            "0.7.0",
            "additionalGids",
            any(&|e| !e.additional_gids.is_empty()),
        ),
        (
            "0.6.0",
            "annotations",
            !s.annotations.is_empty() || s.devices.iter().any(|d| !d.annotations.is_empty()),
        ),
        (
            "0.6.0",
            "a '.' in the kind's class",
            s.kind.split_once('/').is_some_and(|(_, c)| c.contains('.')),
        ),
        (
            "0.5.0",
            "deviceNodes hostPath or a device name not starting with a letter",
            any(&|e| e.device_nodes.iter().any(|n| n.host_path.is_some()))
                || s.devices
                    .iter()
                    .any(|d| !d.name.starts_with(|c: char| c.is_ascii_alphabetic())),
        ),
        (
            "0.4.0",
            "mounts type",
            any(&|e| e.mounts.iter().any(|m| m.kind.is_some())),
        ),
    ];
    checks
        .iter()
        .find(|(_, _, used)| *used)
        .map(|(v, f, _)| (idx(v), *f))
        .unwrap_or((0, ""))
}

fn validate_edits(e: &RawEdits, at: &str) -> Result<(), Invalid> {
    for (i, v) in e.env.iter().enumerate() {
        validate_env(v).map_err(|r| invalid(format!("{at}.env[{i}]"), v, r))?;
    }
    for (i, n) in e.device_nodes.iter().enumerate() {
        let f = format!("{at}.deviceNodes[{i}]");
        absolute(&n.path).map_err(|r| invalid(format!("{f}.path"), &n.path, r))?;
        if let Some(h) = &n.host_path {
            if !h.is_empty() {
                absolute(h).map_err(|r| invalid(format!("{f}.hostPath"), h, r))?;
            }
        }
        if let Some(k) = &n.kind {
            if !matches!(k.as_str(), "" | "b" | "c" | "u" | "p") {
                return Err(invalid(format!("{f}.type"), k, "must be b, c, u or p"));
            }
        }
        for (name, v) in [("major", n.major), ("minor", n.minor)] {
            if let Some(v) = v {
                if !(0..=u32::MAX as i64).contains(&v) {
                    let value = v.to_string();
                    return Err(invalid(format!("{f}.{name}"), &value, "out of range"));
                }
            }
        }
        if let Some(p) = &n.permissions {
            if !p.is_empty() && !p.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
                return Err(invalid(
                    format!("{f}.permissions"),
                    p,
                    "only r, w and m are allowed",
                ));
            }
        }
    }
    for (i, m) in e.mounts.iter().enumerate() {
        let f = format!("{at}.mounts[{i}]");
        absolute(&m.host_path).map_err(|r| invalid(format!("{f}.hostPath"), &m.host_path, r))?;
        absolute(&m.container_path)
            .map_err(|r| invalid(format!("{f}.containerPath"), &m.container_path, r))?;
    }
    for (i, h) in e.hooks.iter().enumerate() {
        let f = format!("{at}.hooks[{i}]");
        // The OCI runtime spec's stages, plus `prestart` (deprecated there, still written by
        // older generators): the ones the runtime runs.
        if Stage::parse(&h.hook_name).is_none() {
            let names: Vec<&str> = Stage::ALL.iter().map(|s| s.name()).collect();
            return Err(invalid(
                format!("{f}.hookName"),
                &h.hook_name,
                format!("unknown hook (one of {})", names.join(", ")),
            ));
        }
        let p = h.path.to_string_lossy();
        absolute(&p).map_err(|r| invalid(format!("{f}.path"), &p, r))?;
        for (j, v) in h.env.iter().enumerate() {
            validate_env(v).map_err(|r| invalid(format!("{f}.env[{j}]"), v, r))?;
        }
        if let Some(t) = h.timeout {
            if t <= 0 {
                let value = t.to_string();
                return Err(invalid(format!("{f}.timeout"), &value, "must be > 0"));
            }
        }
    }
    Ok(())
}

fn absolute(p: &str) -> Result<(), &'static str> {
    match p {
        "" => Err("empty path"),
        p if !p.starts_with('/') => Err("not an absolute path"),
        _ => Ok(()),
    }
}

fn validate_env(v: &str) -> Result<(), &'static str> {
    match v.split_once('=') {
        None => Err("not of the form KEY=VALUE"),
        Some(("", _)) => Err("empty variable name"),
        Some(_) => Ok(()),
    }
}

/// `vendor/class`: vendor and class start with a letter, end with a letter or digit, and
/// hold letters, digits, `-`, `_` and `.` between.
pub fn validate_kind(kind: &str) -> Result<(), String> {
    let (vendor, class) = kind
        .split_once('/')
        .ok_or_else(|| "not of the form vendor/class".to_string())?;
    vendor_or_class(vendor).map_err(|r| format!("vendor {vendor:?}: {r}"))?;
    vendor_or_class(class).map_err(|r| format!("class {class:?}: {r}"))
}

fn vendor_or_class(s: &str) -> Result<(), &'static str> {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (None, _) | (_, None) => Err("empty"),
        (Some(f), _) if !f.is_ascii_alphabetic() => Err("must start with a letter"),
        (_, Some(l)) if !l.is_ascii_alphanumeric() => Err("must end with a letter or digit"),
        _ if !b
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')) =>
        {
            Err("only letters, digits, '-', '_' and '.' are allowed")
        }
        _ => Ok(()),
    }
}

/// A device name: starts and ends with a letter or digit; letters, digits, `-`, `_`, `.`
/// and `:` between.
pub fn validate_device_name(s: &str) -> Result<(), &'static str> {
    let b = s.as_bytes();
    match (b.first(), b.last()) {
        (None, _) | (_, None) => Err("empty"),
        (Some(f), Some(l)) if !f.is_ascii_alphanumeric() || !l.is_ascii_alphanumeric() => {
            Err("must start and end with a letter or digit")
        }
        _ if !b
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.' | b':')) =>
        {
            Err("only letters, digits, '-', '_', '.' and ':' are allowed")
        }
        _ => Ok(()),
    }
}

/// Split `vendor/class=name` into its kind and name, checking each part.
pub fn parse_qualified(name: &str) -> Result<(&str, &str), String> {
    let (kind, dev) = name
        .split_once('=')
        .ok_or_else(|| "not a qualified name (vendor/class=name)".to_string())?;
    validate_kind(kind)?;
    validate_device_name(dev).map_err(|r| format!("device name {dev:?}: {r}"))?;
    Ok((kind, dev))
}

#[cfg(test)]
#[path = "cdi_tests.rs"]
mod tests;
