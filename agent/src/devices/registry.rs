//! What the device manager knows, as plain data with pure transitions (table-tested): the
//! extended resources plugins registered, their devices and health, and which devices each
//! pod's containers hold.
//!
//! kubelet's rules, kept here:
//! - capacity is every device a plugin lists, allocatable only the healthy ones;
//! - when a plugin goes away its devices turn unhealthy at once (allocatable 0) and the
//!   resource stays in capacity for a grace period, so a plugin restart does not make the
//!   node forget it; after that the resource is removed;
//! - a device stays allocated to its pod while the pod exists, whatever its health (a running
//!   container keeps what it has); it is freed when the pod goes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tidelet_deviceplugin_api::v1beta1::{ContainerAllocateResponse, Device, DevicePluginOptions};

/// More devices than this in one `ListAndWatch` answer is refused: a board has a handful, and
/// every device costs memory and status size (the node object goes over MQTT).
pub const MAX_DEVICES: usize = 1024;
/// kubelet's limit for a device ID.
pub const MAX_ID_LEN: usize = 63;

/// One registered (or recently gone) plugin's resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// Socket file name in the device-plugin directory.
    pub endpoint: String,
    pub options: DevicePluginOptions,
    /// Device ID → healthy.
    pub devices: BTreeMap<String, bool>,
    /// Which registration this is; a stream of an older one must not change the newer one.
    pub generation: u64,
    /// When the plugin went away (monotonic), while in its grace period.
    pub stopped_at: Option<Duration>,
}

impl Resource {
    pub fn live(&self) -> bool {
        self.stopped_at.is_none()
    }
}

/// Devices of one resource held by one container, and what the plugin said to give it.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub ids: Vec<String>,
    /// `None` while `Allocate` is in flight (the devices are reserved).
    pub response: Option<ContainerAllocateResponse>,
}

/// Pod UID → container → resource → devices.
pub type Allocations = BTreeMap<String, BTreeMap<String, BTreeMap<String, Held>>>;

#[derive(Debug, Default, Clone)]
pub struct Registry {
    pub resources: BTreeMap<String, Resource>,
    pub allocations: Allocations,
    next_generation: u64,
}

/// Why a device list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    #[error("{count} devices, more than the {MAX_DEVICES} tidelet takes from one plugin")]
    TooMany { count: usize },
    #[error("device {index}: empty ID")]
    EmptyId { index: usize },
    #[error("device {id:?}: ID longer than {MAX_ID_LEN} characters")]
    LongId { id: String },
    #[error("device {id:?}: ID has a character outside printable ASCII")]
    BadId { id: String },
    #[error("device {id:?} is listed twice")]
    Duplicate { id: String },
}

/// kubelet's admission failures for extended resources.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdmitError {
    /// No plugin has (or had) this resource: kubelet's predicate `OutOf<resource>`.
    #[error("Node didn't have enough resource: {resource}, requested: {requested}, used: 0, capacity: 0")]
    Unknown { resource: String, requested: u64 },
    /// Not enough healthy free devices: kubelet's `UnexpectedAdmissionError`.
    #[error("Allocate failed due to requested number of devices unavailable for {resource}. Requested: {requested}, Available: {available}, which is unexpected")]
    Unavailable {
        resource: String,
        requested: u64,
        available: u64,
    },
}

impl AdmitError {
    pub fn reason(&self) -> String {
        match self {
            AdmitError::Unknown { resource, .. } => format!("OutOf{resource}"),
            AdmitError::Unavailable { .. } => "UnexpectedAdmissionError".into(),
        }
    }
}

