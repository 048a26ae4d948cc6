//! From a pod's manifest to what the runtime executes: the sandbox spec, the cgroup layout,
//! the files every container gets (`/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`),
//! volumes, and each container's `ContainerSpec`. This is the hook where later issues set up a
//! pod's devices and network.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use tidelet_images::ResolvedImage;

use crate::cgroups::Cgroups;
use crate::config::Config;
use crate::node::Node;
use crate::pod::layout::{spec, PodPlan, INFRA_CGROUP};
use crate::qos;
use crate::resolve::{self, PodFields};
use crate::runtime::{BindMount, ContainerSpec, SandboxSpec};

pub fn sandbox_spec(plan: &PodPlan, pod: &Pod, cgroups: &dyn Cgroups) -> SandboxSpec {
    let s = spec(pod);
    SandboxSpec {
        pod_uid: plan.uid.clone(),
        pod_name: plan.name.clone(),
        namespace: plan.namespace.clone(),
        hostname: plan.hostname.clone(),
        host_network: s.host_network == Some(true),
        host_ipc: s.host_ipc == Some(true),
        host_pid: s.host_pid == Some(true),
        share_process_namespace: s.share_process_namespace == Some(true),
        pod_dir: plan.pod_dir.clone(),
        cgroup_procs: cgroups.procs_files(&format!("{}/{INFRA_CGROUP}", plan.cgroup)),
        oom_score_adj: qos::INFRA_OOM_SCORE_ADJ,
        sysctls: Vec::new(),
        userns: None,
    }
}

/// The pod's sysctls as kubelet admits them (see `security::sysctls`), dotted.
pub fn pod_sysctls(
    cfg: &Config,
    s: &PodSpec,
) -> Result<Vec<(String, String)>, crate::security::sysctls::Forbidden> {
    let list: Vec<(String, String)> = s
        .security_context
        .as_ref()
        .and_then(|sc| sc.sysctls.as_ref())
        .into_iter()
        .flatten()
        .map(|x| (x.name.clone(), x.value.clone()))
        .collect();
    crate::security::sysctls::admit(
        &list,
        s.host_network == Some(true),
        s.host_ipc == Some(true),
        &cfg.allowed_unsafe_sysctls,
    )
}

/// The pod's hostname and, with `subdomain`, its domain (kubelet's
/// `GeneratePodHostNameAndDomain`); the hostname of a `hostNetwork` pod is the node's.
pub fn pod_names(cfg: &Config, plan: &PodPlan, pod: &Pod) -> (String, Option<String>) {
    let s = spec(pod);
    if s.host_network == Some(true) {
        return (plan.hostname.clone(), None);
    }
    crate::net::hosts::hostname_and_domain(
        &plan.name,
        s.hostname.as_deref(),
        s.subdomain.as_deref(),
        &plan.namespace,
        &cfg.cluster_domain,
    )
}

/// The hostname in the pod's UTS namespace: the FQDN with `setHostnameAsFQDN` (kubelet's
/// error when it is longer than 64 characters).
pub fn uts_hostname(cfg: &Config, plan: &PodPlan, pod: &Pod) -> Result<String, String> {
    let (h, domain) = pod_names(cfg, plan, pod);
    crate::net::hosts::uts_hostname(
        &h,
        domain.as_deref(),
        spec(pod).set_hostname_as_fqdn == Some(true),
    )
}

/// The node's resolver config for a pod: `resolvConf` (none when it is set to ""). A pod with
/// a network of its own cannot reach a resolver on the node's loopback (systemd-resolved's
/// 127.0.0.53): it gets the servers behind it, from `/run/systemd/resolve/resolv.conf`, as
/// Podman does and kubelet's documentation advises.
fn host_resolv(cfg: &Config, host_network: bool) -> Option<crate::net::dns::HostResolv> {
    use crate::net::dns::parse_resolv_conf;
    if cfg.resolv_conf.as_os_str().is_empty() {
        return None;
    }
    let text = std::fs::read_to_string(&cfg.resolv_conf).unwrap_or_default();
    let host = parse_resolv_conf(&text);
    let loopback_only = !host.nameservers.is_empty()
        && host.nameservers.iter().all(|n| {
            n.parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
        });
    if !host_network && loopback_only {
        if let Ok(t) = std::fs::read_to_string("/run/systemd/resolve/resolv.conf") {
            return Some(parse_resolv_conf(&t));
        }
    }
    Some(host)
}

