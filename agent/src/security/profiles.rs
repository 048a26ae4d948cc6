//! Seccomp profiles as the agent hands them to containers: RuntimeDefault, or a `Localhost`
//! file under the node's `seccompProfileRoot`, compiled once per profile text and capability
//! set (the capability-conditional rules depend on it) and kept in a small bounded cache, so
//! a container start does not compile anything it has compiled before.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::caps::CapSet;
use super::context::SeccompChoice;
use super::seccomp::{self, Arch, Profile, Program};

/// Compiled programs kept; the oldest goes first when full.
const CACHE_ENTRIES: usize = 32;

/// The largest profile file read (moby's default is ~20 KiB).
pub const MAX_PROFILE_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    RuntimeDefault,
    /// A Localhost profile's text.
    Text(Vec<u8>),
}

pub struct Profiles {
    root: PathBuf,
    arch: Arch,
    kernel: (u32, u32),
    cache: Mutex<Vec<(Source, CapSet, Program)>>,
}

impl Profiles {
    /// Profiles for containers of this machine; `root` is `seccompProfileRoot`.
    pub fn new(root: &Path) -> Profiles {
        Profiles::for_target(root, Arch::native(), seccomp::kernel_version())
    }

    pub fn for_target(root: &Path, arch: Arch, kernel: (u32, u32)) -> Profiles {
        Profiles {
            root: root.to_path_buf(),
            arch,
            kernel,
            cache: Mutex::new(Vec::new()),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The filter for a container whose capabilities are `caps`; `None` for Unconfined.
    /// `Err` names the file and the reason (missing, unreadable, not a valid profile).
    pub fn program(&self, choice: &SeccompChoice, caps: CapSet) -> Result<Option<Program>, String> {
        let source = match choice {
            SeccompChoice::Unconfined => return Ok(None),
            SeccompChoice::RuntimeDefault => Source::RuntimeDefault,
            SeccompChoice::Localhost(rel) => Source::Text(self.read(rel)?),
        };
        {
            let cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((_, _, p)) = cache.iter().find(|(s, c, _)| *s == source && *c == caps) {
                return Ok(Some(p.clone()));
            }
        }
        let has_cap = |name: &str| caps.has(name);
        let program = match &source {
            Source::RuntimeDefault => {
                seccomp::compile(Profile::runtime_default(), self.arch, &has_cap, self.kernel)
                    .map_err(|e| format!("seccomp profile RuntimeDefault: {e}"))?
            }
            Source::Text(text) => {
                let SeccompChoice::Localhost(rel) = choice else {
                    unreachable!("text comes from a Localhost profile")
                };
                let origin = self.root.join(rel).display().to_string();
                let profile = Profile::parse(text, &origin).map_err(|e| e.to_string())?;
                seccomp::compile(&profile, self.arch, &has_cap, self.kernel)
                    .map_err(|e| e.to_string())?
            }
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_ENTRIES {
            cache.remove(0);
        }
        cache.push((source, caps, program.clone()));
        Ok(Some(program))
    }

    fn read(&self, rel: &str) -> Result<Vec<u8>, String> {
        let path = self.root.join(rel);
        let shown = path.display().to_string();
        let meta =
            std::fs::metadata(&path).map_err(|e| format!("seccomp profile {shown:?}: {e}"))?;
        if !meta.is_file() {
            return Err(format!("seccomp profile {shown:?}: not a regular file"));
        }
        if meta.len() > MAX_PROFILE_BYTES {
            return Err(format!(
                "seccomp profile {shown:?}: {} bytes, more than the {MAX_PROFILE_BYTES} tidelet reads",
                meta.len()
            ));
        }
        std::fs::read(&path).map_err(|e| format!("seccomp profile {shown:?}: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn localhost_profiles_are_read_checked_and_cached() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("p")).unwrap();
        std::fs::write(
            root.join("p/deny.json"),
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getcwd"],"action":"SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        std::fs::write(root.join("bad.json"), "{not json").unwrap();
        std::fs::write(
            root.join("nosys.json"),
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["no_such_call"],"action":"SCMP_ACT_ERRNO"}]}"#,
        )
        .unwrap();
        let profiles = Profiles::new(root);
        let caps = CapSet::default_set();
        let local = |p: &str| SeccompChoice::Localhost(p.into());
        assert_eq!(
            profiles.program(&SeccompChoice::Unconfined, caps).unwrap(),
            None
        );
        let a = profiles
            .program(&local("p/deny.json"), caps)
            .unwrap()
            .unwrap();
        let b = profiles
            .program(&local("p/deny.json"), caps)
            .unwrap()
            .unwrap();
        assert_eq!(a, b);
        assert_eq!(profiles.cache.lock().unwrap().len(), 1);
        let d = profiles
            .program(&SeccompChoice::RuntimeDefault, caps)
            .unwrap()
            .unwrap();
        assert!(d.len() > a.len());
        let cases = [
            ("missing.json", "missing.json", "No such file"),
            ("bad.json", "bad.json", "line 1"),
            ("nosys.json", "no_such_call", "not a system call"),
            ("p", "\"", "not a regular file"),
        ];
        for (file, names, why) in cases {
            let e = profiles.program(&local(file), caps).unwrap_err();
            assert!(
                e.contains(&root.join(file).display().to_string())
                    && e.contains(names)
                    && e.contains(why),
                "{file}: {e}"
            );
        }
    }

    #[test]
    fn the_cache_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let profiles = Profiles::new(dir.path());
        for n in 0..(CACHE_ENTRIES as u64 + 5) {
            let mut caps = CapSet::EMPTY;
            caps.0 = n;
            profiles
                .program(&SeccompChoice::RuntimeDefault, caps)
                .unwrap();
        }
        assert_eq!(profiles.cache.lock().unwrap().len(), CACHE_ENTRIES);
    }
}
