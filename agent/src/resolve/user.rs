//! The container's user: `runAsUser`/`runAsGroup` or the image's `User`, resolved against the
//! image's `/etc/passwd` and `/etc/group` as containerd's `WithUser` and `WithAdditionalGIDs`
//! do. The files are read from the top-most layer that has them, honouring overlayfs
//! whiteouts and opaque directories, and never following a symlink out of the image.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, PodSecurityContext};
use tidelet_images::ImageConfig;

use super::{err, ResolveError};

/// Largest `/etc/passwd` or `/etc/group` read from an image.
const MAX_ACCOUNT_FILE_BYTES: u64 = 1 << 20;

/// Where `/etc/passwd` and `/etc/group` come from: an image's layers, or a fake in tests.
pub(super) trait AccountFiles {
    /// The file's text (`etc/passwd` or `etc/group`), `None` when the image has none.
    fn read(&self, rel: &str) -> Result<Option<String>, ResolveError>;
}

/// The overlay of `lowerdirs` (top-most first): the top-most layer that has the file wins; a
/// whiteout (a 0/0 character device) or an opaque `etc` hides the layers below.
pub(super) struct LayeredRootfs<'a> {
    pub(super) lowerdirs: &'a [PathBuf],
}

impl AccountFiles for LayeredRootfs<'_> {
    fn read(&self, rel: &str) -> Result<Option<String>, ResolveError> {
        for dir in self.lowerdirs {
            let etc = dir.join("etc");
            let meta = match std::fs::symlink_metadata(&etc) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(err("user", format!("{}: {e}", etc.display()))),
            };
            if meta.file_type().is_char_device() {
                return Ok(None);
            }
            if !meta.is_dir() {
                return Err(err(
                    "user",
                    format!("{}: not a directory; cannot look users up", etc.display()),
                ));
            }
            let path = dir.join(rel);
            match std::fs::symlink_metadata(&path) {
                Ok(m) if m.is_file() => return read_capped(&path).map(Some),
                Ok(m) if m.file_type().is_char_device() => return Ok(None),
                Ok(_) => {
                    return Err(err(
                        "user",
                        format!(
                            "{}: not a regular file; cannot look users up",
                            path.display()
                        ),
                    ))
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    if is_opaque(&etc) {
                        return Ok(None);
                    }
                }
                Err(e) => return Err(err("user", format!("{}: {e}", path.display()))),
            }
        }
        Ok(None)
    }
}

fn read_capped(path: &Path) -> Result<String, ResolveError> {
    let mut bytes = Vec::new();
    File::open(path)
        .and_then(|f| f.take(MAX_ACCOUNT_FILE_BYTES).read_to_end(&mut bytes))
        .map_err(|e| err("user", format!("{}: {e}", path.display())))?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Whether overlayfs treats `dir` as opaque (`trusted.overlay.opaque` = `y`).
fn is_opaque(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let mut buf = [0u8; 2];
    // SAFETY: `c` is a NUL-terminated path and the name a NUL-terminated literal, both alive for
    // the call; `buf` is writable for the length passed.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            c"trusted.overlay.opaque".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    n == 1 && buf[0] == b'y'
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

fn passwd_entries(text: &str) -> impl Iterator<Item = PasswdEntry> + '_ {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 || l.starts_with('#') {
            return None;
        }
        Some(PasswdEntry {
            name: f[0].to_string(),
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
        })
    })
}

/// `(name, gid, members)` of each `/etc/group` line.
fn group_entries(text: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> + '_ {
    text.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 3 || l.starts_with('#') {
            return None;
        }
        let members = f
            .get(3)
            .map(|m| m.split(',').filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        Some((f[0], f[2].parse().ok()?, members))
    })
}

pub(super) struct User {
    pub(super) uid: u32,
    pub(super) gid: u32,
    pub(super) additional_gids: Vec<u32>,
}

