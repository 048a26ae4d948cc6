//! Serving and registering: for each resource, bind `<dir>/<endpoint>.sock`, serve
//! `DevicePlugin` on it, `Register` with `<dir>/kubelet.sock`, then watch the directory
//! (inotify, and a stat of two files per look) and start over when our socket file disappears
//! or `kubelet.sock` is re-created: that is how kubelet (and tidelet) restarts look from here.
//! A registration refused with an error status ends the resource's task with
//! [`Error::Refused`] (the API says a plugin should then terminate); a `kubelet.sock` that is
//! not there or not answering yet is waited for.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tidelet_deviceplugin_api::v1beta1::RegisterRequest;
use tidelet_deviceplugin_api::{DevicePluginServer, RegistrationClient, KUBELET_SOCKET, VERSION};
use tokio::sync::watch;
use tokio::task::{Id, JoinSet};

use crate::dirwatch::DirWatch;
use crate::name::{endpoint_file_name, validate_resource_name};
use crate::plugin::Plugin;
use crate::service::Service;
use crate::Error;

/// How often the directory is looked at, by default.
pub const DEFAULT_POLL: Duration = Duration::from_secs(1);
/// How often a registered plugin looks at the directory when inotify tells it of changes:
/// the look is then only a backstop (and how a server that stopped by itself is noticed).
const WATCHED_POLL: Duration = Duration::from_secs(10);
/// How long a `Register` call (connect and answer) may take before it is tried again.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stopping server may take to close its connections before it is dropped.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// How long after a registration start-up code is paged out (see `trim`).
const TRIM_DELAY: Duration = Duration::from_secs(2);
/// Set to `1`, start-up code is not paged out after a registration (see `trim`).
const NO_TRIM_ENV: &str = "TIDELET_PLUGIN_NO_TRIM";

/// Runs one server per resource in the current (single-threaded is enough) tokio runtime.
pub struct Runner {
    dir: PathBuf,
    poll: Duration,
    tasks: JoinSet<Result<(), Error>>,
    names: HashMap<Id, String>,
    resources: Vec<String>,
}

impl Runner {
    /// A runner for the device-plugin directory `dir` (where `kubelet.sock` is).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Runner {
            dir: dir.into(),
            poll: DEFAULT_POLL,
            tasks: JoinSet::new(),
            names: HashMap::new(),
            resources: Vec::new(),
        }
    }

    /// How often the directory is checked for a restarted kubelet (default 1 s).
    pub fn with_poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll.max(Duration::from_millis(10));
        self
    }

    /// Starts serving and registering `plugin`. Must be called inside a tokio runtime.
    /// Fails for an invalid resource name or one this runner already serves.
    pub fn add(&mut self, plugin: Arc<dyn Plugin>) -> Result<(), Error> {
        let resource = plugin.resource_name().to_string();
        validate_resource_name(&resource).map_err(|reason| Error::ResourceName {
            resource: resource.clone(),
            reason,
        })?;
        if self.resources.contains(&resource) {
            return Err(Error::Duplicate { resource });
        }
        let handle = self
            .tasks
            .spawn(serve_resource(self.dir.clone(), self.poll, plugin));
        self.names.insert(handle.id(), resource.clone());
        self.resources.push(resource);
        Ok(())
    }

    /// The resources served, in the order added.
    pub fn resources(&self) -> &[String] {
        &self.resources
    }

    /// The socket path the server for `resource` listens on.
    pub fn socket_path(&self, resource: &str) -> PathBuf {
        self.dir.join(endpoint_file_name(resource))
    }

    /// Waits until a resource's task fails and returns why. Never returns while all serve
    /// (and never while there is nothing to serve).
    pub async fn failed(&mut self) -> Error {
        loop {
            let Some(joined) = self.tasks.join_next_with_id().await else {
                return std::future::pending().await;
            };
            match joined {
                Ok((_, Ok(()))) => continue,
                Ok((_, Err(e))) => return e,
                Err(e) => {
                    let resource = self.names.get(&e.id()).cloned().unwrap_or_default();
                    return Error::Task {
                        resource,
                        message: e.to_string(),
                    };
                }
            }
        }
    }

    /// Stops every server and removes their socket files (what a plugin does on SIGTERM).
    pub async fn shutdown(mut self) {
        self.tasks.shutdown().await;
        for resource in &self.resources {
            let path = self.dir.join(endpoint_file_name(resource));
            if tidelet_deviceplugin_api::is_socket(&path) {
                if let Err(e) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "cannot remove the plugin socket");
                }
            }
        }
    }
}

