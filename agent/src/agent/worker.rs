//! One task per pod name: it owns that pod's lifecycle on the node. It is told the desired pod
//! (latest value wins, through a `watch` channel), creates or adopts the sandbox, starts
//! containers when their lifecycle says so, absorbs exits reported by the supervisor, tears the
//! pod down when it is no longer wanted or replaced, and publishes the pod's status.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::Instrument;

use super::prepare::{self, Inputs};
use super::Ctx;
use crate::eviction::admission::Gate;
use crate::pod::events::Events;
use crate::pod::layout::{self, PodPlan};
use crate::pod::lifecycle::{Due, Event, Life, Memo};
use crate::pod::status::{self, PodFacts, Terminated};
use crate::pod::view::{ContainerInfo, PodView};
use crate::runtime::client::Client;
use crate::runtime::{ContainerRecord, ContainerSpec, ContainerState, SandboxSpec, SandboxStatus};
use crate::source::DesiredPod;

/// What `<pod_dir>/pod.json` holds: enough to adopt the pod after an agent restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PodRecord {
    pub key: String,
    pub pod: Pod,
    pub file: PathBuf,
    pub cgroup: String,
    pub log_dir: PathBuf,
    pub start_time_ns: i64,
    /// Values boxed here and in `info`: a B-tree node has room for 11 entries whatever the
    /// map holds, which for a one-container pod was 3 KiB and 3.5 KiB of empty slots.
    pub containers: BTreeMap<String, Box<Memo>>,
    /// Run-time facts of running containers (for exec).
    #[serde(default)]
    pub info: BTreeMap<String, Box<ContainerInfo>>,
    /// The pod's addresses from its CNI attachment (empty with `hostNetwork`).
    #[serde(default)]
    pub pod_ips: Vec<String>,
}

use crate::clock::now_ns;

struct Running {
    plan: PodPlan,
    rec: PodRecord,
    client: Client,
    seq: u64,
    failed: Option<(String, String)>,
}

/// What a worker is told: the pod it should run and whether it may run now.
#[derive(Debug, Clone)]
pub struct Assigned {
    pub pod: DesiredPod,
    pub gate: Gate,
}

pub struct Worker {
    ctx: Arc<Ctx>,
    key: String,
    rx: watch::Receiver<Option<Assigned>>,
    /// Pods of this name found on disk at start, to adopt or tear down.
    adopt: Vec<PodRecord>,
    /// Boxed: a pod's plan and record are about 3 KiB, and every future that holds the worker
    /// or moves the running pod through an await would otherwise keep room for them.
    running: Option<Box<Running>>,
    /// The reason and message the pod is held with (not admitted, or evicted), once told.
    held: Option<(String, String)>,
    /// The containers of an evicted pod as they ended (by UID), shown while it is held.
    held_views: Option<(String, Vec<crate::pod::status::ContainerView>)>,
    events: Events,
    notice: Option<(String, String)>,
    /// Set when the pod is gone and the worker idles.
    gone: watch::Sender<bool>,
    /// Fired once the pods found on disk are adopted or cleaned up (the agent's `READY=1`
    /// waits for every worker's).
    adopted: Option<tokio::sync::oneshot::Sender<()>>,
    /// This worker replaces one that panicked (the agent did not restart): what it adopts
    /// was left by its predecessor, and its events say so.
    restarted: bool,
}

impl Worker {
    pub fn new(
        ctx: Arc<Ctx>,
        key: String,
        rx: watch::Receiver<Option<Assigned>>,
        adopt: Vec<PodRecord>,
        gone: watch::Sender<bool>,
        adopted: tokio::sync::oneshot::Sender<()>,
    ) -> Self {
        Worker {
            ctx,
            key,
            rx,
            adopt,
            running: None,
            held: None,
            held_views: None,
            events: Events::default(),
            notice: None,
            gone,
            adopted: Some(adopted),
            restarted: false,
        }
    }

    /// This worker is the supervisor's restart of one that panicked.
    pub fn restarted(mut self) -> Self {
        self.restarted = true;
        self
    }

    pub async fn run(mut self) {
        // The long steps (adopt, clean up, create, tear down, act) are boxed: a future holds
        // room for the largest state any of its awaits can be in, and this one lives as long
        // as its pod. Unboxed, every worker kept about 28 KiB for states it is in only while
        // a pod starts or stops (massif; 20 pods: 0.5 MiB of the agent's RSS).
        loop {
            // Read the newest desire at every step: a teardown waits up to the old pod's grace
            // period and a clean-up of pods found on disk as long, so what was wanted before
            // the step may be stale (edited again, or deleted). Never start a superseded version.
            let assigned = self.rx.borrow_and_update().clone();
            let evicted = assigned.as_ref().and_then(|a| match a.gate {
                Gate::Admitted => self.ctx.eviction_notice(&a.pod.pod.uid).map(|n| n.message),
                Gate::Held { .. } => None,
            });
            let on_disk: Vec<String> = self.adopt.iter().map(record_uid).collect();
            let next = next_step(&Facts {
                want: assigned.as_ref().map(|a| (a.pod.pod.uid.as_str(), &a.gate)),
                evicted: evicted.as_deref(),
                running: self.running.as_ref().map(|r| r.plan.uid.as_str()),
                on_disk: &on_disk,
            });
            tracing::trace!(pod = %self.key, ?next, "worker step");
            if self.adopt.is_empty() {
                if let Some(tx) = self.adopted.take() {
                    let _ = tx.send(());
                }
            }
            let d = assigned.map(|a| a.pod);
            match next {
                Next::Adopt => {
                    let rec = self.adopt.remove(0);
                    match Box::pin(self.adopt_pod(rec.clone())).await {
                        Some(r) => self.running = Some(Box::new(r)),
                        None => Box::pin(self.cleanup_record(&rec)).await,
                    }
                }
                Next::CleanUp => {
                    let rec = self.adopt.remove(0);
                    Box::pin(self.cleanup_record(&rec)).await;
                }
                Next::TearDown => {
                    if let Some(r) = self.running.take() {
                        Box::pin(self.teardown(r)).await;
                    }
                }
                Next::Idle => {
                    self.ctx.shared.remove(&self.key);
                    let _ = self.gone.send(true);
                    // The agent lets go of an idle worker whose pod is no longer desired when
                    // it reconciles next; wake it now rather than at its next file check (20
                    // s): until then this task's state (about 30 KiB) stays allocated, and a
                    // churn's last workers were still there when it had ended (massif).
                    self.ctx.wake.notify_one();
                    if self.rx.changed().await.is_err() {
                        // The pod is deleted and the agent has let go of this worker: once its
                        // state is freed, give the pages back as after a teardown.
                        drop(self);
                        tokio::task::spawn_blocking(crate::malloc::trim);
                        return;
                    }
                }
                Next::Hold { reason, message } => {
                    let Some(d) = d else { continue };
                    let _ = self.gone.send(false);
                    self.note_file_errors(&d);
                    if let Some(r) = self.running.take() {
                        // An evicted pod's containers show how they ended, as kubelet shows
                        // them: terminated by SIGKILL, with the eviction's message.
                        if reason == "Evicted" {
                            self.held_views =
                                Some((r.plan.uid.clone(), evicted_views(&r, &message)));
                        }
                        Box::pin(self.teardown(r)).await;
                    }
                    if self.held.as_ref() != Some(&(reason.clone(), message.clone())) {
                        tracing::warn!(pod = %self.key, %reason, %message, "pod not running");
                        self.events.push(true, &reason, message.clone(), now_ns());
                        self.held = Some((reason.clone(), message.clone()));
                    }
                    self.publish_failed(&d, &reason, &message);
                    if self.rx.changed().await.is_err() {
                        return;
                    }
                }
                Next::Run { create } => {
                    let Some(d) = d else { continue };
                    let _ = self.gone.send(false);
                    self.note_file_errors(&d);
                    self.held = None;
                    self.held_views = None;
                    if create {
                        match Box::pin(self.create(&d)).await {
                            Ok(r) => self.running = Some(Box::new(r)),
                            Err(CreateFailure {
                                reason,
                                message,
                                pending,
                            }) => {
                                self.events.push(true, &reason, message.clone(), now_ns());
                                tracing::error!(pod = %self.key, %reason, error = %message, "cannot create pod sandbox");
                                if pending {
                                    self.publish_waiting(&d, &reason, &message);
                                } else {
                                    self.publish_failed(&d, &reason, &message);
                                }
                                tokio::select! {
                                    r = self.rx.changed() => if r.is_err() { return },
                                    _ = tokio::time::sleep(CREATE_RETRY) => {}
                                }
                                continue;
                            }
                        }
                    }
                    if self.drive().await.is_err() {
                        // Told to stop for good (channel closed): leave the pod running.
                        return;
                    }
                }
            }
        }
    }

