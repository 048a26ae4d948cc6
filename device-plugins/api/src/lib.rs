//! The Kubernetes device-plugin API, `deviceplugin/v1beta1`, shared by tidelet (the kubelet
//! side: `Registration` server, `DevicePlugin` client) and its plugins (the other side).
//!
//! `v1beta1.rs` is generated from `proto/api.proto` and checked in, so that building tidelet
//! (cross, Yocto) needs no `protoc`; the test `generated_code_is_current` regenerates it and
//! fails when the two differ. Everything here runs over unix sockets in the device-plugin
//! directory, as kubelet's does: gRPC needs an `http://` URI, which the connector ignores.

use std::path::{Path, PathBuf};

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod v1beta1 {
    include!("v1beta1.rs");
}

pub mod authority_fix;
pub use authority_fix::AuthorityFix;

pub use v1beta1::device_plugin_client::DevicePluginClient;
pub use v1beta1::device_plugin_server::{DevicePlugin, DevicePluginServer};
pub use v1beta1::registration_client::RegistrationClient;
pub use v1beta1::registration_server::{Registration, RegistrationServer};

/// The API version this crate speaks; `RegisterRequest.version`.
pub const VERSION: &str = "v1beta1";
/// Versions the agent accepts from plugins.
pub const SUPPORTED_VERSIONS: &[&str] = &[VERSION];
/// kubelet's device-plugin directory, where `kubelet.sock` and the plugins' sockets live.
pub const DEFAULT_DIR: &str = "/var/lib/kubelet/device-plugins";
/// The agent's registration socket's file name in that directory.
pub const KUBELET_SOCKET: &str = "kubelet.sock";
/// `Device.health` values.
pub const HEALTHY: &str = "Healthy";
pub const UNHEALTHY: &str = "Unhealthy";

/// A gRPC channel to the unix socket at `path`. The connection is made lazily, at the first
/// call, and made again after it breaks.
pub fn channel(path: impl Into<PathBuf>) -> tonic::transport::Channel {
    let path: PathBuf = path.into();
    // The URI is never resolved: the connector below ignores it.
    tonic::transport::Endpoint::from_static("http://[::1]:1").connect_with_connector_lazy(
        tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }),
    )
}

/// Connect to `path` now, so that a missing or dead socket is an error here and not at the
/// first call.
pub async fn connect(
    path: impl Into<PathBuf>,
) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let path: PathBuf = path.into();
    tonic::transport::Endpoint::from_static("http://[::1]:1")
        .connect_with_connector(tower::service_fn(move |_: tonic::transport::Uri| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
}

/// Whether `path` is a unix socket (not following a symlink): how the kubelet side and the
/// plugins tell their sockets from other files in the device-plugin directory.
pub fn is_socket(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

/// Bind a unix socket at `path`, replacing a stale socket file left by an earlier process.
/// Anything else at that path (a directory, a regular file) is an error, not removed.
pub fn bind(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AlreadyExists,
                format!("{}: exists and is not a socket", path.display()),
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    tokio::net::UnixListener::bind(path)
}

/// The stream of connections a tonic server takes from a bound listener. Each is wrapped in
/// [`AuthorityFix`], so that clients sending the socket's path (or nothing) as `:authority`,
/// as grpcio for Python does, are not reset by h2.
pub fn incoming(
    listener: tokio::net::UnixListener,
) -> impl tokio_stream::Stream<Item = std::io::Result<AuthorityFix<tokio::net::UnixStream>>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::UnixListenerStream::new(listener).map(|s| s.map(AuthorityFix::new))
}

#[cfg(test)]
mod tests;
