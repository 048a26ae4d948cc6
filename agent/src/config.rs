//! The agent's configuration: a KubeletConfiguration-style YAML file (same key names where
//! kubelet has one) overridden by command-line flags.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::eviction::config::{self as eviction, EvictionConfig, Reservation};
use crate::quantity::{self, parse_duration};

pub const DEFAULT_ROOT_DIR: &str = "/var/lib/tidelet";
pub const DEFAULT_STATIC_POD_PATH: &str = "/etc/tidelet/manifests";

#[derive(Debug, Clone, PartialEq)]
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
    /// Eviction thresholds (`evictionHard`, `evictionSoft`, ...).
    pub eviction: EvictionConfig,
    pub system_reserved: Reservation,
    pub kube_reserved: Reservation,
    /// kubelet's `maxPods`: the node's pod capacity.
    pub max_pods: i64,
    /// The file the config came from, if any (errors found later name it).
    pub config_file: Option<PathBuf>,
    /// kubelet's `cpuManagerPolicy` (`none` | `static`).
    pub cpu_manager_policy: crate::cpumanager::Policy,
    /// kubelet's `reservedSystemCPUs`: never given exclusively (checked against the machine
    /// when the CPU manager starts).
    pub reserved_system_cpus: Option<crate::cpumanager::CpuSet>,
    /// Image GC runs when the image file system is used at or above this percentage
    /// (kubelet's `imageGCHighThresholdPercent`; 100 disables it).
    pub image_gc_high_threshold_percent: u8,
    /// ... and frees space down to this one (`imageGCLowThresholdPercent`).
    pub image_gc_low_threshold_percent: u8,
    /// No image younger than this is collected (`imageMinimumGCAge`).
    pub image_minimum_gc_age: Duration,
    /// The `mqtt:` section as written (absent: local-only). Parsed by `mqtt()` against the
    /// final node name (a `--node-name` flag comes after the file), and checked once when
    /// the file is read so that a bad key stops the start.
    pub mqtt_section: Option<serde_json::Value>,
    /// Device plugins and CDI (`devices:`).
    pub devices: crate::devices::DevicesConfig,
    /// kubelet's `seccompDefault`: containers whose manifest names no seccomp profile run
    /// under RuntimeDefault. tidelet's default is true (kubelet's is false): see the README.
    pub seccomp_default: bool,
    /// Where `Localhost` seccomp profiles live (kubelet's `<rootDir>/seccomp`); `None` means
    /// that default.
    pub seccomp_profile_root: Option<PathBuf>,
    /// kubelet's `allowedUnsafeSysctls`: namespaced sysctls outside the safe set that pods may
    /// set (a trailing `*` matches a prefix: `net.core.*`).
    pub allowed_unsafe_sysctls: Vec<String>,
    /// Where pods with `hostUsers: false` get their host ids (`userNamespaces:`).
    pub userns: crate::security::userns::UsernsConfig,
    /// Pod networking (`cniConfDir`, `cniBinDir`, `podCIDR`, `cniTimeout`).
    pub network: NetworkConfig,
    /// kubelet's `clusterDNS`: nameservers of `ClusterFirst` pods (none: the node's).
    pub cluster_dns: Vec<String>,
    /// kubelet's `clusterDomain`.
    pub cluster_domain: String,
}

