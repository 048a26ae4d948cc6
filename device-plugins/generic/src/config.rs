//! The config file: groups of device-node globs, each advertised as one extended resource.
//!
//! ```yaml
//! groups:
//! - resource: tidelet.io/serial               # vendor-domain/name
//!   paths: ["/dev/ttyUSB*", "/dev/ttyACM*"]   # under /dev; wildcards in the last component
//!   share: 1                                  # containers that may hold one node at once
//!   permissions: rw                           # any of r, w, m (default rw)
//! ```
//!
//! Parsing and validation are pure (`parse(path, text)`); every error names the file, the
//! group index and field, the value and the reason.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::glob::Glob;

/// Largest config file read.
pub const MAX_FILE: u64 = 1 << 20;
/// Most groups, and most paths in a group.
pub const MAX_GROUPS: usize = 64;
pub const MAX_PATHS: usize = 64;
/// Largest share count.
pub const MAX_SHARE: u32 = 100;

/// A validated config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub groups: Vec<Group>,
}

/// One resource and the nodes it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    pub resource: String,
    pub paths: Vec<PathPattern>,
    pub share: u32,
    pub permissions: String,
}

/// `/dev/<dir>/<glob>`: `dir` relative to the dev root (empty for `/dev/x*`), the last
/// component a glob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathPattern {
    pub pattern: String,
    pub dir: PathBuf,
    pub name: Glob,
}

/// Why a config cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: larger than {MAX_FILE} bytes", path.display())]
    TooLarge { path: PathBuf },
    #[error("{}: {at}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        at: String,
        message: String,
    },
    #[error("{}: groups: {reason}", path.display())]
    Groups { path: PathBuf, reason: String },
    #[error("{}: groups[{index}].{field}: {value:?}: {reason}", path.display())]
    Invalid {
        path: PathBuf,
        index: usize,
        field: String,
        value: String,
        reason: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    groups: Vec<RawGroup>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGroup {
    resource: String,
    paths: Vec<String>,
    #[serde(default)]
    share: Option<i64>,
    #[serde(default)]
    permissions: Option<String>,
}

/// Reads and validates the config at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut text = String::new();
    file.take(MAX_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if text.len() as u64 > MAX_FILE {
        return Err(ConfigError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    parse(path, &text)
}

/// Parses and validates config `text`; `path` is only for the messages.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
    let de = serde_yaml::Deserializer::from_str(text);
    let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let at = e.path().to_string();
        let inner = e.into_inner();
        let mut message = inner.to_string();
        // serde_yaml already starts its message with the path it knows; we give ours.
        if let Some((head, tail)) = message.split_once(": ") {
            if !head.contains(' ') && (head.starts_with("groups") || head == ".") {
                message = tail.to_string();
            }
        }
        if let Some(loc) = inner.location() {
            if !message.contains("line ") {
                message = format!("{message} (line {}, column {})", loc.line(), loc.column());
            }
        }
        ConfigError::Syntax {
            path: path.to_path_buf(),
            at: if at == "." { "file".into() } else { at },
            message,
        }
    })?;
    if raw.groups.is_empty() {
        return Err(ConfigError::Groups {
            path: path.to_path_buf(),
            reason: "no groups: nothing to advertise".into(),
        });
    }
    if raw.groups.len() > MAX_GROUPS {
        return Err(ConfigError::Groups {
            path: path.to_path_buf(),
            reason: format!("{} groups, at most {MAX_GROUPS}", raw.groups.len()),
        });
    }
    let mut groups: Vec<Group> = Vec::with_capacity(raw.groups.len());
    for (index, g) in raw.groups.into_iter().enumerate() {
        let invalid = |field: &str, value: &str, reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            index,
            field: field.to_string(),
            value: value.to_string(),
            reason,
        };
        tidelet_device_plugin::validate_resource_name(&g.resource)
            .map_err(|e| invalid("resource", &g.resource, e.to_string()))?;
        if let Some(other) = groups.iter().position(|o| o.resource == g.resource) {
            return Err(invalid(
                "resource",
                &g.resource,
                format!("already used by groups[{other}]"),
            ));
        }
        if g.paths.is_empty() {
            return Err(invalid("paths", "[]", "at least one path is needed".into()));
        }
        if g.paths.len() > MAX_PATHS {
            return Err(invalid(
                "paths",
                &format!("{} paths", g.paths.len()),
                format!("at most {MAX_PATHS}"),
            ));
        }
        let mut paths = Vec::with_capacity(g.paths.len());
        for (i, p) in g.paths.iter().enumerate() {
            paths.push(parse_path(p).map_err(|reason| invalid(&format!("paths[{i}]"), p, reason))?);
        }
        let share = match g.share {
            None => 1,
            Some(n) if (1..=i64::from(MAX_SHARE)).contains(&n) => n as u32,
            Some(n) => {
                return Err(invalid(
                    "share",
                    &n.to_string(),
                    format!("must be from 1 to {MAX_SHARE}"),
                ))
            }
        };
        let permissions = g.permissions.unwrap_or_else(|| "rw".into());
        check_permissions(&permissions)
            .map_err(|reason| invalid("permissions", &permissions, reason))?;
        groups.push(Group {
            resource: g.resource,
            paths,
            share,
            permissions,
        });
    }
    Ok(Config { groups })
}

