//! The one trait a plugin implements: one extended resource, its devices as a watch channel
//! (the full list with health, replaced on every change), and what a container gets for a set
//! of device IDs. The gRPC types stay at the edge (`service.rs`); this trait is plain Rust and
//! synchronous, because answering `Allocate` is a table lookup, not I/O.

use tidelet_deviceplugin_api::v1beta1::{
    ContainerAllocateResponse, ContainerPreferredAllocationRequest, Device, DevicePluginOptions,
};
use tidelet_deviceplugin_api::{HEALTHY, UNHEALTHY};
use tokio::sync::watch;
use tonic::Status;

/// One extended resource served by a plugin.
///
/// The library validates every `Allocate` before calling [`Plugin::allocate`]: all IDs are
/// in the current device list and healthy. A plugin only maps IDs to what a container needs.
pub trait Plugin: Send + Sync + 'static {
    /// The extended resource name, `vendor-domain/name`.
    fn resource_name(&self) -> &str;

    /// `GetDevicePluginOptions`; also sent with `Register`. `get_preferred_allocation_available`
    /// must be true only if [`Plugin::preferred_allocation`] is implemented.
    fn options(&self) -> DevicePluginOptions {
        DevicePluginOptions::default()
    }

    /// The device list: the current value is sent when `ListAndWatch` starts and again each
    /// time the sender changes it.
    fn devices(&self) -> watch::Receiver<Vec<Device>>;

    /// What one container gets for `ids` (known and healthy, checked by the caller).
    fn allocate(&self, ids: &[String]) -> Result<ContainerAllocateResponse, Status>;

    /// The devices this plugin would choose for one container; a hint only.
    fn preferred_allocation(
        &self,
        request: &ContainerPreferredAllocationRequest,
    ) -> Result<Vec<String>, Status> {
        let _ = request;
        Err(Status::unimplemented(format!(
            "{}: GetPreferredAllocation is not offered",
            self.resource_name()
        )))
    }

    /// `PreStartContainer`, called before each start when `options().pre_start_required`.
    fn pre_start(&self, ids: &[String]) -> Result<(), Status> {
        let _ = ids;
        Ok(())
    }
}

/// A `Device` with the given health and no topology.
pub fn device(id: impl Into<String>, healthy: bool) -> Device {
    Device {
        id: id.into(),
        health: if healthy { HEALTHY } else { UNHEALTHY }.to_string(),
        topology: None,
    }
}

/// The preferred allocation most plugins want: the `must_include` IDs first, then available
/// ones in the order given, `allocation_size` in all (fewer if not enough are available).
pub fn simple_preference(request: &ContainerPreferredAllocationRequest) -> Vec<String> {
    let want = usize::try_from(request.allocation_size).unwrap_or(0);
    let mut out: Vec<String> = Vec::with_capacity(want.min(64));
    for id in request
        .must_include_device_i_ds
        .iter()
        .chain(request.available_device_i_ds.iter())
    {
        if out.len() >= want {
            break;
        }
        if !out.contains(id) {
            out.push(id.clone());
        }
    }
    out
}

/// Checks an `Allocate` request's IDs against the current list: every ID known and healthy.
/// The error names the first offending ID and the resource.
pub fn check_ids(resource: &str, devices: &[Device], ids: &[String]) -> Result<(), Status> {
    if ids.is_empty() {
        return Err(Status::invalid_argument(format!(
            "{resource}: a container request with no device IDs"
        )));
    }
    for id in ids {
        match devices.iter().find(|d| &d.id == id) {
            None => {
                return Err(Status::invalid_argument(format!(
                    "{resource}: unknown device ID {id:?}"
                )))
            }
            Some(d) if d.health != HEALTHY => {
                return Err(Status::invalid_argument(format!(
                    "{resource}: device {id:?} is {}",
                    d.health
                )))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn allocate_ids_must_be_known_and_healthy() {
        let devices = vec![device("a", true), device("b", false)];
        let cases: &[(&[&str], Option<&str>)] = &[
            (&["a"], None),
            (&["a", "a"], None),
            (&["b"], Some("device \"b\" is Unhealthy")),
            (&["a", "c"], Some("unknown device ID \"c\"")),
            (&[], Some("no device IDs")),
        ];
        for (req, want) in cases {
            let got = check_ids("x.io/r", &devices, &ids(req));
            match want {
                None => assert!(got.is_ok(), "{req:?}: {got:?}"),
                Some(msg) => {
                    let e = got.unwrap_err();
                    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{req:?}");
                    assert!(e.message().contains(msg), "{req:?}: {}", e.message());
                    assert!(e.message().starts_with("x.io/r: "), "{}", e.message());
                }
            }
        }
    }

    #[test]
    fn simple_preference_puts_required_first_and_stops_at_size() {
        // (available, must include, size, want)
        type Case<'a> = (&'a [&'a str], &'a [&'a str], i32, &'a [&'a str]);
        let cases: &[Case] = &[
            (&["a", "b", "c"], &[], 2, &["a", "b"]),
            (&["a", "b", "c"], &["c"], 2, &["c", "a"]),
            (&["a", "b"], &["b"], 1, &["b"]),
            (&["a"], &[], 3, &["a"]),
            (&["a", "b"], &[], 0, &[]),
            (&["a", "b"], &[], -1, &[]),
        ];
        for (avail, must, size, want) in cases {
            let req = ContainerPreferredAllocationRequest {
                available_device_i_ds: ids(avail),
                must_include_device_i_ds: ids(must),
                allocation_size: *size,
            };
            assert_eq!(
                simple_preference(&req),
                ids(want),
                "{avail:?} {must:?} {size}"
            );
        }
    }
}
