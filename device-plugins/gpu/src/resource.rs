//! One GPU resource as a [`Plugin`]: the table of its devices (updated by each scan), the
//! watch channel `ListAndWatch` streams from, and `Allocate`: the device's nodes, plus for
//! NVIDIA the control nodes that exist and `NVIDIA_VISIBLE_DEVICES`.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tidelet_device_plugin::api::v1beta1::{ContainerAllocateResponse, Device, DeviceSpec};
use tidelet_device_plugin::{device, Plugin};
use tokio::sync::watch;
use tonic::Status;

use crate::{nvidia, GpuDevice};

/// A served GPU resource.
pub struct GpuResource {
    name: String,
    dev_root: PathBuf,
    nvidia: bool,
    tx: watch::Sender<Vec<Device>>,
    table: Mutex<Vec<GpuDevice>>,
}

impl GpuResource {
    /// An empty resource; `nvidia` adds the control nodes and the env to allocations.
    pub fn new(name: &str, dev_root: &Path, nvidia: bool) -> Self {
        GpuResource {
            name: name.to_string(),
            dev_root: dev_root.to_path_buf(),
            nvidia,
            tx: watch::channel(Vec::new()).0,
            table: Mutex::new(Vec::new()),
        }
    }

    /// Takes a scan's result: the devices found, and every device known before but not found
    /// now kept as Unhealthy. Watchers hear of it only if something changed.
    pub fn update(&self, found: Vec<GpuDevice>) {
        let Ok(mut table) = self.table.lock() else {
            return;
        };
        let merged = merge(&table, found);
        if *table == merged {
            return;
        }
        for d in &merged {
            let was = table.iter().find(|o| o.id == d.id).map(|o| o.healthy);
            if was != Some(d.healthy) {
                tracing::info!(resource = %self.name, id = %d.id, healthy = d.healthy, "device health");
            }
        }
        *table = merged;
        let list: Vec<Device> = table.iter().map(|d| device(&d.id, d.healthy)).collect();
        self.tx.send_replace(list);
    }

    /// Devices known.
    pub fn len(&self) -> usize {
        self.table.lock().map(|t| t.len()).unwrap_or(0)
    }

    /// Whether no device is known.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The new table: `found` in order, then the old devices not found, Unhealthy.
fn merge(old: &[GpuDevice], found: Vec<GpuDevice>) -> Vec<GpuDevice> {
    let mut out = found;
    for o in old {
        if !out.iter().any(|d| d.id == o.id) {
            out.push(GpuDevice {
                healthy: false,
                ..o.clone()
            });
        }
    }
    out
}

impl Plugin for GpuResource {
    fn resource_name(&self) -> &str {
        &self.name
    }

    fn devices(&self) -> watch::Receiver<Vec<Device>> {
        self.tx.subscribe()
    }

    fn allocate(&self, ids: &[String]) -> Result<ContainerAllocateResponse, Status> {
        let table = self
            .table
            .lock()
            .map_err(|_| Status::internal(format!("{}: device table poisoned", self.name)))?;
        let mut nodes: Vec<String> = Vec::new();
        for id in ids {
            let d = table.iter().find(|d| &d.id == id).ok_or_else(|| {
                Status::invalid_argument(format!("{}: unknown device ID {id:?}", self.name))
            })?;
            for n in &d.nodes {
                if !nodes.contains(n) {
                    nodes.push(n.clone());
                }
            }
        }
        drop(table);
        let mut resp = ContainerAllocateResponse::default();
        if self.nvidia {
            nodes.extend(
                nvidia::control_nodes(&self.dev_root)
                    .into_iter()
                    .map(String::from),
            );
            resp.envs
                .insert(nvidia::VISIBLE_DEVICES_ENV.to_string(), ids.join(","));
        }
        resp.devices = nodes
            .iter()
            .map(|n| DeviceSpec {
                container_path: format!("/dev/{n}"),
                host_path: self.dev_root.join(n).to_string_lossy().into_owned(),
                permissions: "rw".to_string(),
            })
            .collect();
        Ok(resp)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpu(id: &str, healthy: bool) -> GpuDevice {
        GpuDevice {
            id: id.into(),
            nodes: vec![format!("n-{id}")],
            healthy,
        }
    }

    #[test]
    fn devices_that_go_stay_listed_unhealthy() {
        // (old, found, want as (id, healthy))
        type Case<'a> = (&'a [GpuDevice], Vec<GpuDevice>, &'a [(&'a str, bool)]);
        let cases: &[Case] = &[
            (&[], vec![gpu("a", true)], &[("a", true)]),
            (&[gpu("a", true)], vec![], &[("a", false)]),
            (&[gpu("a", true)], vec![gpu("a", false)], &[("a", false)]),
            (
                &[gpu("a", false)],
                vec![gpu("a", true), gpu("b", true)],
                &[("a", true), ("b", true)],
            ),
            (
                &[gpu("a", true), gpu("b", true)],
                vec![gpu("b", true)],
                &[("b", true), ("a", false)],
            ),
        ];
        for (old, found, want) in cases {
            let got: Vec<(String, bool)> = merge(old, found.clone())
                .into_iter()
                .map(|d| (d.id, d.healthy))
                .collect();
            let want: Vec<(String, bool)> = want.iter().map(|(i, h)| (i.to_string(), *h)).collect();
            assert_eq!(got, want, "{old:?} + {found:?}");
        }
    }

    #[test]
    fn updates_reach_watchers_only_on_change() {
        let r = GpuResource::new("dri.tidelet.io/x", Path::new("/nonexistent"), false);
        let mut rx = r.devices();
        r.update(vec![gpu("a", true)]);
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        r.update(vec![gpu("a", true)]);
        assert!(!rx.has_changed().unwrap());
        r.update(vec![]);
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow().as_slice(), &[device("a", false)]);
    }

    #[test]
    fn allocation_maps_ids_to_nodes_and_nvidia_adds_env() {
        let r = GpuResource::new("nvidia.com/gpu", Path::new("/nonexistent"), true);
        r.update(vec![gpu("GPU-1", true), gpu("GPU-2", true)]);
        let ids = vec!["GPU-2".to_string(), "GPU-1".to_string()];
        let resp = r.allocate(&ids).unwrap();
        assert_eq!(
            resp.envs.get("NVIDIA_VISIBLE_DEVICES").map(String::as_str),
            Some("GPU-2,GPU-1")
        );
        let paths: Vec<(&str, &str, &str)> = resp
            .devices
            .iter()
            .map(|d| {
                (
                    d.container_path.as_str(),
                    d.host_path.as_str(),
                    d.permissions.as_str(),
                )
            })
            .collect();
        // No control nodes exist under /nonexistent.
        assert_eq!(
            paths,
            vec![
                ("/dev/n-GPU-2", "/nonexistent/n-GPU-2", "rw"),
                ("/dev/n-GPU-1", "/nonexistent/n-GPU-1", "rw")
            ]
        );
        assert!(r.allocate(&["GPU-3".to_string()]).is_err());
    }
}
