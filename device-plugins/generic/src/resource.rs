//! One config group as a [`Plugin`]: the table of its nodes (from each scan), the device list
//! derived from it (share count IDs per node), and `Allocate`: one `DeviceSpec` per node held.
//!
//! Hot-plug: a node that appears is added Healthy; one that vanishes is dropped from the list;
//! one that is still there but no longer a device is kept, Unhealthy.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tidelet_device_plugin::api::v1beta1::{ContainerAllocateResponse, Device, DeviceSpec};
use tidelet_device_plugin::{device, Plugin};
use tokio::sync::watch;
use tonic::Status;

use crate::config::Group;
use crate::scan::{device_ids, Found};

/// Most device IDs one resource advertises (nodes times share); the agent refuses huge lists.
pub const MAX_IDS: usize = 1024;

/// A served group.
pub struct GenericResource {
    resource: String,
    share: u32,
    permissions: String,
    dev_root: PathBuf,
    tx: watch::Sender<Vec<Device>>,
    /// Node (relative path) -> (its IDs, healthy).
    table: Mutex<BTreeMap<String, (Vec<String>, bool)>>,
}

impl GenericResource {
    /// An empty resource for `group`, its nodes under `dev_root`.
    pub fn new(group: &Group, dev_root: &Path) -> Self {
        GenericResource {
            resource: group.resource.clone(),
            share: group.share,
            permissions: group.permissions.clone(),
            dev_root: dev_root.to_path_buf(),
            tx: watch::channel(Vec::new()).0,
            table: Mutex::new(BTreeMap::new()),
        }
    }

    /// Takes a scan's matches; watchers hear of it only if the list changed.
    pub fn update(&self, found: &[Found]) {
        let Ok(mut table) = self.table.lock() else {
            return;
        };
        let mut next: BTreeMap<String, (Vec<String>, bool)> = BTreeMap::new();
        let mut ids_total = 0usize;
        for f in found {
            let known = table.contains_key(&f.rel);
            if !f.is_device && !known {
                continue;
            }
            let Some(ids) = device_ids(&f.rel, self.share) else {
                if !known {
                    tracing::debug!(resource = %self.resource, node = %f.rel, "the node's name cannot be a device ID (over 63 characters?), ignored");
                }
                continue;
            };
            if ids_total + ids.len() > MAX_IDS {
                tracing::warn!(resource = %self.resource, node = %f.rel, max = MAX_IDS, "too many devices, ignoring the rest");
                break;
            }
            ids_total += ids.len();
            next.insert(f.rel.clone(), (ids, f.is_device));
        }
        if *table == next {
            return;
        }
        for (rel, (_, healthy)) in &next {
            match table.get(rel) {
                None => {
                    tracing::info!(resource = %self.resource, node = %rel, healthy, "device appeared")
                }
                Some((_, was)) if was != healthy => {
                    tracing::info!(resource = %self.resource, node = %rel, healthy, "device health changed")
                }
                _ => {}
            }
        }
        for rel in table.keys().filter(|r| !next.contains_key(*r)) {
            tracing::info!(resource = %self.resource, node = %rel, "device went away");
        }
        *table = next;
        let list: Vec<Device> = table
            .values()
            .flat_map(|(ids, healthy)| ids.iter().map(move |id| device(id, *healthy)))
            .collect();
        self.tx.send_replace(list);
    }
}

impl Plugin for GenericResource {
    fn resource_name(&self) -> &str {
        &self.resource
    }

    fn devices(&self) -> watch::Receiver<Vec<Device>> {
        self.tx.subscribe()
    }