    /// A manifest that became invalid keeps its pod on the last good spec; said as an event
    /// (and in the status) each time the worker is told so.
    fn note_file_errors(&mut self, d: &DesiredPod) {
        self.notice = (!d.file_errors.is_empty()).then(|| {
            let msg = d
                .file_errors
                .iter()
                .map(|p| p.to_string())
                .collect::<Vec<_>>()
                .join("; ");
            (
                "InvalidManifest".to_string(),
                format!("manifest is invalid, still running the last good spec: {msg}"),
            )
        });
        if let Some((_, m)) = &self.notice {
            self.events
                .push(true, "InvalidManifest", m.clone(), now_ns());
        }
    }

    fn inputs<'a>(&'a self, r: &'a Running) -> Inputs<'a> {
        Inputs {
            cfg: &self.ctx.cfg,
            node: &self.ctx.node,
            cgroups: &*self.ctx.cgroups,
            plan: &r.plan,
            pod: &r.rec.pod,
            pod_ips: &r.rec.pod_ips,
            profiles: &self.ctx.profiles,
            userns: &self.ctx.userns,
        }
    }

    /// A new sandbox for the desired pod: kubelet's admission of what it needs (sysctls, host
    /// ids, exclusive CPUs, devices), its files and cgroups, its record, then its supervisor.
    /// On failure everything the pod was given is released.
    async fn create(&mut self, d: &DesiredPod) -> Result<Running, CreateFailure> {
        let pod = d.pod.pod.clone();
        let plan = layout::plan(&self.ctx.cfg, &self.ctx.node, &pod);
        let plan_uid = plan.uid.clone();
        let span = tracing::info_span!("create", pod = %self.key, uid = %plan.uid);
        // Instrumented, not entered: a guard held across `.await` tags other tasks' lines.
        async {
            self.ctx.net.claim(&plan.uid).await;
            // Leftovers of an earlier life of this UID (e.g. the supervisor died): start clean.
            let _ = self.ctx.cgroups.kill_all(&plan.cgroup);
            let _ = self.ctx.cgroups.remove(&plan.cgroup);
            let _ = prepare::remove_tree(&plan.pod_dir);
            let ctx = self.ctx.clone();
            let uid = plan.uid.clone();
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || ctx.net.detach(&uid)).await {
                tracing::warn!(pod = %self.key, error = %e, "the network of an earlier sandbox of this pod");
            }
            let network = self.network_plan(&plan, &pod)?;
            let mut sandbox = self.admit_sandbox(&plan, &pod).await?;
            self.make_sandbox(&plan, &pod)?;
            let rec = PodRecord {
                key: self.key.clone(),
                pod: pod.clone(),
                file: d.pod.file.clone(),
                cgroup: plan.cgroup.clone(),
                log_dir: plan.log_dir.clone(),
                start_time_ns: now_ns(),
                containers: layout::spec(&pod)
                    .containers
                    .iter()
                    .map(|c| (c.name.clone(), Box::default()))
                    .collect(),
                info: BTreeMap::new(),
                pod_ips: Vec::new(),
            };
            save(&plan, &rec).map_err(CreateFailure::sandbox)?;
            let pid = self.start_supervisor(&plan, &mut sandbox).await?;
            tracing::info!(pid, "pod sandbox started");
            self.events.push(
                false,
                "SandboxStarted",
                format!("infra process {pid}"),
                now_ns(),
            );
            let client = Client::new(&plan.pod_dir);
            let mut r = Running {
                plan,
                rec,
                client,
                seq: 0,
                failed: None,
            };
            if let Some(n) = network {
                match self.attach_network(&r, pid, n).await {
                    Ok(ips) => r.rec.pod_ips = ips,
                    Err(f) => {
                        self.remove_sandbox(&r).await;
                        return Err(f);
                    }
                }
                prepare::write_hosts_file(&self.ctx.cfg, &r.plan, &r.rec.pod, &r.rec.pod_ips)
                    .map_err(|e| CreateFailure::sandbox(format!("pod files: {e}")))?;
                save(&r.plan, &r.rec).map_err(CreateFailure::sandbox)?;
            }
            Ok(r)
        }
        .instrument(span)
        .await
        .inspect_err(|_| self.release_resources(&plan_uid))
    }

    /// What the pod's network needs, checked before anything is made: the network ready (a
    /// pod waits with kubelet's `NetworkNotReady` while it is not), its bandwidth annotations
    /// valid, its host ports free on the host (held from now on). `None` for `hostNetwork`.
    fn network_plan(
        &self,
        plan: &PodPlan,
        pod: &Pod,
    ) -> Result<Option<NetworkPlan>, CreateFailure> {
        let s = layout::spec(pod);
        if s.host_network == Some(true) {
            return Ok(None);
        }
        let list = self.ctx.net.config().map_err(|why| CreateFailure {
            reason: "NetworkNotReady".into(),
            message: format!(
                "network is not ready: {}",
                crate::net::not_ready_message(&why)
            ),
            pending: true,
        })?;
        // Like a failed CNI ADD, these keep the pod Pending and are tried again.
        let waits = |message: String| CreateFailure {
            reason: "FailedCreatePodSandBox".into(),
            message: format!("Failed to create pod sandbox: {message}"),
            pending: true,
        };
        let bandwidth = crate::net::bandwidth::from_annotations(pod.metadata.annotations.as_ref())
            .map_err(waits)?;
        let ports = crate::net::ports::host_ports(s);
        self.ctx.net.hold_ports(&plan.uid, &ports).map_err(waits)?;
        Ok(Some(NetworkPlan {
            list,
            ports,
            bandwidth,
        }))
    }

    /// CNI ADD for the pod whose supervisor is `pid`; its IPs.
    async fn attach_network(
        &mut self,
        r: &Running,
        pid: i32,
        n: NetworkPlan,
    ) -> Result<Vec<String>, CreateFailure> {
        let ctx = self.ctx.clone();
        let (key, uid, name, namespace) = (
            self.key.clone(),
            r.plan.uid.clone(),
            r.plan.name.clone(),
            r.plan.namespace.clone(),
        );
        let res = tokio::task::spawn_blocking(move || {
            ctx.net.attach(
                &n.list,
                &crate::net::Request {
                    key: &key,
                    uid: &uid,
                    name: &name,
                    namespace: &namespace,
                    pid,
                    ports: &n.ports,
                    bandwidth: n.bandwidth,
                },
            )
        })
        .await
        .map_err(CreateFailure::sandbox)?;
        match res {
            Ok(a) => {
                tracing::info!(pod = %self.key, ips = ?a.pod_ips, elapsed_us = a.took.as_micros() as u64, record_us = a.record_took.as_micros() as u64, add_us = a.add_took.as_micros() as u64, "pod network attached");
                Ok(a.pod_ips)
            }
            Err(e) => Err(CreateFailure {
                reason: "FailedCreatePodSandBox".into(),
                message: format!("Failed to create pod sandbox: {e}"),
                pending: true,
            }),
        }
    }

    /// Undo a sandbox whose creation failed after its supervisor started.
    async fn remove_sandbox(&self, r: &Running) {
        let _ = tokio::time::timeout(Duration::from_secs(5), r.client.shutdown(0)).await;
        let cg = self.ctx.cgroups.clone();
        let ctx = self.ctx.clone();
        let (cgroup, pod_dir, uid) = (
            r.rec.cgroup.clone(),
            r.plan.pod_dir.clone(),
            r.plan.uid.clone(),
        );
        let _ = tokio::task::spawn_blocking(move || {
            let _ = cg.kill_all(&cgroup);
            let _ = cg.remove(&cgroup);
            if let Err(e) = ctx.net.detach(&uid) {
                tracing::error!(uid, error = %e, "pod network teardown; GC tries again");
            }
            let _ = prepare::remove_tree(&pod_dir);
        })
        .await;
    }

    /// kubelet's admission of what the pod needs, all of it or nothing: its sysctls, a host
    /// id range (`hostUsers: false`), exclusive CPUs and devices. Returns the sandbox's spec.
    async fn admit_sandbox(&self, plan: &PodPlan, pod: &Pod) -> Result<SandboxSpec, CreateFailure> {
        let s = layout::spec(pod);
        // A forbidden sysctl fails the pod before anything runs.
        let sysctls = prepare::pod_sysctls(&self.ctx.cfg, s)
            .map_err(|e| CreateFailure::new("SysctlForbidden", e))?;
        // The pod's host ids, held until the pod is gone.
        let userns = match s.host_users {
            Some(false) => Some(
                self.ctx
                    .userns
                    .allocate(&plan.uid)
                    .map_err(CreateFailure::sandbox)?,
            ),
            _ => None,
        };
        if let Some(cpu) = &self.ctx.cpu {
            cpu.admit(&plan.uid, &plan.cgroup, s)
                .map_err(|e| CreateFailure::new(e.reason(), e))?;
        }
        // Every container's devices or none (on failure the CPUs go back as well: `create`).
        self.ctx
            .devices
            .admit(&plan.uid, s)
            .await
            .map_err(|e| CreateFailure::new(e.reason.clone(), e.message))?;
        let mut sandbox = prepare::sandbox_spec(plan, pod, &*self.ctx.cgroups);
        if !sandbox.host_network {
            sandbox.hostname =
                prepare::uts_hostname(&self.ctx.cfg, plan, pod).map_err(CreateFailure::sandbox)?;
        }
        sandbox.sysctls = sysctls;
        sandbox.userns = userns;
        Ok(sandbox)
    }

    /// The pod's directory and files (`/etc/hosts`, ...), its cgroup with the pod's limits,
    /// and the infra process's cgroup under it.
    fn make_sandbox(&mut self, plan: &PodPlan, pod: &Pod) -> Result<(), CreateFailure> {
        std::fs::create_dir_all(&plan.pod_dir)
            .map_err(|e| CreateFailure::sandbox(format!("{}: {e}", plan.pod_dir.display())))?;
        let warnings = prepare::write_pod_files(&self.ctx.cfg, plan, pod)
            .map_err(|e| CreateFailure::sandbox(format!("pod files: {e}")))?;
        for (reason, message) in warnings {
            self.events.push(true, reason, message, now_ns());
        }
        let mut pod_res = crate::qos::pod_resources(layout::spec(pod));
        pod_res.pids_limit = self.ctx.cfg.pod_pids_limit;
        self.ctx
            .cgroups
            .apply(&plan.cgroup, &pod_res)
            .map_err(CreateFailure::sandbox)?;
        let infra = format!("{}/{}", plan.cgroup, layout::INFRA_CGROUP);
        self.ctx
            .cgroups
            .apply(&infra, &Default::default())
            .and_then(|()| self.set_devices(&infra, &crate::cgroups::devices::default_rules()))
            .map_err(CreateFailure::sandbox)?;
        if let Some(cpu) = &self.ctx.cpu {
            cpu.apply(&plan.uid, layout::INFRA_CGROUP)
                .map_err(|e| CreateFailure::new(e.reason(), e))?;
        }
        Ok(())
    }

    /// Start the pod's supervisor (the infra process) and return its pid.
    async fn start_supervisor(
        &self,
        plan: &PodPlan,
        sandbox: &mut SandboxSpec,
    ) -> Result<i32, CreateFailure> {
        // The agent, not the supervisor, moves the supervisor into its cgroup, at the same time
        // as the supervisor moves the first container into its own: on cgroup v1 each attach
        // waits for an RCU grace period unless one is under way, so the two share one and it
        // is off the sandbox's start path. With a shared PID namespace the supervisor forks its
        // pid-1 helper before it is ready, and that must start inside the pod's cgroup, so
        // there the supervisor joins itself.
        let deferred_procs = if sandbox.share_process_namespace && !sandbox.host_pid {
            Vec::new()
        } else {
            std::mem::take(&mut sandbox.cgroup_procs)
        };
        let exe = self.ctx.exe.clone();
        let pod_dir = plan.pod_dir.clone();
        let spec = sandbox.clone();
        let pid = tokio::task::spawn_blocking(move || {
            crate::runtime::spawn_supervisor(&exe, &pod_dir, &spec)
        })
        .await
        .map_err(CreateFailure::sandbox)?
        .map_err(CreateFailure::sandbox)?;
        if !deferred_procs.is_empty() {
            let key = self.key.clone();
            tokio::task::spawn_blocking(move || {
                for f in &deferred_procs {
                    if let Err(e) = std::fs::write(f, pid.to_string()) {
                        tracing::error!(pod = %key, file = %f.display(), error = %e, "cannot move the pod supervisor into its cgroup");
                    }
                }
            });
        }
        Ok(pid)
    }

    /// Device access rules on a cgroup. A host without the v1 devices controller cannot
    /// enforce them: said once, and the container runs (as it did before device plugins).
    fn set_devices(
        &self,
        cgroup: &str,
        rules: &[crate::cgroups::devices::DeviceRule],
    ) -> Result<(), crate::cgroups::Error> {
        match self.ctx.cgroups.set_devices(cgroup, rules) {
            Err(crate::cgroups::Error::MissingControllers { .. }) => {
                static ONCE: std::sync::Once = std::sync::Once::new();
                ONCE.call_once(|| {
                    tracing::warn!("no devices cgroup controller: device access is not restricted");
                });
                Ok(())
            }
            r => r,
        }
    }

    /// Give the pod's exclusive CPUs back to the shared pool and free its devices, host ports
    /// and its claim on its network attachment (GC DELs what a failed DEL left).
    fn release_resources(&self, uid: &str) {
        self.ctx.net.release_ports(uid);
        self.ctx.net.unclaim(uid);
        self.ctx.devices.release(uid);
        self.ctx.userns.release(uid);
        if let Some(cpu) = &self.ctx.cpu {
            if let Err(e) = cpu.release(uid) {
                tracing::error!(pod = %self.key, uid, error = %e, "CPU manager: releasing the pod's CPUs");
            }
        }
    }

    async fn adopt_pod(&mut self, rec: PodRecord) -> Option<Running> {
        let plan = layout::plan(&self.ctx.cfg, &self.ctx.node, &rec.pod);
        let client = Client::new(&plan.pod_dir);
        self.ctx.net.claim(&plan.uid).await;
        match client.status().await {
            Ok(st) => {
                if !self.adopt_network(&plan, &rec).await {
                    return None;
                }
                let after = if self.restarted {
                    "pod worker restart"
                } else {
                    "agent restart"
                };
                tracing::info!(pod = %self.key, uid = %plan.uid, infra = st.pid, after, "adopted running pod");
                self.events.push(
                    false,
                    "Adopted",
                    format!("infra process {} adopted after {after}", st.pid),
                    now_ns(),
                );
                if let Some(cpu) = &self.ctx.cpu {
                    // The checkpoint keeps its CPUs; re-track its cgroups and rewrite them.
                    let res = cpu
                        .admit(&plan.uid, &plan.cgroup, layout::spec(&rec.pod))
                        .and_then(|_| cpu.reconcile());
                    if let Err(e) = res {
                        tracing::error!(pod = %self.key, error = %e, "CPU manager: adopting the pod's cpusets");
                    }
                }
                let mut r = Running {
                    plan,
                    rec,
                    client,
                    seq: 0,
                    failed: None,
                };
                self.absorb(&mut r, &st);
                // Visible at once: READY=1 follows adoption, and a caller asking right
                // after it must see the pod as it is, not as unknown.
                self.publish(&r);
                Some(r)
            }
            Err(e) => {
                tracing::warn!(pod = %self.key, uid = %plan.uid, error = %e, "pod supervisor is gone; recreating the pod");
                None
            }
        }
    }

    /// Take a running pod's network back after a restart: its attachment must be complete
    /// (an ADD cut short is undone and the pod made again, as a lost sandbox is), is CHECKed
    /// (a failure is said, the pod keeps running), and its host ports are held again.
    async fn adopt_network(&mut self, plan: &PodPlan, rec: &PodRecord) -> bool {
        let s = layout::spec(&rec.pod);
        if s.host_network == Some(true) {
            return true;
        }
        let ctx = self.ctx.clone();
        let uid = plan.uid.clone();
        let checked = tokio::task::spawn_blocking(move || ctx.net.check(&uid))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
        match checked {
            Ok(None) => {}
            Ok(Some(why)) => {
                tracing::warn!(pod = %self.key, error = %why, "CNI CHECK of an adopted pod failed");
                self.events.push(
                    true,
                    "NetworkCheckFailed",
                    format!("the pod's network failed its CNI CHECK: {why}"),
                    now_ns(),
                );
            }
            Err(why) => {
                tracing::warn!(pod = %self.key, uid = %plan.uid, reason = %why, "adopted pod has no complete network; recreating the pod");
                self.events.push(true, "SandboxChanged", format!("pod sandbox has no complete network ({why}); it will be killed and re-created"), now_ns());
                return false;
            }
        }
        if let Err(e) = self
            .ctx
            .net
            .hold_ports(&plan.uid, &crate::net::ports::host_ports(s))
        {
            tracing::warn!(pod = %self.key, error = %e, "cannot hold the adopted pod's host ports again");
        }
        true
    }

    /// Remove what a pod record describes (supervisor, cgroups, dirs).
    async fn cleanup_record(&mut self, rec: &PodRecord) {
        let plan = layout::plan(&self.ctx.cfg, &self.ctx.node, &rec.pod);
        let client = Client::new(&plan.pod_dir);
        let r = Box::new(Running {
            plan,
            rec: rec.clone(),
            client,
            seq: 0,
            failed: None,
        });
        self.teardown(r).await;
    }

    async fn teardown(&mut self, r: Box<Running>) {
        let span = tracing::info_span!("teardown", pod = %self.key, uid = %r.plan.uid);
        // Instrumented, not entered: a guard held across `.await` tags other tasks' lines.
        async {
            let grace = r.plan.grace_secs;
            let res =
                tokio::time::timeout(Duration::from_secs(grace + 15), r.client.shutdown(grace)).await;
            match res {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "supervisor did not answer shutdown; killing the pod's cgroup")
                }
                Err(_) => tracing::warn!("supervisor shutdown timed out; killing the pod's cgroup"),
            }
            let cg = self.ctx.cgroups.clone();
            let ctx = self.ctx.clone();
            let (cgroup, pod_dir, log_dir, uid) = (
                r.rec.cgroup.clone(),
                r.plan.pod_dir.clone(),
                r.plan.log_dir.clone(),
                r.plan.uid.clone(),
            );
            let result = tokio::task::spawn_blocking(move || {
                cg.kill_all(&cgroup).map_err(|e| e.to_string())?;
                // The network goes after the processes (nothing uses it any more) and before
                // the pod's files; its namespace stays pinned until its DEL is done.
                let net = ctx.net.detach(&uid);
                cg.remove(&cgroup).map_err(|e| e.to_string())?;
                prepare::remove_tree(&pod_dir).map_err(|e| format!("{}: {e}", pod_dir.display()))?;
                prepare::remove_tree(&log_dir).map_err(|e| format!("{}: {e}", log_dir.display()))?;
                net.map_err(|e| format!("{e} (the attachment is kept; GC tries again)"))
            })
            .await;
            self.release_resources(&r.plan.uid);
            match result {
                Ok(Ok(())) => tracing::info!("pod removed"),
                Ok(Err(e)) => tracing::error!(error = %e, "pod removal incomplete"),
                Err(e) => tracing::error!(error = %e, "pod removal task failed"),
            }
            self.events
                .push(false, "Killing", "pod stopped and removed".into(), now_ns());
        }
        .instrument(span)
        .await;
        // What the pod's start, life and teardown allocated is free now but scattered between
        // the agent's long-lived allocations, where glibc keeps it resident (it returns only
        // the heap's top): give those pages back, once per teardown, off the async workers.
        drop(r);
        tokio::task::spawn_blocking(crate::malloc::trim);
    }

    /// Run the pod until the desired pod changes. `Err` when the channel closed.
    async fn drive(&mut self) -> Result<(), ()> {
        loop {
            let mut r = self.running.take().expect("drive needs a running pod");
            if self.ctx.eviction_notice(&r.plan.uid).is_some() {
                // Evicted: back to `run`, which tears the pod down and holds it.
                self.running = Some(r);
                return Ok(());
            }
            Box::pin(self.act(&mut r)).await;
            self.publish(&r);
            // Test hook (`TIDELET_TEST_PANIC=worker:<key>`): a panic with the pod up, so that
            // the restarted worker must adopt it from disk.
            if r.rec
                .containers
                .values()
                .all(|m| matches!(m.life, Life::Running { .. }))
            {
                crate::supervise::inject::fire("worker", &self.key);
            }
            let next = r
                .rec
                .containers
                .values()
                .filter_map(|m| match m.due(now_ns()) {
                    Due::At(t) => Some(t),
                    Due::Start(_) => Some(now_ns()),
                    Due::Nothing => None,
                })
                .min();
            let sleep_for = next
                .map(|t| Duration::from_nanos((t - now_ns()).max(0) as u64))
                .unwrap_or(Duration::from_secs(3600));
            let seq = r.seq;
            let client = r.client.clone();
            self.running = Some(r);
            tokio::select! {
                changed = self.rx.changed() => {
                    return changed.map_err(|_| ());
                }
                st = client.wait(seq, Duration::from_secs(30)) => {
                    let mut r = self.running.take().expect("running");
                    match st {
                        Ok(st) => self.absorb(&mut r, &st),
                        Err(_) if self.ctx.eviction_notice(&r.plan.uid).is_some() => {
                            // The monitor killed the pod, supervisor included: `run` holds it.
                            self.running = Some(r);
                            return Ok(());
                        }
                        Err(e) => {
                            // A slow answer is not a dead supervisor: ask once more before
                            // giving up on the sandbox.
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            if let Ok(st) = r.client.status().await {
                                tracing::debug!(pod = %self.key, error = %e, "supervisor wait failed but it answers");
                                self.absorb(&mut r, &st);
                                self.running = Some(r);
                                continue;
                            }
                            tracing::warn!(pod = %self.key, error = %e, "lost the pod supervisor; recreating the pod");
                            self.events.push(true, "SandboxChanged", format!("pod sandbox lost ({e}); it will be killed and re-created"), now_ns());
                            Box::pin(self.teardown(r)).await;
                            return Ok(());
                        }
                    }
                    self.running = Some(r);
                }
                _ = tokio::time::sleep(sleep_for) => {}
            }
        }
    }

    /// Fold a supervisor status into the containers' lifecycles.
    fn absorb(&mut self, r: &mut Running, st: &SandboxStatus) {
        r.seq = st.seq;
        let policy = r.plan.restart_policy.clone();
        let mut changed = false;
        for record in &st.containers {
            let Some(memo) = r.rec.containers.get_mut(&record.name) else {
                continue;
            };
            let before = memo.clone();
            if let Some(ev) = record_event(record, &r.plan.uid) {
                if let Event::Exited { term, .. } = &ev {
                    let running_it = matches!(memo.life, Life::Running { attempt, .. } if attempt == record.attempt);
                    if running_it {
                        let warn = term.exit_code != 0;
                        self.events.push(
                            warn,
                            if term.reason == "OOMKilled" {
                                "OOMKilled"
                            } else {
                                "Exited"
                            },
                            format!(
                                "container {} exited with code {} ({})",
                                record.name, term.exit_code, term.reason
                            ),
                            now_ns(),
                        );
                        tracing::info!(pod = %self.key, container = %record.name, exit_code = term.exit_code, reason = %term.reason, "container exited");
                    }
                }
                if matches!(ev, Event::Started { .. })
                    && !matches!(memo.life, Life::Waiting { .. } | Life::BackOff { .. })
                {
                    // Already known running.
                } else {
                    memo.step(ev, &policy);
                }
            }
            if *memo != before {
                changed = true;
                if let Life::BackOff { .. } = memo.life {
                    let msg = format!("Back-off restarting failed container {}", record.name);
                    self.events.push(true, "BackOff", msg, now_ns());
                }
                if !matches!(memo.life, Life::Running { .. }) {
                    if let Some(i) = r.rec.info.get_mut(&record.name) {
                        i.pid = None;
                    }
                }
            }
        }
        if changed {
            if let Err(e) = save(&r.plan, &r.rec) {
                tracing::error!(pod = %self.key, error = %e, "cannot save pod state");
            }
        }
    }

    /// Start the containers whose lifecycle says so.
    async fn act(&mut self, r: &mut Running) {
        let containers = layout::spec(&r.rec.pod).containers.clone();
        let mut changed = false;
        for c in &containers {
            let Some(memo) = r.rec.containers.get(&c.name) else {
                continue;
            };
            let Due::Start(attempt) = memo.due(now_ns()) else {
                continue;
            };
            changed = true;
            let ev = self.start_container(r, c, attempt).await;
            let memo = r.rec.containers.get_mut(&c.name).expect("memo");
            let prev_attempt = attempt.checked_sub(1);
            memo.step(ev, &r.plan.restart_policy.clone());
            if let (Some(prev), Life::Running { .. }) = (prev_attempt, &memo.life) {
                // The previous attempt's writable layer is not needed any more.
                let _ = prepare::remove_tree(&prepare::rootfs_dir(&r.plan, &c.name, prev));
            }
        }
        if changed {
            if let Err(e) = save(&r.plan, &r.rec) {
                tracing::error!(pod = %self.key, error = %e, "cannot save pod state");
            }
        }
    }

    /// Start attempt `attempt` of container `c`: the image, the container's spec with its
    /// devices, its cgroups, then the supervisor's start. A step that fails leaves the
    /// container waiting with kubelet's reason and a Warning event, and it is tried again.
    async fn start_container(
        &mut self,
        r: &mut Running,
        c: &k8s_openapi::api::core::v1::Container,
        attempt: u32,
    ) -> Event {
        let prepared = match self.prepare_start(r, c, attempt).await {
            Ok(p) => p,
            Err(f) => {
                self.events
                    .push(true, f.event_reason(), f.message.clone(), now_ns());
                return f.blocked(now_ns());
            }
        };
        self.launch(r, c, attempt, prepared).await
    }

    /// Everything before the supervisor is asked to start the container.
    async fn prepare_start(
        &mut self,
        r: &mut Running,
        c: &k8s_openapi::api::core::v1::Container,
        attempt: u32,
    ) -> Result<Prepared, StartFailure> {
        let image = self.container_image(c)?;
        let mut spec = prepare::container_spec(&self.inputs(r), c, &image, attempt)
            .map_err(|e| StartFailure::new(e.reason, e.message))?;
        let t_devices = std::time::Instant::now();
        let rules = self.device_edits(r, c, &mut spec)?;
        let edits_took = t_devices.elapsed();
        let cg = prepare::container_cgroup(&r.plan, &c.name);
        self.ctx
            .cgroups
            .apply(&cg, &crate::qos::container_resources(c))
            .map_err(|e| StartFailure::new(CREATE_CONTAINER_ERROR, e))?;
        // Timed apart from `apply` above, which every container pays, device or not.
        let t_rules = std::time::Instant::now();
        self.set_devices(&cg, &rules)
            .map_err(|e| StartFailure::new(CREATE_CONTAINER_ERROR, e))?;
        self.ctx
            .devices
            .pre_start(&r.plan.uid, &c.name)
            .await
            .map_err(|m| StartFailure::new("RunContainerError", m))?;
        if !spec.devices.is_empty() {
            // Edits, cgroup rules and PreStartContainer: the container's share of the device
            // set-up (the nodes themselves are made in the container's /dev by the supervisor).
            let took = edits_took + t_rules.elapsed();
            tracing::info!(pod = %self.key, container = %c.name, devices = spec.devices.len(), elapsed_us = took.as_micros() as u64, "container devices set up");
        }
        if let Some(cpu) = &self.ctx.cpu {
            cpu.apply(&r.plan.uid, &c.name)
                .map_err(|e| StartFailure::new(CREATE_CONTAINER_ERROR, e))?;
        }
        prepare::make_container_dirs(&spec)
            .map_err(|e| StartFailure::new(CREATE_CONTAINER_ERROR, e))?;
        Ok(Prepared { spec, image })
    }

    /// The container's image from the local store (pulls come with a later issue), with
    /// kubelet's reasons when it is not there.
    fn container_image(
        &mut self,
        c: &k8s_openapi::api::core::v1::Container,
    ) -> Result<tidelet_images::ResolvedImage, StartFailure> {
        let image_ref = c.image.clone().unwrap_or_default();
        match self.ctx.store.resolve(&image_ref) {
            Ok(Some(i)) => {
                if c.image_pull_policy.as_deref() == Some("Always") {
                    self.events.push(false, "Pulled", format!("image {image_ref:?} is used from the local store (pulls are not supported yet)"), now_ns());
                }
                Ok(i)
            }
            Ok(None) if c.image_pull_policy.as_deref() == Some("Never") => Err(StartFailure::image(
                "ErrImageNeverPull",
                format!("Container image {image_ref:?} is not present with pull policy of Never"),
            )),
            Ok(None) => Err(StartFailure::image(
                "ErrImagePull",
                format!("Container image {image_ref:?} is not present and pulling images is not supported yet; import it with `tidelet image import`"),
            )),
            Err(e) => Err(StartFailure::image("InspectFailed", e.to_string())),
        }
    }

    /// What the device plugins (and CDI) said this container gets, applied to its spec; the
    /// container's device cgroup rules. A privileged container gets the host's devices, as
    /// containerd gives them: every node of /dev in its own /dev, and no device rule.
    fn device_edits(
        &self,
        r: &Running,
        c: &k8s_openapi::api::core::v1::Container,
        spec: &mut ContainerSpec,
    ) -> Result<Vec<crate::cgroups::devices::DeviceRule>, StartFailure> {
        let config_error = |m| StartFailure::new(CREATE_CONTAINER_CONFIG_ERROR, m);
        let edits = crate::devices::container_edits(&self.ctx.devices, &r.plan.uid, &c.name)
            .map_err(config_error)?;
        let rules = crate::devices::cgroup_rules(&edits).map_err(config_error)?;
        crate::devices::apply_edits(spec, edits);
        if !spec.security.privileged {
            return Ok(rules);
        }
        let given: std::collections::BTreeSet<String> = spec
            .devices
            .iter()
            .map(|d| d.container_path.clone())
            .collect();
        let host = crate::devices::host_devices(std::path::Path::new("/dev"));
        spec.devices.extend(
            host.into_iter()
                .filter(|d| !given.contains(&d.container_path)),
        );
        Ok(crate::cgroups::devices::allow_all())
    }

    /// Ask the supervisor to start the prepared container, and record what it says.
    async fn launch(
        &mut self,
        r: &mut Running,
        c: &k8s_openapi::api::core::v1::Container,
        attempt: u32,
        Prepared { spec, image }: Prepared,
    ) -> Event {
        if let Some(m) = r.rec.containers.get_mut(&c.name) {
            m.image_id = image.id.clone();
        }
        // Image GC removes the least recently used images first.
        let ctx = self.ctx.clone();
        let image_id = image.id.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = ctx.store.mark_used(&image_id, std::time::SystemTime::now()) {
                tracing::warn!(image = %image_id, error = %e, "cannot record the image's last use");
            }
        });
        let record = match r.client.start(spec.clone()).await {
            Ok(record) => record,
            Err(e) => {
                let f = StartFailure::new("RunContainerError", e);
                self.events
                    .push(true, f.event_reason(), f.message.clone(), now_ns());
                return f.blocked(now_ns());
            }
        };
        let pid = match record.state {
            ContainerState::Running { pid, .. } => Some(pid),
            _ => None,
        };
        if let Some(pid) = pid {
            self.events.push(
                false,
                "Started",
                format!("Started container {} (pid {pid})", c.name),
                now_ns(),
            );
            tracing::info!(pod = %self.key, container = %c.name, pid, attempt, "container started");
        }
        r.rec.info.insert(
            c.name.clone(),
            Box::new(ContainerInfo {
                name: c.name.clone(),
                pid,
                env: spec.env.clone(),
                cwd: spec.cwd.clone(),
                uid: spec.uid,
                gid: spec.gid,
                cgroup_procs: spec.cgroup_procs.clone(),
                log_path: Some(spec.log_path.clone()),
                security: Some(crate::security::SecurityView::of(
                    &spec.security,
                    spec.readonly_rootfs,
                    spec.userns
                        .map(|r| r.describe())
                        .unwrap_or_else(|| "host".into()),
                )),
                confinement: Some(spec.security.clone()),
            }),
        );
        if let ContainerState::Exited { message, .. } = &record.state {
            self.events
                .push(true, "Failed", format!("Error: {message}"), now_ns());
        }
        r.seq = seen_after_start(r.seq, record.seq);
        record_event(&record, &r.plan.uid)
            .unwrap_or_else(|| StartFailure::new("RunContainerError", "no state").blocked(now_ns()))
    }

    fn facts(&self, r: Option<&Running>, rec_pod: &Pod) -> PodFacts {
        pod_facts(
            &self.ctx.node.ip,
            rec_pod,
            r.map(|r| {
                (
                    r.rec.start_time_ns,
                    r.failed.clone(),
                    r.rec.pod_ips.as_slice(),
                )
            }),
            self.notice.clone(),
        )
    }

    fn publish(&self, r: &Running) {
        let now = now_ns();
        let pod_desc = format!("{}_{}({})", r.plan.name, r.plan.namespace, r.plan.uid);
        let s = layout::spec(&r.rec.pod);
        let views: Vec<_> = s
            .containers
            .iter()
            .map(|c| {
                let m = r.rec.containers.get(&c.name).cloned().unwrap_or_default();
                m.view(&c.name, c.image.as_deref().unwrap_or(""), &pod_desc, now)
            })
            .collect();
        let mut pod = r.rec.pod.clone();
        pod.status = Some(status::pod_status(&self.facts(Some(r), &r.rec.pod), &views));
        let containers = s
            .containers
            .iter()
            .map(|c| {
                r.rec
                    .info
                    .get(&c.name)
                    .map(|i| ContainerInfo::clone(i))
                    .unwrap_or_else(|| ContainerInfo {
                        name: c.name.clone(),
                        ..Default::default()
                    })
            })
            .collect();
        self.ctx.shared.publish(
            &self.key,
            PodView {
                pod,
                events: self.events.clone(),
                containers,
                file: r.rec.file.clone(),
                cgroup: r.rec.cgroup.clone(),
                devices: vec![],
            },
        );
    }

    /// A pod that cannot start yet but is not failed (its network is not ready): Pending,
    /// its containers waiting, the reason shown.
    fn publish_waiting(&self, d: &DesiredPod, reason: &str, msg: &str) {
        self.publish_not_running(d, reason, msg, true);
    }

    fn publish_failed(&self, d: &DesiredPod, reason: &str, msg: &str) {
        self.publish_not_running(d, reason, msg, false);
    }

    /// A pod with no sandbox, with its reason: waiting (a notice; phase Pending) or failed
    /// (phase Failed, an evicted pod's containers as they ended).
    fn publish_not_running(&self, d: &DesiredPod, reason: &str, msg: &str, waiting: bool) {
        let mut pod = d.pod.pod.clone();
        let mut facts = self.facts(None, &pod);
        let said = Some((reason.to_string(), msg.to_string()));
        let held = if waiting {
            facts.notice = said;
            None
        } else {
            facts.failed = said;
            self.held_views.as_ref()
        };
        let views = not_running_views(held, &pod, now_ns());
        pod.status = Some(status::pod_status(&facts, &views));
        self.ctx.shared.publish(
            &self.key,
            PodView {
                pod,
                events: self.events.clone(),
                containers: vec![],
                file: d.pod.file.clone(),
                cgroup: String::new(),
                devices: vec![],
            },
        );
    }
}