/// Where pod networks come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// The first valid CNI config list here is used; none: the built-in default network.
    pub cni_conf_dir: PathBuf,
    /// Where CNI plugins are looked for, in order.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// The built-in network's subnet.
    pub pod_cidr: String,
    /// How long one plugin run may take before it is killed.
    pub cni_timeout: Duration,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            cni_conf_dir: PathBuf::from("/etc/cni/net.d"),
            // `/opt/cni/bin` is where upstream's and Yocto's plugins go, `/usr/lib/cni`
            // Debian's.
            cni_bin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
            // Not Podman's and containerd's 10.88.0.0/16, nor the 10.89 pool Podman takes
            // its other networks from: a board may run Podman too.
            pod_cidr: "10.87.0.0/16".into(),
            // CRI-O's fixed CNI timeout.
            cni_timeout: Duration::from_secs(60),
        }
    }
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
            eviction: EvictionConfig::default(),
            system_reserved: Reservation::default(),
            kube_reserved: Reservation::default(),
            max_pods: 110,
            config_file: None,
            cpu_manager_policy: crate::cpumanager::Policy::None,
            reserved_system_cpus: None,
            image_gc_high_threshold_percent: 85,
            image_gc_low_threshold_percent: 80,
            image_minimum_gc_age: Duration::from_secs(120),
            mqtt_section: None,
            devices: crate::devices::DevicesConfig::default(),
            seccomp_default: true,
            seccomp_profile_root: None,
            allowed_unsafe_sysctls: Vec::new(),
            userns: Default::default(),
            network: NetworkConfig::default(),
            cluster_dns: Vec::new(),
            cluster_domain: "cluster.local".into(),
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
    eviction_hard: Option<BTreeMap<String, serde_json::Value>>,
    eviction_soft: Option<BTreeMap<String, serde_json::Value>>,
    eviction_soft_grace_period: Option<BTreeMap<String, serde_json::Value>>,
    eviction_minimum_reclaim: Option<BTreeMap<String, serde_json::Value>>,
    eviction_pressure_transition_period: Option<String>,
    eviction_max_pod_grace_period: Option<i64>,
    system_reserved: Option<BTreeMap<String, serde_json::Value>>,
    kube_reserved: Option<BTreeMap<String, serde_json::Value>>,
    max_pods: Option<i64>,
    cpu_manager_policy: Option<String>,
    #[serde(rename = "reservedSystemCPUs")]
    reserved_system_cpus: Option<String>,
    #[serde(rename = "imageGCHighThresholdPercent")]
    image_gc_high_threshold_percent: Option<i64>,
    #[serde(rename = "imageGCLowThresholdPercent")]
    image_gc_low_threshold_percent: Option<i64>,
    #[serde(rename = "imageMinimumGCAge")]
    image_minimum_gc_age: Option<String>,
    /// tidelet's own: sync with a control plane (docs/mqtt.md).
    mqtt: Option<serde_json::Value>,
    /// tidelet's own: device plugins and CDI (docs/devices.md).
    devices: Option<DevicesFile>,
    seccomp_default: Option<bool>,
    seccomp_profile_root: Option<PathBuf>,
    allowed_unsafe_sysctls: Option<Vec<String>>,
    /// tidelet's own: subordinate ids for `hostUsers: false` pods.
    user_namespaces: Option<UsernsFile>,
    /// kubelet's former `--cni-conf-dir`.
    cni_conf_dir: Option<PathBuf>,
    /// kubelet's former `--cni-bin-dir`: a list, or one string of directories separated by
    /// `,` or `:`.
    cni_bin_dir: Option<serde_json::Value>,
    #[serde(rename = "podCIDR")]
    pod_cidr: Option<String>,
    /// tidelet's own: how long one CNI plugin run may take.
    cni_timeout: Option<String>,
    #[serde(rename = "clusterDNS")]
    cluster_dns: Option<Vec<String>>,
    cluster_domain: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UsernsFile {
    user: Option<String>,
    subuid_file: Option<PathBuf>,
    subgid_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DevicesFile {
    /// `""` switches device plugins off.
    plugin_dir: Option<PathBuf>,
    cdi_spec_dirs: Option<Vec<PathBuf>>,
    allocate_timeout: Option<String>,
    plugin_grace_period: Option<String>,
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
        field: String,
        reason: String,
    },
}

/// `cniBinDir`: a list of absolute paths, or one string of them separated by `,` or `:`.
fn parse_dirs(v: &serde_json::Value) -> Result<Vec<PathBuf>, String> {
    let items: Vec<String> = match v {
        serde_json::Value::String(s) => s
            .split([',', ':'])
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect(),
        serde_json::Value::Array(a) => a
            .iter()
            .map(|x| x.as_str().map(String::from).ok_or("not a list of paths"))
            .collect::<Result<_, _>>()?,
        _ => return Err("not a path or a list of paths".into()),
    };
    if items.is_empty() {
        return Err("no directory given".into());
    }
    items
        .into_iter()
        .map(|d| {
            let p = PathBuf::from(&d);
            if p.is_relative() {
                Err(format!("{d:?} is not an absolute path"))
            } else {
                Ok(p)
            }
        })
        .collect()
}

/// An IPv4 subnet `a.b.c.d/n` with room for pods (n ≤ 30) and no host bits set.
pub fn check_ipv4_cidr(v: &str) -> Result<(), String> {
    let bad = || format!("{v:?} is not an IPv4 subnet like 10.87.0.0/16");
    let (ip, n) = v.split_once('/').ok_or_else(bad)?;
    let ip: std::net::Ipv4Addr = ip.parse().map_err(|_| bad())?;
    let n: u32 = n.parse().map_err(|_| bad())?;
    if n > 30 {
        return Err(format!("{v:?}: a /{n} has no room for pods (at most /30)"));
    }
    let mask = if n == 0 { 0 } else { u32::MAX << (32 - n) };
    if u32::from(ip) & !mask != 0 {
        return Err(format!(
            "{v:?}: host bits are set (the subnet is {}/{n})",
            std::net::Ipv4Addr::from(u32::from(ip) & mask)
        ));
    }
    Ok(())
}

