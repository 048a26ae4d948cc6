//! tidelet's generic device plugin: device nodes described by glob groups in a YAML file
//! (serial ports, cameras, GPIO chips, I2C buses...), each group one extended resource with a
//! share count, served and registered through `tidelet-device-plugin`. Every group is
//! registered from the start, even with no device yet, and a scan every second (a readdir of
//! the groups' directories) reports hot-plugged devices through `ListAndWatch`. A node two
//! groups match (or a node and a symlink to it) is offered once, by the first group.

pub mod args;
pub mod config;
pub mod glob;
mod resource;
pub mod scan;

use std::future::Future;
use std::sync::Arc;

pub use args::{Args, ArgsError};
pub use config::{Config, ConfigError};
pub use resource::GenericResource;
use tidelet_device_plugin::{Error, Runner};

/// Serves every group of `config` until a resource fails (registration refused: the error)
/// or `shutdown` completes (`Ok`), rescanning every `args.scan_interval`. Sockets are removed
/// either way.
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
    let mut overlaps = Vec::new();
    rescan(&args.dev_root, &resources, &mut overlaps);
    for (r, _) in &resources {
        if let Err(e) = runner.add(r.clone()) {
            runner.shutdown().await;
            return Err(e);
        }
    }
    let mut tick = tokio::time::interval(args.scan_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = tick.tick() => rescan(&args.dev_root, &resources, &mut overlaps),
            e = runner.failed() => {
                runner.shutdown().await;
                return Err(e);
            }
            _ = &mut shutdown => {
                tracing::info!("stopping");
                runner.shutdown().await;
                return Ok(());
            }
        }
    }
}

/// Scan every group, give each node to the first group that found it (`scan::claim`), and
/// update the resources. A node two groups match is a config mistake: warned about when it
/// appears (`overlaps` holds the ones already reported), not on every scan.
fn rescan(
    dev_root: &std::path::Path,
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