/// The pod's failure reason for a `create` error: admission errors (the CPU manager's
/// `UnexpectedAdmissionError: ...`) keep kubelet's reason, the rest are sandbox failures.
const CREATE_CONTAINER_ERROR: &str = "CreateContainerError";
const CREATE_CONTAINER_CONFIG_ERROR: &str = "CreateContainerConfigError";
/// How long a container whose start failed waits before the next try.
const START_RETRY_NS: i64 = 5_000_000_000;

/// What a pod's network needs, found before its sandbox is made.
struct NetworkPlan {
    list: crate::net::cni::ConfList,
    ports: Vec<crate::net::ports::HostPort>,
    bandwidth: Option<serde_json::Value>,
}

/// A container's image and spec, ready for the supervisor.
struct Prepared {
    spec: ContainerSpec,
    image: tidelet_images::ResolvedImage,
}

/// Why a container could not be started, as kubelet reports it: the container's waiting
/// reason (`ErrImagePull`, `ErrImageNeverPull`, `InspectFailed`, `CreateContainerConfigError`,
/// `CreateContainerError`, `RunContainerError`) and the message.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StartFailure {
    reason: String,
    message: String,
    /// The image failures' events carry their own reason; the others are `Failed`, as
    /// kubelet's are.
    image: bool,
}

