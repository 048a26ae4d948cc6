//! tidelet: a standalone, kubelet-like node agent for embedded Linux.
//!
//! The binary (`main.rs`) is a thin CLI over this library. Modules, by what they own:
//! - `manifest`: Pod manifests: parse, validate as the API server would, static-pod naming/UID;
//! - `resolve`: a container's argv/env/cwd/user from its spec and its image (Kubernetes rules);
//! - `quantity`, `qos`: resource arithmetic, QoS class, oom_score_adj, shares/weight (pure);
//! - `cgroups`: one trait, v1 and v2 backends;
//! - `runtime`: the per-pod supervisor (infra process), container spawn, CRI logs, exec;
//! - `security`: what a container may do: capabilities, seccomp (its own BPF compiler),
//!   masked paths, `securityContext` rules, sysctls, user-namespace id ranges;
//! - `source`: pod sources (the static-pod directory, desired pods from the control plane);
//! - `mqtt`: sync with a remote control plane over MQTT (status up, desired pods down);
//! - `reconcile`: desired vs actual pods -> actions (pure);
//! - `pod`: pod/container lifecycle state machines, back-off, Kubernetes status;
//! - `agent`: the loop that ties sources, reconcile and runtime together;
//! - `api`: the local unix-socket API and its client;
//! - `state`: atomic writes of state on disk;
//! - `logging`, `systemd`: log lines shaped for a terminal or the journal; sd_notify;
//! - `render`, `yaml_out`: kubectl-like tables and `describe`; `-o yaml` that YAML 1.1 readers
//!   take back unchanged.

pub mod agent;
pub mod api;
pub mod cgroups;
pub mod cli;
pub mod config;
pub mod cpumanager;
pub mod devices;
pub mod eviction;
pub mod fleet;
pub mod gc;
pub mod logging;
pub mod manifest;
pub mod mqtt;
pub mod pod;
pub mod qos;
pub mod quantity;
pub mod reconcile;
pub mod render;
pub mod resolve;
pub mod runtime;
pub mod security;
pub mod signals;
pub mod source;
pub mod state;
pub mod systemd;
pub mod yaml;
pub mod yaml_out;
