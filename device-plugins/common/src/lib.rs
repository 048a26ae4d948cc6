//! The plugin side of the Kubernetes device-plugin API (`deviceplugin/v1beta1`), for tidelet's
//! own plugins and for anyone writing one in Rust.
//!
//! Implement [`Plugin`] for each extended resource (its devices as a `watch` channel, and
//! what a container gets in `Allocate`), then hand the plugins to a [`Runner`] (or [`run`]):
//! each gets its own socket `<dir>/<endpoint>.sock` served by tonic, is registered with
//! `<dir>/kubelet.sock`, and is served and registered again whenever the kubelet restarts
//! (seen at once through inotify on the directory). A plugin that finds its devices under
//! `/dev` runs its looks with [`rescan`]: at an interval and as soon as a watched directory
//! changes ([`dirwatch`]). All of it runs on one current-thread tokio runtime; an idle plugin
//! stays under 3 MiB.

pub mod cli;
pub mod dirwatch;
pub mod log;
mod name;
mod plugin;
pub mod rescan;
mod runner;
mod service;
pub mod signals;
pub mod testkit;
pub mod trim;

use std::path::PathBuf;

pub use name::{endpoint_file_name, is_valid_device_id, validate_resource_name, NameError};
pub use plugin::{check_ids, device, simple_preference, Plugin};
pub use runner::{run, Runner, DEFAULT_POLL};
pub use tidelet_deviceplugin_api as api;

/// Why a plugin stops serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The resource name is not `vendor-domain/name`.
    #[error("resource name {resource:?}: {reason}")]
    ResourceName { resource: String, reason: NameError },
    /// The same resource was added twice to one runner.
    #[error("resource {resource:?} is served twice")]
    Duplicate { resource: String },
    /// The plugin's socket could not be bound.
    #[error("{}: cannot bind the plugin socket: {source}", path.display())]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The kubelet answered `Register` with an error: the API says to terminate.
    #[error("{resource}: registration refused by {} ({code:?}): {message}", socket.display())]
    Refused {
        resource: String,
        socket: PathBuf,
        code: tonic::Code,
        message: String,
    },
    /// A resource's task panicked or was cancelled.
    #[error("{resource}: serving task failed: {message}")]
    Task { resource: String, message: String },
}