impl StartFailure {
    fn new(reason: impl Into<String>, message: impl std::fmt::Display) -> Self {
        StartFailure {
            reason: reason.into(),
            message: message.to_string(),
            image: false,
        }
    }

    fn image(reason: &str, message: String) -> Self {
        StartFailure {
            reason: reason.into(),
            message,
            image: true,
        }
    }

    fn event_reason(&self) -> &str {
        if self.image {
            &self.reason
        } else {
            "Failed"
        }
    }

    /// The lifecycle's event: waiting with this reason, tried again in 5 s.
    fn blocked(self, now_ns: i64) -> Event {
        Event::Blocked {
            reason: self.reason,
            message: self.message,
            retry_at_ns: now_ns + START_RETRY_NS,
        }
    }
}

/// Why a pod's sandbox could not be created, as kubelet reports it: its reason
/// (`UnexpectedAdmissionError`, `OutOf<resource>`, `SysctlForbidden`, `CPUManagerError`, else
/// `FailedCreatePodSandBox`) and a message that starts with that reason, as kubelet's events do.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CreateFailure {
    reason: String,
    message: String,
    /// The pod waits (phase Pending, retried) rather than fails: kubelet keeps a pod whose
    /// network is not ready or whose sandbox's network set-up failed Pending.
    pending: bool,
}

