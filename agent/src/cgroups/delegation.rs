//! Where tidelet puts its pods' cgroups on cgroup v2 under systemd, and how it gets out of
//! their way.
//!
//! A service with `Delegate=yes` owns the subtree of its unit's cgroup (e.g.
//! `/system.slice/tidelet.service`). cgroup v2's "no internal processes" rule says a cgroup
//! that enables controllers for its children may not hold processes itself, and systemd
//! starts the service's main process in the unit's cgroup at every (re)start. So:
//!
//! - systemd 254+ with `DelegateSubgroup=agent` starts tidelet in `<unit>/agent`: the unit's
//!   cgroup stays free of processes, and the pods go inside the delegated subtree,
//!   `<unit>/kubepods`. Restarts land in the leaf again.
//! - older systemd (Debian 12 has 252) ignores `DelegateSubgroup=` and starts tidelet in
//!   `<unit>` itself. Pods below it would need controllers enabled in `<unit>`, after which
//!   systemd can no longer put a restarted process there: the VM test saw 252 fail every
//!   restart with `status=219/CGROUP` ("Failed to attach to cgroup ...: Device or resource
//!   busy"), the pods left without an agent. So there tidelet stays in the unit's cgroup
//!   (a leaf) and puts the pods beside it, in the unit's slice (`tidelet.slice/kubepods` with
//!   the shipped unit's `Slice=tidelet.slice`), where systemd enables the controllers because
//!   the delegated unit needs them.
//!
//! `place` is the pure decision (tested by a table); `prepare` checks the controllers and
//! moves the process, on a mount root given as a parameter.

use std::path::Path;

use super::common::{mkdir, read, write};
use super::{v2, Error, Result, Version};

/// The leaf tidelet's own process lives in, inside its delegated cgroup. The unit file's
/// `DelegateSubgroup=` (systemd 254+) names the same leaf.
pub const AGENT_LEAF: &str = "agent";

/// What `place` decides from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inputs<'a> {
    pub version: Version,
    /// tidelet's own cgroup v2 path (the `0::` line of `/proc/self/cgroup`), if any.
    pub own: Option<&'a str>,
    /// The configured `cgroupRoot` (parent of `kubepods`).
    pub cgroup_root: &'a str,
    /// Started by systemd (`NOTIFY_SOCKET` or `INVOCATION_ID` set).
    pub under_systemd: bool,
}

/// Which layout `place` chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// cgroup v1, or no systemd: `cgroupRoot` relative to the hierarchy root, as always.
    Plain,
    /// systemd put tidelet in `<unit>/agent` (`DelegateSubgroup=agent`, systemd 254+): pods
    /// inside the delegated unit.
    InsideUnit,
    /// systemd put tidelet in the unit's cgroup (no `DelegateSubgroup=`): pods beside the
    /// unit, in its slice, so that the unit's cgroup stays a leaf systemd can restart into.
    BesideUnit,
}

/// Where things go: cgroup paths relative to the hierarchy root, without leading `/`
/// (`""` is the root itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub layout: Layout,
    /// The parent of `kubepods` (what `Config::cgroup_root` becomes).
    pub pods_root: String,
    /// The leaf tidelet must be in before controllers are enabled in its unit's cgroup.
    pub agent_leaf: Option<String>,
    /// The cgroup that must give the pods' tree `v2::REQUIRED`: the delegated unit's
    /// (`cgroup.controllers`) or the slice's (`cgroup.subtree_control`, which systemd fills
    /// for a delegated member).
    pub provider: Option<String>,
}

fn trim(p: &str) -> &str {
    p.trim().trim_matches('/')
}

fn join(a: &str, b: &str) -> String {
    match (trim(a), trim(b)) {
        ("", b) => b.to_string(),
        (a, "") => a.to_string(),
        (a, b) => format!("{a}/{b}"),
    }
}

fn parent(p: &str) -> &str {
    p.rsplit_once('/').map_or("", |(a, _)| a)
}

/// A cgroup systemd creates for one unit that can be delegated (`*.service`, `*.scope`).
fn is_unit_cgroup(p: &str) -> bool {
    let last = p.rsplit('/').next().unwrap_or("");
    last.ends_with(".service") || last.ends_with(".scope")
}