/// A map of quantities as YAML writes them: `100Mi` is a string, `1000` a number.
fn strings(
    map: &str,
    m: Option<BTreeMap<String, serde_json::Value>>,
) -> Result<Option<BTreeMap<String, String>>, (String, String)> {
    let Some(m) = m else { return Ok(None) };
    let mut out = BTreeMap::new();
    for (k, v) in m {
        let s = match v {
            serde_json::Value::String(s) => s,
            serde_json::Value::Number(n) => n.to_string(),
            other => {
                return Err((
                    format!("{map}[{k}]"),
                    format!("{other:?} is not a quantity, a percentage or a duration"),
                ))
            }
        };
        out.insert(k, s);
    }
    Ok(Some(out))
}

impl Config {
    /// Apply a config file on top of `self`.
    pub fn merge_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let f: FileConfig = crate::yaml::from_str(&text).map_err(|message| ConfigError::Parse {
            path: path.into(),
            message,
        })?;
        let field = |field: &str, reason: String| ConfigError::Field {
            path: path.into(),
            field: field.to_string(),
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
        self.config_file = Some(path.to_path_buf());
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
        let raw = eviction::RawEviction {
            hard: strings("evictionHard", f.eviction_hard).map_err(|(k, r)| field(&k, r))?,
            soft: strings("evictionSoft", f.eviction_soft).map_err(|(k, r)| field(&k, r))?,
            soft_grace_period: strings("evictionSoftGracePeriod", f.eviction_soft_grace_period)
                .map_err(|(k, r)| field(&k, r))?,
            minimum_reclaim: strings("evictionMinimumReclaim", f.eviction_minimum_reclaim)
                .map_err(|(k, r)| field(&k, r))?,
            pressure_transition_period: f.eviction_pressure_transition_period,
            max_pod_grace_period: f.eviction_max_pod_grace_period,
        };
        let bad = |e: eviction::FieldError| field(&e.field, e.reason);
        self.eviction = eviction::parse(&raw).map_err(bad)?;
        let system_reserved =
            strings("systemReserved", f.system_reserved).map_err(|(k, r)| field(&k, r))?;
        let kube_reserved =
            strings("kubeReserved", f.kube_reserved).map_err(|(k, r)| field(&k, r))?;
        if let Some(m) = &system_reserved {
            self.system_reserved =
                eviction::parse_reservation("systemReserved", Some(m)).map_err(bad)?;
        }
        if let Some(m) = &kube_reserved {
            self.kube_reserved =
                eviction::parse_reservation("kubeReserved", Some(m)).map_err(bad)?;
        }
        if let Some(v) = f.seccomp_default {
            self.seccomp_default = v;
        }
        if let Some(v) = f.seccomp_profile_root {
            if !v.is_absolute() {
                return Err(field(
                    "seccompProfileRoot",
                    format!("{:?} must be an absolute path", v.display().to_string()),
                ));
            }
            self.seccomp_profile_root = Some(v);
        }
        if let Some(u) = f.user_namespaces {
            if let Some(v) = u.user {
                if v.is_empty() {
                    return Err(field("userNamespaces.user", "must not be empty".into()));
                }
                self.userns.user = v;
            }
            if let Some(v) = u.subuid_file {
                self.userns.subuid_file = v;
            }
            if let Some(v) = u.subgid_file {
                self.userns.subgid_file = v;
            }
        }
        if let Some(v) = f.allowed_unsafe_sysctls {
            for (i, name) in v.iter().enumerate() {
                crate::security::sysctls::check_pattern(name)
                    .map_err(|r| field(&format!("allowedUnsafeSysctls[{i}]"), r))?;
            }
            self.allowed_unsafe_sysctls = v;
        }
        if let Some(v) = f.max_pods {
            if v < 1 {
                return Err(field("maxPods", format!("{v} must be at least 1")));
            }
            self.max_pods = v;
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
        if let Some(v) = f.cni_conf_dir {
            if v.is_relative() {
                return Err(field(
                    "cniConfDir",
                    format!("{v:?} is not an absolute path"),
                ));
            }
            self.network.cni_conf_dir = v;
        }
        if let Some(v) = f.cni_bin_dir {
            self.network.cni_bin_dirs = parse_dirs(&v).map_err(|r| field("cniBinDir", r))?;
        }
        if let Some(v) = f.pod_cidr {
            check_ipv4_cidr(&v).map_err(|r| field("podCIDR", r))?;
            self.network.pod_cidr = v;
        }
        if let Some(v) = f.cni_timeout {
            self.network.cni_timeout =
                parse_duration(&v).filter(|d| !d.is_zero()).ok_or_else(|| {
                    field(
                        "cniTimeout",
                        format!("{v:?} is not a positive duration like 60s"),
                    )
                })?;
        }
        if let Some(v) = f.cluster_dns {
            for (i, ip) in v.iter().enumerate() {
                ip.parse::<std::net::IpAddr>().map_err(|_| {
                    field(
                        &format!("clusterDNS[{i}]"),
                        format!("{ip:?} is not an IP address"),
                    )
                })?;
            }
            self.cluster_dns = v;
        }
        if let Some(v) = f.cluster_domain {
            self.cluster_domain = v.trim_end_matches('.').to_string();
        }
        if let Some(v) = f.mqtt {
            self.mqtt_section = Some(v);
            self.mqtt()?;
        }
        if let Some(d) = f.devices {
            if let Some(p) = d.plugin_dir {
                if p.as_os_str().is_empty() {
                    self.devices.plugin_dir = None;
                } else if p.is_relative() {
                    return Err(field(
                        "devices.pluginDir",
                        format!("{p:?} is not an absolute path"),
                    ));
                } else {
                    self.devices.plugin_dir = Some(p);
                }
            }
            if let Some(dirs) = d.cdi_spec_dirs {
                if let Some(p) = dirs.iter().find(|p| p.is_relative()) {
                    return Err(field(
                        "devices.cdiSpecDirs",
                        format!("{p:?} is not an absolute path"),
                    ));
                }
                self.devices.cdi_spec_dirs = dirs;
            }
            for (key, v, slot) in [
                (
                    "devices.allocateTimeout",
                    d.allocate_timeout,
                    &mut self.devices.allocate_timeout,
                ),
                (
                    "devices.pluginGracePeriod",
                    d.plugin_grace_period,
                    &mut self.devices.plugin_grace_period,
                ),
            ] {
                if let Some(v) = v {
                    *slot = parse_duration(&v).filter(|d| !d.is_zero()).ok_or_else(|| {
                        field(key, format!("{v:?} is not a positive duration like 10s"))
                    })?;
                }
            }
        }
        Ok(())
    }

    /// The MQTT settings, or `None` when MQTT is off (no `mqtt:` section).
    pub fn mqtt(&self) -> Result<Option<crate::mqtt::MqttConfig>, ConfigError> {
        let Some(v) = &self.mqtt_section else {
            return Ok(None);
        };
        crate::mqtt::MqttConfig::parse(v, &self.node_name)
            .map(Some)
            .map_err(|(field, reason)| ConfigError::Field {
                path: self
                    .config_file
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("configuration")),
                field,
                reason,
            })
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

    /// `seccompProfileRoot`, or kubelet's default under the root directory.
    pub fn seccomp_root(&self) -> PathBuf {
        self.seccomp_profile_root
            .clone()
            .unwrap_or_else(|| self.root_dir.join("seccomp"))
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
    /// What pod networking is set up from.
    pub fn network_options(&self) -> crate::net::Options {
        crate::net::Options {
            conf_dir: self.network.cni_conf_dir.clone(),
            bin_dirs: self.network.cni_bin_dirs.clone(),
            default: crate::net::cni::config::DefaultNetwork {
                name: "tidelet".into(),
                bridge: "tidelet0".into(),
                subnet: self.network.pod_cidr.clone(),
                // Leases matter only while the host is up (a reboot ends every pod's network
                // namespace), so they live in /run, which is writable on a read-only root:
                // host-local's own default, /var/lib/cni/networks, is not. One directory for
                // every agent of the host, as there is one bridge.
                ipam_dir: "/run/tidelet/networks".into(),
            },
            timeout: self.network.cni_timeout,
            state_dir: self.root_dir.join("networks"),
            netns_dir: self.root_dir.join("netns"),
        }
    }
    pub fn socket_path(&self) -> PathBuf {
        api_socket(&self.root_dir)
    }
}

impl Config {
    /// kubelet's image GC policy: `imageGCHigh/LowThresholdPercent`, `imageMinimumGCAge`.
    pub fn image_gc_policy(&self) -> crate::gc::ImageGcPolicy {
        crate::gc::ImageGcPolicy {
            high_threshold_percent: self.image_gc_high_threshold_percent,
            low_threshold_percent: self.image_gc_low_threshold_percent,
            minimum_age: self.image_minimum_gc_age,
        }
    }

    /// What the CPU manager needs: `cpuManagerPolicy`, `reservedSystemCPUs`, `rootDir`.
    pub fn cpu_manager_options(&self) -> crate::cpumanager::Options {
        crate::cpumanager::Options {
            policy: self.cpu_manager_policy,
            reserved: self.reserved_system_cpus.clone().unwrap_or_default(),
            root_dir: self.root_dir.clone(),
        }
    }
}

impl crate::pod::layout::PodDirs for Config {
    fn kubepods_cgroup(&self) -> String {
        Config::kubepods_cgroup(self)
    }
    fn pods_dir(&self) -> PathBuf {
        Config::pods_dir(self)
    }
    fn logs_dir(&self) -> PathBuf {
        Config::logs_dir(self)
    }
}

/// The agent's API socket under a root directory.
pub fn api_socket(root_dir: &Path) -> PathBuf {
    root_dir.join("tidelet.sock")
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            c.eviction, d.eviction,
            "the file spells out kubelet's defaults"
        );
        assert_eq!(c.image_gc_high_threshold_percent, 85);
        assert_eq!(c.image_gc_low_threshold_percent, 80);
        assert_eq!(c.image_minimum_gc_age, Duration::from_secs(120));
    }