impl CreateFailure {
    fn new(reason: impl Into<String>, detail: impl std::fmt::Display) -> Self {
        let reason = reason.into();
        CreateFailure {
            message: format!("{reason}: {detail}"),
            reason,
            pending: false,
        }
    }

    /// A failure of the sandbox itself (files, cgroups, the supervisor): its message alone.
    fn sandbox(detail: impl std::fmt::Display) -> Self {
        CreateFailure {
            reason: "FailedCreatePodSandBox".into(),
            message: detail.to_string(),
            pending: false,
        }
    }
}

/// The containers of a pod the monitor just killed: those that ran end terminated by
/// SIGKILL (exit code 137) with reason `Evicted`; the others stay as they were.
fn evicted_views(r: &Running, message: &str) -> Vec<crate::pod::status::ContainerView> {
    use crate::pod::status::{Current, Terminated};
    let now = now_ns();
    let pod_desc = format!("{}_{}({})", r.plan.name, r.plan.namespace, r.plan.uid);
    layout::spec(&r.rec.pod)
        .containers
        .iter()
        .map(|c| {
            let m = r.rec.containers.get(&c.name).cloned().unwrap_or_default();
            let mut v = m.view(&c.name, c.image.as_deref().unwrap_or(""), &pod_desc, now);
            if let Current::Running {
                started_at,
                container_id,
            } = &v.current
            {
                v.current = Current::Terminated(Terminated {
                    exit_code: 137,
                    signal: Some(9),
                    reason: "Evicted".into(),
                    message: message.to_string(),
                    started_at: *started_at,
                    finished_at: now,
                    container_id: container_id.clone(),
                });
            }
            v
        })
        .collect()
}