/// `cgroupRoot` below `base`: a path already inside `base` is taken as is, any other is
/// taken relative to it (systemd owns everything else).
fn below(base: &str, cgroup_root: &str) -> String {
    let root = trim(cgroup_root);
    if !base.is_empty() && (root == base || root.starts_with(&format!("{base}/"))) {
        root.to_string()
    } else {
        join(base, root)
    }
}

/// Decide where the pods' cgroups go (pure). `Err` says why tidelet cannot tell where
/// systemd put it.
pub fn place(i: &Inputs) -> std::result::Result<Placement, String> {
    if i.version == Version::V1 || !i.under_systemd {
        return Ok(Placement {
            layout: Layout::Plain,
            pods_root: trim(i.cgroup_root).to_string(),
            agent_leaf: None,
            provider: None,
        });
    }
    let own = i
        .own
        .map(trim)
        .ok_or("no `0::` line in /proc/self/cgroup: tidelet is not on cgroup v2")?;
    let in_leaf = own
        .strip_suffix(AGENT_LEAF)
        .and_then(|p| p.strip_suffix('/'))
        .filter(|p| is_unit_cgroup(p));
    let p = if let Some(unit) = in_leaf {
        let pods_root = below(unit, i.cgroup_root);
        let leaf = join(unit, AGENT_LEAF);
        if pods_root == leaf || pods_root.starts_with(&format!("{leaf}/")) {
            return Err(format!(
                "cgroupRoot {:?} lies inside tidelet's own leaf cgroup /{leaf}; choose another",
                i.cgroup_root
            ));
        }
        Placement {
            layout: Layout::InsideUnit,
            pods_root,
            agent_leaf: Some(leaf),
            provider: Some(unit.to_string()),
        }
    } else if is_unit_cgroup(own) {
        let slice = parent(own);
        let pods_root = below(slice, i.cgroup_root);
        if pods_root == own || pods_root.starts_with(&format!("{own}/")) {
            return Err(format!(
                "cgroupRoot {:?} lies inside tidelet's own cgroup /{own}, which systemd < 254 \
                 (no DelegateSubgroup=) must be able to restart tidelet into; choose another",
                i.cgroup_root
            ));
        }
        Placement {
            layout: Layout::BesideUnit,
            pods_root,
            agent_leaf: None,
            provider: Some(slice.to_string()),
        }
    } else {
        return Err(format!(
            "tidelet runs under systemd in cgroup \"/{own}\", which is not a service's cgroup; \
             run it as a service with Delegate=yes (dist/systemd/tidelet.service)"
        ));
    };
    Ok(p)
}

/// The cgroup v2 path of a `/proc/<pid>/cgroup` text (the `0::` line).
pub fn own_v2_path(proc_cgroup: &str) -> Option<&str> {
    proc_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::trim)
}

/// Whether systemd started this process: `NOTIFY_SOCKET` (Type=notify) or `INVOCATION_ID`
/// (every unit since systemd 232).
pub fn under_systemd(notify_socket: Option<&str>, invocation_id: Option<&str>) -> bool {
    notify_socket.is_some_and(|s| !s.is_empty()) || invocation_id.is_some_and(|s| !s.is_empty())
}

/// The controllers of `v2::REQUIRED` missing from a `cgroup.controllers` text (pure).
pub fn missing_controllers(available: &str) -> Vec<&'static str> {
    let have: Vec<&str> = available.split_whitespace().collect();
    v2::REQUIRED
        .iter()
        .copied()
        .filter(|c| !have.contains(c))
        .collect()
}

