//! Supervision of the agent's long-lived tasks: a panic in one of them is seen, reported and
//! answered, never left as a task that silently stopped.
//!
//! `panic = "unwind"` keeps a panic inside the task that made it; this module watches each
//! long-lived task (pod workers, the eviction monitor thread, the local API server, the MQTT
//! status reporter, the MQTT session's connection loop and lease timer, the device-plugin
//! loops) and, when one panics: logs the panic's message,
//! hands an [`Incident`] to the `report` hook (the agent raises a node event), and restarts the
//! task from its factory after a back-off ([`policy`]), or, past the restart limit, calls the
//! `give_up` hook (the agent exits non-zero; systemd restarts it and the pods, which run under
//! their own supervisors, are adopted again). While a task is down (between its panic and its
//! restart) [`Supervisor::all_up`] is false: the agent stops feeding systemd's watchdog.
//!
//! It knows nothing of the agent: what a task is and how to make it again is the caller's
//! factory, and what a panic means for the node is the caller's hooks.

pub mod inject;
pub mod policy;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

pub use policy::{Decision, History, Policy};

/// The kinds of supervised task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Worker,
    Monitor,
    Api,
    Reporter,
    Session,
    SessionLease,
    DeviceRegistration,
    DevicePlugin,
    DeviceExpiry,
}

impl Kind {
    /// The short name, as logged and as `TIDELET_TEST_PANIC` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Worker => "worker",
            Kind::Monitor => "monitor",
            Kind::Api => "api",
            Kind::Reporter => "reporter",
            Kind::Session => "session",
            Kind::SessionLease => "session-lease",
            Kind::DeviceRegistration => "device-registration",
            Kind::DevicePlugin => "device-plugin",
            Kind::DeviceExpiry => "device-expiry",
        }
    }

    /// What it is, for people.
    pub fn what(self) -> &'static str {
        match self {
            Kind::Worker => "pod worker",
            Kind::Monitor => "eviction monitor",
            Kind::Api => "local API server",
            Kind::Reporter => "MQTT status reporter",
            Kind::Session => "MQTT session",
            Kind::SessionLease => "MQTT lease timer",
            Kind::DeviceRegistration => "device-plugin registration server",
            Kind::DevicePlugin => "device-plugin stream",
            Kind::DeviceExpiry => "device-plugin grace-period expiry",
        }
    }

    /// The node event's reason for its panic, named as kubelet names its node events.
    pub fn reason(self) -> &'static str {
        match self {
            Kind::Worker => "PodWorkerPanicked",
            Kind::Monitor => "EvictionManagerPanicked",
            Kind::Api => "APIServerPanicked",
            Kind::Reporter => "StatusReporterPanicked",
            Kind::Session => "MQTTSessionPanicked",
            Kind::SessionLease => "MQTTLeasePanicked",
            Kind::DeviceRegistration => "DevicePluginRegistrationPanicked",
            Kind::DevicePlugin => "DevicePluginPanicked",
            Kind::DeviceExpiry => "DevicePluginExpiryPanicked",
        }
    }
}

/// A supervised task panicked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incident {
    pub kind: Kind,
    /// Which one of its kind (a worker's pod key, a plugin's resource); empty when unique.
    pub id: String,
    /// The panic's message.
    pub message: String,
    pub decision: Decision,
}

impl Incident {
    /// The node event's reason.
    pub fn reason(&self) -> &'static str {
        match self.decision {
            Decision::Restart { .. } => self.kind.reason(),
            Decision::GiveUp => "RestartLimitReached",
        }
    }

    /// The node event's message: which task, the panic, and what follows.
    pub fn describe(&self) -> String {
        let task = match self.id.as_str() {
            "" => self.kind.what().to_string(),
            id => format!("{} {id}", self.kind.what()),
        };
        match self.decision {
            Decision::Restart { after } => {
                format!("{task} panicked: {}; restarting it in {after:?}", self.message)
            }
            Decision::GiveUp => format!(
                "{task} panicked: {}; it keeps panicking, so the agent exits to be restarted (pods keep running)",
                self.message
            ),
        }
    }
}

/// What a panic is told to: the node (an event) or the process (exit).
pub type Hook = Arc<dyn Fn(&Incident) + Send + Sync>;

/// Watches the tasks started through [`task`] and [`thread`]. Cheap to clone.
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

struct Inner {
    policy: Policy,
    /// Tasks between a panic and their restart (or for good, after giving up).
    down: AtomicUsize,
    /// The clock of the panic histories.
    epoch: Instant,
    report: Hook,
    give_up: Hook,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("policy", &self.inner.policy)
            .field("down", &self.down())
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// `report` is called for every panic, `give_up` when a task reached the restart limit
    /// (after `report`); neither may block for long.
    pub fn new(policy: Policy, report: Hook, give_up: Hook) -> Supervisor {
        Supervisor {
            inner: Arc::new(Inner {
                policy,
                down: AtomicUsize::new(0),
                epoch: Instant::now(),
                report,
                give_up,
            }),
        }
    }

