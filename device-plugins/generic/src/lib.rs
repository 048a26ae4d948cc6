//! tidelet's generic device plugin: device nodes described by glob groups in a YAML file
//! (serial ports, cameras, GPIO chips, I2C buses...), each group one extended resource with a
//! share count, served and registered through `tidelet-device-plugin`. Every group is
//! registered from the start, even with no device yet, and a scan every second (a readdir of
//! the groups' directories) reports hot-plugged devices through `ListAndWatch`.

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
    for (r, g) in &resources {
        r.update(&scan::scan_group(&args.dev_root, g));
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
            _ = tick.tick() => {
                for (r, g) in &resources {
                    r.update(&scan::scan_group(&args.dev_root, g));
                }
            }
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