fn save(plan: &PodPlan, rec: &PodRecord) -> Result<(), String> {
    crate::state::atomic_replace_json(&plan.pod_dir.join("pod.json"), rec)
        .map_err(|e| format!("{}: {e}", plan.pod_dir.display()))
}

/// The supervisor's sequence number the worker has seen every change up to, after a start
/// that answered with its container's record at `record_seq`, having seen up to `seen`: the
/// start's own change when it directly follows, else still `seen`. A gap means the supervisor
/// changed something else in between (another container of the pod exited while this one
/// started) that a start's answer does not carry; waiting from past it missed that exit until
/// the wait's 30 s timeout. Waiting from `seen` returns at once with the whole status.
fn seen_after_start(seen: u64, record_seq: u64) -> u64 {
    if record_seq == seen + 1 {
        record_seq
    } else {
        seen
    }
}

/// A supervisor record as a lifecycle event.
fn record_event(rec: &ContainerRecord, uid: &str) -> Option<Event> {
    let container_id = format!("tidelet://{uid}/{}/{}", rec.name, rec.attempt);
    Some(match &rec.state {
        ContainerState::Running { started_at, .. } => Event::Started {
            attempt: rec.attempt,
            started_at: *started_at,
            container_id,
        },
        ContainerState::Exited {
            exit_code,
            signal,
            reason,
            message,
            started_at,
            finished_at,
        } => Event::Exited {
            attempt: rec.attempt,
            term: Terminated {
                exit_code: *exit_code,
                signal: *signal,
                reason: reason.clone(),
                message: message.clone(),
                started_at: *started_at,
                finished_at: *finished_at,
                container_id,
            },
        },
    })
}

/// What a pod's status is computed from, besides its containers: a `hostNetwork` pod has
/// the node's IP; other pods those of their CNI attachment. `running`: the sandbox's start
/// time, the failure it records and its IPs, when it exists.
/// A running sandbox's start time, failure and IPs.
type SandboxFacts<'a> = (i64, Option<(String, String)>, &'a [String]);

