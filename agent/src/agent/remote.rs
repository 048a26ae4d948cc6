//! The control plane's side of the main loop: desired pods from MQTT (the `RemoteSource`,
//! persisted so they run with no broker), merged beside the static-pod directory, and the
//! answers published back on the link.
//!
//! The remote source is opened before the first desired set is computed: pods accepted
//! earlier must be in the set the workers adopt against, or a restart with the broker down
//! would tear them down.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::mqtt::session::{Down, Link};
use crate::mqtt::topics;
use crate::mqtt::MqttConfig;
use crate::source::{merge, DesiredResult, DesiredSet, RemoteSource};

use super::Ctx;

pub struct Remote {
    source: RemoteSource,
    link: Option<Link>,
    /// Until every desired pod has been published once, stale pod topics found on the
    /// broker are kept (`StartOptions::hold_sweep`), so that a pod still starting does not flicker.
    held_since: Option<std::time::Instant>,
    /// The desired pods taken since the last merge, whose answers wait for it: a
    /// pod a local file shadows is answered `Conflict` once, never `Accepted` first (a
    /// back-end takes the first live answer).
    unanswered: Vec<DesiredResult>,
}

/// The longest the sweep of stale pod topics waits for the desired pods to be published.
const HOLD_SWEEP_MAX: std::time::Duration = std::time::Duration::from_secs(10);

/// The next message from the control plane; pending forever without a link (or once it
/// is closed).
pub async fn recv(down: &mut Option<mpsc::Receiver<Down>>) -> Down {
    if let Some(rx) = down {
        if let Some(d) = rx.recv().await {
            return d;
        }
    }
    *down = None;
    std::future::pending().await
}

/// Where accepted remote pods are kept.
pub fn store_dir(root: &std::path::Path) -> std::path::PathBuf {
    root.join("remote-pods")
}

impl Remote {
    /// Load the persisted remote pods (problems are logged and become node events; none is
    /// fatal).
    pub fn open(ctx: &Ctx, mq: &MqttConfig) -> Remote {
        let (source, problems) = RemoteSource::open(
            &store_dir(&ctx.cfg.root_dir),
            &ctx.cfg.node_name,
            mq.remote_pod_policy.clone(),
        );
        for p in problems {
            tracing::warn!(file = %p.file.display(), field = %p.field, reason = %p.reason, "persisted remote pod dropped");
            ctx.node_event(true, "RemotePodDropped", p.to_string());
        }
        Remote {
            source,
            link: None,
            held_since: None,
            unanswered: Vec::new(),
        }
    }

    /// Connect (in the background: a broker that is down is retried forever) and start
    /// reporting the node's and pods' status. Returns the messages from the control plane.
    /// The reporter is supervised: after a panic a new one publishes the whole status again.
    pub fn connect(
        &mut self,
        ctx: &Arc<Ctx>,
        mq: &MqttConfig,
        sup: &crate::supervise::Supervisor,
    ) -> Option<mpsc::Receiver<Down>> {
        let backoff = crate::mqtt::backoff::Policy {
            cap: mq.reconnect_max_delay,
            ..Default::default()
        };
        let options = crate::mqtt::session::StartOptions {
            backoff,
            hold_sweep: true,
            supervisor: Some(sup.clone()),
        };
        match crate::mqtt::session::start_with(mq, &ctx.cfg.node_name, options) {
            Ok((link, down)) => {
                self.held_since = Some(std::time::Instant::now());
                let (rctx, rlink) = (ctx.clone(), link.clone());
                crate::supervise::task(sup, crate::supervise::Kind::Reporter, "", move || {
                    let (rctx, rlink) = (rctx.clone(), rlink.clone());
                    async move {
                        crate::supervise::inject::fire("reporter", "");
                        crate::supervise::joined(crate::mqtt::reporter::spawn(rctx, rlink)).await
                    }
                });
                self.link = Some(link);
                for r in self.source.results() {
                    self.publish(&r);
                }
                Some(down)
            }
            Err(e) => {
                tracing::error!(error = %e, "MQTT is configured but cannot be set up; running local-only");
                ctx.node_event(true, "MqttSetupFailed", e.to_string());
                None
            }
        }
    }

