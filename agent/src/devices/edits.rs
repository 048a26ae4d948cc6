//! What a container gets from its devices, checked and ready for the runtime.
//!
//! `from_allocate` turns the plugins' `Allocate` answers for one container (env, mounts,
//! device specs, annotations, CDI device names) plus the CDI edits those names resolve to
//! into `ContainerEdits`: env as sorted `KEY=VALUE`, bind mounts whose host paths exist,
//! device nodes with their type, numbers, mode and owner taken from the host node, and the
//! CDI hooks for the runtime to run. Every container path must stay inside the rootfs once
//! normalised. The host is reached only through `HostFs` (stat, exists), so the rules are
//! tested with tables; `RealHostFs` is the real one.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use tidelet_deviceplugin_api::v1beta1::ContainerAllocateResponse;

use super::cdi::{CdiDeviceNode, CdiMount, Hook, Registry, ResolveError};
use crate::cgroups::devices::DevKind;
use crate::runtime::{BindMount, DeviceNode};

/// Annotations with this prefix carry CDI device names (comma-separated), the way plugins
/// did before `cdi_devices` was added to the API (containerd reads them too).
pub const CDI_ANNOTATION_PREFIX: &str = "cdi.k8s.io/";

/// Everything to apply to one container for its devices.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ContainerEdits {
    /// `KEY=VALUE`, appended after the container's own env (device env wins, as in kubelet).
    pub env: Vec<String>,
    pub mounts: Vec<BindMount>,
    pub devices: Vec<DeviceNode>,
    pub annotations: BTreeMap<String, String>,
    /// CDI hooks, in spec order (run by the runtime, see `runtime::hooks`).
    #[serde(default)]
    pub hooks: Vec<Hook>,
    /// Extra groups for the container's process (CDI `additionalGids`).
    #[serde(default)]
    pub additional_gids: Vec<u32>,
}

/// What a stat of a host path says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Char,
    Block,
    Dir,
    Regular,
    Other,
}

/// A host file's type, device numbers (0 unless a device), permission bits and owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostStat {
    pub kind: FileKind,
    pub major: u32,
    pub minor: u32,
    /// Permission bits only (`& 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// The host's files, as far as device edits need them.
pub trait HostFs {
    /// `stat(2)` (following symlinks, as `/dev/dri/by-path/*` are).
    fn stat(&self, path: &Path) -> std::io::Result<HostStat>;
    /// Whether the path exists (following symlinks).
    fn exists(&self, path: &Path) -> bool;
}

/// `HostFs` over the real filesystem.
#[derive(Debug, Clone, Copy, Default)]
pub struct RealHostFs;

