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
    /// kubelet's `cpuManagerPolicy` (`none` | `static`).
    pub cpu_manager_policy: crate::cpumanager::Policy,
    /// kubelet's `reservedSystemCPUs`: never given exclusively (checked against the machine
    /// when the CPU manager starts).
    pub reserved_system_cpus: Option<crate::cpumanager::CpuSet>,
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
            cpu_manager_policy: crate::cpumanager::Policy::None,
            reserved_system_cpus: None,
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
    cpu_manager_policy: Option<String>,
    #[serde(rename = "reservedSystemCPUs")]
    reserved_system_cpus: Option<String>,
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
        if let Some(v) = f.cpu_manager_policy {
            self.cpu_manager_policy = crate::cpumanager::Policy::parse(&v).ok_or_else(|| {
                field(
                    "cpuManagerPolicy",
                    format!("{v:?} is not a CPU manager policy (none or static)"),
                )
            })?;
        }
        if let Some(v) = f.reserved_system_cpus {
            let set = crate::cpumanager::CpuSet::parse(&v)
                .map_err(|e| field("reservedSystemCPUs", e.to_string()))?;
            self.reserved_system_cpus = (!set.is_empty()).then_some(set);
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

    #[test]
    fn cpu_manager_keys() {
        use crate::cpumanager::{CpuSet, Policy};
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        type Want = Result<(Policy, Option<&'static str>), &'static str>;
        let cases: Vec<(&str, Want)> = vec![
            ("kind: KubeletConfiguration\n", Ok((Policy::None, None))),
            ("cpuManagerPolicy: static\nreservedSystemCPUs: \"0\"\n", Ok((Policy::Static, Some("0")))),
            ("cpuManagerPolicy: none\nreservedSystemCPUs: 0-1,4\n", Ok((Policy::None, Some("0-1,4")))),
            ("reservedSystemCPUs: \"\"\n", Ok((Policy::None, None))),
            ("cpuManagerPolicy: Static\n", Err("cpuManagerPolicy: \"Static\" is not a CPU manager policy (none or static)")),
            ("cpuManagerPolicy: exclusive\n", Err("cpuManagerPolicy: \"exclusive\"")),
            ("reservedSystemCPUs: 0-\n", Err("reservedSystemCPUs: \"0-\" is not a CPU list")),
            ("reservedSystemCPUs: \"2-1\"\n", Err("reservedSystemCPUs: \"2-1\" is not a CPU list like \"0-1,4\": range \"2-1\" goes backwards")),
            ("reservedSystemCPUs: a\n", Err("reservedSystemCPUs")),
        ];
        for (text, want) in cases {
            std::fs::write(&p, text).unwrap();
            let mut c = Config::default();
            let got = c.merge_file(&p);
            match want {
                Ok((policy, reserved)) => {
                    got.unwrap_or_else(|e| panic!("{text:?}: {e}"));
                    assert_eq!(c.cpu_manager_policy, policy, "{text:?}");
                    assert_eq!(
                        c.reserved_system_cpus,
                        reserved.map(|r| CpuSet::parse(r).unwrap()),
                        "{text:?}"
                    );
                }
                Err(w) => {
                    let e = got.unwrap_err().to_string();
                    assert!(e.contains(w) && e.contains("c.yaml"), "{text:?}: {e}");
                }
            }
        }
    }
}