    /// The merged desired set: the static pods, and the remote ones whose name no local file
    /// takes. Changed answers (a pod shadowed, or no longer) are published.
    pub fn merge(&mut self, local: DesiredSet) -> DesiredSet {
        let (set, conflicts) = merge(local, self.source.desired());
        let unanswered = std::mem::take(&mut self.unanswered);
        for r in self.source.note_conflicts(&conflicts) {
            tracing::warn!(pod = %r.key(), reason = ?r.reason, message = %r.message, "remote pod");
            if !unanswered.iter().any(|u| u.key() == r.key()) {
                self.publish(&r);
            }
        }
        // Answered every time, even when the answer is the one the broker holds: the back-end
        // waits for a live message (the same manifest applied again).
        for r in unanswered {
            let now = self.source.result(&r.key()).unwrap_or(r);
            self.send(&now, true);
        }
        set
    }

    /// Take one message in. The desired set must be recomputed afterwards.
    pub fn take(&mut self, ctx: &Ctx, d: Down) {
        match d {
            Down::Desired {
                namespace,
                name,
                payload,
            } => {
                let r = self.source.handle(&namespace, &name, &payload);
                if r.accepted {
                    tracing::info!(pod = %r.key(), reason = ?r.reason, uid = ?r.uid, "desired pod from the control plane");
                } else {
                    tracing::warn!(pod = %r.key(), reason = ?r.reason, message = %r.message, errors = ?r.errors, "desired pod rejected");
                    ctx.node_event(
                        true,
                        "RemotePodRejected",
                        format!("{}: {:?}: {}", r.key(), r.reason, r.message),
                    );
                }
                // Answered after the merge that follows (`merge`), which knows whether a
                // local file takes the name.
                self.unanswered.retain(|u| u.key() != r.key());
                self.unanswered.push(r);
            }
            Down::Synced { present } => {
                for r in self.source.sweep(&present) {
                    tracing::info!(pod = %r.key(), "remote pod no longer desired by the control plane");
                    self.publish(&r);
                }
                for r in self.source.results() {
                    self.publish(&r);
                }
            }
        }
    }

    fn publish(&self, r: &DesiredResult) {
        self.send(r, false);
    }

    /// Publish the answer `r`; with `again`, even if the broker holds the same one already
    /// ([`Link::set_retained_again`]).
    fn send(&self, r: &DesiredResult, again: bool) {
        let Some(link) = &self.link else { return };
        let topic = topics::desired_result("", &r.key());
        match serde_json::to_vec(r) {
            Ok(json) if again => link.set_retained_again(&topic, Some(json)),
            Ok(json) => link.set_retained(&topic, Some(json)),
            Err(e) => tracing::error!(error = %e, "cannot encode a desired-pod result"),
        }
    }

    /// Called from every turn of the main loop: the lease is renewed only while it turns.
    /// Also releases the held sweep once every desired pod is published (or after
    /// `HOLD_SWEEP_MAX`).
    pub fn alive(&mut self, ctx: &Ctx, desired: &DesiredSet) {
        let Some(l) = &self.link else { return };
        l.alive();
        if let Some(since) = self.held_since {
            let published = desired.pods.keys().all(|k| ctx.shared.get(k).is_some());
            if published || since.elapsed() > HOLD_SWEEP_MAX {
                l.pods_ready();
                self.held_since = None;
            }
        }
    }

    /// Say goodbye on the broker (online=false), bounded.
    pub async fn shutdown(&self) {
        if let Some(l) = &self.link {
            l.shutdown(std::time::Duration::from_secs(2)).await;
        }
    }
}