/// Whether `name` is an extended resource name a plugin may register: `domain/name` with a
/// DNS subdomain before the slash (not in the `kubernetes.io` namespace, which is the
/// system's) and a qualified-name part after it.
pub fn check_resource_name(name: &str) -> Result<(), String> {
    let Some((domain, base)) = name.split_once('/') else {
        return Err(format!(
            "resource name {name:?} is not an extended resource name: it must be <domain>/<name>, e.g. example.com/gpu"
        ));
    };
    if domain.is_empty() || domain.len() > 253 {
        return Err(format!(
            "resource name {name:?}: the domain must be 1 to 253 characters"
        ));
    }
    for label in domain.split('.') {
        let ok = !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!(
                "resource name {name:?}: domain {domain:?} is not a DNS subdomain (lower-case letters, digits, '-' and '.')"
            ));
        }
    }
    if domain == "kubernetes.io" || domain.ends_with(".kubernetes.io") {
        return Err(format!(
            "resource name {name:?}: the kubernetes.io domain is reserved for the system's resources"
        ));
    }
    let ok = !base.is_empty()
        && base.len() <= 63
        && base.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && base.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
        && base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !ok {
        return Err(format!(
            "resource name {name:?}: {base:?} must be 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ));
    }
    Ok(())
}

/// A device list as the agent keeps it, or why it is refused.
pub fn check_devices(list: &[Device]) -> Result<BTreeMap<String, bool>, ListError> {
    if list.len() > MAX_DEVICES {
        return Err(ListError::TooMany { count: list.len() });
    }
    let mut out = BTreeMap::new();
    for (index, d) in list.iter().enumerate() {
        if d.id.is_empty() {
            return Err(ListError::EmptyId { index });
        }
        if d.id.len() > MAX_ID_LEN {
            return Err(ListError::LongId { id: d.id.clone() });
        }
        if !d.id.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ListError::BadId { id: d.id.clone() });
        }
        // Anything but "Healthy" is unhealthy, as in kubelet.
        let healthy = d.health == tidelet_deviceplugin_api::HEALTHY;
        if out.insert(d.id.clone(), healthy).is_some() {
            return Err(ListError::Duplicate { id: d.id.clone() });
        }
    }
    Ok(out)
}

impl Registry {
    /// Take a registration. Refused when another endpoint holds the name and is live and
    /// `holder_alive` says its socket is still there; a plugin that restarted (same endpoint,
    /// or the old one gone) replaces the old registration. Returns the new generation.
    pub fn register(
        &mut self,
        resource: &str,
        endpoint: &str,
        options: DevicePluginOptions,
        holder_alive: impl Fn(&str) -> bool,
    ) -> Result<u64, String> {
        if let Some(r) = self.resources.get(resource) {
            if r.live() && r.endpoint != endpoint && holder_alive(&r.endpoint) {
                return Err(format!(
                    "resource name {resource:?} is already registered by the plugin at {:?}",
                    r.endpoint
                ));
            }
        }
        self.next_generation += 1;
        let generation = self.next_generation;
        // The devices stay known (unhealthy until the new plugin lists them), so that
        // capacity does not flicker across a plugin restart.
        let devices = self
            .resources
            .get(resource)
            .map(|r| r.devices.keys().map(|k| (k.clone(), false)).collect())
            .unwrap_or_default();
        self.resources.insert(
            resource.to_string(),
            Resource {
                endpoint: endpoint.to_string(),
                options,
                devices,
                generation,
                stopped_at: None,
            },
        );
        Ok(generation)
    }

    /// A new list from `ListAndWatch`. Ignored (false) for a stale generation.
    pub fn update(&mut self, resource: &str, generation: u64, devices: BTreeMap<String, bool>) -> bool {
        match self.resources.get_mut(resource) {
            Some(r) if r.generation == generation => {
                r.devices = devices;
                true
            }
            _ => false,
        }
    }

    /// The plugin's stream ended or broke: its devices turn unhealthy, the grace period starts.
    pub fn stopped(&mut self, resource: &str, generation: u64, now: Duration) -> bool {
        match self.resources.get_mut(resource) {
            Some(r) if r.generation == generation && r.live() => {
                r.stopped_at = Some(now);
                for h in r.devices.values_mut() {
                    *h = false;
                }
                true
            }
            _ => false,
        }
    }

    /// Remove resources whose plugin has been gone longer than `grace`; their names.
    pub fn expire(&mut self, now: Duration, grace: Duration) -> Vec<String> {
        let gone: Vec<String> = self
            .resources
            .iter()
            .filter(|(_, r)| r.stopped_at.is_some_and(|t| now.saturating_sub(t) >= grace))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &gone {
            self.resources.remove(k);
        }
        gone
    }