fn pod_facts(
    node_ip: &str,
    pod: &Pod,
    running: Option<SandboxFacts<'_>>,
    notice: Option<(String, String)>,
) -> PodFacts {
    let s = layout::spec(pod);
    let (start_time_ns, failed, ips) = match running {
        Some((start, failed, ips)) => (Some(start), failed, ips),
        None => (None, None, &[][..]),
    };
    let pod_ips: Vec<String> = if s.host_network == Some(true) {
        vec![node_ip.to_string()]
    } else {
        ips.to_vec()
    };
    PodFacts {
        restart_policy: s.restart_policy.clone().unwrap_or_else(|| "Always".into()),
        qos_class: crate::qos::qos_class(s).as_str().to_string(),
        host_ip: node_ip.to_string(),
        pod_ip: pod_ips.first().cloned().unwrap_or_default(),
        pod_ips,
        start_time_ns,
        failed,
        notice,
    }
}

/// The containers of a pod that does not run (held, or its sandbox failed): an evicted pod's
/// containers as they ended, for that pod's UID only; else every container waiting.
fn not_running_views(
    held: Option<&(String, Vec<crate::pod::status::ContainerView>)>,
    pod: &Pod,
    now_ns: i64,
) -> Vec<crate::pod::status::ContainerView> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    match held {
        Some((held_uid, views)) if held_uid == uid => views.clone(),
        _ => layout::spec(pod)
            .containers
            .iter()
            .map(|c| Memo::default().view(&c.name, c.image.as_deref().unwrap_or(""), "", now_ns))
            .collect(),
    }
}

/// How long a pod whose sandbox could not be created waits before the next try (unless told
/// something new first).
const CREATE_RETRY: Duration = Duration::from_secs(10);

fn record_uid(rec: &PodRecord) -> String {
    rec.pod.metadata.uid.clone().unwrap_or_default()
}

/// What the worker knows when it decides its next step.
#[derive(Debug, Clone, Copy)]
struct Facts<'a> {
    /// The desired pod's UID and admission gate (`None`: no pod of this name is wanted).
    want: Option<(&'a str, &'a Gate)>,
    /// The eviction monitor's message when it evicted the desired pod (held until admitted
    /// again). Set by the monitor before it kills, so a worker that sees its containers die
    /// first never restarts them.
    evicted: Option<&'a str>,
    /// The UID of the pod this worker runs.
    running: Option<&'a str>,
    /// UIDs of the pods of this name found on disk at start, not yet adopted or removed.
    on_disk: &'a [String],
}

/// The worker's next step. One step at a time, each decided on the newest desire.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Next {
    /// Adopt the first pod found on disk: it is the desired one and nothing runs yet.
    Adopt,
    /// Remove the first pod found on disk: not wanted (or another version already runs).
    CleanUp,
    /// Tear down the running pod: replaced by another version, or no longer wanted.
    TearDown,
    /// Nothing wanted and nothing left: unpublish and wait.
    Idle,
    /// The desired pod may not run (refused at admission, or evicted): tear down what runs,
    /// say why, and wait.
    Hold { reason: String, message: String },
    /// Run the desired pod: create its sandbox first when nothing runs, then drive it.
    Run { create: bool },
}

/// Pods found on disk go first (adopting the desired one if nothing runs yet), then a running
/// pod that is not the desired one, then what the desired pod's gate allows.
fn next_step(f: &Facts<'_>) -> Next {
    let want_uid = f.want.map(|(uid, _)| uid);
    if let Some(first) = f.on_disk.first() {
        return if Some(first.as_str()) == want_uid && f.running.is_none() {
            Next::Adopt
        } else {
            Next::CleanUp
        };
    }
    if f.running.is_some() && f.running != want_uid {
        return Next::TearDown;
    }
    let Some((_, gate)) = f.want else {
        return Next::Idle;
    };
    match (gate, f.evicted) {
        (Gate::Held { reason, message }, _) => Next::Hold {
            reason: reason.clone(),
            message: message.clone(),
        },
        (Gate::Admitted, Some(message)) => Next::Hold {
            reason: "Evicted".into(),
            message: message.into(),
        },
        (Gate::Admitted, None) => Next::Run {
            create: f.running.is_none(),
        },
    }
}