/// Write the files every container of the pod bind-mounts: kubelet's managed `/etc/hosts`
/// (`net::hosts`; its own line is added once the pod has its IPs, `write_hosts_file`),
/// `/etc/hostname`, and `/etc/resolv.conf` as `dnsPolicy` and `dnsConfig` make it
/// (`net::dns`). Returns the Warning events kubelet would record on the way (reason, message).
pub fn write_pod_files(
    cfg: &Config,
    plan: &PodPlan,
    pod: &Pod,
) -> std::io::Result<Vec<(&'static str, String)>> {
    let s = spec(pod);
    let host_network = s.host_network == Some(true);
    let etc = plan.pod_dir.join("etc");
    std::fs::create_dir_all(&etc)?;
    write_hosts_file(cfg, plan, pod, &[])?;
    let uts = uts_hostname(cfg, plan, pod).map_err(std::io::Error::other)?;
    crate::state::atomic_replace(&etc.join("hostname"), format!("{uts}\n").as_bytes())?;
    let host = host_resolv(cfg, host_network);
    let (dns, warnings) = crate::net::dns::pod_dns(&crate::net::dns::Inputs {
        dns_policy: s.dns_policy.as_deref(),
        host_network,
        dns_config: s.dns_config.as_ref(),
        cluster_dns: &cfg.cluster_dns,
        cluster_domain: &cfg.cluster_domain,
        namespace: &plan.namespace,
        host: host.as_ref(),
    });
    let resolv = match crate::net::dns::render(&dns) {
        Some(text) => text.into_bytes(),
        // Nothing to say: the node's file as it is, as containerd and CRI-O do.
        None => std::fs::read(&cfg.resolv_conf).unwrap_or_default(),
    };
    crate::state::atomic_replace(&etc.join("resolv.conf"), &resolv)?;
    std::fs::create_dir_all(plan.pod_dir.join("volumes"))?;
    Ok(warnings)
}

/// Write the pod's `/etc/hosts`: with its IPs once they are known (kubelet writes the pod's
/// own line with them), its `hostAliases`; a `hostNetwork` pod's is the node's file.
pub fn write_hosts_file(
    cfg: &Config,
    plan: &PodPlan,
    pod: &Pod,
    pod_ips: &[String],
) -> std::io::Result<()> {
    let s = spec(pod);
    let node_hosts = (s.host_network == Some(true))
        .then(|| std::fs::read_to_string("/etc/hosts").unwrap_or_default());
    let (hostname, domain) = pod_names(cfg, plan, pod);
    let text = crate::net::hosts::hosts_file(
        pod_ips,
        &hostname,
        domain.as_deref(),
        s.host_aliases.as_deref().unwrap_or_default(),
        node_hosts.as_deref(),
    );
    crate::state::atomic_replace(&plan.pod_dir.join("etc").join("hosts"), text.as_bytes())
}

/// Why a container cannot be started (its waiting reason and message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    pub reason: &'static str,
    pub message: String,
}

fn volume_mounts(
    plan: &PodPlan,
    pod: &Pod,
    c: &Container,
    userns: Option<crate::security::userns::IdRange>,
) -> Result<Vec<BindMount>, NotReady> {
    let s = spec(pod);
    let mut out = Vec::new();
    for vm in c.volume_mounts.iter().flatten() {
        let err = |m: String| NotReady {
            reason: "CreateContainerConfigError",
            message: m,
        };
        let vol = s
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == vm.name)
            .ok_or_else(|| err(format!("volumeMount {:?}: no volume of that name", vm.name)))?;
        let source = if vol.empty_dir.is_some() {
            let p = plan.pod_dir.join("volumes").join(&vol.name);
            std::fs::create_dir_all(&p)
                .map_err(|e| err(format!("emptyDir {:?}: {e}", vol.name)))?;
            // In its own user namespace the pod's root owns its scratch space, as a
            // container's root owns an emptyDir without one.
            if let Some(r) = userns {
                let id = Some(r.host_start);
                std::os::unix::fs::chown(&p, id, id).map_err(|e| {
                    err(format!(
                        "emptyDir {:?}: chown to {}: {e}",
                        vol.name, r.host_start
                    ))
                })?;
            }
            // fsGroup: the volume is the group's (kubelet's SetVolumeOwnership).
            let psc = s.security_context.as_ref();
            if let Some(g) = psc.and_then(|sc| sc.fs_group) {
                let g = u32::try_from(g)
                    .map_err(|_| err(format!("securityContext.fsGroup: {g}: not a valid ID")))?;
                let host_gid = match userns {
                    Some(r) => r.host_start.saturating_add(g),
                    None => g,
                };
                let policy = psc.and_then(|sc| sc.fs_group_change_policy.as_deref());
                crate::security::fsgroup::apply(&p, host_gid, policy, vm.read_only == Some(true))
                    .map_err(|e| err(format!("emptyDir {:?}: fsGroup {g}: {e}", vol.name)))?;
            }
            p
        } else if let Some(hp) = &vol.host_path {
            let p = PathBuf::from(&hp.path);
            match hp.type_.as_deref().unwrap_or("") {
                "DirectoryOrCreate" => std::fs::create_dir_all(&p)
                    .map_err(|e| err(format!("hostPath {:?}: {e}", hp.path)))?,
                "FileOrCreate" if !p.exists() => {
                    std::fs::File::create(&p)
                        .map_err(|e| err(format!("hostPath {:?}: {e}", hp.path)))?;
                }
                "Directory" if !p.is_dir() => {
                    return Err(err(format!("hostPath {:?} is not a directory", hp.path)))
                }
                "File" if !p.is_file() => {
                    return Err(err(format!("hostPath {:?} is not a file", hp.path)))
                }
                _ if !p.exists() && !hp.type_.as_deref().unwrap_or("").is_empty() => {
                    return Err(err(format!("hostPath {:?} does not exist", hp.path)))
                }
                _ => {}
            }
            p
        } else {
            return Err(err(format!(
                "volume {:?}: only emptyDir and hostPath are supported",
                vol.name
            )));
        };
        out.push(BindMount {
            source,
            destination: vm.mount_path.clone(),
            readonly: vm.read_only == Some(true),
        });
    }
    Ok(out)
}

