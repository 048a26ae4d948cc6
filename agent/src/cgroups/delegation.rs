//! Where tidelet puts its pods' cgroups on cgroup v2 under systemd, and how it gets out of
//! their way.
//!
//! A service with `Delegate=yes` owns the subtree of its unit's cgroup (e.g.
//! `/system.slice/tidelet.service`) and nothing above it, so under systemd the pods' cgroups
//! go *inside* that subtree. cgroup v2's "no internal processes" rule then says the unit's
//! cgroup may not hold processes once it enables controllers for its children, so tidelet
//! first moves itself into a leaf, `<unit>/agent`; systemd 254+ does that for it with
//! `DelegateSubgroup=agent`.
//!
//! Restarts: on systemd < 254 (Debian 12 has 252) the restarted main process is put into the
//! unit's cgroup itself, which the kernel refuses (EBUSY) once that cgroup has controllers
//! enabled for the pods below it. What happens then is decided by systemd, not us (see
//! `dist/systemd/tidelet.service` and the VM test); wherever the new process lands, the
//! subtree it delegated last time is recorded in the state directory, and tidelet goes back
//! into that subtree's leaf so the pods it left running are found where they were.
//!
//! `place` is the pure decision (tested by a table); `prepare` does the file work on a
//! mount root given as a parameter.

use std::path::{Path, PathBuf};

use super::common::{io_err, mkdir, read, write};
use super::{v2, Error, Result, Version};

/// The leaf tidelet's own process lives in, inside its delegated cgroup. The unit file's
/// `DelegateSubgroup=` (systemd 254+) must name the same leaf.
pub const AGENT_LEAF: &str = "agent";

/// File (in the state directory) holding the delegated cgroup of the previous start.
pub const RECORD_FILE: &str = "delegated-cgroup";

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
    /// The delegated cgroup the previous start recorded.
    pub recorded: Option<&'a str>,
}

/// Where things go: cgroup paths relative to the hierarchy root, without leading `/`
/// (`""` is the root itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The parent of `kubepods` (what `Config::cgroup_root` becomes).
    pub pods_root: String,
    /// The leaf tidelet moves itself into before enabling controllers below its own cgroup.
    pub agent_leaf: Option<String>,
    /// The delegated subtree (recorded for the next start).
    pub delegated: Option<String>,
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

/// A cgroup systemd creates for one unit that can be delegated (`*.service`, `*.scope`).
fn is_unit_cgroup(p: &str) -> bool {
    let last = p.rsplit('/').next().unwrap_or("");
    last.ends_with(".service") || last.ends_with(".scope")
}

