//! The agent's side of the supervisor protocol: one request per connection to
//! `<pod_dir>/shim.sock` (a JSON line out, a JSON line back), with a timeout on every call
//! and a bound on the response line. A connection per request keeps both sides simple and
//! lets several agent tasks talk to one pod at once (a long `wait` blocks nobody else).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use super::event_loop::MAX_LINE;
use super::protocol::{ContainerRecord, ContainerSpec, Request, Response, SandboxStatus};
use super::supervisor::SOCKET_FILE;

/// Timeout of calls that the supervisor answers at once.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Timeout of `start` (mounting and exec'ing a container) and extra time of `wait`/`shutdown`.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("pod {pod_dir}: {op}: cannot reach the supervisor at {socket}: {source}")]
    Connect {
        pod_dir: PathBuf,
        op: &'static str,
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("pod {pod_dir}: {op}: {source}")]
    Io {
        pod_dir: PathBuf,
        op: &'static str,
        source: std::io::Error,
    },
    #[error("pod {pod_dir}: {op}: no answer within {millis} ms")]
    Timeout {
        pod_dir: PathBuf,
        op: &'static str,
        millis: u128,
    },
    #[error("pod {pod_dir}: {op}: response line longer than {max} bytes")]
    LineTooLong {
        pod_dir: PathBuf,
        op: &'static str,
        max: usize,
    },
    #[error("pod {pod_dir}: {op}: bad response: {message}")]
    Protocol {
        pod_dir: PathBuf,
        op: &'static str,
        message: String,
    },
    #[error("pod {pod_dir}: {op}: {message}")]
    Supervisor {
        pod_dir: PathBuf,
        op: &'static str,
        message: String,
    },
}

/// A handle on one pod's supervisor.
#[derive(Debug, Clone)]
pub struct Client {
    pod_dir: PathBuf,
    socket: PathBuf,
    call_timeout: Duration,
}

impl Client {
    /// A client for the supervisor of `pod_dir` (checks that its socket answers).
    pub async fn connect(pod_dir: &Path) -> Result<Self, ClientError> {
        let c = Self::new(pod_dir);
        c.status().await?;
        Ok(c)
    }

    /// A client without checking the socket.
    pub fn new(pod_dir: &Path) -> Self {
        Self {
            pod_dir: pod_dir.to_path_buf(),
            socket: pod_dir.join(SOCKET_FILE),
            call_timeout: CALL_TIMEOUT,
        }
    }

    /// Use `timeout` instead of [`CALL_TIMEOUT`] for the calls answered at once.
    pub fn with_call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    pub fn pod_dir(&self) -> &Path {
        &self.pod_dir
    }

    pub async fn start(&self, spec: ContainerSpec) -> Result<ContainerRecord, ClientError> {
        // The hooks that run while it starts may take their timeouts on top.
        let timeout = START_TIMEOUT + super::hooks::start_budget(&spec.hooks);
        match self
            .call(
                "start",
                Request::Start {
                    spec: Box::new(spec),
                },
                timeout,
            )
            .await?
        {
            Response::Record { record } => Ok(record),
            other => Err(self.unexpected("start", other)),
        }
    }

    pub async fn stop(&self, name: &str, signal: i32, grace_secs: u64) -> Result<(), ClientError> {
        let req = Request::Stop {
            name: name.into(),
            signal,
            grace_secs,
        };
        self.expect_ok("stop", req, self.call_timeout).await
    }

    pub async fn remove(&self, name: &str) -> Result<(), ClientError> {
        self.expect_ok(
            "remove",
            Request::Remove { name: name.into() },
            self.call_timeout,
        )
        .await
    }

    pub async fn status(&self) -> Result<SandboxStatus, ClientError> {
        match self
            .call("status", Request::Status, self.call_timeout)
            .await?
        {
            Response::Status { status } => Ok(status),
            other => Err(self.unexpected("status", other)),
        }
    }

    /// The status once `seq > since`, or the current one after `timeout`.
    pub async fn wait(&self, since: u64, timeout: Duration) -> Result<SandboxStatus, ClientError> {
        let req = Request::Wait {
            since,
            timeout_ms: timeout.as_millis() as u64,
        };
        match self.call("wait", req, timeout + self.call_timeout).await? {
            Response::Status { status } => Ok(status),
            other => Err(self.unexpected("wait", other)),
        }
    }

    /// Stop every container (stop signal, `grace_secs`, SIGKILL) and end the supervisor.
    pub async fn shutdown(&self, grace_secs: u64) -> Result<(), ClientError> {
        let timeout = Duration::from_secs(grace_secs) + START_TIMEOUT;
        self.expect_ok("shutdown", Request::Shutdown { grace_secs }, timeout)
            .await
    }

    async fn expect_ok(
        &self,
        op: &'static str,
        req: Request,
        timeout: Duration,
    ) -> Result<(), ClientError> {
        match self.call(op, req, timeout).await? {
            Response::Ok => Ok(()),
            other => Err(self.unexpected(op, other)),
        }
    }