/// Paths of one container attempt's rootfs: a fresh writable layer per attempt, as a
/// restarted Kubernetes container gets.
pub fn rootfs_dir(plan: &PodPlan, name: &str, attempt: u32) -> PathBuf {
    plan.pod_dir
        .join("rootfs")
        .join(format!("{name}-{attempt}"))
}

pub fn container_cgroup(plan: &PodPlan, name: &str) -> String {
    format!("{}/{name}", plan.cgroup)
}

pub fn log_path(plan: &PodPlan, name: &str, attempt: u32) -> PathBuf {
    plan.log_dir.join(name).join(format!("{attempt}.log"))
}

pub fn stop_signal(image: Option<&ResolvedImage>) -> i32 {
    let name = image
        .and_then(|i| i.config.stop_signal.clone())
        .unwrap_or_default();
    let name = name.trim_start_matches("SIG");
    if let Ok(n) = name.parse::<i32>() {
        return n;
    }
    format!("SIG{name}")
        .parse::<nix::sys::signal::Signal>()
        .map(|s| s as i32)
        .unwrap_or(libc::SIGTERM)
}

pub struct Inputs<'a> {
    pub cfg: &'a Config,
    pub node: &'a Node,
    pub cgroups: &'a dyn Cgroups,
    pub plan: &'a PodPlan,
    pub pod: &'a Pod,
    /// The pod's IPs (the Downward API's `status.podIP`, `status.podIPs`).
    pub pod_ips: &'a [String],
    /// Seccomp profiles, compiled once each.
    pub profiles: &'a crate::security::profiles::Profiles,
    /// Id ranges of `hostUsers: false` pods.
    pub userns: &'a crate::security::userns::Allocator,
}

/// The pod's user-namespace mapping (`hostUsers: false`): the range it was given at
/// admission (held, so this reads no file).
pub fn pod_userns(inp: &Inputs<'_>) -> Result<Option<crate::security::userns::IdRange>, NotReady> {
    if spec(inp.pod).host_users != Some(false) {
        return Ok(None);
    }
    inp.userns
        .allocate(&inp.plan.uid)
        .map(Some)
        .map_err(|message| NotReady {
            reason: "CreateContainerConfigError",
            message,
        })
}

/// `c`'s capabilities, seccomp filter, masked paths and `no_new_privs`, from the pod's and its
/// own `securityContext` and the node's policy; `runAsNonRoot` checked against the user it
/// will run as. Errors are `CreateContainerConfigError`s naming the field or file.
pub fn container_security(
    inp: &Inputs<'_>,
    c: &Container,
    image_user: &str,
    uid: u32,
) -> Result<crate::security::ContainerSecurity, NotReady> {
    use crate::security::{self, NodePolicy};
    let s = spec(inp.pod);
    let bad = |message: String| NotReady {
        reason: "CreateContainerConfigError",
        message,
    };
    let i = s
        .containers
        .iter()
        .position(|x| x.name == c.name)
        .unwrap_or(0);
    let node = NodePolicy {
        seccomp_default: inp.cfg.seccomp_default,
        available_caps: inp.node.caps,
    };
    let d = security::decide(s, c, &format!("spec.containers[{i}]"), &node)
        .map_err(|e| bad(e.to_string()))?;
    security::context::verify_run_as_non_root(&d, image_user, uid, &inp.plan.name, &c.name)
        .map_err(bad)?;
    let program = inp.profiles.program(&d.seccomp, d.caps).map_err(bad)?;
    Ok(security::ContainerSecurity::new(&d, program))
}