/// The user: `runAsUser`/`runAsGroup` of the container, else of the pod, else the image's
/// `User` (`uid`, `uid:gid`, `name`, `name:group`); a `runAsGroup` without a `runAsUser`
/// overrides the image's group (as CRI-O does). Names must exist in the image.
pub(super) fn resolve_user(
    c: &Container,
    pod: Option<&PodSecurityContext>,
    image: &ImageConfig,
    files: &dyn AccountFiles,
) -> Result<User, ResolveError> {
    let sc = c.security_context.as_ref();
    let run_as_user = sc
        .and_then(|s| s.run_as_user)
        .or(pod.and_then(|p| p.run_as_user));
    let run_as_group = sc
        .and_then(|s| s.run_as_group)
        .or(pod.and_then(|p| p.run_as_group));
    let id = |v: i64, field: &str| {
        u32::try_from(v).map_err(|_| err(field, format!("{v}: not a valid ID")))
    };
    let (user, group, field) = match run_as_user {
        Some(u) => (
            id(u, "securityContext.runAsUser")?.to_string(),
            None,
            "securityContext.runAsUser",
        ),
        None => {
            let (u, g) = match image.user.split_once(':') {
                Some((u, g)) => (u.to_string(), Some(g.to_string())),
                None => (image.user.clone(), None),
            };
            (
                if u.is_empty() { "0".to_string() } else { u },
                g.filter(|g| !g.is_empty()),
                "image User",
            )
        }
    };
    let group = match run_as_group {
        Some(g) => Some(id(g, "securityContext.runAsGroup")?.to_string()),
        None => group,
    };
    // A file a name lookup needs must be readable; otherwise an unreadable one (a symlink, say)
    // counts as absent, as containerd ignores a missing one.
    let tolerate = |r: Result<Option<String>, ResolveError>, needed: bool| match r {
        Err(e) if !needed => {
            tracing::warn!(error = %e, "account file ignored");
            Ok(None)
        }
        r => r,
    };
    let group_is_name = group.as_deref().is_some_and(|g| g.parse::<u32>().is_err());
    let text = tolerate(files.read("etc/passwd"), user.parse::<u32>().is_err())?;
    let groups = tolerate(files.read("etc/group"), group_is_name)?;
    let entry = match user.parse::<u32>() {
        Ok(uid) => text
            .as_deref()
            .and_then(|t| passwd_entries(t).find(|e| e.uid == uid))
            .map(|e| (e.name, uid, Some(e.gid))),
        Err(_) => {
            let e = text
                .as_deref()
                .and_then(|t| passwd_entries(t).find(|e| e.name == user))
                .ok_or_else(|| {
                    err(
                        field,
                        format!("user {user:?} not found in the image's /etc/passwd"),
                    )
                })?;
            Some((e.name, e.uid, Some(e.gid)))
        }
    };
    let uid = entry
        .as_ref()
        .map_or_else(|| user.parse().unwrap_or(0), |e| e.1);
    let username = entry.as_ref().map(|e| e.0.clone());
    let gid = match group {
        None => entry.as_ref().and_then(|e| e.2).unwrap_or(0),
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => groups
                .as_deref()
                .and_then(|t| group_entries(t).find(|(n, _, _)| *n == g))
                .map(|(_, gid, _)| gid)
                .ok_or_else(|| {
                    err(
                        field,
                        format!("group {g:?} not found in the image's /etc/group"),
                    )
                })?,
        },
    };
    let mut additional = vec![gid];
    if let (Some(name), Some(text)) = (&username, &groups) {
        for (gname, ggid, members) in group_entries(text) {
            if gname != name && members.contains(&name.as_str()) {
                additional.push(ggid);
            }
        }
    }
    for (i, g) in pod
        .and_then(|p| p.supplemental_groups.as_ref())
        .into_iter()
        .flatten()
        .enumerate()
    {
        additional.push(u32::try_from(*g).map_err(|_| {
            err(
                format!("pod securityContext.supplementalGroups[{i}]"),
                format!("{g}: not a valid ID"),
            )
        })?);
    }
    // kubelet adds the pod's fsGroup to every container's groups, so volumes it owns are
    // the containers' to write.
    if let Some(g) = pod.and_then(|p| p.fs_group) {
        additional.push(u32::try_from(g).map_err(|_| {
            err(
                "pod securityContext.fsGroup",
                format!("{g}: not a valid ID"),
            )
        })?);
    }
    let mut seen = std::collections::HashSet::new();
    additional.retain(|g| seen.insert(*g));
    Ok(User {
        uid,
        gid,
        additional_gids: additional,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::SecurityContext;
    use std::collections::HashMap;

    struct FakeFiles(HashMap<&'static str, &'static str>);

    impl AccountFiles for FakeFiles {
        fn read(&self, rel: &str) -> Result<Option<String>, ResolveError> {
            Ok(self.0.get(rel).map(|s| s.to_string()))
        }
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n# comment\nalice:x:1000:1000::/home/alice:/bin/sh\nbob:x:1001:100::/:/bin/sh\nbroken line\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:root,alice\nusers:x:100:\nalice:x:1000:alice\nstaff:x:50:bob,alice\n";

    #[test]
    fn user_resolution() {
        let both = FakeFiles([("etc/passwd", PASSWD), ("etc/group", GROUP)].into());
        let none = FakeFiles(HashMap::new());
        let sc = |u: Option<i64>, g: Option<i64>| SecurityContext {
            run_as_user: u,
            run_as_group: g,
            ..Default::default()
        };
        let psc = |u: Option<i64>, g: Option<i64>, sup: Vec<i64>| PodSecurityContext {
            run_as_user: u,
            run_as_group: g,
            supplemental_groups: Some(sup),
            ..Default::default()
        };
        type Case<'a> = (
            &'a str,
            Option<SecurityContext>,
            Option<PodSecurityContext>,
            &'a FakeFiles,
            Result<(u32, u32, Vec<u32>), &'a str>,
        );
        let cases: Vec<Case> = vec![
            ("", None, None, &both, Ok((0, 0, vec![0, 10]))),
            ("", None, None, &none, Ok((0, 0, vec![0]))),
            (
                "1000",
                None,
                None,
                &both,
                Ok((1000, 1000, vec![1000, 10, 50])),
            ),
            ("1000", None, None, &none, Ok((1000, 0, vec![0]))),
            ("4242", None, None, &both, Ok((4242, 0, vec![0]))),
            (
                "alice",
                None,
                None,
                &both,
                Ok((1000, 1000, vec![1000, 10, 50])),
            ),
            ("bob", None, None, &both, Ok((1001, 100, vec![100, 50]))),
            (
                "alice:staff",
                None,
                None,
                &both,
                Ok((1000, 50, vec![50, 10])),
            ),
            ("alice:7", None, None, &both, Ok((1000, 7, vec![7, 10, 50]))),
            ("1000:50", None, None, &both, Ok((1000, 50, vec![50, 10]))),
            (
                "carol",
                None,
                None,
                &both,
                Err("image User: user \"carol\" not found in the image's /etc/passwd"),
            ),
            (
                "carol",
                None,
                None,
                &none,
                Err("image User: user \"carol\" not found"),
            ),
            (
                "alice:nogroup",
                None,
                None,
                &both,
                Err("image User: group \"nogroup\" not found in the image's /etc/group"),
            ),
            // Container beats pod beats image; runAsGroup alone overrides the image's group.
            (
                "alice",
                Some(sc(Some(1001), None)),
                Some(psc(Some(1000), None, vec![])),
                &both,
                Ok((1001, 100, vec![100, 50])),
            ),
            (
                "alice",
                None,
                Some(psc(Some(0), Some(5), vec![])),
                &both,
                Ok((0, 5, vec![5, 10])),
            ),
            (
                "alice",
                Some(sc(None, Some(9))),
                None,
                &both,
                Ok((1000, 9, vec![9, 10, 50])),
            ),
            (
                "",
                Some(sc(Some(2000), Some(3000))),
                Some(psc(None, None, vec![3000, 4000, 10])),
                &both,
                Ok((2000, 3000, vec![3000, 4000, 10])),
            ),
            (
                "",
                Some(sc(Some(-1), None)),
                None,
                &both,
                Err("securityContext.runAsUser: -1: not a valid ID"),
            ),
        ];
        for (user, csc, pod, files, want) in cases {
            let mut c = Container {
                name: "app".into(),
                ..Default::default()
            };
            c.security_context = csc;
            let img = ImageConfig {
                user: user.into(),
                ..Default::default()
            };
            let got = resolve_user(&c, pod.as_ref(), &img, files)
                .map(|u| (u.uid, u.gid, u.additional_gids));
            match want {
                Ok(w) => assert_eq!(got, Ok(w), "user {user:?}"),
                Err(e) => assert!(
                    got.as_ref().is_err_and(|g| g.to_string().starts_with(e)),
                    "user {user:?}: {:?}",
                    got.err()
                ),
            }
        }
    }

    #[test]
    fn account_files_come_from_the_top_most_layer_that_has_them() {
        let top = tempfile::tempdir().unwrap();
        let low = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(top.path().join("etc")).unwrap();
        std::fs::create_dir_all(low.path().join("etc")).unwrap();
        std::fs::write(top.path().join("etc/group"), "top:x:7:alice\n").unwrap();
        std::fs::write(low.path().join("etc/group"), "low:x:8:alice\n").unwrap();
        std::fs::write(low.path().join("etc/passwd"), PASSWD).unwrap();
        let dirs = [top.path().to_path_buf(), low.path().to_path_buf()];
        let img = ImageConfig {
            user: "alice".into(),
            ..Default::default()
        };
        let c = Container::default();
        let resolve = || resolve_user(&c, None, &img, &LayeredRootfs { lowerdirs: &dirs });
        let u = resolve().unwrap();
        assert_eq!(
            (u.uid, u.gid, u.additional_gids),
            (1000, 1000, vec![1000, 7])
        );

        std::os::unix::fs::symlink("/etc/passwd", top.path().join("etc/passwd")).unwrap();
        let e = resolve().err().unwrap();
        assert!(
            e.reason.contains("not a regular file"),
            "a symlink is not followed out of the image: {e}"
        );
        // A numeric user needs no lookup: the unreadable file counts as absent.
        let img = ImageConfig {
            user: "1000".into(),
            ..Default::default()
        };
        let u = resolve_user(&c, None, &img, &LayeredRootfs { lowerdirs: &dirs }).unwrap();
        assert_eq!((u.uid, u.gid, u.additional_gids), (1000, 0, vec![0]));
    }

    /// Whiteouts (0/0 character devices) and opaque directories hide lower layers; creating
    /// them needs root.
    #[test]
    fn whiteouts_and_opaque_dirs_hide_lower_layers() {
        if !tidelet_testgate::privileged_here() {
            return;
        }
        let files = |dirs: &[PathBuf]| {
            LayeredRootfs { lowerdirs: dirs }
                .read("etc/passwd")
                .unwrap()
        };
        let top = tempfile::tempdir().unwrap();
        let low = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(top.path().join("etc")).unwrap();
        std::fs::create_dir_all(low.path().join("etc")).unwrap();
        std::fs::write(low.path().join("etc/passwd"), PASSWD).unwrap();
        let dirs = [top.path().to_path_buf(), low.path().to_path_buf()];
        assert_eq!(files(&dirs).as_deref(), Some(PASSWD));

        let etc =
            std::ffi::CString::new(top.path().join("etc").into_os_string().into_encoded_bytes())
                .unwrap();
        // SAFETY: valid NUL-terminated path and name; the value buffer is valid for 1 byte.
        let rc = unsafe {
            libc::lsetxattr(
                etc.as_ptr(),
                c"trusted.overlay.opaque".as_ptr(),
                b"y".as_ptr().cast(),
                1,
                0,
            )
        };
        assert_eq!(rc, 0, "setxattr: {}", std::io::Error::last_os_error());
        assert_eq!(files(&dirs), None, "opaque etc hides the lower passwd");
        // SAFETY: as above.
        let rc = unsafe { libc::lremovexattr(etc.as_ptr(), c"trusted.overlay.opaque".as_ptr()) };
        assert_eq!(rc, 0);

        nix::sys::stat::mknod(
            &top.path().join("etc/passwd"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::from_bits_truncate(0o600),
            0,
        )
        .unwrap();
        assert_eq!(files(&dirs), None, "a whiteout hides the lower passwd");
    }
}
