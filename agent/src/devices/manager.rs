//! The device manager: kubelet's side of the device-plugin API.
//!
//! - `serve` removes stale sockets from the device-plugin directory (so plugins notice the
//!   agent restarted and register again, as they do with kubelet) and serves `Registration`
//!   on `kubelet.sock`.
//! - Each accepted registration gets one task: connect to the plugin's socket, ask its
//!   options, and follow `ListAndWatch`; when the stream ends the resource's devices turn
//!   unhealthy and the grace period starts (`Registry`).
//! - `admit` gives a pod's containers their devices when the pod is created (as kubelet does
//!   at admission): choose (with `GetPreferredAllocation` when offered), reserve, `Allocate`,
//!   checkpoint. A plugin that does not answer within `allocateTimeout` fails the pod's
//!   admission, not the agent.
//! - `answers`/`pre_start` serve each container start; `release` frees a pod's devices.
//!
//! Every call to a plugin is bounded by a timeout; no lock is held across an `.await`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::PodSpec;
use tidelet_deviceplugin_api::v1beta1::{
    AllocateRequest, ContainerAllocateRequest, ContainerAllocateResponse,
    ContainerPreferredAllocationRequest, DevicePluginOptions, Empty, PreStartContainerRequest,
    PreferredAllocationRequest, RegisterRequest,
};
use tidelet_deviceplugin_api::{DevicePluginClient, Registration, RegistrationServer};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use super::checkpoint;
use super::registry::{self, AdmitError, Registry};

/// The `devices:` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DevicesConfig {
    /// Where `kubelet.sock` and the plugins' sockets live; `None` switches device plugins off.
    pub plugin_dir: Option<PathBuf>,
    /// CDI spec directories, lowest priority first.
    pub cdi_spec_dirs: Vec<PathBuf>,
    /// Longest wait for a plugin's `Allocate`, `GetPreferredAllocation`, `PreStartContainer`.
    pub allocate_timeout: Duration,
    /// How long a gone plugin's resource stays in capacity (kubelet: 5 minutes).
    pub plugin_grace_period: Duration,
}

impl Default for DevicesConfig {
    fn default() -> Self {
        DevicesConfig {
            plugin_dir: Some(PathBuf::from(tidelet_deviceplugin_api::DEFAULT_DIR)),
            cdi_spec_dirs: vec![PathBuf::from("/etc/cdi"), PathBuf::from("/var/run/cdi")],
            allocate_timeout: Duration::from_secs(10),
            plugin_grace_period: Duration::from_secs(300),
        }
    }
}

/// What the manager tells the rest of the agent.
pub enum Notice {
    /// Capacity, allocatable or allocations changed: the node status is stale.
    Changed,
    /// A node event (a plugin registered, was refused, went away, sent a bad list).
    Event {
        warning: bool,
        reason: &'static str,
        message: String,
    },
}

/// How many notices may wait for the agent. Plugins register, fail and change in bursts of a
/// few; a full channel drops the notice (see `Notices::send`).
pub const NOTICES_CAPACITY: usize = 256;

/// The manager's notices travel as messages on a bounded channel: the manager knows nothing
/// of who reads them (the agent turns them into node events and a status refresh), and those
/// raised before the reader exists (a bad checkpoint at start) wait for it.
#[derive(Clone)]
pub struct Notices(tokio::sync::mpsc::Sender<Notice>);

impl Notices {
    pub fn channel() -> (Notices, tokio::sync::mpsc::Receiver<Notice>) {
        let (tx, rx) = tokio::sync::mpsc::channel(NOTICES_CAPACITY);
        (Notices(tx), rx)
    }

    /// Never blocks. A dropped `Changed` loses nothing (the queued notices refresh the status
    /// anyway); a dropped event is already in the log (`Manager::event`).
    fn send(&self, n: Notice) {
        use tokio::sync::mpsc::error::TrySendError;
        match self.0.try_send(n) {
            Ok(()) | Err(TrySendError::Full(Notice::Changed)) | Err(TrySendError::Closed(_)) => {}
            Err(TrySendError::Full(Notice::Event { reason, .. })) => {
                tracing::warn!(
                    reason,
                    capacity = NOTICES_CAPACITY,
                    "device notices full; node event dropped"
                );
            }
        }
    }
}

