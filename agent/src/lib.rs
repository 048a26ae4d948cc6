//! tidelet: a standalone, kubelet-like node agent for embedded Linux.
//!
//! The binary (`main.rs`) is a thin CLI over this library. Modules, by what they own:
//! - `yaml`, `yaml_out`: YAML read as kubelet reads it (go-yaml v2's YAML 1.1 scalars, aliases
//!   and merge keys under a budget) and written as kubectl writes it;
//! - `manifest`: Pod manifests: parse, validate as the API server would, static-pod naming/UID;
//! - `config`: the agent's KubeletConfiguration-style file and flags;
//! - `resolve`: a container's argv/env/cwd/user from its spec and its image (Kubernetes rules);
//! - `quantity`, `qos`: resource arithmetic and Go durations, QoS class, oom_score_adj, CPU
//!   shares (pure);
//! - `cgroups`: one trait, v1 and v2 backends;
//! - `cpumanager`: the static CPU-manager policy (exclusive cpusets for Guaranteed pods);
//! - `devices`: the device-plugin API's kubelet side, CDI specs, device edits for containers;
//! - `runtime`: the per-pod supervisor (infra process), container spawn, CRI logs, exec;
//! - `security`: what a container may do: capabilities, seccomp (its own BPF compiler),
//!   masked paths, `securityContext` rules, sysctls, user-namespace id ranges;
//! - `eviction`: thresholds, signals, admission and the eviction monitor (kubelet's manager);
//! - `signals`: pressure triggers (PSI, cgroup v1 thresholds) that wake the monitor;
//! - `gc`: image and container-log garbage collection under disk pressure;
//! - `source`: pod sources (the static-pod directory, desired pods from the control plane);
//! - `net`: pod networking through CNI (plugins, attachments, host ports, DNS and hosts files);
//! - `mqtt`: sync with a remote control plane over MQTT (status up, desired pods down);
//! - `fleet`: the operator's `tidelet fleet` CLI, which reads and writes those topics;
//! - `reconcile`: desired vs actual pods -> actions (pure);
//! - `pod`: pod/container lifecycle state machines, back-off, Kubernetes status, where a pod
//!   lives on the node (`pod::plan`) and the published view of every pod (`pod::view`);
//! - `node`: the node's facts (detected once) and the Kubernetes Node object built from them;
//! - `clock`: the one wall clock (`now_ns`);
//! - `agent`: the loop that ties sources, reconcile and runtime together;
//! - `api`: the local unix-socket API and its client;
//! - `cli`: the command line (clap) over all of the above;
//! - `state`: atomic writes of state on disk;
//! - `supervise`: long-lived tasks restarted after a panic, with back-off and a limit;
//! - `logging`, `systemd`: log lines shaped for a terminal or the journal; sd_notify;
//! - `malloc`: the C allocator's policy (one arena, fixed thresholds, trims);
//! - `render`: kubectl-like tables and `describe`.

pub mod agent;
pub mod api;
pub mod cgroups;
pub mod cli;
pub mod clock;
pub mod config;
pub mod cpumanager;
pub mod devices;
pub mod eviction;
pub mod fleet;
pub mod gc;
pub mod logging;
pub mod malloc;
pub mod manifest;
pub mod mqtt;
pub mod net;
pub mod node;
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
pub mod supervise;
pub mod systemd;
pub mod yaml;
pub mod yaml_out;
