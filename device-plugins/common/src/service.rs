//! The gRPC edge: `DevicePlugin` served for one [`Plugin`]. Turns the plugin's watch channel
//! into the `ListAndWatch` stream (full list first, then one full list per change, coalesced
//! to the latest), validates `Allocate` IDs before the plugin sees them, and ends every stream
//! when its server generation stops, so a graceful shutdown is not held open by watchers.

use std::sync::Arc;

use tidelet_deviceplugin_api::v1beta1::{
    AllocateRequest, AllocateResponse, ContainerPreferredAllocationResponse, DevicePluginOptions,
    Empty, ListAndWatchResponse, PreStartContainerRequest, PreStartContainerResponse,
    PreferredAllocationRequest, PreferredAllocationResponse,
};
use tidelet_deviceplugin_api::DevicePlugin;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::plugin::{check_ids, Plugin};

/// Most container requests one `Allocate` may carry; a pod has few containers.
const MAX_CONTAINER_REQUESTS: usize = 256;

/// `DevicePlugin` for one plugin, for one server generation (`stop` ends its streams).
pub(crate) struct Service {
    plugin: Arc<dyn Plugin>,
    stop: watch::Receiver<bool>,
}

impl Service {
    pub(crate) fn new(plugin: Arc<dyn Plugin>, stop: watch::Receiver<bool>) -> Self {
        Service { plugin, stop }
    }
}

#[tonic::async_trait]
impl DevicePlugin for Service {
    async fn get_device_plugin_options(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<DevicePluginOptions>, Status> {
        Ok(Response::new(self.plugin.options()))
    }

    type ListAndWatchStream = ReceiverStream<Result<ListAndWatchResponse, Status>>;

    async fn list_and_watch(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        // One slot: the forwarder waits for the client to take a list before reading the
        // next, and the watch channel coalesces the changes made meanwhile to the latest.
        let (tx, rx) = mpsc::channel(1);
        let mut devices = self.plugin.devices();
        let mut stop = self.stop.clone();
        let resource = self.plugin.resource_name().to_string();
        tokio::spawn(async move {
            loop {
                let list = devices.borrow_and_update().clone();
                tracing::debug!(resource = %resource, devices = list.len(), "ListAndWatch: sending the device list");
                let send = tx.send(Ok(ListAndWatchResponse { devices: list }));
                tokio::select! {
                    r = send => if r.is_err() { break },
                    _ = stop.wait_for(|s| *s) => break,
                }
                tokio::select! {
                    r = devices.changed() => if r.is_err() { break },
                    _ = tx.closed() => break,
                    _ = stop.wait_for(|s| *s) => break,
                }
            }
            tracing::debug!(resource = %resource, "ListAndWatch stream ended");
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn get_preferred_allocation(
        &self,
        request: Request<PreferredAllocationRequest>,
    ) -> Result<Response<PreferredAllocationResponse>, Status> {
        if !self.plugin.options().get_preferred_allocation_available {
            return Err(Status::unimplemented(format!(
                "{}: GetPreferredAllocation is not offered",
                self.plugin.resource_name()
            )));
        }
        let request = request.into_inner();
        bound(
            self.plugin.resource_name(),
            request.container_requests.len(),
        )?;
        let mut out = PreferredAllocationResponse::default();
        for req in &request.container_requests {
            out.container_responses
                .push(ContainerPreferredAllocationResponse {
                    device_i_ds: self.plugin.preferred_allocation(req)?,
                });
        }
        Ok(Response::new(out))
    }

    async fn allocate(
        &self,
        request: Request<AllocateRequest>,
    ) -> Result<Response<AllocateResponse>, Status> {
        let request = request.into_inner();
        let resource = self.plugin.resource_name();
        bound(resource, request.container_requests.len())?;
        let devices = self.plugin.devices().borrow().clone();
        let mut out = AllocateResponse::default();
        for req in &request.container_requests {
            check_ids(resource, &devices, &req.devices_ids)?;
            let resp = self.plugin.allocate(&req.devices_ids)?;
            tracing::info!(resource = %resource, ids = ?req.devices_ids, devices = resp.devices.len(), "allocated");
            out.container_responses.push(resp);
        }
        Ok(Response::new(out))
    }

    async fn pre_start_container(
        &self,
        request: Request<PreStartContainerRequest>,
    ) -> Result<Response<PreStartContainerResponse>, Status> {
        let request = request.into_inner();
        self.plugin.pre_start(&request.devices_ids)?;
        Ok(Response::new(PreStartContainerResponse {}))
    }
}

fn bound(resource: &str, n: usize) -> Result<(), Status> {
    if n > MAX_CONTAINER_REQUESTS {
        return Err(Status::invalid_argument(format!(
            "{resource}: {n} container requests, at most {MAX_CONTAINER_REQUESTS}"
        )));
    }
    Ok(())
}