/// Why a pod cannot have its devices: kubelet's reason and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct AdmitFailure {
    pub reason: String,
    pub message: String,
}

impl From<AdmitError> for AdmitFailure {
    fn from(e: AdmitError) -> Self {
        AdmitFailure {
            reason: e.reason(),
            message: e.to_string(),
        }
    }
}

fn unexpected(message: String) -> AdmitFailure {
    AdmitFailure {
        reason: "UnexpectedAdmissionError".into(),
        message,
    }
}

/// One device as `get node` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceView {
    pub id: String,
    pub healthy: bool,
    /// `<pod uid>/<container>` holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
}

/// One extended resource as `get node` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceView {
    pub name: String,
    pub endpoint: String,
    /// The plugin is connected (not in its grace period).
    pub live: bool,
    pub capacity: u64,
    pub allocatable: u64,
    pub allocated: u64,
    pub devices: Vec<DeviceView>,
}

/// Devices one container holds, as `describe pod` shows them.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeldView {
    pub container: String,
    pub resource: String,
    pub ids: Vec<String>,
    /// IDs among `ids` that are unhealthy (or gone) now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unhealthy: Vec<String>,
    /// The plugin's annotations for the container (tidelet has no OCI runtime to hand them
    /// to; they are shown by `describe pod`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

pub struct Manager {
    cfg: DevicesConfig,
    state_dir: PathBuf,
    reg: Mutex<Registry>,
    clients: Mutex<BTreeMap<String, (u64, DevicePluginClient<Channel>)>>,
    started: Instant,
    notify: Notices,
    /// Wakes the expiry task when a grace period starts.
    expiry: tokio::sync::Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Names of a container's extended resources (`<domain>/<name>` limits) and their counts.
pub fn extended_requests(c: &k8s_openapi::api::core::v1::Container) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Some(res) = &c.resources else { return out };
    // kubelet reads limits; requests must equal them for extended resources (validation).
    for list in [&res.requests, &res.limits].into_iter().flatten() {
        for (k, v) in list {
            if !k.contains('/') || k.starts_with("kubernetes.io/") || k.starts_with("requests.") {
                continue;
            }
            let n = v.0.trim().parse::<u64>().unwrap_or(0);
            if n > 0 {
                out.insert(k.clone(), n);
            }
        }
    }
    out
}

impl Manager {
    /// A manager with the checkpoint in `state_dir` read back. A checkpoint that cannot be
    /// read is reported (a warning event) and ignored.
    pub fn new(cfg: DevicesConfig, state_dir: &Path, notify: Notices) -> Arc<Manager> {
        let started = Instant::now();
        let reg = match checkpoint::load(state_dir) {
            Ok(Some(cp)) => match checkpoint::restore(&cp, Duration::ZERO) {
                Ok(r) => r,
                Err(e) => {
                    notify.send(Notice::Event {
                        warning: true,
                        reason: "DeviceCheckpointInvalid",
                        message: format!(
                            "{}: {e}; starting without device allocations",
                            state_dir.join(checkpoint::FILE).display()
                        ),
                    });
                    Registry::default()
                }
            },
            Ok(None) => Registry::default(),
            Err(e) => {
                notify.send(Notice::Event {
                    warning: true,
                    reason: "DeviceCheckpointInvalid",
                    message: format!("{e}; starting without device allocations"),
                });
                Registry::default()
            }
        };
        Arc::new(Manager {
            cfg,
            state_dir: state_dir.to_path_buf(),
            reg: Mutex::new(reg),
            clients: Mutex::new(BTreeMap::new()),
            started,
            notify,
            expiry: tokio::sync::Notify::new(),
        })
    }