    fn unexpected(&self, op: &'static str, resp: Response) -> ClientError {
        match resp {
            Response::Error { message } => ClientError::Supervisor {
                pod_dir: self.pod_dir.clone(),
                op,
                message,
            },
            other => ClientError::Protocol {
                pod_dir: self.pod_dir.clone(),
                op,
                message: format!("unexpected {other:?}"),
            },
        }
    }

    async fn call(
        &self,
        op: &'static str,
        req: Request,
        timeout: Duration,
    ) -> Result<Response, ClientError> {
        match tokio::time::timeout(timeout, self.call_inner(op, req)).await {
            Ok(r) => r,
            Err(_) => Err(ClientError::Timeout {
                pod_dir: self.pod_dir.clone(),
                op,
                millis: timeout.as_millis(),
            }),
        }
    }

    async fn call_inner(&self, op: &'static str, req: Request) -> Result<Response, ClientError> {
        let io = |source| ClientError::Io {
            pod_dir: self.pod_dir.clone(),
            op,
            source,
        };
        let stream =
            UnixStream::connect(&self.socket)
                .await
                .map_err(|source| ClientError::Connect {
                    pod_dir: self.pod_dir.clone(),
                    op,
                    socket: self.socket.clone(),
                    source,
                })?;
        let (r, mut w) = stream.into_split();
        let mut line = serde_json::to_vec(&req).map_err(|e| ClientError::Protocol {
            pod_dir: self.pod_dir.clone(),
            op,
            message: e.to_string(),
        })?;
        line.push(b'\n');
        w.write_all(&line).await.map_err(io)?;
        // A small buffer: the answer is read once into `buf`, and a pod's worker always has
        // one call waiting (`wait`, up to 30 s), which kept tokio's default 8 KiB per pod.
        let mut reader = BufReader::with_capacity(512, r).take(MAX_LINE as u64 + 1);
        let mut buf = Vec::new();
        reader.read_until(b'\n', &mut buf).await.map_err(io)?;
        if buf.last() != Some(&b'\n') {
            if buf.len() > MAX_LINE {
                return Err(ClientError::LineTooLong {
                    pod_dir: self.pod_dir.clone(),
                    op,
                    max: MAX_LINE,
                });
            }
            return Err(ClientError::Protocol {
                pod_dir: self.pod_dir.clone(),
                op,
                message: "connection closed before a full response".into(),
            });
        }
        serde_json::from_slice(&buf).map_err(|e| ClientError::Protocol {
            pod_dir: self.pod_dir.clone(),
            op,
            message: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    async fn serve_once(dir: &Path, reply: Vec<u8>) -> tokio::task::JoinHandle<String> {
        let l = UnixListener::bind(dir.join(SOCKET_FILE)).unwrap();
        tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut line = String::new();
            BufReader::new(r).read_line(&mut line).await.unwrap();
            w.write_all(&reply).await.unwrap();
            line
        })
    }

    #[tokio::test]
    async fn status_round_trip_and_request_shape() {
        let dir = tempfile::tempdir().unwrap();
        let server = serve_once(
            dir.path(),
            b"{\"result\":\"status\",\"status\":{\"pid\":5,\"seq\":2,\"containers\":[]}}\n"
                .to_vec(),
        )
        .await;
        let st = Client::new(dir.path()).status().await.unwrap();
        assert_eq!((st.pid, st.seq), (5, 2));
        assert_eq!(server.await.unwrap(), "{\"op\":\"status\"}\n");
    }

    #[tokio::test]
    async fn supervisor_errors_name_pod_and_operation() {
        let dir = tempfile::tempdir().unwrap();
        let _server = serve_once(
            dir.path(),
            b"{\"result\":\"error\",\"message\":\"no container \\\"x\\\"\"}\n".to_vec(),
        )
        .await;
        let err = Client::new(dir.path())
            .remove("x")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&dir.path().display().to_string())
                && err.contains("remove")
                && err.contains("no container"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn overlong_response_line_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let _server = serve_once(dir.path(), vec![b'x'; MAX_LINE + 10]).await;
        let err = Client::new(dir.path()).status().await.unwrap_err();
        assert!(matches!(err, ClientError::LineTooLong { .. }), "{err}");
    }

    #[tokio::test]
    async fn missing_socket_is_a_connect_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Client::connect(dir.path()).await.unwrap_err();
        assert!(
            matches!(err, ClientError::Connect { .. }) && err.to_string().contains("shim.sock"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn silent_supervisor_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let l = UnixListener::bind(dir.path().join(SOCKET_FILE)).unwrap();
        let _keep = tokio::spawn(async move {
            let (_s, _) = l.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        let client = Client::new(dir.path()).with_call_timeout(Duration::from_millis(300));
        let err = client.stop("a", 15, 1).await.unwrap_err();
        assert!(
            matches!(err, ClientError::Timeout { op: "stop", .. }),
            "{err}"
        );
    }
}