/// Read every pod record under `pods_dir` (for adoption at start).
pub fn load_records(pods_dir: &std::path::Path) -> Vec<PodRecord> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(pods_dir) else {
        return out;
    };
    for e in rd.flatten() {
        let p = e.path().join("pod.json");
        match std::fs::read(&p)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<PodRecord>(&b).map_err(|e| e.to_string()))
        {
            Ok(r) => out.push(r),
            Err(err) => {
                tracing::warn!(path = %p.display(), error = %err, "unreadable pod record; leaving it alone")
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(reason: &str) -> Gate {
        Gate::Held {
            reason: reason.into(),
            message: format!("{reason} message"),
        }
    }

    /// The worker's decisions, one step at a time. The sequences the churn run found wrong
    /// (an edit or a delete during a teardown) are rows: after the teardown, the step is
    /// decided on the newest desire, so a superseded version is never created.
    #[test]
    fn the_worker_decides_each_step_on_the_newest_desire() {
        let ok = Gate::Admitted;
        let oom = held("OutOfmemory");
        let disk = |u: &[&str]| u.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let run = |create| Next::Run { create };
        let hold = |r: &str, m: &str| Next::Hold {
            reason: r.into(),
            message: m.into(),
        };
        // (what happens, want, evicted, running, on disk, next)
        type Row<'a> = (
            &'a str,
            Option<(&'a str, &'a Gate)>,
            Option<&'a str>,
            Option<&'a str>,
            Vec<String>,
            Next,
        );
        #[rustfmt::skip]
        let rows: Vec<Row> = vec![
            ("nothing wanted, nothing runs", None, None, None, disk(&[]), Next::Idle),
            ("a new pod", Some(("a", &ok)), None, None, disk(&[]), run(true)),
            ("the pod runs", Some(("a", &ok)), None, Some("a"), disk(&[]), run(false)),
            ("edited: a replaced by b", Some(("b", &ok)), None, Some("a"), disk(&[]), Next::TearDown),
            ("deleted", None, None, Some("a"), disk(&[]), Next::TearDown),
            // Edit during a teardown: a was torn down for b; b was edited to c meanwhile.
            ("edit during teardown: the newest is created", Some(("c", &ok)), None, None, disk(&[]), run(true)),
            // Delete during a teardown: a was torn down for b; b was deleted meanwhile.
            ("delete during teardown: nothing is created", None, None, None, disk(&[]), Next::Idle),
            // Edit then delete while c is being torn down: nothing to create, nothing to run.
            ("edit then delete", None, None, Some("c"), disk(&[]), Next::TearDown),
            ("refused at admission", Some(("a", &oom)), None, None, disk(&[]), hold("OutOfmemory", "OutOfmemory message")),
            ("refused while running: torn down by the hold", Some(("a", &oom)), None, Some("a"), disk(&[]), hold("OutOfmemory", "OutOfmemory message")),
            ("evicted: never restarted", Some(("a", &ok)), Some("low on memory"), Some("a"), disk(&[]), hold("Evicted", "low on memory")),
            ("evicted, then held by admission: admission's reason", Some(("a", &oom)), Some("low on memory"), None, disk(&[]), hold("OutOfmemory", "OutOfmemory message")),
            ("the old version of a held pod goes first", Some(("b", &oom)), None, Some("a"), disk(&[]), Next::TearDown),
            // After an agent restart: pods of this name found on disk.
            ("adopt the desired pod", Some(("a", &ok)), None, None, disk(&["a"]), Next::Adopt),
            ("a stale version on disk goes", Some(("b", &ok)), None, None, disk(&["a"]), Next::CleanUp),
            ("deleted while the agent was down", None, None, None, disk(&["a"]), Next::CleanUp),
            ("two on disk: the stale one first, then adopt", Some(("b", &ok)), None, None, disk(&["a", "b"]), Next::CleanUp),
            ("two on disk, the desired first: adopt it", Some(("b", &ok)), None, None, disk(&["b", "a"]), Next::Adopt),
            ("the desired one adopted, the other on disk goes", Some(("b", &ok)), None, Some("b"), disk(&["a"]), Next::CleanUp),
            ("a held pod on disk is still adopted (then held)", Some(("a", &oom)), None, None, disk(&["a"]), Next::Adopt),
            ("edited while the agent was down", Some(("b", &ok)), None, None, disk(&["a"]), Next::CleanUp),
        ];
        for (what, want, evicted, running, on_disk, next) in rows {
            let f = Facts {
                want,
                evicted,
                running,
                on_disk: &on_disk,
            };
            assert_eq!(next_step(&f), next, "{what}");
        }
    }

    /// The churn bug's sequence, step by step: a runs; the manifest is edited to b, and to c
    /// while a is torn down; c runs; then it is deleted. b is never created.
    #[test]
    fn a_churn_sequence_never_runs_a_superseded_version() {
        let ok = Gate::Admitted;
        let mut running: Option<&str> = Some("a");
        let mut created = Vec::new();
        // The desire the worker reads at each step, as the agent sends it.
        let desires = [Some("b"), Some("c"), Some("c"), None, None];
        for want in desires {
            let f = Facts {
                want: want.map(|u| (u, &ok)),
                evicted: None,
                running,
                on_disk: &[],
            };
            match next_step(&f) {
                Next::TearDown => running = None,
                Next::Run { create: true } => {
                    created.push(want.unwrap_or_default());
                    running = want;
                }
                Next::Run { create: false } | Next::Idle => {}
                other => panic!("unexpected step {other:?}"),
            }
        }
        assert_eq!(created, vec!["c"]);
        assert_eq!(running, None);
    }

    fn pod(uid: &str, spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": uid},
            "spec": spec,
        }))
        .unwrap()
    }

    /// What is published besides the containers: the node's IP for hostNetwork pods, the
    /// attachment's for others (IPv4 first), the start time and failure only when a sandbox
    /// exists, kubelet's defaults for a spec that says nothing.
    #[test]
    fn pod_facts_follow_the_spec_and_the_sandbox() {
        let two = serde_json::json!({"containers": [{"name": "a", "image": "i"}]});
        let host = serde_json::json!({"hostNetwork": true, "restartPolicy": "Never",
            "containers": [{"name": "a", "image": "i",
                "resources": {"limits": {"cpu": "1", "memory": "1Mi"}}}]});
        let failed = Some(("Failed".to_string(), "m".to_string()));
        let ips = ["10.87.0.5".to_string(), "fd00::5".to_string()];
        let rows = [
            (
                pod("u", two.clone()),
                None,
                "",
                "Always",
                "BestEffort",
                None,
                None,
            ),
            (
                pod("u", host.clone()),
                None,
                "10.0.0.2",
                "Never",
                "Guaranteed",
                None,
                None,
            ),
            (
                pod("u", two.clone()),
                Some((7, None, &[][..])),
                "",
                "Always",
                "BestEffort",
                Some(7),
                None,
            ),
            (
                pod("u", two.clone()),
                Some((7, None, &ips[..])),
                "10.87.0.5",
                "Always",
                "BestEffort",
                Some(7),
                None,
            ),
            (
                pod("u", host),
                Some((7, None, &ips[..])),
                "10.0.0.2",
                "Never",
                "Guaranteed",
                Some(7),
                None,
            ),
            (
                pod("u", two),
                Some((7, failed.clone(), &[][..])),
                "",
                "Always",
                "BestEffort",
                Some(7),
                failed,
            ),
        ];
        for (pod, running, pod_ip, restart, qos, start, failed) in rows {
            let f = pod_facts("10.0.0.2", &pod, running, None);
            assert_eq!(f.host_ip, "10.0.0.2");
            assert_eq!(f.pod_ip, pod_ip);
            assert_eq!(f.restart_policy, restart);
            assert_eq!(f.qos_class, qos);
            assert_eq!(f.start_time_ns, start);
            assert_eq!(f.failed, failed);
        }
    }

    /// A held pod shows how its evicted containers ended, but only for the UID that was
    /// evicted: a new version of the pod, held too, shows its containers waiting.
    #[test]
    fn an_evicted_pods_last_views_are_shown_for_its_own_uid_only() {
        let spec = serde_json::json!({"containers": [{"name": "a", "image": "i"}]});
        let ended = crate::pod::status::ContainerView {
            name: "a".into(),
            image: "i".into(),
            image_id: String::new(),
            restart_count: 0,
            current: crate::pod::status::Current::Terminated(Terminated {
                exit_code: 137,
                signal: Some(9),
                reason: "Error".into(),
                message: "evicted".into(),
                started_at: 1,
                finished_at: 2,
                container_id: "tidelet://old/a/0".into(),
            }),
            last_terminated: None,
        };
        let held = ("old".to_string(), vec![ended.clone()]);
        assert_eq!(
            not_running_views(Some(&held), &pod("old", spec.clone()), 1),
            vec![ended]
        );
        for v in [
            not_running_views(Some(&held), &pod("new", spec.clone()), 1),
            not_running_views(None, &pod("old", spec), 1),
        ] {
            assert_eq!(v.len(), 1);
            assert!(
                matches!(v[0].current, crate::pod::status::Current::Waiting { .. }),
                "{v:?}"
            );
        }
    }

    /// A start that fails leaves the container waiting with kubelet's reason; image failures
    /// are their own events' reasons, the rest are `Failed` events, as kubelet's are.
    #[test]
    fn start_failures_wait_with_kubelets_reasons() {
        let rows = [
            (
                StartFailure::image("ErrImagePull", "m".into()),
                "ErrImagePull",
                "ErrImagePull",
            ),
            (
                StartFailure::image("ErrImageNeverPull", "m".into()),
                "ErrImageNeverPull",
                "ErrImageNeverPull",
            ),
            (
                StartFailure::image("InspectFailed", "m".into()),
                "InspectFailed",
                "InspectFailed",
            ),
            (
                StartFailure::new(CREATE_CONTAINER_CONFIG_ERROR, "m"),
                "CreateContainerConfigError",
                "Failed",
            ),
            (
                StartFailure::new(CREATE_CONTAINER_ERROR, "m"),
                "CreateContainerError",
                "Failed",
            ),
            (
                StartFailure::new("RunContainerError", "m"),
                "RunContainerError",
                "Failed",
            ),
        ];
        for (f, waiting, event) in rows {
            assert_eq!(f.event_reason(), event, "{f:?}");
            match f.blocked(1_000) {
                Event::Blocked {
                    reason,
                    message,
                    retry_at_ns,
                } => {
                    assert_eq!(reason, waiting);
                    assert_eq!(message, "m");
                    assert_eq!(retry_at_ns, 1_000 + START_RETRY_NS);
                }
                other => panic!("{other:?}"),
            }
        }
    }

    /// Each failure keeps kubelet's reason, which the string matching it replaced lost for the
    /// CPU manager's own errors (they were reported as FailedCreatePodSandBox).
    #[test]
    fn create_failures_carry_kubelets_reasons() {
        use crate::cpumanager::Error as Cpu;
        let not_enough = Cpu::NotEnough {
            pod: "p".into(),
            container: "c".into(),
            requested: 2,
            available: 1,
            cpus: "0-1".into(),
        };
        let unknown = Cpu::UnknownPod { pod: "p".into() };
        let cases = [
            (
                CreateFailure::new(not_enough.reason(), &not_enough),
                "UnexpectedAdmissionError",
            ),
            (
                CreateFailure::new(unknown.reason(), &unknown),
                "CPUManagerError",
            ),
            (
                CreateFailure::new("SysctlForbidden", "kernel.x"),
                "SysctlForbidden",
            ),
            (
                CreateFailure::new("OutOfexample.com/foo", "none"),
                "OutOfexample.com/foo",
            ),
            (
                CreateFailure::sandbox("pod files: EACCES"),
                "FailedCreatePodSandBox",
            ),
        ];
        for (f, want) in cases {
            assert_eq!(f.reason, want, "{f:?}");
        }
        // The message starts with the reason where kubelet's does; a sandbox failure's is its own.
        assert_eq!(
            CreateFailure::new(unknown.reason(), &unknown).message,
            "CPUManagerError: pod p was not admitted by the CPU manager"
        );
        assert_eq!(
            CreateFailure::sandbox("pod files: EACCES").message,
            "pod files: EACCES"
        );
    }

    #[test]
    fn a_start_does_not_skip_changes_it_does_not_carry() {
        let cases = [
            // (seen, the start's record seq, seen after)
            (4, 5, 5),
            // 5 was another container's exit, unseen: wait from 4 to get it.
            (4, 6, 4),
            (4, 9, 4),
            (0, 1, 1),
            // A record older than what was seen (a status already absorbed it).
            (7, 5, 7),
        ];
        for (seen, rec, want) in cases {
            assert_eq!(
                seen_after_start(seen, rec),
                want,
                "seen {seen}, record {rec}"
            );
        }
    }
}