    pub fn config(&self) -> &DevicesConfig {
        &self.cfg
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn event(&self, warning: bool, reason: &'static str, message: String) {
        if warning {
            tracing::warn!(reason, %message, "device plugins");
        } else {
            tracing::info!(reason, %message, "device plugins");
        }
        self.notify.send(Notice::Event {
            warning,
            reason,
            message,
        });
    }

    fn changed(&self) {
        self.notify.send(Notice::Changed);
    }

    fn save(&self) {
        let cp = checkpoint::from_registry(&lock(&self.reg));
        if let Err(e) = checkpoint::save(&self.state_dir, &cp) {
            tracing::error!(error = %e, "cannot write the device checkpoint");
        }
    }

    /// Start serving `Registration` (and the grace-period expiry). Errors (the directory
    /// cannot be made, the socket cannot be bound) leave the agent without device plugins.
    ///
    /// The registration server and each plugin's stream are supervised by `sup`: after a
    /// panic the server binds `kubelet.sock` again (plugins re-register, as after an agent
    /// restart) and a plugin's stream is followed again from a new connection.
    pub fn serve(self: &Arc<Self>, sup: &crate::supervise::Supervisor) -> Result<(), String> {
        let Some(dir) = self.cfg.plugin_dir.clone() else {
            return Ok(());
        };
        // On a read-only root (the shipped unit's case when /var/lib is not writable) nothing
        // is attempted there: tidelet writes only below its root directory and /run.
        if let Some(mount) = read_only_ancestor(&dir) {
            return Err(format!(
                "{} would be on {}, which is mounted read-only; set devices.pluginDir to a writable directory (or \"\" to switch device plugins off)",
                dir.display(),
                mount.display()
            ));
        }
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        remove_stale_sockets(&dir);
        let sock = dir.join(tidelet_deviceplugin_api::KUBELET_SOCKET);
        let listener = tidelet_deviceplugin_api::bind(&sock)
            .map_err(|e| format!("{}: {e}", sock.display()))?;
        let mut first = Some(listener);
        let (me, task_sup, socket) = (Arc::clone(self), sup.clone(), sock.clone());
        let kind = crate::supervise::Kind::DeviceRegistration;
        crate::supervise::task(sup, kind, "", move || {
            // A restart binds again (the panicked server took its listener with it); the
            // plugins' sockets stay: their streams are followed by their own tasks.
            let listener = first
                .take()
                .map(Ok)
                .unwrap_or_else(|| tidelet_deviceplugin_api::bind(&socket));
            let svc = RegistrationServer::new(Registrar {
                manager: Arc::clone(&me),
                sup: task_sup.clone(),
            });
            let socket = socket.clone();
            async move {
                crate::supervise::inject::fire(kind.name(), "");
                let listener = match listener {
                    Ok(l) => l,
                    // Counted as a failure of the task: retried, then the agent gives up.
                    Err(e) => panic!("{}: {e}", socket.display()),
                };
                let r = tonic::transport::Server::builder()
                    .add_service(svc)
                    .serve_with_incoming(tidelet_deviceplugin_api::incoming(listener))
                    .await;
                if let Err(e) = r {
                    tracing::error!(error = %e, "device-plugin registration server stopped");
                }
            }
        });
        let me = Arc::clone(self);
        crate::supervise::task(sup, crate::supervise::Kind::DeviceExpiry, "", move || {
            Arc::clone(&me).expire_loop()
        });
        tracing::info!(socket = %sock.display(), "serving device-plugin registration");
        Ok(())
    }

    async fn expire_loop(self: Arc<Self>) {
        loop {
            let next = lock(&self.reg).next_expiry(self.cfg.plugin_grace_period);
            let wait = next.map(|t| t.saturating_sub(self.now()));
            tokio::select! {
                _ = self.expiry.notified() => continue,
                _ = async {
                    match wait {
                        Some(w) => tokio::time::sleep(w).await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
            let gone = lock(&self.reg).expire(self.now(), self.cfg.plugin_grace_period);
            for r in &gone {
                self.event(
                    true,
                    "DevicePluginRemoved",
                    format!(
                        "resource {r} removed: its plugin has been gone for {:?}",
                        self.cfg.plugin_grace_period
                    ),
                );
            }
            if !gone.is_empty() {
                self.save();
                self.changed();
            }
        }
    }

    /// The checks of one registration; the endpoint task starts on success.
    fn register(
        self: &Arc<Self>,
        req: RegisterRequest,
        sup: &crate::supervise::Supervisor,
    ) -> Result<(), String> {
        let dir = self.cfg.plugin_dir.clone().unwrap_or_default();
        if !tidelet_deviceplugin_api::SUPPORTED_VERSIONS.contains(&req.version.as_str()) {
            return Err(format!(
                "plugin for {:?}: unsupported device-plugin API version {:?}; tidelet supports {}",
                req.resource_name,
                req.version,
                tidelet_deviceplugin_api::SUPPORTED_VERSIONS.join(", ")
            ));
        }
        registry::check_resource_name(&req.resource_name)?;
        let ep = &req.endpoint;
        if ep.is_empty()
            || ep.contains('/')
            || ep == "."
            || ep == ".."
            || ep == tidelet_deviceplugin_api::KUBELET_SOCKET
        {
            return Err(format!(
                "plugin for {:?}: endpoint {ep:?} must be the file name of its socket in {}",
                req.resource_name,
                dir.display()
            ));
        }
        if !tidelet_deviceplugin_api::is_socket(&dir.join(ep)) {
            return Err(format!(
                "plugin for {:?}: endpoint {} is not a socket",
                req.resource_name,
                dir.join(ep).display()
            ));
        }
        let options = req.options.unwrap_or_default();
        let generation = lock(&self.reg).register(&req.resource_name, ep, options, |holder| {
            tidelet_deviceplugin_api::is_socket(&dir.join(holder))
        })?;
        self.expiry.notify_one();
        self.event(
            false,
            "DevicePluginRegistered",
            format!(
                "resource {} registered by the plugin at {ep}",
                req.resource_name
            ),
        );
        let me = Arc::clone(self);
        let (resource, path) = (req.resource_name.clone(), dir.join(ep));
        let kind = crate::supervise::Kind::DevicePlugin;
        crate::supervise::task(sup, kind, resource.clone(), move || {
            let (me, resource, path) = (me.clone(), resource.clone(), path.clone());
            async move {
                crate::supervise::inject::fire(kind.name(), "");
                me.follow(resource, path, generation, options).await
            }
        });
        Ok(())
    }

    /// One registration's life: options, then `ListAndWatch` until it ends.
    async fn follow(
        self: Arc<Self>,
        resource: String,
        path: PathBuf,
        generation: u64,
        options: DevicePluginOptions,
    ) {
        let why = self
            .follow_inner(&resource, &path, generation, options)
            .await;
        {
            let mut c = lock(&self.clients);
            if c.get(&resource).is_some_and(|(g, _)| *g == generation) {
                c.remove(&resource);
            }
        }
        if lock(&self.reg).stopped(&resource, generation, self.now()) {
            self.expiry.notify_one();
            self.event(
                true,
                "DevicePluginStopped",
                format!(
                    "resource {resource}: {why}; its devices are unhealthy and it stays in capacity for {:?}",
                    self.cfg.plugin_grace_period
                ),
            );
            self.save();
            self.changed();
        }
    }

    async fn follow_inner(
        &self,
        resource: &str,
        path: &Path,
        generation: u64,
        options: DevicePluginOptions,
    ) -> String {
        let t = self.cfg.allocate_timeout;
        let channel = match tokio::time::timeout(t, tidelet_deviceplugin_api::connect(path)).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return format!("cannot connect to the plugin at {}: {e}", path.display())
            }
            Err(_) => {
                return format!(
                    "the plugin at {} did not accept a connection within {t:?}",
                    path.display()
                )
            }
        };
        let mut client = DevicePluginClient::new(channel);
        // The options it registered with stand unless it answers with others.
        match tokio::time::timeout(t, client.get_device_plugin_options(Empty {})).await {
            Ok(Ok(o)) => {
                let o = o.into_inner();
                if o != options {
                    if let Some(r) = lock(&self.reg).resources.get_mut(resource) {
                        if r.generation == generation {
                            r.options = o;
                        }
                    }
                }
            }
            Ok(Err(e)) => {
                tracing::debug!(%resource, error = %e, "GetDevicePluginOptions failed; using the registered options")
            }
            Err(_) => {
                tracing::debug!(%resource, "GetDevicePluginOptions timed out; using the registered options")
            }
        }
        lock(&self.clients).insert(resource.to_string(), (generation, client.clone()));
        let mut stream = match tokio::time::timeout(t, client.list_and_watch(Empty {})).await {
            Ok(Ok(s)) => s.into_inner(),
            Ok(Err(e)) => return format!("ListAndWatch failed: {}", e.message()),
            Err(_) => return format!("ListAndWatch did not answer within {t:?}"),
        };
        loop {
            match stream.next().await {
                Some(Ok(list)) => match registry::check_devices(&list.devices) {
                    Ok(devices) => {
                        let n = devices.len();
                        if lock(&self.reg).update(resource, generation, devices) {
                            tracing::info!(%resource, devices = n, "device list");
                            self.save();
                            self.changed();
                        } else {
                            return "replaced by a newer registration".into();
                        }
                    }
                    Err(e) => {
                        return format!("the plugin's device list was refused: {e}; disconnected");
                    }
                },
                Some(Err(e)) => return format!("ListAndWatch broke: {}", e.message()),
                None => return "the plugin closed ListAndWatch".into(),
            }
        }
    }

    /// Capacity and allocatable by resource, for the node status.
    pub fn counts(&self) -> BTreeMap<String, (u64, u64)> {
        lock(&self.reg).counts()
    }

    /// Give `pod`'s containers the devices their limits ask for. Containers that already hold
    /// theirs (an adopted pod, a retry) are skipped. On failure nothing new stays reserved.
    pub async fn admit(&self, pod: &str, spec: &PodSpec) -> Result<(), AdmitFailure> {
        let containers: Vec<_> = spec
            .init_containers
            .iter()
            .flatten()
            .chain(spec.containers.iter())
            .map(|c| (c.name.clone(), extended_requests(c)))
            .filter(|(_, r)| !r.is_empty())
            .collect();
        let t0 = Instant::now();
        let mut taken: Vec<(String, String)> = Vec::new();
        for (container, requests) in &containers {
            for (resource, n) in requests {
                if lock(&self.reg).held(pod, container, resource).is_some() {
                    continue;
                }
                match self.allocate_one(pod, container, resource, *n).await {
                    Ok(()) => taken.push((container.clone(), resource.clone())),
                    Err(e) => {
                        let mut reg = lock(&self.reg);
                        for (c, r) in &taken {
                            reg.unreserve(pod, c, r);
                        }
                        drop(reg);
                        if !taken.is_empty() {
                            self.save();
                            self.changed();
                        }
                        return Err(e);
                    }
                }
            }
        }
        if !taken.is_empty() {
            self.save();
            self.changed();
            // The admission's share of the pod's start (scripts/bench-devices.sh reads it).
            tracing::info!(
                pod,
                elapsed_us = t0.elapsed().as_micros() as u64,
                "pod devices admitted"
            );
        }
        Ok(())
    }

    async fn allocate_one(
        &self,
        pod: &str,
        container: &str,
        resource: &str,
        n: u64,
    ) -> Result<(), AdmitFailure> {
        let t = self.cfg.allocate_timeout;
        let (free, options) = {
            let reg = lock(&self.reg);
            let free = reg.check(resource, n)?;
            (free, reg.resources[resource].options)
        };
        let client = lock(&self.clients).get(resource).map(|(_, c)| c.clone());
        let Some(mut client) = client else {
            return Err(AdmitError::Unavailable {
                resource: resource.into(),
                requested: n,
                available: 0,
            }
            .into());
        };
        let mut preferred = Vec::new();
        if options.get_preferred_allocation_available {
            let req = PreferredAllocationRequest {
                container_requests: vec![ContainerPreferredAllocationRequest {
                    available_device_i_ds: free.clone(),
                    must_include_device_i_ds: vec![],
                    allocation_size: n as i32,
                }],
            };
            match tokio::time::timeout(t, client.get_preferred_allocation(req)).await {
                Ok(Ok(r)) => {
                    preferred = r
                        .into_inner()
                        .container_responses
                        .into_iter()
                        .next()
                        .map(|c| c.device_i_ds)
                        .unwrap_or_default();
                }
                Ok(Err(e)) => {
                    tracing::warn!(%resource, error = %e.message(), "GetPreferredAllocation failed; choosing by ID")
                }
                Err(_) => {
                    tracing::warn!(%resource, "GetPreferredAllocation timed out; choosing by ID")
                }
            }
        }
        let ids = {
            let mut reg = lock(&self.reg);
            // Free again: another pod may have taken devices while we asked.
            let free = reg.check(resource, n)?;
            let ids = choose(&free, &preferred, n as usize);
            reg.reserve(pod, container, resource, ids.clone());
            ids
        };
        let req = AllocateRequest {
            container_requests: vec![ContainerAllocateRequest {
                devices_ids: ids.clone(),
            }],
        };
        let fail = |msg: String| {
            lock(&self.reg).unreserve(pod, container, resource);
            unexpected(format!(
                "Allocate failed for {resource} (container {container:?}, devices {}): {msg}",
                ids.join(",")
            ))
        };
        let resp = match tokio::time::timeout(t, client.allocate(req)).await {
            Ok(Ok(r)) => r.into_inner(),
            Ok(Err(e)) => {
                return Err(fail(format!(
                    "the plugin answered {:?}: {}",
                    e.code(),
                    e.message()
                )))
            }
            Err(_) => return Err(fail(format!("the plugin did not answer within {t:?}"))),
        };
        let Some(one) = resp.container_responses.into_iter().next() else {
            return Err(fail("the plugin's answer has no container response".into()));
        };
        lock(&self.reg).answered(pod, container, resource, one);
        tracing::info!(pod, container, resource, devices = %ids.join(","), "devices allocated");
        Ok(())
    }

    /// The plugins' answers for one container, by resource (what the container gets).
    pub fn answers(&self, pod: &str, container: &str) -> Vec<(String, ContainerAllocateResponse)> {
        let reg = lock(&self.reg);
        reg.allocations
            .get(pod)
            .and_then(|c| c.get(container))
            .map(|r| {
                r.iter()
                    .filter_map(|(k, h)| h.response.clone().map(|resp| (k.clone(), resp)))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// `PreStartContainer` for each of the container's resources whose plugin wants it.
    pub async fn pre_start(&self, pod: &str, container: &str) -> Result<(), String> {
        let wanted: Vec<(String, Vec<String>)> = {
            let reg = lock(&self.reg);
            let Some(held) = reg.allocations.get(pod).and_then(|c| c.get(container)) else {
                return Ok(());
            };
            held.iter()
                .filter(|(r, _)| {
                    reg.resources
                        .get(*r)
                        .is_some_and(|x| x.options.pre_start_required)
                })
                .map(|(r, h)| (r.clone(), h.ids.clone()))
                .collect()
        };
        let t = self.cfg.allocate_timeout;
        for (resource, ids) in wanted {
            let client = lock(&self.clients).get(&resource).map(|(_, c)| c.clone());
            let Some(mut client) = client else {
                return Err(format!(
                    "PreStartContainer for {resource}: its plugin is not connected"
                ));
            };
            let req = PreStartContainerRequest { devices_ids: ids };
            match tokio::time::timeout(t, client.pre_start_container(req)).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    return Err(format!(
                        "PreStartContainer for {resource} failed: {}",
                        e.message()
                    ))
                }
                Err(_) => {
                    return Err(format!(
                        "PreStartContainer for {resource}: the plugin did not answer within {t:?}"
                    ))
                }
            }
        }
        Ok(())
    }

    /// Free what `pod` holds.
    pub fn release(&self, pod: &str) {
        if lock(&self.reg).release(pod) {
            tracing::info!(pod, "devices freed");
            self.save();
            self.changed();
        }
    }

    /// Keep only the allocations of `pods` (after adoption at start).
    pub fn retain(&self, pods: &BTreeSet<String>) {
        let gone = lock(&self.reg).retain_pods(pods);
        if !gone.is_empty() {
            tracing::info!(pods = ?gone, "devices of pods that are gone freed");
            self.save();
            self.changed();
        }
    }

    /// Every resource with its devices and holders.
    pub fn views(&self) -> Vec<ResourceView> {
        let reg = lock(&self.reg);
        let mut holders: BTreeMap<(&str, &str), String> = BTreeMap::new();
        for (pod, cs) in &reg.allocations {
            for (c, rs) in cs {
                for (r, h) in rs {
                    for id in &h.ids {
                        holders.insert((r.as_str(), id.as_str()), format!("{pod}/{c}"));
                    }
                }
            }
        }
        reg.resources
            .iter()
            .map(|(name, r)| {
                let devices: Vec<DeviceView> = r
                    .devices
                    .iter()
                    .map(|(id, h)| DeviceView {
                        id: id.clone(),
                        healthy: *h,
                        holder: holders.get(&(name.as_str(), id.as_str())).cloned(),
                    })
                    .collect();
                ResourceView {
                    name: name.clone(),
                    endpoint: r.endpoint.clone(),
                    live: r.live(),
                    capacity: devices.len() as u64,
                    allocatable: devices.iter().filter(|d| d.healthy).count() as u64,
                    allocated: reg.in_use(name).len() as u64,
                    devices,
                }
            })
            .collect()
    }

    /// What `pod` holds, by container and resource.
    pub fn held_by(&self, pod: &str) -> Vec<HeldView> {
        let reg = lock(&self.reg);
        let Some(cs) = reg.allocations.get(pod) else {
            return vec![];
        };
        let mut out = Vec::new();
        for (c, rs) in cs {
            for (r, h) in rs {
                let healthy = |id: &String| {
                    reg.resources
                        .get(r)
                        .and_then(|x| x.devices.get(id))
                        .copied()
                        .unwrap_or(false)
                };
                out.push(HeldView {
                    container: c.clone(),
                    resource: r.clone(),
                    ids: h.ids.clone(),
                    unhealthy: h.ids.iter().filter(|i| !healthy(i)).cloned().collect(),
                    annotations: h
                        .response
                        .as_ref()
                        .map(|r| r.annotations.clone().into_iter().collect())
                        .unwrap_or_default(),
                });
            }
        }
        out
    }
}

/// `n` of `free`: the plugin's preferred ones that are free first (in its order), then the
/// rest in ID order. Pure.
pub fn choose(free: &[String], preferred: &[String], n: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(n);
    for id in preferred.iter().chain(free.iter()) {
        if out.len() == n {
            break;
        }
        if free.contains(id) && !out.contains(id) {
            out.push(id.clone());
        }
    }
    out
}

/// The nearest existing ancestor of `dir` (or `dir` itself) when it is on a read-only mount.
fn read_only_ancestor(dir: &Path) -> Option<PathBuf> {
    let existing = dir.ancestors().find(|p| p.exists())?;
    let st = nix::sys::statvfs::statvfs(existing).ok()?;
    st.flags()
        .contains(nix::sys::statvfs::FsFlags::ST_RDONLY)
        .then(|| existing.to_path_buf())
}

/// Remove every socket in `dir`: plugins watch for theirs to vanish and then register
/// again, which is how kubelet tells them it restarted. Other files are left alone.
fn remove_stale_sockets(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if tidelet_deviceplugin_api::is_socket(&e.path()) {
            match std::fs::remove_file(e.path()) {
                Ok(()) => tracing::debug!(path = %e.path().display(), "removed a stale socket"),
                Err(err) => {
                    tracing::warn!(path = %e.path().display(), error = %err, "cannot remove a stale socket")
                }
            }
        }
    }
}

struct Registrar {
    manager: Arc<Manager>,
    sup: crate::supervise::Supervisor,
}

#[tonic::async_trait]
impl Registration for Registrar {
    async fn register(
        &self,
        request: tonic::Request<RegisterRequest>,
    ) -> Result<tonic::Response<Empty>, tonic::Status> {
        let req = request.into_inner();
        let resource = req.resource_name.clone();
        match self.manager.register(req, &self.sup) {
            Ok(()) => Ok(tonic::Response::new(Empty {})),
            Err(msg) => {
                self.manager.event(
                    true,
                    "DevicePluginRejected",
                    format!("registration refused: {msg}"),
                );
                tracing::warn!(%resource, "device plugin registration refused");
                Err(tonic::Status::invalid_argument(msg))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choose_prefers_the_plugins_pick_among_free_devices() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        for (free, pref, n, want) in [
            (s(&["a", "b", "c"]), s(&[]), 2, s(&["a", "b"])),
            (s(&["a", "b", "c"]), s(&["c"]), 2, s(&["c", "a"])),
            // Preferred devices that are not free (or unknown) are skipped.
            (s(&["a", "b"]), s(&["z", "b", "b"]), 2, s(&["b", "a"])),
            (s(&["a", "b"]), s(&["b", "a"]), 1, s(&["b"])),
        ] {
            assert_eq!(choose(&free, &pref, n), want, "{free:?} {pref:?} {n}");
        }
    }

    #[test]
    fn extended_requests_are_domain_names_with_a_positive_count() {
        use k8s_openapi::api::core::v1::{Container, ResourceRequirements};
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        let c = Container {
            name: "c".into(),
            resources: Some(ResourceRequirements {
                limits: Some(
                    [
                        ("cpu".to_string(), Quantity("1".into())),
                        ("memory".to_string(), Quantity("1Mi".into())),
                        ("example.com/gpu".to_string(), Quantity("2".into())),
                        ("example.com/zero".to_string(), Quantity("0".into())),
                        ("hugepages-2Mi".to_string(), Quantity("2Mi".into())),
                    ]
                    .into(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            extended_requests(&c),
            [("example.com/gpu".to_string(), 2)].into()
        );
    }
}

#[cfg(test)]
mod notices_tests {
    use super::*;

    /// Notices raised before anyone reads them (a bad checkpoint at start) wait for the
    /// reader; a full channel drops notices instead of blocking the manager.
    #[test]
    fn notices_wait_for_their_reader_and_a_full_channel_never_blocks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(checkpoint::FILE), b"{not json").unwrap();
        let (tx, mut rx) = Notices::channel();
        let _m = Manager::new(DevicesConfig::default(), dir.path(), tx.clone());
        match rx.try_recv() {
            Ok(Notice::Event {
                reason, message, ..
            }) => {
                assert_eq!(reason, "DeviceCheckpointInvalid");
                assert!(message.contains(checkpoint::FILE), "{message}");
            }
            _ => panic!("the checkpoint's event was not queued"),
        }
        for _ in 0..NOTICES_CAPACITY + 10 {
            tx.send(Notice::Changed);
        }
        let mut n = 0;
        while rx.try_recv().is_ok() {
            n += 1;
        }
        assert_eq!(n, NOTICES_CAPACITY);
        drop(rx);
        tx.send(Notice::Changed);
    }
}
