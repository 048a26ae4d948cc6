//! File operations shared by the v1 and v2 backends: writing interface files with errors that
//! name the file and the value, listing processes, killing them and removing cgroup trees, each
//! bounded in time.
//!
//! Interface files are opened for writing without `O_CREAT`: on a cgroup file system the kernel
//! creates them with the directory, and a missing file means a missing controller, which must be
//! an error rather than a new plain file. Tests on temp dirs therefore lay the files out first,
//! as the kernel would. Trees are removed with `rmdir` only, never by deleting files, so that a
//! wrong path can never delete ordinary data.

use std::io::{ErrorKind, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::{Error, Result};

/// How long `kill_all` keeps killing before it reports the survivors.
pub(crate) const KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long `remove` retries `rmdir` while the kernel still reports exiting processes.
pub(crate) const REMOVE_TIMEOUT: Duration = Duration::from_secs(3);
/// Deepest tree `pids`/`remove` walk; tidelet's trees are 5 levels deep.
const MAX_DEPTH: usize = 32;

/// Largest interface file read whole: a `memory.stat` is ~2 KiB, `/proc/meminfo` ~1.5 KiB.
pub const MAX_FILE: usize = 64 << 10;

/// `ENOENT` or `ENODEV`: what reading a file of a removed cgroup gives.
pub fn io_is_gone(e: &std::io::Error) -> bool {
    e.kind() == ErrorKind::NotFound || e.raw_os_error() == Some(libc::ENODEV)
}

/// Read all of `path`, at most `MAX_FILE` bytes, as UTF-8 (lossy: kernel files are ASCII).
/// `Ok(None)` for a larger file: not the kernel interface file expected. Callers turn the
/// result into their own errors (`cgroups::Error`, `signals::SignalError`).
pub(crate) fn read_bounded(path: &Path) -> std::io::Result<Option<String>> {
    let f = std::fs::File::open(path)?;
    let mut buf = Vec::with_capacity(4096);
    f.take(MAX_FILE as u64 + 1).read_to_end(&mut buf)?;
    if buf.len() > MAX_FILE {
        return Ok(None);
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// The relative cgroup path for read-only uses: leading and trailing `/` are ignored.
pub(crate) fn rel(path: &str) -> &Path {
    Path::new(path.trim_matches('/'))
}

/// The relative cgroup path for operations that change things: not the root itself, and only
/// plain components (no `..`), so nothing outside the hierarchy can be touched.
pub(crate) fn checked(path: &str) -> Result<&Path> {
    let p = rel(path);
    let invalid = |reason| {
        Err(Error::InvalidPath {
            path: path.to_string(),
            reason,
        })
    };
    if p.as_os_str().is_empty() {
        return invalid("is the hierarchy root; tidelet only manages cgroups below it");
    }
    let plain = |s: &str| !s.is_empty() && s != "." && s != "..";
    if !path.trim_matches('/').split('/').all(plain)
        || !p.components().all(|c| matches!(c, Component::Normal(_)))
    {
        return invalid("must only have plain components (no `.`, `..` or empty ones)");
    }
    Ok(p)
}

pub(crate) fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `value` into the existing interface file `dir/file` in one `write(2)`.
pub(crate) fn write(dir: &Path, file: &str, value: &str) -> Result<()> {
    let path = dir.join(file);
    let err = |source| Error::Write {
        path: path.clone(),
        value: value.to_string(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .map_err(err)?;
    f.write_all(value.as_bytes()).map_err(err)?;
    tracing::debug!(file = %path.display(), value, "cgroup write");
    Ok(())
}

pub(crate) fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(io_err(path))
}

/// Create `dir` if missing; true if it was created now.
pub(crate) fn mkdir(dir: &Path) -> Result<bool> {
    match std::fs::create_dir(dir) {
        Ok(()) => {
            tracing::debug!(dir = %dir.display(), "cgroup created");
            Ok(true)
        }
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(Error::Io {
            path: dir.to_path_buf(),
            source: e,
        }),
    }
}

/// The pids of a `cgroup.procs` file.
pub(crate) fn parse_procs(contents: &str) -> Vec<i32> {
    contents
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .filter(|p| *p > 0)
        .collect()
}

/// `dir` and every directory below it, children before their parents. A missing `dir` gives
/// an empty list.
pub(crate) fn tree_post_order(dir: &Path) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if io_is_gone(&e) => return Ok(()),
            Err(e) => {
                return Err(Error::Io {
                    path: dir.to_path_buf(),
                    source: e,
                })
            }
        };
        if depth < MAX_DEPTH {
            for entry in entries {
                let entry = entry.map_err(io_err(dir))?;
                // file_type does not follow symlinks: a link is never walked into.
                if entry.file_type().map_err(io_err(dir))?.is_dir() {
                    walk(&entry.path(), depth + 1, out)?;
                }
            }
        }
        out.push(dir.to_path_buf());
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, 0, &mut out)?;
    Ok(out)
}

/// Every pid in the `cgroup.procs` files of the trees at `dirs`, sorted, without duplicates.
pub(crate) fn tree_pids(dirs: &[PathBuf]) -> Result<Vec<i32>> {
    let mut pids = Vec::new();
    for base in dirs {
        for dir in tree_post_order(base)? {
            let procs = dir.join("cgroup.procs");
            match std::fs::read_to_string(&procs) {
                Ok(s) => pids.extend(parse_procs(&s)),
                // The cgroup went away between listing and reading (ENOENT), or while being
                // read (ENODEV: an eviction's kill racing the pod's teardown, which removes
                // the emptied cgroup; seen in scripts/bench-eviction.sh as a failed eviction).
                Err(e) if io_is_gone(&e) => {}
                Err(e) => {
                    return Err(Error::Io {
                        path: procs,
                        source: e,
                    })
                }
            }
        }
    }
    pids.sort_unstable();
    pids.dedup();
    Ok(pids)
}

/// Sleep a little longer each round (1, 2, 4, ... ms, then 50 ms), not past `deadline`. Short
/// at first because an eviction is timed by how soon the victim's processes are gone, and a
/// killed process usually is within a few milliseconds.
fn back_off(round: u32, deadline: Instant) {
    let step = Duration::from_millis(1u64 << round.min(6)).min(Duration::from_millis(50));
    std::thread::sleep(step.min(deadline.saturating_duration_since(Instant::now())));
}

/// SIGKILL whatever `list` reports until it reports nothing, for at most `KILL_TIMEOUT`.
/// `nudge` runs each round first (v2 writes `cgroup.kill` there). Our own pid is never killed.
pub(crate) fn kill_until_empty(
    path: &Path,
    mut nudge: impl FnMut() -> Result<()>,
    mut list: impl FnMut() -> Result<Vec<i32>>,
) -> Result<()> {
    let deadline = Instant::now() + KILL_TIMEOUT;
    let me = std::process::id() as i32;
    for round in 0.. {
        let pids = list()?;
        if pids.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Busy {
                path: path.to_path_buf(),
                pids,
                waited: KILL_TIMEOUT,
            });
        }
        nudge()?;
        for pid in pids.into_iter().filter(|p| *p != me) {
            match kill(Pid::from_raw(pid), Signal::SIGKILL) {
                Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
                Err(e) => {
                    return Err(Error::Io {
                        path: path.to_path_buf(),
                        source: e.into(),
                    });
                }
            }
        }
        back_off(round, deadline);
    }
    unreachable!("the loop only ends by returning")
}

