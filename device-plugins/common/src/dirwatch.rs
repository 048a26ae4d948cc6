//! Waking up when a few directories change, with inotify: entries created, deleted, moved or
//! changed in mode or owner (`IN_ATTRIB`), and the directory itself deleted or moved.
//!
//! Plugins used to find hot-plugged devices and restarted kubelets by looking every second.
//! With a watch they see a change at once and can look rarely otherwise, which matters on a
//! board that should sleep. One inotify descriptor, registered with tokio's reactor: no thread
//! (the `notify` crate, which the agent uses for its manifest directory, runs one per watcher,
//! and each plugin resource would have its own).
//!
//! A path that does not exist yet is watched through its nearest existing ancestor (not
//! above the root given): `/dev/serial/by-id` is watched as `/dev` until udev makes
//! `/dev/serial`. Callers call [`DirWatch::set`] again after each change, so the watch moves
//! down as directories appear and up as they go. Where inotify cannot be had (no more
//! instances or watches, `fs.inotify.*` limits), the watch says so once and never wakes:
//! callers keep looking at their interval.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::io::unix::AsyncFd;

/// What a watched directory reports.
fn mask() -> AddWatchFlags {
    AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_MOVED_FROM
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_ATTRIB
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
        | AddWatchFlags::IN_ONLYDIR
}

/// How long after a change more changes are gathered into the same wake-up: udev makes a
/// node and then its `by-id`/`by-path` links, a few milliseconds apart.
pub const SETTLE: Duration = Duration::from_millis(30);

/// A set of watched directories.
pub struct DirWatch {
    fd: Option<AsyncFd<Fd>>,
    watched: Vec<(PathBuf, WatchDescriptor)>,
    said_failed: bool,
}

