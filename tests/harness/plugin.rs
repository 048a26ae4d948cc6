//! A device plugin the tests control, for the misbehaviours tidelet's own plugins never show:
//! an unsupported version, a taken or malformed resource name, 10,000 devices, an `Allocate`
//! that never answers or answers with paths that do not exist. It speaks the real API over a
//! real unix socket to the real agent; the happy paths are tested with the real plugin
//! binaries instead.

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tidelet_deviceplugin_api::v1beta1::{
    AllocateRequest, AllocateResponse, ContainerAllocateResponse,
    ContainerPreferredAllocationResponse, Device, DevicePluginOptions, Empty, ListAndWatchResponse,
    PreStartContainerRequest, PreStartContainerResponse, PreferredAllocationRequest,
    PreferredAllocationResponse, RegisterRequest,
};
use tidelet_deviceplugin_api::{DevicePlugin, DevicePluginServer, RegistrationClient};
use tonic::{Request, Response, Status};

/// How the plugin answers `Allocate`, given the device IDs asked for.
pub type Answer = Arc<dyn Fn(&[String]) -> Option<ContainerAllocateResponse> + Send + Sync>;

struct State {
    devices: tokio::sync::watch::Sender<Vec<Device>>,
    /// `None` from the closure: never answer.
    answer: Mutex<Answer>,
    allocations: Mutex<Vec<Vec<String>>>,
    options: DevicePluginOptions,
    /// What `GetPreferredAllocation` answers (the plugin's pick).
    preferred: Mutex<Vec<String>>,
    /// The available IDs of every `GetPreferredAllocation` call.
    preferred_asked: Mutex<Vec<Vec<String>>>,
    prestarts: Mutex<Vec<Vec<String>>>,
}

pub struct FakePlugin {
    pub resource: String,
    pub endpoint: String,
    dir: PathBuf,
    state: Arc<State>,
    rt: Option<tokio::runtime::Runtime>,
}

/// A device list of `ids`, all healthy.
pub fn healthy(ids: &[&str]) -> Vec<Device> {
    ids.iter()
        .map(|id| Device {
            id: id.to_string(),
            health: tidelet_deviceplugin_api::HEALTHY.into(),
            topology: None,
        })
        .collect()
}

impl FakePlugin {
    /// Serve `resource` on `<dir>/<endpoint>` with `devices` (not registered yet).
    pub fn serve(dir: &Path, resource: &str, endpoint: &str, devices: Vec<Device>) -> FakePlugin {
        Self::serve_with(
            dir,
            resource,
            endpoint,
            devices,
            DevicePluginOptions::default(),
        )
    }

