//! The main loop of a plugin that finds its devices by looking under `/dev`: look at once,
//! again as soon as a watched directory changes ([`DirWatch`]), and every interval besides
//! (for what inotify does not tell: `/proc` and `/sys`, or no inotify at all), serving the
//! resources a [`Runner`] holds until one fails or the plugin is told to stop.

use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

use crate::dirwatch::DirWatch;
use crate::{Error, Runner};

/// When to look again: when a watched directory changes, and at an interval, which is
/// longer while the watch works than when inotify cannot be had (or has been given up).
pub struct Rescan {
    watch: DirWatch,
    root: PathBuf,
    dirs: Vec<PathBuf>,
    watched_every: Duration,
    unwatched_every: Duration,
    /// When the interval's next look is due.
    due: Instant,
}

impl Rescan {
    /// Watches `dirs` (each through its nearest existing directory below `root`, see
    /// [`DirWatch::set`]); the first look is at once. Must be called inside a tokio runtime.
    pub fn new(
        root: impl Into<PathBuf>,
        dirs: Vec<PathBuf>,
        watched_every: Duration,
        unwatched_every: Duration,
    ) -> Self {
        Rescan {
            watch: DirWatch::new(),
            root: root.into(),
            dirs,
            watched_every,
            unwatched_every,
            due: Instant::now(),
        }
    }

    /// Waits for the next time to look, then watches the directories again before returning
    /// (they may have come or gone), so that a change made while the caller looks wakes the
    /// next call.
    pub async fn next(&mut self) {
        let ticked = tokio::select! {
            _ = tokio::time::sleep_until(self.due) => true,
            _ = self.watch.changed() => false,
        };
        self.watch.set(&self.root, &self.dirs);
        if ticked {
            // Counted from now, as a late tick is: a busy board does not get a burst of looks.
            let every = if self.watch.is_active() {
                self.watched_every
            } else {
                self.unwatched_every
            };
            self.due = Instant::now() + every;
        }
    }
}

/// Runs `runner` and calls `look` at every wake of `rescan`, until a resource fails (its
/// error) or `shutdown` completes (`Ok`); `look` may add resources to the runner, and its
/// error ends the loop too. Sockets are removed either way.
pub async fn serve_looking(
    mut runner: Runner,
    mut rescan: Rescan,
    shutdown: impl Future<Output = ()>,
    mut look: impl FnMut(&mut Runner) -> Result<(), Error>,
) -> Result<(), Error> {
    tokio::pin!(shutdown);
    loop {
        let failed = tokio::select! {
            _ = rescan.next() => match look(&mut runner) {
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