/// How to get `missing` to the pods (pure): `provider` is the cgroup that should offer them
/// (see `Placement::provider`), `enable_in` the cgroup whose `cgroup.subtree_control` must
/// list them. `root_available` is the hierarchy root's `cgroup.controllers`: a controller
/// missing there is not in the kernel or still bound to a cgroup v1 hierarchy, which no
/// `Delegate=` can fix.
pub fn missing_hint(
    provider: &str,
    enable_in: &str,
    missing: &[&str],
    root_available: &str,
) -> String {
    let in_kernel: Vec<&str> = root_available.split_whitespace().collect();
    let (absent, undelegated): (Vec<&str>, Vec<&str>) = missing
        .iter()
        .copied()
        .partition(|c| !in_kernel.contains(c));
    let mut parts = Vec::new();
    if !undelegated.is_empty() {
        let plus: Vec<String> = undelegated.iter().map(|c| format!("+{c}")).collect();
        let enable_in = trim(enable_in);
        parts.push(format!(
            "{} not delegated to /{}: give tidelet's unit `Delegate=yes` (or `Delegate={}`), \
             or enable them top-down, e.g. `echo \"{}\" > /sys/fs/cgroup{}/cgroup.subtree_control` \
             and the same in every ancestor",
            undelegated.join(", "),
            trim(provider),
            v2::REQUIRED.join(" "),
            plus.join(" "),
            if enable_in.is_empty() {
                String::new()
            } else {
                format!("/{enable_in}")
            }
        ));
    }
    if !absent.is_empty() {
        parts.push(format!(
            "{} missing from the root's cgroup.controllers ({:?}): the kernel lacks them \
             (CONFIG_MEMCG, CONFIG_CGROUP_SCHED + CONFIG_CFS_BANDWIDTH, CONFIG_CGROUP_PIDS) or \
             a cgroup v1 hierarchy holds them (boot with `systemd.unified_cgroup_hierarchy=1`, \
             or `cgroup_no_v1=all`, or keep the whole host on cgroup v1 with \
             `systemd.unified_cgroup_hierarchy=0`, which tidelet also supports)",
            absent.join(", "),
            root_available.trim()
        ));
    }
    parts.join("; ")
}

/// Apply the placement on the cgroup v2 hierarchy at `mount_root`: check that the provider
/// gives the pods the controllers they need, then move process `pid` into the agent's leaf
/// (so that controllers can be enabled in the unit's cgroup for the pods).
pub fn prepare(mount_root: &Path, p: &Placement, pid: u32) -> Result<()> {
    let Some(provider) = &p.provider else {
        return Ok(());
    };
    let dir = mount_root.join(provider);
    // Inside the unit: what systemd delegated to it. Beside it: what systemd enabled in the
    // slice for its delegated member (a unit without Delegate=yes usually gets no `cpu`).
    let file = match p.layout {
        Layout::BesideUnit => "cgroup.subtree_control",
        _ => "cgroup.controllers",
    };
    let available = read(&dir.join(file))?;
    let missing = missing_controllers(&available);
    if !missing.is_empty() {
        let root_available = read(&mount_root.join("cgroup.controllers"))?;
        return Err(Error::MissingControllers {
            root: dir.join(file),
            missing: missing.join(", "),
            hint: missing_hint(
                provider,
                match p.layout {
                    Layout::BesideUnit => provider,
                    _ => parent(provider),
                },
                &missing,
                &root_available,
            ),
        });
    }
    if let Some(leaf) = &p.agent_leaf {
        let leaf_dir = mount_root.join(leaf);
        mkdir(&leaf_dir)?;
        write(&leaf_dir, "cgroup.procs", &pid.to_string())?;
    }
    tracing::info!(layout = ?p.layout, provider = %format!("/{provider}"), leaf = ?p.agent_leaf, pods_root = %format!("/{}", p.pods_root), "cgroup v2 under systemd");
    Ok(())
}

/// Decide and apply the placement for this process, whose cgroup is read from
/// `proc_self_cgroup` (`/proc/self/cgroup`). Its `pods_root` replaces the configured
/// `cgroupRoot`.
pub fn setup(
    mount_root: &Path,
    version: Version,
    cgroup_root: &str,
    under_systemd: bool,
    proc_self_cgroup: &Path,
) -> Result<Placement> {
    let text = if version == Version::V2 && under_systemd {
        read(proc_self_cgroup)?
    } else {
        String::new()
    };
    let p = place(&Inputs {
        version,
        own: own_v2_path(&text),
        cgroup_root,
        under_systemd,
    })
    .map_err(Error::Unsupported)?;
    prepare(mount_root, &p, std::process::id())?;
    Ok(p)
}

#[cfg(test)]
#[path = "delegation_tests.rs"]
mod tests;
