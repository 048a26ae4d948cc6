//! The agent's configuration: a KubeletConfiguration-style YAML file (same key names where
//! kubelet has one) overridden by command-line flags.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::quantity;

pub const DEFAULT_ROOT_DIR: &str = "/var/lib/tidelet";
pub const DEFAULT_STATIC_POD_PATH: &str = "/etc/tidelet/manifests";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub root_dir: PathBuf,
    pub static_pod_path: PathBuf,
    /// Lower-cased; the static-pod name suffix.
    pub node_name: String,
    /// Parent of `kubepods` in every cgroup hierarchy, e.g. `/` or `/tidelet-test`. Under
    /// systemd on cgroup v2 the agent resolves it at start relative to the service's
    /// delegated cgroup or its slice (`cgroups::delegation::place`), e.g.
    /// `/tidelet.slice/tidelet.service` (systemd 254+) or `/tidelet.slice` (252).
    pub cgroup_root: String,
    /// Where cgroup file systems are mounted (`/sys/fs/cgroup`).
    pub cgroup_mount: PathBuf,
    pub mountinfo: PathBuf,
    /// Full rescan of the static-pod directory (kubelet's `fileCheckFrequency`).
    pub file_check_frequency: Duration,
    pub container_log_max_size: u64,
    pub container_log_max_files: u32,
    pub pod_pids_limit: Option<i64>,
    /// The node's IP in pod status (`status.hostIP`); detected when unset.
    pub node_ip: Option<String>,
    /// Copied into pods as `/etc/resolv.conf` (kubelet's `resolvConf`).
    pub resolv_conf: PathBuf,
    /// Image GC runs when the image file system is used at or above this percentage
    /// (kubelet's `imageGCHighThresholdPercent`; 100 disables it).
    pub image_gc_high_threshold_percent: u8,
    /// ... and frees space down to this one (`imageGCLowThresholdPercent`).
    pub image_gc_low_threshold_percent: u8,
    /// No image younger than this is collected (`imageMinimumGCAge`).
    pub image_minimum_gc_age: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root_dir: PathBuf::from(DEFAULT_ROOT_DIR),
            static_pod_path: PathBuf::from(DEFAULT_STATIC_POD_PATH),
            node_name: default_node_name(),
            cgroup_root: "/".into(),
            cgroup_mount: PathBuf::from("/sys/fs/cgroup"),
            mountinfo: PathBuf::from("/proc/self/mountinfo"),
            file_check_frequency: Duration::from_secs(20),
            container_log_max_size: 10 << 20,
            container_log_max_files: 5,
            pod_pids_limit: None,
            node_ip: None,
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            image_gc_high_threshold_percent: 85,
            image_gc_low_threshold_percent: 80,
            image_minimum_gc_age: Duration::from_secs(120),
        }
    }
}

fn default_node_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
        .to_lowercase()
}

/// The config file's keys (KubeletConfiguration names where kubelet has them).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct FileConfig {
    api_version: Option<String>,
    kind: Option<String>,
    static_pod_path: Option<PathBuf>,
    root_dir: Option<PathBuf>,
    /// kubelet's `--hostname-override`.
    hostname_override: Option<String>,
    cgroup_root: Option<String>,
    file_check_frequency: Option<String>,
    container_log_max_size: Option<String>,
    container_log_max_files: Option<u32>,
    pod_pids_limit: Option<i64>,
    /// kubelet's `--node-ip`.
    node_ip: Option<String>,
    resolv_conf: Option<PathBuf>,
    #[serde(rename = "imageGCHighThresholdPercent")]
    image_gc_high_threshold_percent: Option<i64>,
    #[serde(rename = "imageGCLowThresholdPercent")]
    image_gc_low_threshold_percent: Option<i64>,
    #[serde(rename = "imageMinimumGCAge")]
    image_minimum_gc_age: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{path}: {field}: {reason}")]
    Field {
        path: PathBuf,
        field: &'static str,
        reason: String,
    },
}

/// Parse a Go-style duration as KubeletConfiguration writes them (`20s`, `1m30s`, `500ms`).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[u..];
        total += Duration::try_from_secs_f64(value * unit).ok()?;
    }
    Some(total)
}