/// `/dev/...` with no `.`/`..`/empty components and wildcards only in the last one.
fn parse_path(p: &str) -> Result<PathPattern, String> {
    let rest = p
        .strip_prefix("/dev/")
        .ok_or_else(|| "must be under /dev/ (it is matched under --dev-root)".to_string())?;
    let parts: Vec<&str> = rest.split('/').collect();
    let (last, dirs) = parts.split_last().ok_or("no file name")?;
    for c in dirs {
        if c.is_empty() || *c == "." || *c == ".." {
            return Err(format!("directory component {c:?} is not allowed"));
        }
        if c.contains(['*', '?', '[']) {
            return Err(format!(
                "wildcards are allowed only in the last component, not in {c:?}"
            ));
        }
    }
    if *last == "." || *last == ".." {
        return Err(format!("file name {last:?} is not allowed"));
    }
    let name = Glob::parse(last).map_err(|e| format!("bad pattern {last:?}: {e}"))?;
    Ok(PathPattern {
        pattern: p.to_string(),
        dir: dirs.iter().collect(),
        name,
    })
}

fn check_permissions(p: &str) -> Result<(), String> {
    if p.is_empty() {
        return Err("must be one or more of r, w, m".into());
    }
    for (i, c) in p.char_indices() {
        if !matches!(c, 'r' | 'w' | 'm') {
            return Err(format!("{c:?} is not one of r, w, m"));
        }
        if p[..i].contains(c) {
            return Err(format!("{c:?} given twice"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
groups:
- resource: tidelet.io/serial
  paths: ["/dev/ttyUSB*", "/dev/ttyACM*"]
  share: 1
  permissions: rw
- resource: tidelet.io/video
  paths: ["/dev/video*"]
- resource: tidelet.io/by-id
  paths: ["/dev/serial/by-id/usb-*"]
  share: 4
  permissions: rwm
"#;

    #[test]
    fn a_good_config_parses_with_defaults() {
        let c = parse(Path::new("c.yaml"), GOOD).unwrap();
        let g: Vec<(&str, usize, u32, &str)> = c
            .groups
            .iter()
            .map(|g| {
                (
                    g.resource.as_str(),
                    g.paths.len(),
                    g.share,
                    g.permissions.as_str(),
                )
            })
            .collect();
        assert_eq!(
            g,
            vec![
                ("tidelet.io/serial", 2, 1, "rw"),
                ("tidelet.io/video", 1, 1, "rw"),
                ("tidelet.io/by-id", 1, 4, "rwm"),
            ]
        );
        assert_eq!(c.groups[0].paths[0].dir, PathBuf::new());
        assert_eq!(c.groups[2].paths[0].dir, PathBuf::from("serial/by-id"));
        assert!(c.groups[2].paths[0].name.matches("usb-FTDI_x-if00"));
    }

    #[test]
    fn bad_configs_name_the_group_field_and_reason() {
        let g = |body: &str| {
            format!("groups:\n- resource: tidelet.io/ok\n  paths: [\"/dev/ok*\"]\n{body}")
        };
        // (config, words the message must hold)
        let cases: Vec<(String, &[&str])> = vec![
            ("".into(), &["c.yaml", "file"]),
            ("groups: []".into(), &["c.yaml: groups: no groups"]),
            (
                "groups:\n- resource: x\n  paths: [\"/dev/a\"]\n".into(),
                &["groups[0].resource", "\"x\"", "vendor-domain/name"],
            ),
            (
                g("- resource: tidelet.io/ok\n  paths: [\"/dev/b\"]\n"),
                &["groups[1].resource", "already used by groups[0]"],
            ),
            (
                g("- resource: tidelet.io/b\n  paths: []\n"),
                &["groups[1].paths", "at least one"],
            ),
            (
                g("- resource: tidelet.io/b\n  paths: [\"/sys/x\"]\n"),
                &["groups[1].paths[0]", "\"/sys/x\"", "under /dev/"],
            ),
            (
                g("- resource: tidelet.io/b\n  paths: [\"/dev/../etc/x\"]\n"),
                &["groups[1].paths[0]", "\"..\""],
            ),
            (
                g("- resource: tidelet.io/b\n  paths: [\"/dev/a*/x\"]\n"),
                &["groups[1].paths[0]", "only in the last component"],
            ),
            (
                g("- resource: tidelet.io/b\n  paths: [\"/dev/tty[0-\"]\n"),
                &["groups[1].paths[0]", "closing"],
            ),
            (
                g("- resource: tidelet.io/b\n  paths: [\"/dev/\"]\n"),
                &["groups[1].paths[0]", "empty pattern"],
            ),
            (
                g("- resource: tidelet.io/b\n  paths: [\"/dev/x\"]\n  share: 0\n"),
                &["groups[1].share", "\"0\"", "from 1 to 100"],
            ),
            (
                g("- resource: tidelet.io/b\n  paths: [\"/dev/x\"]\n  share: 1000\n"),
                &["groups[1].share", "1000"],
            ),
            (
                g("- resource: tidelet.io/b\n  paths: [\"/dev/x\"]\n  share: two\n"),
                &["groups[1].share", "invalid type"],
            ),
            (
                g("- resource: tidelet.io/b\n  paths: [\"/dev/x\"]\n  permissions: rx\n"),
                &["groups[1].permissions", "'x'"],
            ),
            (
                g("- resource: tidelet.io/b\n  paths: [\"/dev/x\"]\n  permissions: rr\n"),
                &["groups[1].permissions", "twice"],
            ),
            (
                g("- resource: tidelet.io/b\n  paths: [\"/dev/x\"]\n  permissions: \"\"\n"),
                &["groups[1].permissions", "one or more"],
            ),
            (
                g("- resource: tidelet.io/b\n  paths: [\"/dev/x\"]\n  sharing: 2\n"),
                &["groups[1]", "unknown field `sharing`"],
            ),
            (
                g("- paths: [\"/dev/x\"]\n"),
                &["groups[1]", "missing field `resource`"],
            ),
            ("groups: {a: 1}".into(), &["groups", "invalid type"]),
        ];
        for (text, words) in &cases {
            let e = parse(Path::new("c.yaml"), text)
                .expect_err(text)
                .to_string();
            assert!(e.starts_with("c.yaml: "), "{e}");
            for w in *words {
                assert!(e.contains(w), "{text:?}: {e:?} lacks {w:?}");
            }
        }
    }

    #[test]
    fn load_reads_the_file_and_names_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("generic.yaml");
        std::fs::write(&p, GOOD).unwrap();
        assert_eq!(load(&p).unwrap().groups.len(), 3);
        let missing = dir.path().join("missing.yaml");
        let e = load(&missing).unwrap_err().to_string();
        assert!(e.contains("missing.yaml: cannot read"), "{e}");
    }
}