    /// When the next resource's grace period ends, if any is running.
    pub fn next_expiry(&self, grace: Duration) -> Option<Duration> {
        self.resources
            .values()
            .filter_map(|r| r.stopped_at)
            .min()
            .map(|t| t + grace)
    }

    /// Capacity (every device) and allocatable (healthy ones) by resource.
    pub fn counts(&self) -> BTreeMap<String, (u64, u64)> {
        self.resources
            .iter()
            .map(|(k, r)| {
                let healthy = r.devices.values().filter(|h| **h).count() as u64;
                (k.clone(), (r.devices.len() as u64, healthy))
            })
            .collect()
    }

    /// Devices of `resource` held by any container.
    pub fn in_use(&self, resource: &str) -> BTreeSet<&str> {
        self.allocations
            .values()
            .flat_map(|c| c.values())
            .filter_map(|r| r.get(resource))
            .flat_map(|h| h.ids.iter().map(String::as_str))
            .collect()
    }

    /// Healthy devices of `resource` nobody holds, in ID order.
    pub fn free(&self, resource: &str) -> Vec<String> {
        let used = self.in_use(resource);
        self.resources
            .get(resource)
            .map(|r| {
                r.devices
                    .iter()
                    .filter(|(id, h)| **h && !used.contains(id.as_str()))
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Whether a plugin has (or, in its grace period, had) `resource`.
    pub fn knows(&self, resource: &str) -> bool {
        self.resources.contains_key(resource)
    }

    /// Check that `requested` devices of `resource` can be given, without taking them.
    pub fn check(&self, resource: &str, requested: u64) -> Result<Vec<String>, AdmitError> {
        if !self.knows(resource) {
            return Err(AdmitError::Unknown {
                resource: resource.into(),
                requested,
            });
        }
        let free = self.free(resource);
        if (free.len() as u64) < requested {
            return Err(AdmitError::Unavailable {
                resource: resource.into(),
                requested,
                available: free.len() as u64,
            });
        }
        Ok(free)
    }

    /// Reserve `ids` of `resource` for a container; the answer comes with `answered`.
    pub fn reserve(&mut self, pod: &str, container: &str, resource: &str, ids: Vec<String>) {
        self.allocations
            .entry(pod.into())
            .or_default()
            .entry(container.into())
            .or_default()
            .insert(resource.into(), Held { ids, response: None });
    }

    pub fn answered(
        &mut self,
        pod: &str,
        container: &str,
        resource: &str,
        response: ContainerAllocateResponse,
    ) {
        if let Some(h) = self
            .allocations
            .get_mut(pod)
            .and_then(|c| c.get_mut(container))
            .and_then(|r| r.get_mut(resource))
        {
            h.response = Some(response);
        }
    }

    /// Drop a reservation whose `Allocate` failed.
    pub fn unreserve(&mut self, pod: &str, container: &str, resource: &str) {
        if let Some(c) = self.allocations.get_mut(pod) {
            if let Some(r) = c.get_mut(container) {
                r.remove(resource);
                if r.is_empty() {
                    c.remove(container);
                }
            }
            if c.is_empty() {
                self.allocations.remove(pod);
            }
        }
    }

    /// What `pod`'s `container` holds of `resource`, if allocated and answered.
    pub fn held(&self, pod: &str, container: &str, resource: &str) -> Option<&Held> {
        self.allocations.get(pod)?.get(container)?.get(resource)
    }

    /// Free everything `pod` holds; whether it held anything.
    pub fn release(&mut self, pod: &str) -> bool {
        self.allocations.remove(pod).is_some()
    }

    /// Keep only the allocations of `pods` (after a restart: pods that are gone free theirs).
    pub fn retain_pods(&mut self, pods: &BTreeSet<String>) -> Vec<String> {
        let gone: Vec<String> = self
            .allocations
            .keys()
            .filter(|k| !pods.contains(*k))
            .cloned()
            .collect();
        for k in &gone {
            self.allocations.remove(k);
        }
        gone
    }
}

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