    fn allocate(&self, ids: &[String]) -> Result<ContainerAllocateResponse, Status> {
        let table = self
            .table
            .lock()
            .map_err(|_| Status::internal(format!("{}: device table poisoned", self.resource)))?;
        let mut nodes: Vec<&str> = Vec::new();
        for id in ids {
            let rel = table
                .iter()
                .find(|(_, (node_ids, _))| node_ids.contains(id))
                .map(|(rel, _)| rel.as_str())
                .ok_or_else(|| {
                    Status::invalid_argument(format!("{}: unknown device ID {id:?}", self.resource))
                })?;
            // Two shares of one node in one container: one node.
            if !nodes.contains(&rel) {
                nodes.push(rel);
            }
        }
        Ok(ContainerAllocateResponse {
            devices: nodes
                .iter()
                .map(|rel| DeviceSpec {
                    container_path: format!("/dev/{rel}"),
                    host_path: self.dev_root.join(rel).to_string_lossy().into_owned(),
                    permissions: self.permissions.clone(),
                })
                .collect(),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;
    use tidelet_device_plugin::api::{HEALTHY, UNHEALTHY};

    fn resource(share: u32) -> GenericResource {
        let text = format!("groups:\n- resource: tidelet.io/serial\n  paths: [\"/dev/ttyUSB*\"]\n  share: {share}\n  permissions: r\n");
        let c = parse(Path::new("c.yaml"), &text).unwrap();
        GenericResource::new(&c.groups[0], Path::new("/d"))
    }

    fn found(v: &[(&str, bool)]) -> Vec<Found> {
        v.iter()
            .map(|(r, d)| Found {
                rel: r.to_string(),
                is_device: *d,
                real: Path::new("/d").join(r),
            })
            .collect()
    }

    fn list(r: &GenericResource) -> Vec<(String, String)> {
        r.devices()
            .borrow()
            .iter()
            .map(|d| (d.id.clone(), d.health.clone()))
            .collect()
    }

    #[test]
    fn hot_plug_by_table() {
        // Successive scans and the list after each.
        let r = resource(1);
        type Step<'a> = (&'a [(&'a str, bool)], &'a [(&'a str, &'a str)]);
        let steps: &[Step] = &[
            (&[("ttyUSB0", true)], &[("ttyUSB0", HEALTHY)]),
            (
                &[("ttyUSB0", true), ("ttyUSB1", false)],
                &[("ttyUSB0", HEALTHY)],
            ),
            (
                &[("ttyUSB0", false), ("ttyUSB1", true)],
                &[("ttyUSB0", UNHEALTHY), ("ttyUSB1", HEALTHY)],
            ),
            (&[("ttyUSB1", true)], &[("ttyUSB1", HEALTHY)]),
            (&[], &[]),
        ];
        for (scan, want) in steps {
            r.update(&found(scan));
            let want: Vec<(String, String)> = want
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect();
            assert_eq!(list(&r), want, "after {scan:?}");
        }
    }

    #[test]
    fn shares_multiply_ids_and_allocate_one_node() {
        let r = resource(2);
        r.update(&found(&[("ttyUSB0", true)]));
        let ids: Vec<String> = list(&r).into_iter().map(|(i, _)| i).collect();
        assert_eq!(ids, vec!["ttyUSB0-0", "ttyUSB0-1"]);
        let resp = r.allocate(&ids).unwrap();
        assert_eq!(resp.devices.len(), 1, "two shares of one node: one node");
        assert_eq!(resp.devices[0].container_path, "/dev/ttyUSB0");
        assert_eq!(resp.devices[0].host_path, "/d/ttyUSB0");
        assert_eq!(resp.devices[0].permissions, "r");
        assert!(r.allocate(&["ttyUSB0".to_string()]).is_err());
    }

    #[test]
    fn the_list_is_bounded() {
        let r = resource(100);
        let many: Vec<Found> = (0..20)
            .map(|i| Found {
                rel: format!("ttyUSB{i:02}"),
                is_device: true,
                real: Path::new("/d").join(format!("ttyUSB{i:02}")),
            })
            .collect();
        r.update(&many);
        assert_eq!(list(&r).len(), MAX_IDS - MAX_IDS % 100);
    }
}