    /// The yaml blocks of a Markdown file, in order.
    fn yaml_blocks(md: &str) -> Vec<String> {
        let mut blocks = vec![];
        let mut cur: Option<String> = None;
        for line in md.lines() {
            match (&mut cur, line.trim_end()) {
                (None, "```yaml") => cur = Some(String::new()),
                (Some(b), "```") => {
                    blocks.push(std::mem::take(b));
                    cur = None;
                }
                (Some(b), l) => {
                    b.push_str(l);
                    b.push('\n');
                }
                (None, _) => {}
            }
        }
        blocks
    }

    /// docs/mqtt.md's configuration example, as written: a back-end's author copies it.
    #[test]
    fn the_mqtt_docs_config_example_is_a_valid_config() {
        let doc = include_str!("../../docs/mqtt.md");
        let blocks = yaml_blocks(doc);
        let example = blocks
            .iter()
            .find(|b| b.contains("mqtt:\n") && b.contains("remotePodPolicy:"))
            .expect("docs/mqtt.md has its config example");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tidelet.yaml");
        std::fs::write(&file, example).unwrap();
        let mut c = Config::default();
        c.merge_file(&file).unwrap();
        assert_eq!(c.node_name, "node-a");
        let m = c.mqtt().unwrap().expect("an mqtt section");
        assert_eq!(
            (m.broker.tls, m.broker.host.as_str(), m.broker.port),
            (true, "mqtt.example.com", 8883)
        );
        assert_eq!(m.client_id, "node-a");
        assert_eq!(m.topic_prefix, "tidelet/node-a/");
        assert_eq!(m.keep_alive, Duration::from_secs(60));
        assert_eq!(m.event_buffer, 256);
        assert!(!m.remote_pod_policy.allow_privileged);
        // The hardened policy's lines parse as a remotePodPolicy too.
        let hardened = blocks
            .iter()
            .find(|b| b.contains("requireUserNamespaces: true"))
            .expect("docs/mqtt.md has the hardened policy");
        let v: serde_json::Value = crate::yaml::from_str(hardened).unwrap();
        let p = crate::source::RemotePolicy::from_yaml(&v["remotePodPolicy"]).unwrap();
        assert!(p.require_user_namespaces);
        assert_eq!(p.allowed_capabilities, ["NET_BIND_SERVICE"]);
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

    /// (file, Ok((conf dir, bin dirs, pod CIDR, timeout secs, cluster DNS, domain)) or Err)
    type NetKeysCase<'a> = (
        &'a str,
        Result<(&'a str, Vec<&'a str>, &'a str, u64, Vec<&'a str>, &'a str), &'a str>,
    );

    #[test]
    fn network_keys_table() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        let cases: Vec<NetKeysCase> = vec![
            ("{}", Ok(("/etc/cni/net.d", vec!["/opt/cni/bin", "/usr/lib/cni"], "10.87.0.0/16", 60, vec![], "cluster.local"))),
            (
                "cniConfDir: /c\ncniBinDir: /a,/b:/d\npodCIDR: 10.1.0.0/24\ncniTimeout: 2s\nclusterDNS: [10.96.0.10]\nclusterDomain: board.local.\n",
                Ok(("/c", vec!["/a", "/b", "/d"], "10.1.0.0/24", 2, vec!["10.96.0.10"], "board.local")),
            ),
            ("cniBinDir: [/x, /y]\n", Ok(("/etc/cni/net.d", vec!["/x", "/y"], "10.87.0.0/16", 60, vec![], "cluster.local"))),
            ("cniConfDir: etc/cni\n", Err("cniConfDir: \"etc/cni\" is not an absolute path")),
            ("cniBinDir: /a,bin\n", Err("cniBinDir: \"bin\" is not an absolute path")),
            ("cniBinDir: \"\"\n", Err("cniBinDir: no directory given")),
            ("podCIDR: 10.1.0.1/24\n", Err("podCIDR: \"10.1.0.1/24\": host bits are set (the subnet is 10.1.0.0/24)")),
            ("podCIDR: 10.1.0.0/31\n", Err("has no room for pods")),
            ("podCIDR: fd00::/64\n", Err("is not an IPv4 subnet")),
            ("cniTimeout: 0s\n", Err("cniTimeout: \"0s\" is not a positive duration")),
            ("clusterDNS: [dns.local]\n", Err("clusterDNS[0]: \"dns.local\" is not an IP address")),
        ];
        for (text, want) in cases {
            std::fs::write(&p, text).unwrap();
            let mut c = Config::default();
            let got = c.merge_file(&p).map(|()| c.clone());
            match (got, want) {
                (Ok(c), Ok((conf, bins, cidr, secs, dns, domain))) => {
                    let n = &c.network;
                    assert_eq!(n.cni_conf_dir, PathBuf::from(conf), "{text}");
                    assert_eq!(
                        n.cni_bin_dirs,
                        bins.iter().map(PathBuf::from).collect::<Vec<_>>(),
                        "{text}"
                    );
                    assert_eq!(
                        (n.pod_cidr.as_str(), n.cni_timeout.as_secs()),
                        (cidr, secs),
                        "{text}"
                    );
                    assert_eq!(
                        (c.cluster_dns.clone(), c.cluster_domain.as_str()),
                        (dns.iter().map(|s| s.to_string()).collect(), domain),
                        "{text}"
                    );
                }
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

    #[test]
    fn eviction_and_reservation_keys() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.yaml");
        std::fs::write(
            &p,
            "evictionHard:\n  memory.available: 50Mi\n  pid.available: 1000\nevictionPressureTransitionPeriod: 2s\nsystemReserved:\n  memory: 1Gi\n  cpu: 500m\nkubeReserved: {pid: 100}\nmaxPods: 20\n",
        )
        .unwrap();
        let mut c = Config::default();
        c.merge_file(&p).unwrap();
        assert_eq!(c.system_reserved.memory, 1 << 30);
        assert_eq!(c.system_reserved.cpu_milli, 500);
        assert_eq!(c.kube_reserved.pids, 100);
        assert_eq!(c.max_pods, 20);
        assert_eq!(
            c.eviction.pressure_transition_period,
            Duration::from_secs(2)
        );
        assert_eq!(
            c.eviction.thresholds.len(),
            3,
            "{:?}",
            c.eviction.thresholds
        );
        let cases = [
            (
                "evictionHard: {memory.available: 50 Mi}\n",
                "evictionHard[memory.available]",
            ),
            (
                "evictionHard: {memory.available: [1]}\n",
                "evictionHard[memory.available]",
            ),
            (
                "evictionSoft: {memory.available: 1Gi}\n",
                "evictionSoft[memory.available]",
            ),
            ("systemReserved: {memory: lots}\n", "systemReserved[memory]"),
            ("kubeReserved: {gpu: 1}\n", "kubeReserved[gpu]"),
            ("maxPods: 0\n", "maxPods"),
        ];
        for (text, key) in cases {
            std::fs::write(&p, text).unwrap();
            let e = Config::default().merge_file(&p).unwrap_err();
            let ConfigError::Field { field, .. } = &e else {
                panic!("{text}: {e}")
            };
            assert_eq!(field, key, "{text}: {e}");
            assert!(e.to_string().contains(&p.display().to_string()), "{e}");
        }
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
