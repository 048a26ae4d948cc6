//! The device manager's checkpoint, `<rootDir>/device_manager_state` (kubelet keeps the same
//! facts in `kubelet_internal_checkpoint`): which devices each pod's containers hold, with
//! the plugin's `Allocate` answer, and which devices each resource had. After a restart the
//! agent gives restarted containers the same devices and the same answer without asking the
//! plugin again, and keeps the resources in capacity (unhealthy) until their plugins register.
//!
//! The answer is stored as its protobuf bytes (hex), exactly what the plugin sent. Written
//! atomically after every change; a file that cannot be read is reported and ignored, as
//! kubelet does ("device allocation info may not be up-to-date").

use std::collections::BTreeMap;
use std::path::Path;

use prost::Message;
use serde::{Deserialize, Serialize};
use tidelet_deviceplugin_api::v1beta1::ContainerAllocateResponse;

use super::registry::{Held, Registry};

pub const FILE: &str = "device_manager_state";
const MAX_SIZE: u64 = 16 << 20;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    #[serde(default)]
    pub entries: Vec<Entry>,
    /// Resource → every device ID it had.
    #[serde(default)]
    pub registered_devices: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    #[serde(rename = "podUID")]
    pub pod_uid: String,
    pub container_name: String,
    pub resource_name: String,
    #[serde(rename = "deviceIDs")]
    pub device_ids: Vec<String>,
    /// Hex of the protobuf `ContainerAllocateResponse`.
    pub alloc_resp: String,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {reason}")]
    Invalid { path: String, reason: String },
}

/// The checkpoint of `reg`'s answered allocations and devices.
pub fn from_registry(reg: &Registry) -> Checkpoint {
    let mut entries = Vec::new();
    for (pod, containers) in &reg.allocations {
        for (container, resources) in containers {
            for (resource, held) in resources {
                let Some(resp) = &held.response else { continue };
                entries.push(Entry {
                    pod_uid: pod.clone(),
                    container_name: container.clone(),
                    resource_name: resource.clone(),
                    device_ids: held.ids.clone(),
                    alloc_resp: hex::encode(resp.encode_to_vec()),
                });
            }
        }
    }
    let registered_devices = reg
        .resources
        .iter()
        .map(|(k, r)| (k.clone(), r.devices.keys().cloned().collect()))
        .collect();
    Checkpoint {
        entries,
        registered_devices,
    }
}

/// Put a checkpoint's allocations and devices into a fresh registry: resources come back
/// stopped at `now` (unhealthy, in their grace period) until their plugins register again.
pub fn restore(cp: &Checkpoint, now: std::time::Duration) -> Result<Registry, String> {
    let mut reg = Registry::default();
    for (resource, ids) in &cp.registered_devices {
        let g = reg
            .register(resource, "", Default::default(), |_| false)
            .map_err(|e| format!("registeredDevices: {e}"))?;
        reg.update(resource, g, ids.iter().map(|i| (i.clone(), false)).collect());
        reg.stopped(resource, g, now);
    }
    for (i, e) in cp.entries.iter().enumerate() {
        let bytes = hex::decode(&e.alloc_resp)
            .map_err(|err| format!("entries[{i}].allocResp: not hex: {err}"))?;
        let resp = ContainerAllocateResponse::decode(bytes.as_slice())
            .map_err(|err| format!("entries[{i}].allocResp: not a ContainerAllocateResponse: {err}"))?;
        reg.allocations
            .entry(e.pod_uid.clone())
            .or_default()
            .entry(e.container_name.clone())
            .or_default()
            .insert(
                e.resource_name.clone(),
                Held {
                    ids: e.device_ids.clone(),
                    response: Some(resp),
                },
            );
    }
    Ok(reg)
}

pub fn save(dir: &Path, cp: &Checkpoint) -> Result<(), Error> {
    let path = dir.join(FILE);
    crate::state::atomic_write_json(&path, cp).map_err(|source| Error::Io {
        path: path.display().to_string(),
        source,
    })
}

/// The checkpoint in `dir`; `None` when there is none.
pub fn load(dir: &Path) -> Result<Option<Checkpoint>, Error> {
    use std::io::Read;
    let path = dir.join(FILE);
    let p = path.display().to_string();
    let f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::Io { path: p, source }),
    };
    let mut text = String::new();
    f.take(MAX_SIZE + 1)
        .read_to_string(&mut text)
        .map_err(|source| Error::Io {
            path: p.clone(),
            source,
        })?;
    if text.len() as u64 > MAX_SIZE {
        return Err(Error::Invalid {
            path: p,
            reason: format!("larger than {MAX_SIZE} bytes"),
        });
    }
    let de = &mut serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(de)
        .map(Some)
        .map_err(|e| Error::Invalid {
            path: p,
            reason: format!("{}: {}", e.path(), e.inner()),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tidelet_deviceplugin_api::v1beta1::DeviceSpec;

    #[test]
    fn a_registry_survives_a_round_trip_through_disk() {
        let mut reg = Registry::default();
        let g = reg.register("x.io/a", "a.sock", Default::default(), |_| true).unwrap();
        reg.update("x.io/a", g, [("d0".to_string(), true), ("d1".to_string(), true)].into());
        reg.reserve("pod1", "app", "x.io/a", vec!["d1".into()]);
        let resp = ContainerAllocateResponse {
            envs: [("A".to_string(), "1".to_string())].into(),
            devices: vec![DeviceSpec {
                container_path: "/dev/a".into(),
                host_path: "/dev/a1".into(),
                permissions: "rw".into(),
            }],
            ..Default::default()
        };
        reg.answered("pod1", "app", "x.io/a", resp.clone());
        // A reservation still waiting for its answer is not written.
        reg.reserve("pod2", "app", "x.io/a", vec!["d0".into()]);
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path()).unwrap().is_none());
        save(dir.path(), &from_registry(&reg)).unwrap();
        let cp = load(dir.path()).unwrap().unwrap();
        assert_eq!(cp.entries.len(), 1);
        let back = restore(&cp, Duration::from_secs(5)).unwrap();
        let held = back.held("pod1", "app", "x.io/a").unwrap();
        assert_eq!(held.ids, vec!["d1"]);
        assert_eq!(held.response.as_ref(), Some(&resp));
        // Known again, but unhealthy and in the grace period until the plugin registers.
        assert_eq!(back.counts()["x.io/a"], (2, 0));
        assert_eq!(back.resources["x.io/a"].stopped_at, Some(Duration::from_secs(5)));
        assert!(back.held("pod2", "app", "x.io/a").is_none());
    }

    #[test]
    fn a_bad_file_is_an_error_naming_the_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "{\"entries\": [{\"podUID\": 3}]}").unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains(FILE) && e.contains("entries[0].podUID"), "{e}");
        let cp = Checkpoint {
            entries: vec![Entry {
                pod_uid: "p".into(),
                container_name: "c".into(),
                resource_name: "x.io/a".into(),
                device_ids: vec![],
                alloc_resp: "zz".into(),
            }],
            ..Default::default()
        };
        let e = restore(&cp, Duration::ZERO).unwrap_err();
        assert!(e.contains("entries[0].allocResp: not hex"), "{e}");
    }
}
