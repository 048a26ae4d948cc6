//! A stand-in for the kubelet's `Registration` service, for plugin tests: it serves
//! `kubelet.sock` in a directory, records each `RegisterRequest` (bounded queue), answers
//! with success or with a refusal set by the test, and can "restart" the way kubelet does
//! (remove the sockets, bind `kubelet.sock` again).

// Test code: an unwrap that fails is a failed test, named with its location.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidelet_deviceplugin_api::v1beta1::{Empty, RegisterRequest};
use tidelet_deviceplugin_api::{Registration, RegistrationServer, KUBELET_SOCKET};
use tokio::sync::{mpsc, oneshot};
use tonic::{Request, Response, Status};

/// Registrations kept until the test reads them.
const QUEUE: usize = 64;

struct Registrar {
    seen: mpsc::Sender<RegisterRequest>,
    refuse: Arc<Mutex<Option<String>>>,
}

#[tonic::async_trait]
impl Registration for Registrar {
    async fn register(&self, request: Request<RegisterRequest>) -> Result<Response<Empty>, Status> {
        let request = request.into_inner();
        let refusal = self.refuse.lock().map(|r| r.clone()).unwrap_or(None);
        // A full queue drops the record, never blocks the plugin.
        let _ = self.seen.try_send(request);
        match refusal {
            Some(message) => Err(Status::invalid_argument(message)),
            None => Ok(Response::new(Empty {})),
        }
    }
}

/// A fake kubelet serving `Registration` on `<dir>/kubelet.sock`.
pub struct FakeKubelet {
    dir: PathBuf,
    seen_tx: mpsc::Sender<RegisterRequest>,
    seen: mpsc::Receiver<RegisterRequest>,
    refuse: Arc<Mutex<Option<String>>>,
    stop: Option<oneshot::Sender<()>>,
}

impl FakeKubelet {
    /// Binds `<dir>/kubelet.sock` and serves it in the current runtime.
    pub fn start(dir: &Path) -> std::io::Result<FakeKubelet> {
        let (seen_tx, seen) = mpsc::channel(QUEUE);
        let mut k = FakeKubelet {
            dir: dir.to_path_buf(),
            seen_tx,
            seen,
            refuse: Arc::new(Mutex::new(None)),
            stop: None,
        };
        k.serve()?;
        Ok(k)
    }

    fn serve(&mut self) -> std::io::Result<()> {
        let listener = tidelet_deviceplugin_api::bind(&self.dir.join(KUBELET_SOCKET))?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let svc = RegistrationServer::new(Registrar {
            seen: self.seen_tx.clone(),
            refuse: self.refuse.clone(),
        });
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(
                    tidelet_deviceplugin_api::incoming(listener),
                    async {
                        let _ = stop_rx.await;
                    },
                ),
        );
        self.stop = Some(stop_tx);
        Ok(())
    }

    /// From now on, refuse registrations with `message` (or accept again with `None`).
    pub fn refuse(&self, message: Option<&str>) {
        if let Ok(mut r) = self.refuse.lock() {
            *r = message.map(str::to_string);
        }
    }

    /// The next registration, waiting at most `timeout`.
    pub async fn next_registration(&mut self, timeout: Duration) -> Option<RegisterRequest> {
        tokio::time::timeout(timeout, self.seen.recv())
            .await
            .ok()
            .flatten()
    }

    /// What kubelet does when it starts again: stop serving, remove every socket in the
    /// directory (so plugins notice), and serve a new `kubelet.sock`.
    pub fn restart(&mut self) -> std::io::Result<()> {
        self.stop_serving();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if tidelet_deviceplugin_api::is_socket(&path) {
                std::fs::remove_file(&path)?;
            }
        }
        self.serve()
    }

    /// Re-creates `kubelet.sock` only, leaving the plugins' sockets alone.
    pub fn recreate_socket(&mut self) -> std::io::Result<()> {
        self.stop_serving();
        let _ = std::fs::remove_file(self.dir.join(KUBELET_SOCKET));
        self.serve()
    }

    fn stop_serving(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.stop_serving();
    }
}