/// Decide where the pods' cgroups go (pure). `Err` says why tidelet cannot find the subtree
/// systemd delegated to it.
pub fn place(i: &Inputs) -> std::result::Result<Placement, String> {
    let unchanged = || Placement {
        pods_root: trim(i.cgroup_root).to_string(),
        agent_leaf: None,
        delegated: None,
    };
    if i.version == Version::V1 || !i.under_systemd {
        // cgroup v1 (systemd does not arbitrate controllers there), or no service manager:
        // the configured root, relative to the hierarchy root, as always.
        return Ok(unchanged());
    }
    let own = i
        .own
        .map(trim)
        .ok_or("no `0::` line in /proc/self/cgroup: tidelet is not on cgroup v2")?;
    let delegated = if let Some(unit) = own
        .strip_suffix(AGENT_LEAF)
        .and_then(|p| p.strip_suffix('/'))
        .filter(|p| is_unit_cgroup(p))
    {
        // Already in the leaf: DelegateSubgroup=agent put us there.
        unit.to_string()
    } else if is_unit_cgroup(own) {
        own.to_string()
    } else if let Some(rec) = i.recorded.map(trim).filter(|r| !r.is_empty()) {
        // systemd < 254 could not attach the restarted process to the unit's cgroup (it has
        // controllers enabled for the pods) and put it higher up: go back to last time's.
        rec.to_string()
    } else {
        return Err(format!(
            "tidelet runs under systemd in cgroup {:?}, which is not a service's cgroup; run it \
             as a service with Delegate=yes (dist/systemd/tidelet.service)",
            format!("/{own}")
        ));
    };
    // A cgroupRoot that already names a path inside the delegated subtree is taken as is;
    // any other is taken relative to it (systemd owns everything outside).
    let root = trim(i.cgroup_root);
    let pods_root = if root == delegated || root.starts_with(&format!("{delegated}/")) {
        root.to_string()
    } else {
        join(&delegated, root)
    };
    if pods_root == join(&delegated, AGENT_LEAF)
        || pods_root.starts_with(&format!("{}/", join(&delegated, AGENT_LEAF)))
    {
        return Err(format!(
            "cgroupRoot {:?} lies inside tidelet's own leaf cgroup /{}; choose another",
            i.cgroup_root,
            join(&delegated, AGENT_LEAF)
        ));
    }
    Ok(Placement {
        pods_root,
        agent_leaf: Some(join(&delegated, AGENT_LEAF)),
        delegated: Some(delegated),
    })
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

/// How to get `missing` into the delegated cgroup `cgroup` (pure). `root_available` is the
/// hierarchy root's `cgroup.controllers`: a controller missing there is not in the kernel
/// or still bound to a cgroup v1 hierarchy, which no `Delegate=` can fix.
pub fn missing_hint(cgroup: &str, missing: &[&str], root_available: &str) -> String {
    let in_kernel: Vec<&str> = root_available.split_whitespace().collect();
    let (absent, undelegated): (Vec<&str>, Vec<&str>) = missing
        .iter()
        .copied()
        .partition(|c| !in_kernel.contains(c));
    let mut parts = Vec::new();
    if !undelegated.is_empty() {
        let plus: Vec<String> = undelegated.iter().map(|c| format!("+{c}")).collect();
        let parent = Path::new("/").join(trim(cgroup));
        let parent = parent.parent().unwrap_or(Path::new("/"));
        parts.push(format!(
            "{} not delegated to /{}: give tidelet's unit `Delegate=yes` (or `Delegate={}`), \
             or enable them top-down, e.g. `echo \"{}\" > /sys/fs/cgroup{}/cgroup.subtree_control` \
             for every ancestor",
            undelegated.join(", "),
            trim(cgroup),
            v2::REQUIRED.join(" "),
            plus.join(" "),
            if parent == Path::new("/") {
                String::new()
            } else {
                parent.display().to_string()
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

/// Apply the placement on the cgroup v2 hierarchy at `mount_root`: check that the delegated
/// cgroup offers the controllers, move process `pid` into the agent's leaf (so that
/// controllers can then be enabled for the pods), and record the delegated cgroup in
/// `record` for the next start. Nothing to do without a delegated cgroup.
pub fn prepare(mount_root: &Path, p: &Placement, pid: u32, record: &Path) -> Result<()> {
    let (Some(delegated), Some(leaf)) = (&p.delegated, &p.agent_leaf) else {
        return Ok(());
    };
    let dir = mount_root.join(delegated);
    let available = read(&dir.join("cgroup.controllers"))?;
    let missing = missing_controllers(&available);
    if !missing.is_empty() {
        let root_available = read(&mount_root.join("cgroup.controllers"))?;
        return Err(Error::MissingControllers {
            root: dir.clone(),
            missing: missing.join(", "),
            hint: missing_hint(delegated, &missing, &root_available),
        });
    }
    let leaf_dir = mount_root.join(leaf);
    mkdir(&leaf_dir)?;
    write(&leaf_dir, "cgroup.procs", &pid.to_string())?;
    tracing::info!(delegated = %format!("/{delegated}"), leaf = %format!("/{leaf}"), pods_root = %format!("/{}", p.pods_root), "cgroup v2 under systemd: moved into the leaf of the delegated cgroup");
    let tmp: PathBuf = record.with_extension("tmp");
    std::fs::write(&tmp, format!("/{delegated}\n")).map_err(io_err(&tmp))?;
    std::fs::rename(&tmp, record).map_err(io_err(record))?;
    Ok(())
}

/// Decide and apply the placement for this process: read its cgroup from `proc_self_cgroup`
/// (`/proc/self/cgroup`) and the previous start's record from `state_dir`, then `prepare`.
/// Returns the placement; its `pods_root` replaces the configured `cgroupRoot`.
pub fn setup(
    mount_root: &Path,
    version: Version,
    cgroup_root: &str,
    under_systemd: bool,
    proc_self_cgroup: &Path,
    state_dir: &Path,
) -> Result<Placement> {
    if version == Version::V1 || !under_systemd {
        return place(&Inputs {
            version,
            own: None,
            cgroup_root,
            under_systemd,
            recorded: None,
        })
        .map_err(Error::Unsupported);
    }
    let text = read(proc_self_cgroup)?;
    let record = state_dir.join(RECORD_FILE);
    let recorded = read_record(&record)?;
    let inputs = Inputs {
        version,
        own: own_v2_path(&text),
        cgroup_root,
        under_systemd,
        recorded: recorded.as_deref(),
    };
    let p = place(&inputs).map_err(Error::Unsupported)?;
    if inputs.own.map(trim) != p.delegated.as_deref()
        && inputs.own.map(trim) != p.agent_leaf.as_deref()
    {
        tracing::warn!(own = ?inputs.own, recorded = ?recorded, "systemd started tidelet outside its delegated cgroup (systemd < 254 cannot attach a restarted service to a cgroup with controllers enabled); going back to the recorded one");
    }
    prepare(mount_root, &p, std::process::id(), &record)?;
    Ok(p)
}

/// The delegated cgroup recorded by the previous start (missing file: none).
pub fn read_record(record: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(record) {
        Ok(s) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Io {
            path: record.to_path_buf(),
            source: e,
        }),
    }
}

#[cfg(test)]
#[path = "delegation_tests.rs"]
mod tests;