    /// No supervised task is down: the agent may tell systemd it is alive.
    pub fn all_up(&self) -> bool {
        self.down() == 0
    }

    /// How many supervised tasks are down now.
    pub fn down(&self) -> usize {
        self.inner.down.load(Ordering::SeqCst)
    }

    /// A task of `kind` panicked with `message`: log, decide, report. The task counts as down
    /// until [`Supervisor::restarting`].
    fn panicked(&self, kind: Kind, id: &str, message: String, history: &mut History) -> Decision {
        self.inner.down.fetch_add(1, Ordering::SeqCst);
        let decision = history.panicked(&self.inner.policy, self.inner.epoch.elapsed());
        let incident = Incident {
            kind,
            id: id.to_string(),
            message,
            decision,
        };
        match decision {
            Decision::Restart { after } => tracing::error!(
                task = kind.name(),
                id,
                panic = %incident.message,
                panics = history.total(),
                restart_in = ?after,
                "supervised task panicked; restarting it"
            ),
            Decision::GiveUp => tracing::error!(
                task = kind.name(),
                id,
                panic = %incident.message,
                panics = history.total(),
                "supervised task keeps panicking; giving up"
            ),
        }
        (self.inner.report)(&incident);
        if decision == Decision::GiveUp {
            (self.inner.give_up)(&incident);
        }
        decision
    }

    fn restarting(&self, kind: Kind, id: &str) {
        tracing::info!(task = kind.name(), id, "restarting supervised task");
        self.inner.down.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A panic's message (`panic!` gives a `&str` or a `String`).
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_string()
    }
}

/// Run the future `make` returns as a tokio task, and again (a new one from `make`) each time
/// it panics, as the supervisor decides. Ends when a run ends without panicking, when the
/// runtime cancels it, or after giving up. Aborting the returned handle aborts the run too.
pub fn task<F, Fut>(
    sup: &Supervisor,
    kind: Kind,
    id: impl Into<String>,
    mut make: F,
) -> tokio::task::JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let sup = sup.clone();
    let id = id.into();
    tokio::spawn(async move {
        let mut history = History::default();
        loop {
            // Its own task, so that the panic unwinds there and this one sees a JoinError;
            // aborted with this one (a dropped JoinHandle would only detach it).
            let run = tokio::spawn(make());
            let _abort = AbortOnDrop(run.abort_handle());
            let message = match run.await {
                Ok(()) => return,
                Err(e) if e.is_panic() => panic_message(&*e.into_panic()),
                Err(_) => return,
            };
            match sup.panicked(kind, &id, message, &mut history) {
                Decision::Restart { after } => {
                    tokio::time::sleep(after).await;
                    sup.restarting(kind, &id);
                }
                Decision::GiveUp => return,
            }
        }
    })
}

struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Run `body` on a thread of its own, and again each time it panics, as the supervisor
/// decides. `body` makes its state afresh on each call: what a panic left half-done is
/// dropped with it (hence `AssertUnwindSafe`; shared state reached through it must be behind
/// locks that survive poisoning, as the agent's are).
pub fn thread(
    sup: &Supervisor,
    kind: Kind,
    name: &str,
    mut body: impl FnMut() + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let sup = sup.clone();
    std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || {
            let mut history = History::default();
            loop {
                let message = match std::panic::catch_unwind(AssertUnwindSafe(&mut body)) {
                    Ok(()) => return,
                    Err(p) => panic_message(&*p),
                };
                match sup.panicked(kind, "", message, &mut history) {
                    Decision::Restart { after } => {
                        std::thread::sleep(after);
                        sup.restarting(kind, "");
                    }
                    Decision::GiveUp => return,
                }
            }
        })
}

/// Await `fut`, catching a panic of it as `Err(payload)` (the future is dropped then): for a
/// run that must undo something before its panic is carried on with
/// `std::panic::resume_unwind` (the MQTT session marks its link down). Cleaning up here, not
/// in a `Drop` during unwinding, means a second panic is one more panic, not an abort.
pub async fn catch<F: std::future::Future>(
    fut: F,
) -> Result<F::Output, Box<dyn std::any::Any + Send>> {
    let mut fut = Box::pin(fut);
    std::future::poll_fn(move |cx| {
        match std::panic::catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(p) => std::task::Poll::Ready(Err(p)),
        }
    })
    .await
}

/// Await a task spawned elsewhere and carry its panic on: for a task whose spawner returns
/// its `JoinHandle` (the reporter), supervised by a [`task`] that awaits it.
pub async fn joined(h: tokio::task::JoinHandle<()>) {
    if let Err(e) = h.await {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