pub fn container_spec(
    inp: &Inputs<'_>,
    c: &Container,
    image: &ResolvedImage,
    attempt: u32,
) -> Result<ContainerSpec, NotReady> {
    let (plan, pod) = (inp.plan, inp.pod);
    let s = spec(pod);
    let fields = PodFields {
        pod_name: plan.name.clone(),
        namespace: plan.namespace.clone(),
        uid: plan.uid.clone(),
        node_name: inp.node.name.clone(),
        host_ip: inp.node.ip.clone(),
        pod_ip: if s.host_network == Some(true) {
            inp.node.ip.clone()
        } else {
            inp.pod_ips.first().cloned().unwrap_or_default()
        },
        service_account: s
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into()),
        labels: pod.metadata.labels.clone().unwrap_or_default(),
        annotations: pod.metadata.annotations.clone().unwrap_or_default(),
        hostname: plan.hostname.clone(),
        pod_ips: if s.host_network == Some(true) {
            vec![]
        } else {
            inp.pod_ips.to_vec()
        },
        allocatable: resolve::NodeAllocatable {
            cpu_milli: inp.node.cpus as i64 * 1000,
            memory_bytes: inp.node.memory_capacity,
            ephemeral_storage_bytes: 0,
        },
    };
    let process = resolve::resolve_process(
        c,
        s.security_context.as_ref(),
        &image.config,
        &image.lowerdirs,
        &fields,
    )
    .map_err(|e| NotReady {
        reason: "CreateContainerConfigError",
        message: e.to_string(),
    })?;
    let security = container_security(inp, c, &image.config.user, process.uid)?;
    let userns = pod_userns(inp)?;
    let etc = plan.pod_dir.join("etc");
    let mut mounts = vec![
        BindMount {
            source: etc.join("hosts"),
            destination: "/etc/hosts".into(),
            readonly: false,
        },
        BindMount {
            source: etc.join("hostname"),
            destination: "/etc/hostname".into(),
            readonly: false,
        },
        BindMount {
            source: etc.join("resolv.conf"),
            destination: "/etc/resolv.conf".into(),
            readonly: false,
        },
    ];
    mounts.extend(volume_mounts(plan, pod, c, userns)?);
    let root = rootfs_dir(plan, &c.name, attempt);
    let cg = container_cgroup(plan, &c.name);
    Ok(ContainerSpec {
        name: c.name.clone(),
        attempt,
        image: c.image.clone().unwrap_or_default(),
        image_id: image.id.clone(),
        argv: process.argv,
        env: process.env,
        cwd: process.cwd,
        uid: process.uid,
        gid: process.gid,
        additional_gids: process.additional_gids,
        lowerdirs: image.lowerdirs.clone(),
        upperdir: root.join("upper"),
        workdir: root.join("work"),
        rootfs: root.join("merged"),
        readonly_rootfs: c
            .security_context
            .as_ref()
            .and_then(|s| s.read_only_root_filesystem)
            == Some(true),
        security,
        userns,
        mounts,
        devices: vec![],
        hooks: vec![],
        annotations: Default::default(),
        cgroup_procs: inp.cgroups.procs_files(&cg),
        oom_kill_file: Some(inp.cgroups.oom_kill_file(&cg)),
        oom_score_adj: qos::oom_score_adj(s, c, inp.node.memory_capacity),
        log_path: log_path(plan, &c.name, attempt),
        log_max_bytes: inp.cfg.container_log_max_size,
        log_max_files: inp.cfg.container_log_max_files,
        stop_signal: stop_signal(Some(image)),
    })
}

/// Create the directories a container attempt needs.
pub fn make_container_dirs(spec: &ContainerSpec) -> std::io::Result<()> {
    for d in [&spec.upperdir, &spec.workdir, &spec.rootfs] {
        std::fs::create_dir_all(d)?;
    }
    if let Some(p) = spec.log_path.parent() {
        std::fs::create_dir_all(p)?;
    }
    Ok(())
}

/// Remove a directory tree; missing is fine.
pub fn remove_tree(p: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(p) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}