impl DirWatch {
    /// A watch on nothing yet. Without inotify (see the module's notes) it never wakes.
    pub fn new() -> Self {
        let fd = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)
            .map_err(io::Error::from)
            .and_then(|i| {
                // SAFETY: `Fd` owns the inotify descriptor (nix's `OwnedFd`), which stays open
                // and the same until the `AsyncFd` drops it.
                unsafe { AsyncFd::register(Fd(i)) }.map_err(io::Error::from)
            });
        let mut w = DirWatch {
            fd: None,
            watched: Vec::new(),
            said_failed: false,
        };
        match fd {
            Ok(fd) => w.fd = Some(fd),
            Err(e) => w.failed("cannot start inotify", &e),
        }
        w
    }

    /// Whether changes wake this watch (inotify works); if not, callers only poll.
    pub fn is_active(&self) -> bool {
        self.fd.is_some()
    }

    /// Watches exactly `dirs` from now on, each through [`nearest_dir`] below `root`.
    /// Watches already in place are kept, so no change between two calls is missed. A
    /// directory that cannot be watched (the `fs.inotify.max_user_watches` limit, say) ends
    /// the watch altogether: a change there would go unseen, so callers are better off
    /// looking at their interval, which they choose by [`DirWatch::is_active`].
    pub fn set(&mut self, root: &Path, dirs: &[PathBuf]) {
        let Some(fd) = &self.fd else { return };
        let mut want: Vec<PathBuf> = dirs.iter().map(|d| nearest_dir(root, d)).collect();
        want.sort();
        want.dedup();
        let mut failure = None;
        self.watched.retain(|(path, wd)| {
            let keep = want.contains(path);
            if !keep {
                // Fails (EINVAL) when the directory went and the kernel dropped the watch.
                let _ = fd.get_ref().0.rm_watch(*wd);
            }
            keep
        });
        for dir in want {
            if self.watched.iter().any(|(p, _)| *p == dir) {
                continue;
            }
            match fd.get_ref().0.add_watch(&dir, mask()) {
                Ok(wd) => self.watched.push((dir, wd)),
                // Gone between the look and the watch: the next `set` finds its parent.
                Err(nix::errno::Errno::ENOENT) | Err(nix::errno::Errno::ENOTDIR) => {}
                Err(e) => failure = Some((dir, io::Error::from(e))),
            }
        }
        if let Some((dir, e)) = failure {
            self.failed(&format!("cannot watch {}", dir.display()), &e);
            // Dropping the descriptor removes every watch it holds.
            self.fd = None;
            self.watched.clear();
        }
    }

    /// The directories watched now.
    pub fn watched(&self) -> Vec<&Path> {
        self.watched.iter().map(|(p, _)| p.as_path()).collect()
    }

    /// Resolves once a watched directory changed, and after [`SETTLE`] more, with every
    /// event read (a burst is one wake-up; the kernel's queue overflowing is one too).
    /// Never resolves without inotify.
    pub async fn changed(&mut self) {
        let Some(fd) = &self.fd else {
            return std::future::pending().await;
        };
        let read = loop {
            match drain_when_readable(fd).await {
                Ok(true) => break Ok(()),
                Ok(false) => continue,
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = read {
            self.failed("cannot read inotify events", &e);
            self.fd = None;
            self.watched.clear();
            return std::future::pending().await;
        }
        tokio::time::sleep(SETTLE).await;
        if let Some(fd) = &self.fd {
            let _ = drain(fd);
        }
    }

    fn failed(&mut self, what: &str, e: &io::Error) {
        if !self.said_failed {
            tracing::warn!(error = %e, "{what}: changes are seen only when looking at the interval");
            self.said_failed = true;
        }
    }
}

impl Default for DirWatch {
    fn default() -> Self {
        DirWatch::new()
    }
}

/// The inotify descriptor as tokio's reactor wants it (`AsRawFd`; nix gives `AsFd`).
struct Fd(Inotify);

impl std::os::fd::AsRawFd for Fd {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

/// Waits until the descriptor is readable and reads what is there: whether there were events.
async fn drain_when_readable(fd: &AsyncFd<Fd>) -> io::Result<bool> {
    let mut guard = fd.readable().await?;
    match guard.try_io(|inner| read(&inner.get_ref().0)) {
        Ok(r) => r.map(|n| n > 0),
        // Readiness was stale; it has been cleared.
        Err(_would_block) => Ok(false),
    }
}

/// Reads every event queued now (without waiting); how many.
fn drain(fd: &AsyncFd<Fd>) -> io::Result<usize> {
    let mut n = 0;
    loop {
        match read(&fd.get_ref().0) {
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(n),
            Err(e) => return Err(e),
        }
    }
}

/// Reads the queued events: how many tell of a change. `IN_IGNORED` alone does not: the
/// kernel sends it when a watch is removed, by `set` or after the directory went (which was
/// told by its own `IN_DELETE_SELF`).
fn read(i: &Inotify) -> io::Result<usize> {
    let events = i.read_events().map_err(io::Error::from)?;
    Ok(events
        .iter()
        .filter(|e| e.mask != AddWatchFlags::IN_IGNORED)
        .count())
}

/// `path` if it is a directory, else its nearest ancestor that is, stopping at `root` (which
/// is returned even if it is missing: watching it then fails and is retried at the next set).
pub fn nearest_dir(root: &Path, path: &Path) -> PathBuf {
    if !path.starts_with(root) {
        return root.to_path_buf();
    }
    let mut p = path;
    while p != root && !p.is_dir() {
        match p.parent() {
            Some(parent) => p = parent,
            None => break,
        }
    }
    p.to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_dir_walks_up_to_an_existing_directory_but_not_above_the_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("dev");
        std::fs::create_dir_all(root.join("serial")).unwrap();
        std::fs::write(root.join("file"), b"").unwrap();
        let cases: &[(&str, &str)] = &[
            ("serial/by-id", "serial"),
            ("serial", "serial"),
            ("a/b/c", ""),
            ("", ""),
            // A file is not a directory to watch: its directory is.
            ("file", ""),
        ];
        for (rel, want) in cases {
            let got = nearest_dir(&root, &root.join(rel));
            assert_eq!(got, root.join(want), "{rel}");
        }
        // Outside the root (or the root missing): the root.
        assert_eq!(nearest_dir(&root, Path::new("/")), root);
        let gone = tmp.path().join("gone");
        assert_eq!(nearest_dir(&gone, &gone.join("x")), gone);
    }

    async fn wakes(w: &mut DirWatch) -> bool {
        tokio::time::timeout(Duration::from_secs(5), w.changed())
            .await
            .is_ok()
    }

    async fn quiet(w: &mut DirWatch) -> bool {
        tokio::time::timeout(Duration::from_millis(200), w.changed())
            .await
            .is_err()
    }

    #[tokio::test]
    async fn changes_wake_it_and_the_watch_follows_directories_as_they_come_and_go() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let deep = root.join("serial/by-id");
        let mut w = DirWatch::new();
        assert!(w.is_active(), "inotify works on this machine");
        w.set(&root, std::slice::from_ref(&deep));
        assert_eq!(w.watched(), vec![root.as_path()]);
        assert!(quiet(&mut w).await, "no change, no wake-up");

        // A file made, then one removed, then a mode change: each wakes it once.
        std::fs::write(root.join("ttyUSB0"), b"").unwrap();
        assert!(wakes(&mut w).await, "create");
        assert!(quiet(&mut w).await, "one wake-up for one change");
        std::fs::remove_file(root.join("ttyUSB0")).unwrap();
        assert!(wakes(&mut w).await, "delete");
        std::fs::write(root.join("video0"), b"").unwrap();
        assert!(wakes(&mut w).await, "create");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(root.join("video0"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        assert!(wakes(&mut w).await, "attrib");

        // A burst is one wake-up.
        for i in 0..50 {
            std::fs::write(root.join(format!("n{i}")), b"").unwrap();
        }
        assert!(wakes(&mut w).await, "burst");
        assert!(quiet(&mut w).await, "the burst was drained");

        // The directories appear: the watch moves down to the deepest that exists.
        std::fs::create_dir(root.join("serial")).unwrap();
        assert!(wakes(&mut w).await, "serial/ made");
        w.set(&root, std::slice::from_ref(&deep));
        assert_eq!(w.watched(), vec![root.join("serial").as_path()]);
        std::fs::create_dir(&deep).unwrap();
        assert!(wakes(&mut w).await, "by-id/ made");
        w.set(&root, std::slice::from_ref(&deep));
        assert_eq!(w.watched(), vec![deep.as_path()]);
        // Only the deepest is watched now: a change above it does not wake it.
        std::fs::write(root.join("other"), b"").unwrap();
        assert!(quiet(&mut w).await, "root not watched any more");
        std::os::unix::fs::symlink("../../ttyUSB0", deep.join("usb-x")).unwrap();
        assert!(wakes(&mut w).await, "symlink in by-id/");

        // And it goes: the watch climbs back.
        std::fs::remove_file(deep.join("usb-x")).unwrap();
        std::fs::remove_dir(&deep).unwrap();
        assert!(wakes(&mut w).await, "by-id/ removed");
        w.set(&root, std::slice::from_ref(&deep));
        assert_eq!(w.watched(), vec![root.join("serial").as_path()]);
        std::fs::create_dir(&deep).unwrap();
        assert!(wakes(&mut w).await, "by-id/ made again");
    }

    /// A directory that cannot be watched (here the kernel refuses a name longer than
    /// PATH_MAX, ENAMETOOLONG; on boards, more often the `max_user_watches` limit) ends the
    /// whole watch, so that callers fall back to their interval rather than miss changes.
    #[tokio::test]
    async fn a_directory_that_cannot_be_watched_gives_the_watch_up() {
        let tmp = tempfile::tempdir().unwrap();
        let mut w = DirWatch::new();
        w.set(tmp.path(), &[tmp.path().to_path_buf()]);
        assert_eq!(w.watched(), vec![tmp.path()]);
        let long = tmp.path().join("d".repeat(5000));
        w.set(&long, &[tmp.path().to_path_buf(), long.clone()]);
        assert!(!w.is_active(), "given up");
        assert!(w.watched().is_empty());
        std::fs::write(tmp.path().join("x"), b"").unwrap();
        assert!(quiet(&mut w).await, "no wake-up once given up");
        w.set(tmp.path(), &[tmp.path().to_path_buf()]);
        assert!(!w.is_active(), "and not taken up again");
    }

    #[tokio::test]
    async fn several_directories_and_one_set_keeps_the_watches_in_place() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        for d in ["a", "b"] {
            std::fs::create_dir(root.join(d)).unwrap();
        }
        let dirs = vec![root.join("a"), root.join("b"), root.join("a")];
        let mut w = DirWatch::new();
        w.set(&root, &dirs);
        assert_eq!(
            w.watched(),
            vec![root.join("a").as_path(), root.join("b").as_path()]
        );
        // A change made before a second `set` of the same directories is not lost.
        std::fs::write(root.join("b/x"), b"").unwrap();
        w.set(&root, &dirs);
        assert!(wakes(&mut w).await, "change in b/ before the second set");
        std::fs::write(root.join("a/x"), b"").unwrap();
        assert!(wakes(&mut w).await, "change in a/");
        // Dropping b/ from the set stops its wake-ups.
        w.set(&root, &dirs[..1]);
        std::fs::write(root.join("b/y"), b"").unwrap();
        assert!(quiet(&mut w).await, "b/ no longer watched");
    }
}