impl HostFs for RealHostFs {
    fn stat(&self, path: &Path) -> std::io::Result<HostStat> {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let m = std::fs::metadata(path)?;
        let t = m.file_type();
        let kind = if t.is_char_device() {
            FileKind::Char
        } else if t.is_block_device() {
            FileKind::Block
        } else if t.is_dir() {
            FileKind::Dir
        } else if t.is_file() {
            FileKind::Regular
        } else {
            FileKind::Other
        };
        let rdev = m.rdev();
        Ok(HostStat {
            kind,
            major: nix::sys::stat::major(rdev) as u32,
            minor: nix::sys::stat::minor(rdev) as u32,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            gid: m.gid(),
        })
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
}

/// Why device edits could not be built. `from` names the source: `Allocate answer for
/// <resource>` or `CDI device <name> (<spec file>)`.
#[derive(Debug, thiserror::Error)]
pub enum EditError {
    /// An env name that is empty or holds `=` (or a NUL anywhere).
    #[error("{from}: env {key:?}: {reason}")]
    Env {
        from: String,
        key: String,
        reason: &'static str,
    },
    /// A mount's host path is not there.
    #[error("{from}: mount host path {path:?} does not exist")]
    MountHostMissing { from: String, path: String },
    /// A mount that cannot be a bind mount of a host path (relative path, other type).
    #[error("{from}: mount host path {path:?}: {reason}")]
    MountHost {
        from: String,
        path: String,
        reason: String,
    },
    /// A container path that is empty, relative, the root or climbs out of the rootfs.
    #[error("{from}: {field} {value:?}: {reason}")]
    ContainerPath {
        from: String,
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    /// A device's host node is missing, not a char/block device, or of a type not supported.
    #[error("{from}: device host path {path:?}: {reason}")]
    DeviceHost {
        from: String,
        path: String,
        reason: String,
    },
    /// Cgroup permissions that are empty or not made of r, w, m.
    #[error("{from}: device {path:?}: permissions {value:?}: {reason}")]
    Permissions {
        from: String,
        path: String,
        value: String,
        reason: &'static str,
    },
    /// Two sources put different devices or mounts at one container path.
    #[error("{from}: {what} {path:?} is also given, differently, by {other}")]
    Conflict {
        from: String,
        what: &'static str,
        path: String,
        other: String,
    },
    /// Two answers set one annotation to different values.
    #[error("{from}: annotation {key:?} = {value:?} conflicts with {old:?} from another answer")]
    Annotation {
        from: String,
        key: String,
        value: String,
        old: String,
    },
    /// A CDI name that is malformed or not defined by any spec.
    #[error(transparent)]
    Cdi(#[from] ResolveError),
}

/// The device edits for one container from its `Allocate` answers, one per resource
/// (`(resource name, answer)`), with their CDI device names resolved through `cdi`.
pub fn from_allocate(
    responses: &[(String, ContainerAllocateResponse)],
    cdi: &Registry,
    host: &dyn HostFs,
) -> Result<ContainerEdits, EditError> {
    let mut b = Builder::default();
    let mut cdi_names: Vec<String> = Vec::new();
    for (resource, r) in responses {
        let from = format!("Allocate answer for {resource}");
        let mut envs: Vec<_> = r.envs.iter().collect();
        envs.sort();
        for (k, v) in envs {
            b.env(&from, k, v)?;
        }
        for m in &r.mounts {
            let dest = container_path(&from, "mount container path", &m.container_path)?;
            let source = host_source(&from, &m.host_path, host)?;
            b.mount(&from, source, dest, m.read_only)?;
        }
        for d in &r.devices {
            let dest = container_path(&from, "device container path", &d.container_path)?;
            let perms = permissions(&from, &d.container_path, &d.permissions)?;
            let st = device_stat(&from, Path::new(&d.host_path), host)?;
            b.device(
                &from,
                DeviceNode {
                    container_path: dest,
                    host_path: PathBuf::from(&d.host_path),
                    kind: st.0,
                    major: st.1.major,
                    minor: st.1.minor,
                    file_mode: st.1.mode,
                    uid: st.1.uid,
                    gid: st.1.gid,
                    permissions: perms,
                },
            )?;
        }
        let mut anns: Vec<_> = r.annotations.iter().collect();
        anns.sort();
        for (k, v) in anns {
            if k.starts_with(CDI_ANNOTATION_PREFIX) {
                cdi_names.extend(
                    v.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(String::from),
                );
            }
            match b.out.annotations.get(k) {
                Some(old) if old != v => {
                    return Err(EditError::Annotation {
                        from,
                        key: k.clone(),
                        value: v.clone(),
                        old: old.clone(),
                    })
                }
                _ => {
                    b.out.annotations.insert(k.clone(), v.clone());
                }
            }
        }
        cdi_names.extend(r.cdi_devices.iter().map(|c| c.name.clone()));
    }
    if !cdi_names.is_empty() {
        let e = cdi.resolve(&cdi_names)?;
        for kv in &e.env {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            b.env(&format!("CDI devices {}", cdi_names.join(",")), k, v)?;
        }
        for n in &e.device_nodes {
            let node = cdi_node(n, host)?;
            b.device(&format!("CDI device {}", n.origin), node)?;
        }
        for m in &e.mounts {
            let (from, source, dest, ro) = cdi_mount(m, host)?;
            b.mount(&from, source, dest, ro)?;
        }
        b.out.hooks.extend(e.hooks);
        for g in e.additional_gids {
            if !b.out.additional_gids.contains(&g) {
                b.out.additional_gids.push(g);
            }
        }
    }
    b.out.env = b.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    tracing::debug!(
        resources = responses.len(),
        cdi_devices = cdi_names.len(),
        env = b.out.env.len(),
        mounts = b.out.mounts.len(),
        devices = b.out.devices.len(),
        hooks = b.out.hooks.len(),
        "device edits built"
    );
    Ok(b.out)
}

/// Collects edits, keeping one entry per container path and refusing different ones.
#[derive(Default)]
struct Builder {
    out: ContainerEdits,
    env: BTreeMap<String, String>,
    /// Container path -> who gave it (for conflict messages).
    device_from: BTreeMap<String, String>,
    mount_from: BTreeMap<String, String>,
}

impl Builder {
    fn env(&mut self, from: &str, k: &str, v: &str) -> Result<(), EditError> {
        let reason = if k.is_empty() {
            Some("empty variable name")
        } else if k.contains('=') {
            Some("a variable name may not contain '='")
        } else if k.contains('\0') || v.contains('\0') {
            Some("contains a NUL byte")
        } else {
            None
        };
        if let Some(reason) = reason {
            return Err(EditError::Env {
                from: from.into(),
                key: k.into(),
                reason,
            });
        }
        self.env.insert(k.into(), v.into());
        Ok(())
    }

    fn device(&mut self, from: &str, d: DeviceNode) -> Result<(), EditError> {
        if let Some(i) = self
            .out
            .devices
            .iter()
            .position(|o| o.container_path == d.container_path)
        {
            let old = &self.out.devices[i];
            let same = (old.kind, old.major, old.minor) == (d.kind, d.major, d.minor);
            if !same {
                return Err(EditError::Conflict {
                    from: from.into(),
                    what: "device",
                    path: d.container_path,
                    other: self.device_from[&old.container_path].clone(),
                });
            }
            // The same node from two sources: keep one, with the union of the access.
            let perms = format!("{}{}", old.permissions, d.permissions);
            self.out.devices[i].permissions = rwm_order(&perms);
            return Ok(());
        }
        self.device_from
            .insert(d.container_path.clone(), from.into());
        self.out.devices.push(d);
        Ok(())
    }

    fn mount(
        &mut self,
        from: &str,
        source: PathBuf,
        dest: String,
        ro: bool,
    ) -> Result<(), EditError> {
        if let Some(old) = self.out.mounts.iter().find(|m| m.destination == dest) {
            if old.source != source || old.readonly != ro {
                return Err(EditError::Conflict {
                    from: from.into(),
                    what: "mount",
                    path: dest.clone(),
                    other: self.mount_from[&dest].clone(),
                });
            }
            return Ok(());
        }
        self.mount_from.insert(dest.clone(), from.into());
        self.out.mounts.push(BindMount {
            source,
            destination: dest,
            readonly: ro,
        });
        Ok(())
    }
}

/// `path` made absolute-normal (`.` and `..` folded away); `..` may not climb above `/`.
/// Pure.
pub fn normalize_container_path(path: &str) -> Result<String, &'static str> {
    if path.is_empty() {
        return Err("empty path");
    }
    if !path.starts_with('/') {
        return Err("not an absolute path");
    }
    let mut parts: Vec<&str> = Vec::new();
    for c in Path::new(path).components() {
        match c {
            Component::Normal(n) => parts.push(n.to_str().ok_or("not UTF-8")?),
            Component::ParentDir => {
                parts.pop().ok_or("\"..\" leads out of the rootfs")?;
            }
            _ => {}
        }
    }
    if parts.is_empty() {
        return Err("is the container's root");
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Cgroup access letters in `rwm` order, each once: non-empty, only `r`, `w`, `m`. Pure.
pub fn normalize_permissions(p: &str) -> Result<String, &'static str> {
    if p.is_empty() {
        return Err("empty (give any of r, w, m)");
    }
    if !p.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err("only r, w and m are allowed");
    }
    Ok(rwm_order(p))
}

fn rwm_order(p: &str) -> String {
    "rwm".chars().filter(|c| p.contains(*c)).collect()
}

fn container_path(from: &str, field: &'static str, value: &str) -> Result<String, EditError> {
    normalize_container_path(value).map_err(|reason| EditError::ContainerPath {
        from: from.into(),
        field,
        value: value.into(),
        reason,
    })
}

fn permissions(from: &str, path: &str, value: &str) -> Result<String, EditError> {
    normalize_permissions(value).map_err(|reason| EditError::Permissions {
        from: from.into(),
        path: path.into(),
        value: value.into(),
        reason,
    })
}

fn host_source(from: &str, path: &str, host: &dyn HostFs) -> Result<PathBuf, EditError> {
    if !path.starts_with('/') {
        return Err(EditError::MountHost {
            from: from.into(),
            path: path.into(),
            reason: "not an absolute path".into(),
        });
    }
    if !host.exists(Path::new(path)) {
        return Err(EditError::MountHostMissing {
            from: from.into(),
            path: path.into(),
        });
    }
    Ok(PathBuf::from(path))
}

/// Stat a host device node: it must exist and be a char or block device.
fn device_stat(
    from: &str,
    path: &Path,
    host: &dyn HostFs,
) -> Result<(DevKind, HostStat), EditError> {
    let err = |reason: String| EditError::DeviceHost {
        from: from.into(),
        path: path.display().to_string(),
        reason,
    };
    if !path.is_absolute() {
        return Err(err("not an absolute path".into()));
    }
    let st = host.stat(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            err("does not exist".into())
        } else {
            err(e.to_string())
        }
    })?;
    match st.kind {
        FileKind::Char => Ok((DevKind::Char, st)),
        FileKind::Block => Ok((DevKind::Block, st)),
        other => Err(err(format!(
            "is not a device node (it is {})",
            match other {
                FileKind::Dir => "a directory",
                FileKind::Regular => "a regular file",
                _ => "neither a character nor a block device",
            }
        ))),
    }
}

