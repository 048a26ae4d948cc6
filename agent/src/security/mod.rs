//! What a container may do on its host: capabilities, seccomp, masked and read-only paths,
//! `no_new_privs`, and the `securityContext` rules that choose them.
//!
//! The decisions (which capabilities, which profile, which paths) are pure functions of the
//! manifest and the node's configuration; the supervisor's child only applies their result.

pub mod caps;
pub mod context;
pub mod fsgroup;
pub mod profiles;
pub mod seccomp;
pub mod sysctls;
pub mod userns;

use serde::{Deserialize, Serialize};

pub use caps::CapSet;
pub use context::{decide, Decision, NodePolicy, SeccompChoice};

/// What the supervisor's child applies to one container (see `runtime::harden`). Required
/// in every container spec: a spec without it is refused, never run unconfined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSecurity {
    pub privileged: bool,
    /// Bounding, permitted and effective capabilities (inheritable and ambient: none).
    pub caps: CapSet,
    pub no_new_privs: bool,
    /// Paths in the container hidden by `/dev/null` or an empty read-only tmpfs.
    pub masked_paths: Vec<String>,
    /// Paths in the container bind-mounted read-only over themselves.
    pub readonly_paths: Vec<String>,
    /// The compiled filter; `None` is unconfined.
    pub seccomp: Option<seccomp::Program>,
    /// The profile as the manifest named it, for `describe pod`.
    pub seccomp_profile: String,
}

impl ContainerSecurity {
    /// What a container whose manifest says nothing gets on a node with the defaults: the
    /// 14 capabilities, RuntimeDefault seccomp, masked and read-only paths.
    pub fn runtime_default() -> ContainerSecurity {
        let d = Decision::unconfigured();
        let caps = d.caps;
        let program = seccomp::compile(
            seccomp::Profile::runtime_default(),
            seccomp::Arch::native(),
            &|name| caps.has(name),
            seccomp::kernel_version(),
        )
        .ok();
        ContainerSecurity::new(&d, program)
    }

    /// `d` with its compiled filter (from `profiles::Profiles::program`).
    pub fn new(d: &Decision, seccomp: Option<seccomp::Program>) -> ContainerSecurity {
        ContainerSecurity {
            privileged: d.privileged,
            caps: d.caps,
            no_new_privs: d.no_new_privs,
            masked_paths: d.masked_paths(),
            readonly_paths: d.readonly_paths(),
            seccomp,
            seccomp_profile: d.seccomp.describe(),
        }
    }
}

/// What `describe pod` shows of a running container's confinement.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityView {
    pub privileged: bool,
    /// Effective capabilities of a root process (`CapEff`); a non-root one has none of them
    /// effective, only in its bounding set.
    pub capabilities: CapSet,
    pub seccomp: String,
    pub no_new_privs: bool,
    pub read_only_root: bool,
    /// `host`, or the container's uid/gid mapping (`0 -> 165536, 65536 ids`).
    pub user_namespace: String,
}

impl SecurityView {
    pub fn of(sec: &ContainerSecurity, read_only_root: bool, user_namespace: String) -> Self {
        SecurityView {
            privileged: sec.privileged,
            capabilities: sec.caps,
            seccomp: sec.seccomp_profile.clone(),
            no_new_privs: sec.no_new_privs,
            read_only_root,
            user_namespace,
        }
    }
}

/// The device nodes a privileged container gets: every character and block device under
/// `dev_root` (the host's `/dev`), as containerd's `HostDevices` finds them: the
/// directories `pts`, `shm`, `fd`, `mqueue`, `.lxc`, `.lxd-mounts` and `.udev` and the node
/// `console` are skipped, and so is `ptmx` (the container's is its own devpts'), symbolic
/// links are not followed, and at most 4096 nodes are taken.
pub fn host_devices(dev_root: &std::path::Path) -> Vec<crate::devices::edits::DeviceNode> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    const MAX: usize = 4096;
    let mut out = Vec::new();
    let mut todo = vec![dev_root.to_path_buf()];
    while let Some(dir) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name();
            let Ok(meta) = std::fs::symlink_metadata(e.path()) else {
                continue;
            };
            let ft = meta.file_type();
            if ft.is_dir() {
                let skip = ["pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"];
                if !skip.iter().any(|s| name == *s) {
                    todo.push(e.path());
                }
                continue;
            }
            let kind = if ft.is_char_device() {
                crate::cgroups::devices::DevKind::Char
            } else if ft.is_block_device() {
                crate::cgroups::devices::DevKind::Block
            } else {
                continue;
            };
            if name == "console" || name == "ptmx" || out.len() >= MAX {
                continue;
            }
            let Ok(rel) = e.path().strip_prefix(dev_root).map(|r| r.to_path_buf()) else {
                continue;
            };
            let rdev = meta.rdev();
            out.push(crate::devices::edits::DeviceNode {
                container_path: format!("/dev/{}", rel.display()),
                host_path: e.path(),
                kind,
                major: nix::sys::stat::major(rdev) as u32,
                minor: nix::sys::stat::minor(rdev) as u32,
                file_mode: meta.mode() & 0o7777,
                uid: meta.uid(),
                gid: meta.gid(),
                permissions: "rwm".into(),
            });
        }
    }
    out.sort_by(|a, b| a.container_path.cmp(&b.container_path));
    out
}

#[cfg(test)]
mod host_devices_tests {
    #[test]
    fn host_devices_skip_what_containerd_skips() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for sub in ["pts", "shm", "input", "mqueue"] {
            std::fs::create_dir(d.join(sub)).unwrap();
        }
        std::fs::write(d.join("not-a-node"), "").unwrap();
        std::os::unix::fs::symlink("/dev/null", d.join("link")).unwrap();
        // Making nodes needs root; the pure filtering above is checked either way.
        let made = nix::sys::stat::mknod(
            &d.join("input/event0"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o640),
            nix::sys::stat::makedev(13, 64),
        )
        .is_ok();
        if made {
            for n in ["pts/0", "console", "ptmx"] {
                nix::sys::stat::mknod(
                    &d.join(n),
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::from_bits_truncate(0o600),
                    nix::sys::stat::makedev(136, 0),
                )
                .unwrap();
            }
        } else {
            // mknod refused: not root. Where privileged tests are demanded, a failure.
            let _ = tidelet_testgate::privileged_here();
        }
        let got: Vec<(String, u32, u32, u32)> = super::host_devices(d)
            .into_iter()
            .map(|n| (n.container_path, n.major, n.minor, n.file_mode))
            .collect();
        let want = if made {
            vec![("/dev/input/event0".to_string(), 13, 64, 0o640)]
        } else {
            vec![]
        };
        assert_eq!(got, want);
    }
}