/// Serves all `plugins` from `dir` until one fails; the usual `main` of a plugin.
pub async fn run(dir: impl Into<PathBuf>, plugins: Vec<Arc<dyn Plugin>>) -> Result<(), Error> {
    let mut runner = Runner::new(dir);
    for p in plugins {
        runner.add(p)?;
    }
    let e = runner.failed().await;
    runner.shutdown().await;
    Err(e)
}

/// What ends one registration phase.
enum Registered {
    /// Registered; `kubelet.sock` was this file.
    Yes(Option<FileId>),
    /// Our socket went away while we waited for the kubelet: start over.
    Restart(&'static str),
}

/// One resource's life: serve, register, watch, and again after each kubelet restart.
async fn serve_resource(
    dir: PathBuf,
    poll: Duration,
    plugin: Arc<dyn Plugin>,
) -> Result<(), Error> {
    let resource = plugin.resource_name().to_string();
    let endpoint = endpoint_file_name(&resource);
    let sock = dir.join(&endpoint);
    let kubelet = dir.join(KUBELET_SOCKET);
    let mut said_no_dir = false;
    let mut changes = DirWatch::new();
    loop {
        // Watched before each bind: the directory (its nearest existing ancestor while it is
        // not there) wakes the waits below as soon as it, `kubelet.sock` or our socket
        // change, so that no change after the bind is missed.
        changes.set(Path::new("/"), std::slice::from_ref(&dir));
        let listener = match tidelet_deviceplugin_api::bind(&sock) {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !said_no_dir {
                    tracing::info!(dir = %dir.display(), resource = %resource, "the device-plugin directory is not there yet, waiting");
                    said_no_dir = true;
                }
                nap(poll, &mut changes).await;
                continue;
            }
            Err(source) => return Err(Error::Bind { path: sock, source }),
        };
        said_no_dir = false;
        let own = file_id(&sock);
        let (stop_tx, stop_rx) = watch::channel(false);
        let mut server = tokio::spawn(serve(listener, plugin.clone(), stop_rx));
        tracing::info!(resource = %resource, socket = %sock.display(), "serving");

        let registered = register(
            &kubelet,
            (&sock, own),
            &endpoint,
            &*plugin,
            poll,
            &mut changes,
        );
        let why = match registered.await {
            Ok(Registered::Yes(kubelet_id)) => {
                tracing::info!(resource = %resource, endpoint = %endpoint, "registered");
                // The kubelet connects right after Register; once it has, start-up code is
                // no longer needed in memory. `TIDELET_PLUGIN_NO_TRIM=1` keeps it (for
                // scripts/bench-devices.sh, which measures the idle RSS both ways).
                if std::env::var_os(NO_TRIM_ENV).is_none_or(|v| v != "1") {
                    tokio::spawn(async {
                        tokio::time::sleep(TRIM_DELAY).await;
                        crate::trim::page_out_own_code();
                    });
                }
                let ids = (own, kubelet_id);
                watch_dir(&sock, &kubelet, ids, poll, &mut changes, &mut server).await
            }
            Ok(Registered::Restart(why)) => why,
            Err(e) => {
                stop(&resource, stop_tx, server).await;
                if file_id(&sock) == own {
                    let _ = std::fs::remove_file(&sock);
                }
                return Err(e);
            }
        };
        tracing::info!(resource = %resource, reason = why, "restarting the server and registering again");
        stop(&resource, stop_tx, server).await;
    }
}

async fn serve(
    listener: tokio::net::UnixListener,
    plugin: Arc<dyn Plugin>,
    stop: watch::Receiver<bool>,
) -> Result<(), tonic::transport::Error> {
    let mut done = stop.clone();
    tonic::transport::Server::builder()
        .add_service(DevicePluginServer::new(Service::new(plugin, stop)))
        .serve_with_incoming_shutdown(tidelet_deviceplugin_api::incoming(listener), async move {
            let _ = done.wait_for(|s| *s).await;
        })
        .await
}