    /// `serve` with these options (pre-start required, preferred allocation offered).
    pub fn serve_with(
        dir: &Path,
        resource: &str,
        endpoint: &str,
        devices: Vec<Device>,
        options: DevicePluginOptions,
    ) -> FakePlugin {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let (tx, _) = tokio::sync::watch::channel(devices);
        let state = Arc::new(State {
            devices: tx,
            answer: Mutex::new(Arc::new(|_: &[String]| {
                Some(ContainerAllocateResponse::default())
            })),
            allocations: Mutex::new(Vec::new()),
            options,
            preferred: Mutex::new(Vec::new()),
            preferred_asked: Mutex::new(Vec::new()),
            prestarts: Mutex::new(Vec::new()),
        });
        // The agent removes every socket in the directory before it serves `kubelet.sock`
        // (so plugins register again after an agent restart): serve only after that.
        let kubelet = dir.join(tidelet_deviceplugin_api::KUBELET_SOCKET);
        crate::wait_for(
            "the agent's kubelet.sock",
            std::time::Duration::from_secs(20),
            || kubelet.exists().then_some(()),
        );
        let path = dir.join(endpoint);
        let svc = DevicePluginServer::new(Svc(state.clone()));
        rt.block_on(async {
            let l = tidelet_deviceplugin_api::bind(&path).unwrap();
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(svc)
                    .serve_with_incoming(tidelet_deviceplugin_api::incoming(l)),
            );
        });
        FakePlugin {
            resource: resource.into(),
            endpoint: endpoint.into(),
            dir: dir.into(),
            state,
            rt: Some(rt),
        }
    }

    /// Register with the agent's `kubelet.sock` as `version`; the agent's refusal message.
    pub fn register_as(&self, version: &str, resource: &str) -> Result<(), String> {
        let sock = self.dir.join(tidelet_deviceplugin_api::KUBELET_SOCKET);
        let req = RegisterRequest {
            version: version.into(),
            endpoint: self.endpoint.clone(),
            resource_name: resource.into(),
            options: Some(self.state.options),
        };
        self.rt.as_ref().unwrap().block_on(async {
            // kubelet.sock appears once the agent serves registration.
            let mut tries = 0;
            let ch = loop {
                match tidelet_deviceplugin_api::connect(&sock).await {
                    Ok(ch) => break ch,
                    Err(e) if tries > 100 => {
                        return Err(format!("connect {}: {e}", sock.display()))
                    }
                    Err(_) => {
                        tries += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            };
            RegistrationClient::new(ch)
                .register(req)
                .await
                .map(|_| ())
                .map_err(|s| s.message().to_string())
        })
    }

    pub fn register(&self) -> Result<(), String> {
        self.register_as(tidelet_deviceplugin_api::VERSION, &self.resource.clone())
    }

    pub fn set_devices(&self, devices: Vec<Device>) {
        self.state.devices.send_replace(devices);
    }

    pub fn set_answer(&self, answer: Answer) {
        *self.state.answer.lock().unwrap() = answer;
    }

    pub fn set_preferred(&self, ids: &[&str]) {
        *self.state.preferred.lock().unwrap() = ids.iter().map(|s| s.to_string()).collect();
    }

    /// The available IDs of every `GetPreferredAllocation` call so far.
    pub fn preferred_asked(&self) -> Vec<Vec<String>> {
        self.state.preferred_asked.lock().unwrap().clone()
    }

    /// Device IDs of every `PreStartContainer` call so far.
    pub fn prestarts(&self) -> Vec<Vec<String>> {
        self.state.prestarts.lock().unwrap().clone()
    }

    /// Device IDs of every `Allocate` call so far.
    pub fn allocations(&self) -> Vec<Vec<String>> {
        self.state.allocations.lock().unwrap().clone()
    }

    /// Stop serving (the agent's stream ends) and remove the socket.
    pub fn stop(mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
        let _ = std::fs::remove_file(self.dir.join(&self.endpoint));
    }
}

impl Drop for FakePlugin {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

struct Svc(Arc<State>);

type Stream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<ListAndWatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl DevicePlugin for Svc {
    async fn get_device_plugin_options(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<DevicePluginOptions>, Status> {
        Ok(Response::new(self.0.options))
    }

    type ListAndWatchStream = Stream;

    async fn list_and_watch(&self, _: Request<Empty>) -> Result<Response<Stream>, Status> {
        let mut rx = self.0.devices.subscribe();
        let (tx, out) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                let devices = rx.borrow_and_update().clone();
                if tx.send(Ok(ListAndWatchResponse { devices })).await.is_err() {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(out),
        )))
    }

    async fn get_preferred_allocation(
        &self,
        req: Request<PreferredAllocationRequest>,
    ) -> Result<Response<PreferredAllocationResponse>, Status> {
        if !self.0.options.get_preferred_allocation_available {
            return Err(Status::unimplemented("not offered"));
        }
        let mut out = Vec::new();
        for c in req.into_inner().container_requests {
            self.0
                .preferred_asked
                .lock()
                .unwrap()
                .push(c.available_device_i_ds.clone());
            out.push(ContainerPreferredAllocationResponse {
                device_i_ds: self.0.preferred.lock().unwrap().clone(),
            });
        }
        Ok(Response::new(PreferredAllocationResponse {
            container_responses: out,
        }))
    }

    async fn allocate(
        &self,
        req: Request<AllocateRequest>,
    ) -> Result<Response<AllocateResponse>, Status> {
        let mut out = Vec::new();
        for c in req.into_inner().container_requests {
            self.0
                .allocations
                .lock()
                .unwrap()
                .push(c.devices_ids.clone());
            let answer = self.0.answer.lock().unwrap().clone();
            match answer(&c.devices_ids) {
                Some(r) => out.push(r),
                None => std::future::pending::<()>().await,
            }
        }
        Ok(Response::new(AllocateResponse {
            container_responses: out,
        }))
    }

    async fn pre_start_container(
        &self,
        req: Request<PreStartContainerRequest>,
    ) -> Result<Response<PreStartContainerResponse>, Status> {
        self.0
            .prestarts
            .lock()
            .unwrap()
            .push(req.into_inner().devices_ids);
        Ok(Response::new(PreStartContainerResponse {}))
    }
}
