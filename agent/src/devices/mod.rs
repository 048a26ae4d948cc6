//! Devices for pods: tidelet as the kubelet side of the device-plugin API (`v1beta1`).
//!
//! - `manager`: the `Registration` server on `kubelet.sock`, one task per registered plugin
//!   (options, `ListAndWatch`), the node's extended resources, admission and `Allocate`.
//! - `registry`: what the manager knows (pure): resources, devices and health, allocations.
//! - `checkpoint`: allocations on disk, so that an agent restart keeps them.
//! - `cdi`: Container Device Interface specs (`/etc/cdi`, `/var/run/cdi`) and name resolution.
//! - `edits`: an `Allocate` answer (plus CDI) turned into what the runtime applies to one
//!   container: env, mounts, device nodes, cgroup device rules, annotations, CDI hooks
//!   (run by the runtime: `runtime::hooks`).
//! - `host`: the host's device nodes a privileged container gets.
//!
//! The runtime's wire types (`ContainerSpec`, `BindMount`, `DeviceNode`, `runtime::hooks`)
//! belong to the runtime; this module produces edits in those types, so the dependency points
//! one way: devices -> runtime.

pub mod cdi;
pub mod checkpoint;
pub mod edits;
mod host;
pub mod manager;
pub mod registry;

pub use host::host_devices;
pub use manager::{AdmitFailure, DevicesConfig, Manager, Notice, Notices};

use crate::cgroups::devices::{self as rules, DeviceRule};
use crate::runtime::ContainerSpec;

/// What `pod`'s `container` gets from its devices: the plugins' answers (and the CDI devices
/// they name) checked and turned into edits. The error names the resource and the problem.
pub fn container_edits(
    manager: &Manager,
    pod: &str,
    container: &str,
) -> Result<edits::ContainerEdits, String> {
    let answers = manager.answers(pod, container);
    if answers.is_empty() {
        return Ok(edits::ContainerEdits::default());
    }
    // Read at each start that needs it: specs are a few small files, and a spec installed
    // or fixed later is then used without restarting the agent.
    // `load` logs each spec it skips, naming the file, field and reason.
    let (registry, _skipped) = cdi::Registry::load(&manager.config().cdi_spec_dirs);
    edits::from_allocate(&answers, &registry, &edits::RealHostFs).map_err(|e| e.to_string())
}

/// The container's cgroup device rules: the defaults plus each device it was given.
pub fn cgroup_rules(e: &edits::ContainerEdits) -> Result<Vec<DeviceRule>, String> {
    let mut out = rules::default_rules();
    for d in &e.devices {
        out.push(
            rules::allow(d.kind, Some(d.major), Some(d.minor), &d.permissions)
                .map_err(|err| format!("device {}: {err}", d.container_path))?,
        );
    }
    Ok(out)
}

/// A CDI hook as the runtime runs it. The spec's `hookName` was checked with
/// `Stage::parse` when it was loaded, so an unknown one cannot reach here; it would be dropped.
fn runtime_hook(h: &cdi::Hook) -> Option<crate::runtime::hooks::Hook> {
    Some(crate::runtime::hooks::Hook {
        stage: crate::runtime::hooks::Stage::parse(&h.hook_name)?,
        path: h.path.clone(),
        args: h.args.clone(),
        env: h.env.clone(),
        timeout_secs: h
            .timeout
            .map(|t| u32::try_from(t.max(1)).unwrap_or(u32::MAX)),
    })
}

/// Put the edits into the container's spec: device env after the container's own (so it
/// wins, as in kubelet), mounts after the volumes, the device nodes, the CDI hooks and the
/// annotations (which the hooks see).
pub fn apply_edits(spec: &mut ContainerSpec, e: edits::ContainerEdits) {
    let key = |kv: &String| {
        kv.split_once('=')
            .map(|(k, _)| k.to_string())
            .unwrap_or_else(|| kv.clone())
    };
    let replaced: std::collections::BTreeSet<String> = e.env.iter().map(key).collect();
    spec.env.retain(|kv| !replaced.contains(&key(kv)));
    spec.env.extend(e.env);
    spec.mounts.extend(e.mounts);
    spec.devices = e.devices;
    spec.hooks = e.hooks.iter().filter_map(runtime_hook).collect();
    spec.annotations = e.annotations;
    for g in e.additional_gids {
        if !spec.additional_gids.contains(&g) {
            spec.additional_gids.push(g);
        }
    }
}