/// `rmdir` every directory of the trees at `bases`, children first. `EBUSY` (processes still
/// exiting) is retried until `REMOVE_TIMEOUT`; a directory already gone is fine.
pub(crate) fn remove_trees(path: &Path, bases: &[PathBuf]) -> Result<()> {
    let deadline = Instant::now() + REMOVE_TIMEOUT;
    let mut round = 0;
    loop {
        let mut busy: Vec<PathBuf> = Vec::new();
        for base in bases {
            for dir in tree_post_order(base)? {
                // The parent of a busy cgroup cannot go either; try it next round.
                if busy.iter().any(|b| b.starts_with(&dir)) {
                    continue;
                }
                match std::fs::remove_dir(&dir) {
                    Ok(()) => tracing::debug!(dir = %dir.display(), "cgroup removed"),
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => busy.push(dir),
                    Err(e) => {
                        return Err(Error::Io {
                            path: dir,
                            source: e,
                        })
                    }
                }
            }
        }
        let Some(dir) = busy.into_iter().next() else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            let pids = tree_pids(std::slice::from_ref(&dir)).unwrap_or_default();
            tracing::warn!(cgroup = %path.display(), dir = %dir.display(), ?pids, "cgroup still busy");
            return Err(Error::Busy {
                path: dir,
                pids,
                waited: REMOVE_TIMEOUT,
            });
        }
        back_off(round, deadline);
        round += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_paths() {
        let ok = [
            ("a", "a"),
            ("/tidelet/kubepods", "tidelet/kubepods"),
            ("a/b/c", "a/b/c"),
        ];
        for (p, want) in ok {
            assert_eq!(checked(p).unwrap(), Path::new(want), "{p}");
        }
        for p in ["", "/", "a/../b", "..", "./a", "a/./b", "a//b"] {
            let err = checked(p).unwrap_err().to_string();
            assert!(err.contains(&format!("{p:?}")), "{p:?}: {err}");
        }
    }

    #[test]
    fn parses_procs() {
        assert_eq!(parse_procs("1\n22\n\n333\n"), vec![1, 22, 333]);
        assert_eq!(parse_procs(""), Vec::<i32>::new());
        assert_eq!(parse_procs("0\n-4\nx\n7"), vec![7]);
    }

    #[test]
    fn walks_children_first_and_removes_with_rmdir_only() {
        let t = tempfile::tempdir().unwrap();
        let base = t.path().join("a");
        for d in ["a/b/c", "a/d"] {
            std::fs::create_dir_all(t.path().join(d)).unwrap();
        }
        let order = tree_post_order(&base).unwrap();
        let pos = |d: &str| order.iter().position(|p| p == &t.path().join(d)).unwrap();
        assert!(pos("a/b/c") < pos("a/b") && pos("a/b") < pos("a") && pos("a/d") < pos("a"));
        assert_eq!(order.len(), 4);
        assert!(tree_post_order(&t.path().join("missing"))
            .unwrap()
            .is_empty());

        // A plain file in the tree makes rmdir fail (ENOTEMPTY): the error names the directory.
        std::fs::write(t.path().join("a/d/data"), "keep").unwrap();
        let err = remove_trees(Path::new("a"), std::slice::from_ref(&base)).unwrap_err();
        assert!(err.to_string().contains("a/d"), "{err}");
        assert_eq!(
            std::fs::read_to_string(t.path().join("a/d/data")).unwrap(),
            "keep"
        );
        std::fs::remove_file(t.path().join("a/d/data")).unwrap();
        remove_trees(Path::new("a"), std::slice::from_ref(&base)).unwrap();
        assert!(!base.exists());
        remove_trees(Path::new("a"), &[base]).unwrap();
    }

    #[test]
    fn write_refuses_missing_interface_files() {
        let t = tempfile::tempdir().unwrap();
        let err = write(t.path(), "memory.max", "123")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("memory.max") && err.contains("\"123\""),
            "{err}"
        );
        assert!(!t.path().join("memory.max").exists());
        std::fs::write(t.path().join("memory.max"), "max\n").unwrap();
        write(t.path(), "memory.max", "123").unwrap();
        assert_eq!(
            std::fs::read_to_string(t.path().join("memory.max")).unwrap(),
            "123"
        );
    }
}
