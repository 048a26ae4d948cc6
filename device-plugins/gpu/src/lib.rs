//! tidelet's GPU device plugin: NVIDIA GPUs (`nvidia.com/gpu`, from the driver's `/proc`
//! tree, with the control nodes handed along) and DRM render nodes (`dri.tidelet.io/<driver>`),
//! each resource served and registered through `tidelet-device-plugin`. The roots of `/dev`,
//! `/proc` and `/sys` are parameters. A scan every few seconds, and at once when the dev root
//! or its `dri/` changes, finds GPUs and their health (a device whose node is missing or not
//! a character device is Unhealthy; a device seen once stays listed, Unhealthy, when it
//! goes); a resource is registered when its first device is found, so a board without GPUs
//! registers nothing and keeps looking.

pub mod args;
pub mod drm;
pub mod nvidia;
mod resource;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

pub use args::{Args, ArgsError};
pub use resource::GpuResource;
use tidelet_device_plugin::rescan::{serve_looking, Rescan};
use tidelet_device_plugin::{Error, Runner};

/// One GPU as discovered: its ID, its nodes (relative to the dev root, e.g. `nvidia0`,
/// `dri/renderD128`) and whether they are all usable character devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuDevice {
    pub id: String,
    pub nodes: Vec<String>,
    pub healthy: bool,
}

/// Whether `path` is (or links to) a character device.
pub fn is_char_device(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_char_device())
}

/// Everything found under the roots, by resource name.
pub fn scan(args: &Args) -> BTreeMap<String, Vec<GpuDevice>> {
    let mut found = drm::discover(&args.dev_root, &args.sys_root);
    let gpus = nvidia::discover(&args.proc_root, &args.dev_root);
    if !gpus.is_empty() {
        found.insert(nvidia::RESOURCE.to_string(), gpus);
    }
    found
}

/// Scans at once, whenever the dev root or its `dri/` changes (a GPU's node made or removed),
/// and every `args.scan_interval` (health from `/proc` and `/sys`, which inotify does not
/// tell of); serves each resource from its first device on, until a resource fails
/// (registration refused: the error) or `shutdown` completes (`Ok`). Sockets are removed
/// either way.
pub async fn run(args: Args, shutdown: impl Future<Output = ()>) -> Result<(), Error> {
    let runner = Runner::new(&args.device_plugin_dir);
    let dirs = vec![args.dev_root.clone(), args.dev_root.join("dri")];
    // The same interval either way: it is for `/proc` and `/sys`, which are never watched.
    let every = args.scan_interval;
    let looks = Rescan::new(&args.dev_root, dirs, every, every);
    let mut served: BTreeMap<String, Arc<GpuResource>> = BTreeMap::new();
    let mut said_none = false;
    serve_looking(runner, looks, shutdown, |runner| {
        let mut found = scan(&args);
        if found.is_empty() && served.is_empty() && !said_none {
            tracing::info!(dev = %args.dev_root.display(), proc = %args.proc_root.display(), "no GPUs found: advertising nothing, still looking");
            said_none = true;
        }
        for (name, res) in &served {
            res.update(found.remove(name).unwrap_or_default());
        }
        for (name, devices) in found {
            let res = Arc::new(GpuResource::new(
                &name,
                &args.dev_root,
                name == nvidia::RESOURCE,
            ));
            res.update(devices);
            tracing::info!(resource = %name, devices = res.len(), "found a new resource");
            runner.add(res.clone())?;
            served.insert(name, res);
        }
        Ok(())
    })
    .await
}