impl Config {
    /// Apply a config file on top of `self`.
    pub fn merge_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let f: FileConfig = serde_yaml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.into(),
            message: e.to_string(),
        })?;
        let field = |field, reason: String| ConfigError::Field {
            path: path.into(),
            field,
            reason,
        };
        if let Some(kind) = &f.kind {
            if kind != "KubeletConfiguration" && kind != "TideletConfiguration" {
                return Err(field(
                    "kind",
                    format!("{kind:?} is not KubeletConfiguration"),
                ));
            }
        }
        let _ = f.api_version;
        if let Some(v) = f.static_pod_path {
            self.static_pod_path = v;
        }
        if let Some(v) = f.root_dir {
            self.root_dir = v;
        }
        if let Some(v) = f.hostname_override {
            self.node_name = v.to_lowercase();
        }
        if let Some(v) = f.cgroup_root {
            self.cgroup_root = v;
        }
        if let Some(v) = f.file_check_frequency {
            self.file_check_frequency =
                parse_duration(&v).filter(|d| !d.is_zero()).ok_or_else(|| {
                    field(
                        "fileCheckFrequency",
                        format!("{v:?} is not a duration like 20s"),
                    )
                })?;
        }
        if let Some(v) = f.container_log_max_size {
            let n = quantity::parse_units(&v)
                .map_err(|e| field("containerLogMaxSize", e.to_string()))?;
            if n < 4096 {
                return Err(field("containerLogMaxSize", format!("{v:?} is below 4Ki")));
            }
            self.container_log_max_size = n as u64;
        }
        if let Some(v) = f.container_log_max_files {
            if v < 2 {
                return Err(field("containerLogMaxFiles", "must be at least 2".into()));
            }
            self.container_log_max_files = v;
        }
        if let Some(v) = f.pod_pids_limit {
            self.pod_pids_limit = (v > 0).then_some(v);
        }
        if let Some(v) = f.node_ip {
            self.node_ip = Some(v);
        }
        if let Some(v) = f.resolv_conf {
            self.resolv_conf = v;
        }
        let percent = |key: &'static str, v: i64| {
            u8::try_from(v)
                .ok()
                .filter(|p| *p <= 100)
                .ok_or_else(|| field(key, format!("{v} is not a percentage in 0..=100")))
        };
        if let Some(v) = f.image_gc_high_threshold_percent {
            self.image_gc_high_threshold_percent = percent("imageGCHighThresholdPercent", v)?;
        }
        if let Some(v) = f.image_gc_low_threshold_percent {
            self.image_gc_low_threshold_percent = percent("imageGCLowThresholdPercent", v)?;
        }
        if self.image_gc_low_threshold_percent >= self.image_gc_high_threshold_percent {
            return Err(field(
                "imageGCLowThresholdPercent",
                format!(
                    "{} must be less than imageGCHighThresholdPercent ({})",
                    self.image_gc_low_threshold_percent, self.image_gc_high_threshold_percent
                ),
            ));
        }
        if let Some(v) = f.image_minimum_gc_age {
            self.image_minimum_gc_age = parse_duration(&v).ok_or_else(|| {
                field(
                    "imageMinimumGCAge",
                    format!("{v:?} is not a duration like 2m"),
                )
            })?;
        }
        Ok(())
    }

    /// The cgroup path (relative to each hierarchy's root) of `kubepods`.
    pub fn kubepods_cgroup(&self) -> String {
        let root = self.cgroup_root.trim_matches('/');
        if root.is_empty() {
            "kubepods".into()
        } else {
            format!("{root}/kubepods")
        }
    }

    pub fn pods_dir(&self) -> PathBuf {
        self.root_dir.join("pods")
    }
    pub fn logs_dir(&self) -> PathBuf {
        self.root_dir.join("logs")
    }
    pub fn images_dir(&self) -> PathBuf {
        self.root_dir.join("images")
    }
    pub fn socket_path(&self) -> PathBuf {
        api_socket(&self.root_dir)
    }
}