async fn stop(
    resource: &str,
    stop_tx: watch::Sender<bool>,
    mut server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
) {
    let _ = stop_tx.send(true);
    match tokio::time::timeout(STOP_TIMEOUT, &mut server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => {
            tracing::warn!(resource = %resource, error = %e, "the server ended with an error")
        }
        Ok(Err(e)) => tracing::warn!(resource = %resource, error = %e, "the server task failed"),
        Err(_) => {
            tracing::warn!(resource = %resource, "the server did not stop in time, dropping it");
            server.abort();
        }
    }
}

/// Registers until the kubelet accepts (or refuses: the error), waiting while `kubelet.sock`
/// is missing or not answering.
/// `sock` and `own` are our socket and what it was when bound.
async fn register(
    kubelet: &Path,
    (sock, own): (&Path, Option<FileId>),
    endpoint: &str,
    plugin: &dyn Plugin,
    poll: Duration,
    changes: &mut DirWatch,
) -> Result<Registered, Error> {
    let resource = plugin.resource_name();
    let request = RegisterRequest {
        version: VERSION.to_string(),
        endpoint: endpoint.to_string(),
        resource_name: resource.to_string(),
        options: Some(plugin.options()),
    };
    let mut said_waiting = false;
    loop {
        if file_id(sock) != own {
            return Ok(Registered::Restart(
                "our socket was removed before registering",
            ));
        }
        let kubelet_id = file_id(kubelet);
        let attempt = tokio::time::timeout(REGISTER_TIMEOUT, async {
            let channel = tidelet_deviceplugin_api::connect(kubelet.to_path_buf())
                .await
                .map_err(|e| tonic::Status::unavailable(format!("connect: {e}")))?;
            RegistrationClient::new(channel)
                .register(request.clone())
                .await
        })
        .await;
        match attempt {
            Ok(Ok(_)) => return Ok(Registered::Yes(kubelet_id)),
            Ok(Err(status)) if status.code() != tonic::Code::Unavailable => {
                return Err(Error::Refused {
                    resource: resource.to_string(),
                    socket: kubelet.to_path_buf(),
                    code: status.code(),
                    message: status.message().to_string(),
                });
            }
            Ok(Err(status)) => {
                if !said_waiting {
                    tracing::info!(resource = %resource, kubelet = %kubelet.display(), reason = %status.message(), "the kubelet is not answering yet, waiting");
                    said_waiting = true;
                }
            }
            Err(_) => {
                tracing::warn!(resource = %resource, kubelet = %kubelet.display(), "Register timed out, trying again")
            }
        }
        nap(poll, changes).await;
    }
}

/// Waits `poll`, or less when the watched directory changes first.
async fn nap(poll: Duration, changes: &mut DirWatch) {
    tokio::select! {
        _ = tokio::time::sleep(poll) => {}
        _ = changes.changed() => {}
    }
}

/// Watches until the kubelet restarted (our socket gone, or `kubelet.sock` re-created) or
/// the server stopped by itself; returns the reason.
/// `ids` are what our socket and `kubelet.sock` were when we registered.
async fn watch_dir(
    sock: &Path,
    kubelet: &Path,
    (own, kubelet_id): (Option<FileId>, Option<FileId>),
    poll: Duration,
    changes: &mut DirWatch,
    server: &mut tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
) -> &'static str {
    loop {
        // Chosen at each wait: the watch may have been given up since (see `DirWatch::set`).
        let every = if changes.is_active() {
            poll.max(WATCHED_POLL)
        } else {
            poll
        };
        nap(every, changes).await;
        if server.is_finished() {
            return "the server stopped";
        }
        if file_id(sock) != own {
            return "our socket was removed";
        }
        match file_id(kubelet) {
            Some(now) if Some(now) != kubelet_id => return "kubelet.sock was re-created",
            _ => {}
        }
    }
}

/// Which file a path names: device, inode and change time, so that a file deleted and made
/// again is seen as new even when the inode number is reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId(u64, u64, i64, i64);

fn file_id(path: &Path) -> Option<FileId> {
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| FileId(m.dev(), m.ino(), m.ctime(), m.ctime_nsec()))
}