/// Whether a privileged test may run: the one gate of tidelet's privileged tests.
pub use tidelet_testgate::privileged;

/// Makes a character device node at `path` with `major:minor` (mode 0666), with mknod(1).
pub fn mknod_char(path: &Path, major: u32, minor: u32) -> std::io::Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let out = std::process::Command::new("mknod")
        .args(["-m", "0666"])
        .arg(path)
        .args(["c", &major.to_string(), &minor.to_string()])
        .output()?;
    if !out.status.success() {
        return Err(std::io::Error::other(format!(
            "mknod {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// A child process killed and reaped when dropped, so a failing test leaves no plugin behind.
pub struct ChildGuard(pub std::process::Child);

impl ChildGuard {
    /// Waits up to `timeout` for the child to exit by itself; its status, or `None`.
    pub async fn exited_within(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.0.try_wait() {
                return Some(status);
            }
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM (by `kill -TERM <pid>`).
    pub fn terminate(&self) -> std::io::Result<()> {
        std::process::Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .map(|_| ())
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// How long the plugin tests wait for a registration, a list or an exit.
pub const WAIT: Duration = Duration::from_secs(15);

/// Start the plugin binary `bin` with `args`, scanning every 0.2 s (unless `args` say
/// otherwise: the last flag wins) and logging at debug level to `stderr`; it is killed when
/// the guard is dropped.
pub fn spawn_plugin(
    bin: &str,
    args: &[&std::ffi::OsStr],
    stderr: std::process::Stdio,
) -> ChildGuard {
    let child = std::process::Command::new(bin)
        .args(["--scan-interval", "0.2"])
        .args(args)
        .env("RUST_LOG", "debug,h2=info,tower=info,hyper=info")
        .stderr(stderr)
        .spawn()
        .unwrap_or_else(|e| panic!("start {bin}: {e}"));
    ChildGuard(child)
}

/// The next `n` registrations, sorted by resource name.
pub async fn registrations(k: &mut FakeKubelet, n: usize) -> Vec<RegisterRequest> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(k.next_registration(WAIT).await.expect("a registration"));
    }
    out.sort_by(|a, b| a.resource_name.cmp(&b.resource_name));
    out
}

/// A client of the plugin at `<dp>/<endpoint>` and its `ListAndWatch` stream.
pub async fn watch(
    dp: &Path,
    endpoint: &str,
) -> (
    tidelet_deviceplugin_api::DevicePluginClient<tonic::transport::Channel>,
    tonic::Streaming<tidelet_deviceplugin_api::v1beta1::ListAndWatchResponse>,
) {
    let mut c = tidelet_deviceplugin_api::DevicePluginClient::new(
        tidelet_deviceplugin_api::channel(dp.join(endpoint)),
    );
    let s = c.list_and_watch(Empty {}).await.unwrap().into_inner();
    (c, s)
}

/// The next list on the stream, as (id, health) pairs.
pub async fn next_list(
    s: &mut tonic::Streaming<tidelet_deviceplugin_api::v1beta1::ListAndWatchResponse>,
) -> Vec<(String, String)> {
    let msg = tokio::time::timeout(WAIT, s.message())
        .await
        .expect("a list in time")
        .unwrap()
        .expect("stream open");
    msg.devices.into_iter().map(|d| (d.id, d.health)).collect()
}

/// (id, health) pairs from string slices.
pub fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// An `Allocate` request for one container with `ids`.
pub fn alloc(ids: &[&str]) -> tidelet_deviceplugin_api::v1beta1::AllocateRequest {
    tidelet_deviceplugin_api::v1beta1::AllocateRequest {
        container_requests: vec![
            tidelet_deviceplugin_api::v1beta1::ContainerAllocateRequest {
                devices_ids: ids.iter().map(|s| s.to_string()).collect(),
            },
        ],
    }
}