/// The agent's API socket under a root directory.
pub fn api_socket(root_dir: &Path) -> PathBuf {
    root_dir.join("tidelet.sock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        let cases = [
            ("20s", Some(20_000)),
            ("1m30s", Some(90_000)),
            ("500ms", Some(500)),
            ("1h", Some(3_600_000)),
            ("", None),
            ("5", None),
            ("3x", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_duration(s).map(|d| d.as_millis() as u64), want, "{s}");
        }
    }

    /// The default config the unit file and the Yocto recipe install.
    #[test]
    fn dist_config_parses_with_the_defaults() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../dist/tidelet.yaml");
        let mut c = Config::default();
        c.merge_file(&p).unwrap();
        let d = Config::default();
        assert_eq!(c.static_pod_path, d.static_pod_path);
        assert_eq!(c.root_dir, d.root_dir);
        assert_eq!(c.kubepods_cgroup(), "kubepods");
        assert_eq!(c.file_check_frequency, d.file_check_frequency);
        assert_eq!(c.container_log_max_size, d.container_log_max_size);
        assert_eq!(c.container_log_max_files, d.container_log_max_files);
        assert_eq!(c.image_gc_high_threshold_percent, 85);
        assert_eq!(c.image_gc_low_threshold_percent, 80);
        assert_eq!(c.image_minimum_gc_age, Duration::from_secs(120));
    }

    /// (file, Ok((high, low, min age secs)) or Err(text the error must hold))
    type GcKeysCase<'a> = (&'a str, Result<(u8, u8, u64), &'a str>);

    #[test]
    fn image_gc_keys_table() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        let cases: [GcKeysCase; 10] = [
            ("{}", Ok((85, 80, 120))),
            (
                "imageGCHighThresholdPercent: 90\nimageGCLowThresholdPercent: 50\nimageMinimumGCAge: 30s\n",
                Ok((90, 50, 30)),
            ),
            ("imageGCHighThresholdPercent: 100\n", Ok((100, 80, 120))),
            ("imageGCLowThresholdPercent: 0\nimageMinimumGCAge: 0s\n", Ok((85, 0, 0))),
            ("imageGCHighThresholdPercent: 101\n", Err("imageGCHighThresholdPercent: 101 is not a percentage")),
            ("imageGCLowThresholdPercent: -1\n", Err("imageGCLowThresholdPercent: -1 is not a percentage")),
            ("imageGCHighThresholdPercent: 80\n", Err("imageGCLowThresholdPercent: 80 must be less than imageGCHighThresholdPercent (80)")),
            ("imageGCHighThresholdPercent: 50\nimageGCLowThresholdPercent: 60\n", Err("imageGCLowThresholdPercent: 60 must be less")),
            ("imageMinimumGCAge: soon\n", Err("imageMinimumGCAge: \"soon\" is not a duration")),
            ("imageGCHighThresholdPercent: high\n", Err("imageGCHighThresholdPercent")),
        ];
        for (text, want) in cases {
            std::fs::write(&p, text).unwrap();
            let mut c = Config::default();
            let got = c.merge_file(&p).map(|()| {
                (
                    c.image_gc_high_threshold_percent,
                    c.image_gc_low_threshold_percent,
                    c.image_minimum_gc_age.as_secs(),
                )
            });
            match (got, want) {
                (Ok(g), Ok(w)) => assert_eq!(g, w, "{text}"),
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{text}: {e}"),
                (g, w) => panic!("{text}: got {g:?}, want {w:?}"),
            }
        }
    }

    #[test]
    fn file_overrides_defaults_and_rejects_bad_values() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, "kind: KubeletConfiguration\nstaticPodPath: /x\ncgroupRoot: /t\ncontainerLogMaxSize: 1Mi\nfileCheckFrequency: 5s\n").unwrap();
        let mut c = Config::default();
        c.merge_file(&p).unwrap();
        assert_eq!(c.static_pod_path, PathBuf::from("/x"));
        assert_eq!(c.kubepods_cgroup(), "t/kubepods");
        assert_eq!(c.container_log_max_size, 1 << 20);
        assert_eq!(c.file_check_frequency, Duration::from_secs(5));

        std::fs::write(&p, "containerLogMaxSize: lots\n").unwrap();
        let e = c.merge_file(&p).unwrap_err().to_string();
        assert!(e.contains("containerLogMaxSize"), "{e}");
        std::fs::write(&p, "staticPodPat: /x\n").unwrap();
        let e = c.merge_file(&p).unwrap_err().to_string();
        assert!(e.contains("staticPodPat"), "{e}");
    }
}
