//! The main loop of a plugin that finds its devices by looking under `/dev`: look at once,
//! again as soon as a watched directory changes ([`DirWatch`]), and every interval besides
//! (for what inotify does not tell: `/proc` and `/sys`, or no inotify at all), serving the
//! resources a [`Runner`] holds until one fails or the plugin is told to stop.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::dirwatch::DirWatch;
use crate::{Error, Runner};

/// Why a look happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The first look, or the interval passed.
    Interval,
    /// A watched directory changed.
    Changed,
}

/// When to look again: every `every`, and on a change in the watched directories.
pub struct Rescan {
    tick: tokio::time::Interval,
    watch: DirWatch,
    root: PathBuf,
}

impl Rescan {
    /// Looks every `every` (its first tick is at once), watching directories under `root`.
    /// Must be called inside a tokio runtime.
    pub fn new(every: Duration, root: impl Into<PathBuf>) -> Self {
        Rescan::with_watch(every, root, DirWatch::new())
    }

    /// The same with a watch made before (to choose `every` by [`DirWatch::is_active`]).
    pub fn with_watch(every: Duration, root: impl Into<PathBuf>, watch: DirWatch) -> Self {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Rescan {
            tick,
            watch,
            root: root.into(),
        }
    }

    /// Whether changes wake it (inotify works here).
    pub fn is_watching(&self) -> bool {
        self.watch.is_active()
    }

    /// The directories watched now.
    pub fn watched(&self) -> Vec<&Path> {
        self.watch.watched()
    }

    /// Waits for the next time to look, then watches `dirs` (see [`DirWatch::set`]) before
    /// returning, so that a change made while the caller looks wakes the next call.
    pub async fn next(&mut self, dirs: &[PathBuf]) -> Wake {
        let wake = tokio::select! {
            _ = self.tick.tick() => Wake::Interval,
            _ = self.watch.changed() => Wake::Changed,
        };
        self.watch.set(&self.root, dirs);
        wake
    }
}

/// Runs `runner` and calls `look` at every wake of `rescan` (with the directories `dirs`
/// gives), until a resource fails (its error) or `shutdown` completes (`Ok`); `look` may add
/// resources to the runner, and its error ends the loop too. Sockets are removed either way.
pub async fn serve_looking(
    mut runner: Runner,
    mut rescan: Rescan,
    dirs: impl Fn() -> Vec<PathBuf>,
    shutdown: impl Future<Output = ()>,
    mut look: impl FnMut(&mut Runner, Wake) -> Result<(), Error>,
) -> Result<(), Error> {
    tokio::pin!(shutdown);
    loop {
        let watch = dirs();
        let failed = tokio::select! {
            wake = rescan.next(&watch) => match look(&mut runner, wake) {
                Ok(()) => continue,
                Err(e) => e,
            },
            e = runner.failed() => e,
            _ = &mut shutdown => {
                tracing::info!("stopping");
                runner.shutdown().await;
                return Ok(());
            }
        };
        runner.shutdown().await;
        return Err(failed);
    }
}
