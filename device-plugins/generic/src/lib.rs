//! tidelet's generic device plugin: device nodes described by glob groups in a YAML file
//! (serial ports, cameras, GPIO chips, I2C buses...), each group one extended resource with a
//! share count, served and registered through `tidelet-device-plugin`. Every group is
//! registered from the start, even with no device yet. The groups' directories are watched
//! with inotify, so hot-plugged devices are reported through `ListAndWatch` as soon as their
//! node is made or removed; a full scan (a readdir of those directories) runs every 10 s
//! besides, or every second where inotify cannot be had. A node two
//! groups match (or a node and a symlink to it) is offered once, by the first group.

pub mod args;
pub mod config;
pub mod glob;
mod resource;
pub mod scan;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use args::{Args, ArgsError};
pub use config::{Config, ConfigError};
pub use resource::GenericResource;
use tidelet_device_plugin::rescan::{serve_looking, Rescan};
use tidelet_device_plugin::{Error, Runner};

/// How often all groups are scanned by default while their directories are watched: a
/// backstop, as every change there wakes a scan at once.
pub const SCAN_WATCHED: Duration = Duration::from_secs(10);
/// How often all groups are scanned by default when inotify cannot be had (or a directory
/// could not be watched: see `DirWatch::set`).
pub const SCAN_UNWATCHED: Duration = Duration::from_secs(1);

/// Serves every group of `config` until a resource fails (registration refused: the error)
/// or `shutdown` completes (`Ok`). The groups' directories are watched, so a node is seen as
/// soon as it is made or removed; a full scan runs every `args.scan_interval` besides
/// ([`SCAN_WATCHED`] or [`SCAN_UNWATCHED`] by default).
/// Sockets are removed either way.
pub async fn run(
    args: &Args,
    config: &Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), Error> {
    let resources: Vec<(Arc<GenericResource>, &config::Group)> = config
        .groups
        .iter()
        .map(|g| (Arc::new(GenericResource::new(g, &args.dev_root)), g))
        .collect();
    let mut runner = Runner::new(&args.device_plugin_dir);
    let looks = Rescan::new(
        &args.dev_root,
        watched_dirs(&args.dev_root, config),
        args.scan_interval.unwrap_or(SCAN_WATCHED),
        args.scan_interval.unwrap_or(SCAN_UNWATCHED),
    );
    let mut overlaps = Vec::new();
    rescan(&args.dev_root, &resources, &mut overlaps);
    for (r, _) in &resources {
        if let Err(e) = runner.add(r.clone()) {
            runner.shutdown().await;
            return Err(e);
        }
    }
    serve_looking(runner, looks, shutdown, |_| {
        rescan(&args.dev_root, &resources, &mut overlaps);
        Ok(())
    })
    .await
}

/// The directories the groups' patterns read (`/dev`, `/dev/serial/by-id`...), once each.
pub fn watched_dirs(dev_root: &Path, config: &Config) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = config
        .groups
        .iter()
        .flat_map(|g| g.paths.iter().map(|p| dev_root.join(&p.dir)))
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}

/// Scan every group, give each node to the first group that found it (`scan::claim`), and
/// update the resources. A node two groups match is a config mistake: warned about when it
/// appears (`overlaps` holds the ones already reported), not on every scan.
fn rescan(
    dev_root: &Path,
    resources: &[(Arc<GenericResource>, &config::Group)],
    overlaps: &mut Vec<scan::Overlap>,
) {
    let found = resources
        .iter()
        .map(|(_, g)| scan::scan_group(dev_root, g))
        .collect();
    let (kept, now) = scan::claim(found);
    for o in now.iter().filter(|o| !overlaps.contains(o)) {
        tracing::warn!(
            resource = %resources[o.group].1.resource,
            node = %o.rel,
            held_by = %resources[o.held_by].1.resource,
            held_as = %o.held_as,
            "this node is already offered (the same path, or the same device under another name): not offered again, so that two containers cannot both get it"
        );
    }
    *overlaps = now;
    for ((r, _), nodes) in resources.iter().zip(kept) {
        r.update(&nodes);
    }
}