/// A CDI node with what the spec left out taken from the host node (`hostPath`).
fn cdi_node(n: &CdiDeviceNode, host: &dyn HostFs) -> Result<DeviceNode, EditError> {
    let from = format!("CDI device {}", n.origin);
    let dest = container_path(&from, "deviceNodes path", &n.path)?;
    let perms = permissions(&from, &n.path, n.permissions.as_deref().unwrap_or("rwm"))?;
    let given = match n.kind.as_deref() {
        Some("c" | "u") => Some(DevKind::Char),
        Some("b") => Some(DevKind::Block),
        Some(other) => {
            return Err(EditError::DeviceHost {
                from,
                path: n.path.clone(),
                reason: format!("type {other:?} is not supported (only c, u and b)"),
            })
        }
        None => None,
    };
    // Fully described nodes need no host node (the CDI rule: type and major given).
    let complete = given.is_some() && n.major.is_some();
    let st = if complete {
        host.stat(&n.host_path).ok()
    } else {
        Some(device_stat(&from, &n.host_path, host)?.1)
    };
    let host_kind = st.and_then(|s| match s.kind {
        FileKind::Char => Some(DevKind::Char),
        FileKind::Block => Some(DevKind::Block),
        _ => None,
    });
    let kind = given.or(host_kind).unwrap_or(DevKind::Char);
    let num = |v: Option<i64>, host: Option<u32>| v.map(|v| v as u32).or(host).unwrap_or(0);
    Ok(DeviceNode {
        container_path: dest,
        host_path: n.host_path.clone(),
        kind,
        major: num(n.major, st.map(|s| s.major)),
        minor: num(n.minor, st.map(|s| s.minor)),
        file_mode: n
            .file_mode
            .map(|m| m & 0o777)
            .or(st.map(|s| s.mode))
            .unwrap_or(0o666),
        uid: n.uid.or(st.map(|s| s.uid)).unwrap_or(0),
        gid: n.gid.or(st.map(|s| s.gid)).unwrap_or(0),
        permissions: perms,
    })
}

/// A CDI mount as a bind mount: `ro` in the options makes it read-only; other mount types
/// than bind are refused (the runtime only binds).
fn cdi_mount(
    m: &CdiMount,
    host: &dyn HostFs,
) -> Result<(String, PathBuf, String, bool), EditError> {
    let from = format!("CDI device {}", m.origin);
    let has = |o: &str| m.options.iter().any(|x| x == o);
    if let Some(t) = m.kind.as_deref() {
        if !matches!(t, "bind" | "rbind" | "none") && !has("bind") && !has("rbind") {
            return Err(EditError::MountHost {
                from,
                path: m.host_path.display().to_string(),
                reason: format!("mount type {t:?} is not supported (only bind mounts)"),
            });
        }
    }
    let dest = container_path(&from, "mount containerPath", &m.container_path)?;
    let source = host_source(&from, &m.host_path.to_string_lossy(), host)?;
    Ok((from, source, dest, has("ro")))
}

#[cfg(test)]
#[path = "edits_tests.rs"]
mod tests;
