//! The command line: flags (clap) and the commands behind them. `main.rs` only calls `main`.

use std::error::Error;
use std::io::Write;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

use crate::api::{self, Request, Response};
use crate::config::{self, Config};
use crate::manifest;

type Result<T> = std::result::Result<T, Box<dyn Error>>;

#[derive(Parser, Debug)]
#[command(
    name = "tidelet",
    version,
    about = "A standalone, kubelet-like node agent for embedded Linux"
)]
pub struct Cli {
    /// tidelet's state directory; the CLI finds the running agent through it.
    #[arg(long, global = true, env = "TIDELET_ROOT_DIR", default_value = config::DEFAULT_ROOT_DIR)]
    pub root_dir: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the agent: watch the static-pod directory and run its pods.
    Run(RunArgs),
    /// Check manifest files offline; prints every problem, exit status 1 if any.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Node name used for static-pod naming (defaults to the host name).
        #[arg(long)]
        node_name: Option<String>,
        /// Fields the Kubernetes Pod API tidelet knows does not have are errors, not warnings
        /// (the agent, as kubelet, ignores them): for CI pipelines, where a typo must fail.
        #[arg(long)]
        strict: bool,
        /// `json`: print each accepted pod as tidelet will run it (defaulted, one JSON object
        /// a line) on stdout, and the messages on stderr: what tidelet made of the YAML.
        #[arg(long, short = 'o', value_parser = ["json"])]
        output: Option<String>,
    },
    /// Manage images in the local store.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Show pods.
    Get {
        #[command(subcommand)]
        what: GetWhat,
    },
    /// Show a pod in detail, with its events.
    Describe {
        #[command(subcommand)]
        what: DescribeWhat,
    },
    /// Print a container's logs.
    Logs {
        pod: String,
        #[arg(short, long)]
        container: Option<String>,
        #[arg(short, long)]
        follow: bool,
        /// The previous attempt's logs (after a restart).
        #[arg(short, long)]
        previous: bool,
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Run a command in a running container.
    Exec {
        pod: String,
        #[arg(short, long)]
        container: Option<String>,
        #[arg(short, long)]
        namespace: Option<String>,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// The control plane's view of a fleet over MQTT: nodes, pods, apply, delete, watch.
    ///
    /// Runs `tidelet-fleet`, the operator's CLI (beside this binary, else on the PATH), with
    /// these arguments; `tidelet fleet --help` is its help.
    #[command(disable_help_flag = true)]
    Fleet {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 0..)]
        args: Vec<std::ffi::OsString>,
    },
}

/// The operator's CLI: a binary of its own (see `fleet_exec`).
pub const FLEET_EXE: &str = "tidelet-fleet";

/// `tidelet-fleet` (also run as `tidelet fleet`): connects to the broker the nodes use (a
/// clean session of its own).
#[derive(Parser, Debug)]
#[command(
    name = "tidelet-fleet",
    version,
    about = "The control plane's view of a fleet of tidelet nodes over MQTT"
)]
pub struct FleetArgs {
    /// mqtt://host[:port] or mqtts://host[:port].
    #[arg(
        long,
        global = true,
        env = "TIDELET_FLEET_BROKER",
        default_value = "mqtt://127.0.0.1:1883"
    )]
    pub broker: String,
    /// CA certificates (PEM) that verify the broker (mqtts://).
    #[arg(long, global = true, env = "TIDELET_FLEET_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS, with --key.
    #[arg(long, global = true, env = "TIDELET_FLEET_CERT")]
    pub cert: Option<PathBuf>,
    /// Client key (PEM) for mutual TLS, with --cert.
    #[arg(long, global = true, env = "TIDELET_FLEET_KEY")]
    pub key: Option<PathBuf>,
    /// User name for the broker (password from --password-file).
    #[arg(long, global = true, env = "TIDELET_FLEET_USERNAME")]
    pub username: Option<String>,
    /// A file holding the password (first line).
    #[arg(long, global = true, env = "TIDELET_FLEET_PASSWORD_FILE")]
    pub password_file: Option<PathBuf>,
    /// The fleet's root topic: nodes are <root><node>/.
    #[arg(long, global = true, env = "TIDELET_FLEET_ROOT", default_value = crate::mqtt::topics::DEFAULT_ROOT)]
    pub root: String,
    /// Default: tidelet-fleet-<pid>.
    #[arg(long, global = true, env = "TIDELET_FLEET_CLIENT_ID")]
    pub client_id: Option<String>,
    /// table, or the objects as json/yaml (watch -o json: one message per line).
    #[arg(short, long, global = true, value_enum, default_value = "table")]
    pub output: FleetOutput,
    /// How long to try to connect (10s, 500ms).
    #[arg(long, global = true, default_value = "10s", value_parser = parse_fleet_duration)]
    pub connect_timeout: std::time::Duration,
    #[command(subcommand)]
    pub command: FleetCmd,
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum FleetOutput {
    Table,
    Json,
    Yaml,
}

#[derive(Subcommand, Debug)]
pub enum FleetCmd {
    /// Nodes: online/offline/stale, conditions, pod counts, allocatable, last lease renewal.
    #[command(alias = "node", alias = "no")]
    Nodes,
    /// Pods of every node, or of one.
    #[command(alias = "pod", alias = "po")]
    Pods {
        /// Only this node's pods.
        #[arg(long)]
        node: Option<String>,
    },
    /// Publish a desired pod (retained) to a node and wait for its answer.
    /// Exit 0 accepted, 1 rejected, 2 no answer in time (the pod stays desired).
    Apply {
        /// The node (its topics are <root><node>/).
        #[arg(long)]
        node: String,
        /// One Pod manifest, YAML or JSON.
        file: PathBuf,
        /// How long to wait for the node's answer.
        #[arg(long, default_value = "30s", value_parser = parse_fleet_duration)]
        timeout: std::time::Duration,
    },
    /// Remove a desired pod from a node and wait for the node's answer (exit codes as apply).
    Delete {
        /// The node (its topics are <root><node>/).
        #[arg(long)]
        node: String,
        /// The pod's name, as the back-end gave it.
        pod: String,
        #[arg(short, long, default_value = "default")]
        namespace: String,
        /// How long to wait for the node's answer.
        #[arg(long, default_value = "30s", value_parser = parse_fleet_duration)]
        timeout: std::time::Duration,
    },
    /// Stream changes (online/offline, pod status, events, results) until interrupted;
    /// -o json prints every message (topic and payload) one per line.
    Watch {
        /// Only this node.
        #[arg(long)]
        node: Option<String>,
    },
}

fn parse_fleet_duration(s: &str) -> std::result::Result<std::time::Duration, String> {
    crate::quantity::parse_duration(s)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("{s:?} is not a duration (30s, 1m, 500ms)"))
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// KubeletConfiguration-style YAML file; flags override it.
    #[arg(long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub static_pod_path: Option<PathBuf>,
    #[arg(long)]
    pub node_name: Option<String>,
    /// Parent cgroup of `kubepods` (e.g. `/` or `/tidelet`).
    #[arg(long)]
    pub cgroup_root: Option<String>,
    /// Directory of the device plugins' sockets and `kubelet.sock` (`""` switches device
    /// plugins off).
    #[arg(long, env = "TIDELET_DEVICE_PLUGIN_DIR")]
    pub device_plugin_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
pub enum ImageCmd {
    /// Import an OCI archive or a `docker save` archive.
    Import { file: PathBuf },
    /// List images.
    Ls,
    /// Remove an image no pod uses (asks the running agent which images its pods use).
    Rm { reference: String },
    /// Remove every image no pod uses, with the layers only they hold.
    Prune,
}

#[derive(Copy, Clone, Debug, ValueEnum, PartialEq, Eq)]
pub enum Output {
    Wide,
    Json,
    Yaml,
}

#[derive(Subcommand, Debug)]
pub enum GetWhat {
    #[command(alias = "pod", alias = "po")]
    Pods {
        name: Option<String>,
        #[arg(short, long)]
        output: Option<Output>,
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// The node: capacity, allocatable and the pressure conditions.
    #[command(alias = "nodes", alias = "no")]
    Node {
        #[arg(short, long)]
        output: Option<Output>,
    },
}

#[derive(Subcommand, Debug)]
pub enum DescribeWhat {
    #[command(alias = "pods", alias = "po")]
    Pod {
        name: String,
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// The node, its conditions and its events (evictions).
    #[command(alias = "nodes", alias = "no")]
    Node,
}

pub fn main(cli: Cli) -> Result<i32> {
    match cli.command {
        Command::Run(args) => {
            crate::logging::init(true);
            run(cli.root_dir, args)
        }
        Command::Validate {
            files,
            node_name,
            strict,
            output,
        } => {
            crate::logging::init(false);
            Ok(validate(&files, node_name, strict, output.is_some()))
        }
        Command::Image(cmd) => {
            crate::logging::init(false);
            image(&cli.root_dir, cmd)
        }
        Command::Get {
            what:
                GetWhat::Pods {
                    name,
                    output,
                    namespace,
                },
        } => get_pods(&cli.root_dir, name, output, namespace),
        Command::Get {
            what: GetWhat::Node { output },
        } => get_node(&cli.root_dir, output, false),
        Command::Describe {
            what: DescribeWhat::Pod { name, namespace },
        } => describe(&cli.root_dir, &name, namespace),
        Command::Describe {
            what: DescribeWhat::Node,
        } => get_node(&cli.root_dir, None, true),
        Command::Logs {
            pod,
            container,
            follow,
            previous,
            namespace,
        } => logs(&cli.root_dir, &pod, container, follow, previous, namespace),
        Command::Exec {
            pod,
            container,
            namespace,
            command,
        } => exec(&cli.root_dir, &pod, container, namespace, command),
        Command::Fleet { args } => fleet_exec(args),
    }
}

/// `tidelet fleet ARGS`: run `tidelet-fleet ARGS` in this process's place. The fleet CLI is an
/// operator's tool, not a board's: as a binary of its own it stays out of the agent that boards
/// run, whose size has a budget (docs/benchmarks.md), while `tidelet fleet` keeps working where
/// both are installed.
fn fleet_exec(args: Vec<std::ffi::OsString>) -> Result<i32> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe()?;
    let program = fleet_program(&exe, |p| p.is_file());
    let err = std::process::Command::new(&program).args(args).exec();
    Err(format!(
        "cannot run {} ({err}): `tidelet fleet` is the operator's CLI, {FLEET_EXE}; install it beside tidelet or on the PATH",
        program.display()
    )
    .into())
}

/// `tidelet-fleet` beside `exe` when it is there, else the bare name for a lookup on the PATH
/// (pure).
pub fn fleet_program(exe: &std::path::Path, is_file: impl Fn(&std::path::Path) -> bool) -> PathBuf {
    let own = exe.with_file_name(FLEET_EXE);
    if exe.file_name().is_some() && is_file(&own) {
        own
    } else {
        PathBuf::from(FLEET_EXE)
    }
}

/// `tidelet-fleet`'s work, once its arguments are parsed.
pub fn fleet(a: FleetArgs) -> Result<i32> {
    crate::logging::init(false);
    use crate::fleet::{Cmd, Format, Options};
    let o = Options {
        broker: a.broker,
        ca: a.ca,
        cert: a.cert,
        key: a.key,
        username: a.username,
        password_file: a.password_file,
        root: a.root,
        client_id: a.client_id,
        output: match a.output {
            FleetOutput::Table => Format::Table,
            FleetOutput::Json => Format::Json,
            FleetOutput::Yaml => Format::Yaml,
        },
        connect_timeout: a.connect_timeout,
    };
    let cmd = match a.command {
        FleetCmd::Nodes => Cmd::Nodes,
        FleetCmd::Pods { node } => Cmd::Pods { node },
        FleetCmd::Apply {
            node,
            file,
            timeout,
        } => Cmd::Apply {
            node,
            file,
            timeout,
        },
        FleetCmd::Delete {
            node,
            pod,
            namespace,
            timeout,
        } => Cmd::Delete {
            node,
            pod,
            namespace,
            timeout,
        },
        FleetCmd::Watch { node } => Cmd::Watch { node },
    };
    let code = crate::fleet::run(&o, cmd, &mut std::io::stdout(), &mut std::io::stderr())?;
    Ok(code)
}

fn run(root_dir: PathBuf, args: RunArgs) -> Result<i32> {
    let mut cfg = Config {
        root_dir,
        ..Config::default()
    };
    if let Some(f) = &args.config {
        cfg.merge_file(f)?;
    }
    if let Some(v) = args.static_pod_path {
        cfg.static_pod_path = v;
    }
    if let Some(v) = args.node_name {
        cfg.node_name = v.to_lowercase();
    }
    if let Some(v) = args.device_plugin_dir {
        cfg.devices.plugin_dir = (!v.as_os_str().is_empty()).then_some(v);
    }
    if let Some(v) = args.cgroup_root {
        cfg.cgroup_root = v;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let socket = cfg.socket_path();
        tracing::info!(root_dir = %cfg.root_dir.display(), static_pod_path = %cfg.static_pod_path.display(), node = %cfg.node_name, cgroup_root = %cfg.cgroup_root, "tidelet starting");
        let agent = crate::agent::Agent::new(cfg)?;
        let listener = api::server::bind(&socket)?;
        // Supervised: after a panic the socket is bound again (the listener went with it).
        let mut first = Some(listener);
        let ctx = agent.ctx();
        crate::supervise::task(&agent.supervisor(), crate::supervise::Kind::Api, "", move || {
            let listener = first.take().map(Ok).unwrap_or_else(|| api::server::bind(&socket));
            let (ctx, socket) = (ctx.clone(), socket.clone());
            async move {
                crate::supervise::inject::fire("api", "");
                match listener {
                    Ok(l) => api::server::serve(l, ctx).await,
                    // Counted as a failure of the task: retried, then the agent gives up.
                    Err(e) => panic!("{}: {e}", socket.display()),
                }
            }
        });
        let (stop_tx, stop_rx) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else { return };
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
            let _ = stop_tx.send(()).await;
        });
        // Under systemd (Type=notify, WatchdogSec=): READY=1 once the pods are handed to
        // their workers, WATCHDOG=1 from the agent's own loop.
        let notifier = crate::systemd::Notifier::from_env();
        let ready_notifier = notifier.clone();
        let ready = move || {
            tracing::info!("tidelet ready");
            if let Some(n) = &ready_notifier {
                if let Err(e) = n.notify("READY=1\nSTATUS=running") {
                    tracing::warn!(error = %e, "cannot notify systemd");
                }
            }
        };
        let watchdog = match (notifier, crate::systemd::watchdog_from_env()) {
            (Some(n), Some(period)) => Some((
                period,
                Box::new(move || {
                    let _ = n.notify("WATCHDOG=1");
                }) as Box<dyn Fn() + Send>,
            )),
            _ => None,
        };
        agent.run(stop_rx, ready, watchdog).await?;
        Ok::<i32, Box<dyn Error>>(0)
    })
}

fn validate(files: &[PathBuf], node_name: Option<String>, strict: bool, json: bool) -> i32 {
    let node = node_name.unwrap_or_else(|| Config::default().node_name);
    // With pods on stdout, the messages go to stderr.
    let say = |m: String| {
        if json {
            eprintln!("{m}");
        } else {
            println!("{m}");
        }
    };
    let mut bad = false;
    for f in files {
        let r = manifest::load_file(f, &node);
        for p in &r.errors {
            say(format!("error: {p}"));
            bad = true;
        }
        let mut file_ok = r.errors.is_empty();
        for w in r
            .pods
            .iter()
            .flat_map(|p| &p.warnings)
            .chain(&r.rejected_warnings)
        {
            if strict
                && [manifest::NOT_IN_API, manifest::DUPLICATE_KEY].contains(&w.reason.as_str())
            {
                say(format!("error: {w} (--strict)"));
                bad = true;
                file_ok = false;
            } else {
                say(format!("warning: {w}"));
            }
        }
        if file_ok {
            say(format!(
                "{}: ok ({} pod{})",
                f.display(),
                r.pods.len(),
                if r.pods.len() == 1 { "" } else { "s" }
            ));
            if json {
                for p in &r.pods {
                    match serde_json::to_string(&p.pod) {
                        Ok(j) => println!("{j}"),
                        Err(e) => say(format!(
                            "error: {}: cannot encode the pod: {e}",
                            f.display()
                        )),
                    }
                }
            }
        }
    }
    i32::from(bad)
}

fn image(root: &std::path::Path, cmd: ImageCmd) -> Result<i32> {
    let store = tidelet_images::Store::open(&root.join("images"))?;
    match cmd {
        ImageCmd::Import { file } => {
            for name in store.import(&file)? {
                println!("imported {name}");
            }
        }
        ImageCmd::Rm { reference } => {
            let in_use = images_in_use_by_agent(root)?;
            print_removed(&store.remove_image(&reference, &in_use.images)?);
        }
        ImageCmd::Prune => {
            let in_use = images_in_use_by_agent(root)?;
            print_removed(&store.prune(&in_use.images)?);
        }
        ImageCmd::Ls => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{:<50} {:<15} {:>10} PLATFORM", "IMAGE", "ID", "SIZE")?;
            for i in store.list()? {
                let id = i.id.trim_start_matches("sha256:");
                let names = if i.names.is_empty() {
                    vec!["<none>".to_string()]
                } else {
                    i.names.clone()
                };
                for n in names {
                    writeln!(
                        out,
                        "{:<50} {:<15} {:>10} {}/{}",
                        n,
                        &id[..id.len().min(12)],
                        human_size(i.size),
                        i.os,
                        i.architecture
                    )?;
                }
            }
        }
    }
    Ok(0)
}

/// `gc::InUse` of every pod the running agent under `root_dir` knows, asked over its API
/// (`image prune` and `image rm` run beside the agent). Without an answer nothing is removed.
fn images_in_use_by_agent(root_dir: &std::path::Path) -> Result<crate::gc::InUse> {
    let refuse = |why: String| {
        format!("cannot tell which images the pods use, so nothing was removed: {why}")
    };
    match api::client::call(&config::api_socket(root_dir), &Request::ListPods) {
        Ok(Response::Pods { pods }) => Ok(crate::gc::images_in_use(pods.iter().map(|v| &v.pod))),
        Ok(other) => Err(refuse(format!("unexpected answer from the agent: {other:?}")).into()),
        Err(e) => Err(refuse(e.to_string()).into()),
    }
}

fn print_removed(r: &tidelet_images::GcReport) {
    for n in &r.untagged {
        println!("untagged {n}");
    }
    for i in &r.images_removed {
        let names = if i.names.is_empty() {
            "<none>".to_string()
        } else {
            i.names.join(", ")
        };
        println!("removed {} ({names})", i.id);
    }
    println!(
        "{} image(s), {} layer(s) removed; {} freed",
        r.images_removed.len(),
        r.layers_removed.len(),
        human_size(r.bytes_freed)
    );
}

fn human_size(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

fn get_pod_view(
    root: &std::path::Path,
    name: &str,
    namespace: Option<String>,
) -> Result<crate::pod::view::PodView> {
    match api::client::call(
        &config::api_socket(root),
        &Request::GetPod {
            name: name.to_string(),
            namespace,
        },
    )? {
        Response::Pod { pod } => Ok(*pod),
        other => Err(format!("unexpected answer: {other:?}").into()),
    }
}

fn get_pods(
    root: &std::path::Path,
    name: Option<String>,
    output: Option<Output>,
    namespace: Option<String>,
) -> Result<i32> {
    let views = match &name {
        Some(n) => vec![get_pod_view(root, n, namespace)?],
        None => match api::client::call(&config::api_socket(root), &Request::ListPods)? {
            Response::Pods { pods } => pods
                .into_iter()
                .filter(|v| {
                    namespace
                        .as_ref()
                        .is_none_or(|ns| v.pod.metadata.namespace.as_ref() == Some(ns))
                })
                .collect(),
            other => return Err(format!("unexpected answer: {other:?}").into()),
        },
    };
    let mut out = std::io::stdout().lock();
    match output {
        Some(Output::Json) | Some(Output::Yaml) => {
            let value = if name.is_some() {
                serde_json::to_value(&views[0].pod)?
            } else {
                serde_json::json!({"apiVersion": "v1", "kind": "List", "items": views.iter().map(|v| &v.pod).collect::<Vec<_>>()})
            };
            let mut value = value;
            if let Some(items) = value.get_mut("items").and_then(|i| i.as_array_mut()) {
                for i in items {
                    add_type_meta(i);
                }
            } else {
                add_type_meta(&mut value);
            }
            if output == Some(Output::Json) {
                writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
            } else {
                write!(out, "{}", crate::yaml_out::to_string(&value))?;
            }
        }
        _ => crate::render::pod_table(&mut out, &views, output == Some(Output::Wide))?,
    }
    Ok(0)
}

fn get_node(root: &std::path::Path, output: Option<Output>, describe: bool) -> Result<i32> {
    let view = match api::client::call(&config::api_socket(root), &Request::GetNode)? {
        Response::Node { node } => *node,
        other => return Err(format!("unexpected answer: {other:?}").into()),
    };
    let mut out = std::io::stdout().lock();
    if describe {
        crate::render::describe_node(&mut out, &view)?;
        return Ok(0);
    }
    match output {
        Some(Output::Json) | Some(Output::Yaml) => {
            let mut value = serde_json::to_value(&view.node)?;
            if let Some(o) = value.as_object_mut() {
                o.insert("apiVersion".into(), "v1".into());
                o.insert("kind".into(), "Node".into());
            }
            if output == Some(Output::Json) {
                writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
            } else {
                write!(out, "{}", crate::yaml_out::to_string(&value))?;
            }
        }
        _ => {
            crate::render::node_table(&mut out, &view.node)?;
            if !view.devices.is_empty() {
                writeln!(out)?;
                crate::render::devices_table(&mut out, &view.devices)?;
            }
        }
    }
    Ok(0)
}

fn add_type_meta(v: &mut serde_json::Value) {
    if let Some(o) = v.as_object_mut() {
        o.insert("apiVersion".into(), "v1".into());
        o.insert("kind".into(), "Pod".into());
    }
}

fn describe(root: &std::path::Path, name: &str, namespace: Option<String>) -> Result<i32> {
    let v = get_pod_view(root, name, namespace)?;
    crate::render::describe(&mut std::io::stdout().lock(), &v)?;
    Ok(0)
}

fn pick_container<'a>(
    v: &'a crate::pod::view::PodView,
    name: Option<&str>,
) -> Result<&'a crate::pod::view::ContainerInfo> {
    match name {
        Some(n) => v
            .containers
            .iter()
            .find(|c| c.name == n)
            .ok_or_else(|| format!("container {n:?} not found in the pod").into()),
        None if v.containers.len() == 1 => Ok(&v.containers[0]),
        None => Err(format!(
            "the pod has several containers; choose one with -c: {}",
            v.containers
                .iter()
                .map(|c| c.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
        .into()),
    }
}

fn logs(
    root: &std::path::Path,
    pod: &str,
    container: Option<String>,
    follow: bool,
    previous: bool,
    namespace: Option<String>,
) -> Result<i32> {
    let v = get_pod_view(root, pod, namespace)?;
    let c = pick_container(&v, container.as_deref())?;
    let mut path = c
        .log_path
        .clone()
        .ok_or("the container has not started yet: no logs")?;
    if previous {
        let attempt: u32 = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if attempt == 0 {
            return Err(format!("previous terminated container {:?} not found", c.name).into());
        }
        path = path.with_file_name(format!("{}.log", attempt - 1));
    }
    let stop = std::sync::atomic::AtomicBool::new(false);
    crate::runtime::logs::read_logs(
        &path,
        follow.then_some(&stop),
        &mut std::io::stdout().lock(),
    )?;
    Ok(0)
}

fn exec(
    root: &std::path::Path,
    pod: &str,
    container: Option<String>,
    namespace: Option<String>,
    command: Vec<String>,
) -> Result<i32> {
    let v = get_pod_view(root, pod, namespace)?;
    let c = pick_container(&v, container.as_deref())?;
    let pid = c
        .pid
        .ok_or_else(|| format!("container {:?} is not running", c.name))?;
    Ok(crate::runtime::exec::exec_in_container(
        pid,
        &command,
        &c.env,
        &c.cwd,
        crate::runtime::exec::ExecUser {
            uid: c.uid,
            gid: c.gid,
        },
        c.confinement.as_ref(),
        &c.cgroup_procs,
    )?)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn tidelet_fleet_hands_every_argument_to_tidelet_fleet() {
        let cases: &[&[&str]] = &[
            &["nodes"],
            &[
                "--broker",
                "mqtts://b:8883",
                "--ca",
                "ca.pem",
                "pods",
                "--node",
                "n1",
            ],
            &["--help"],
            &["-o", "json", "watch"],
            &[],
        ];
        for args in cases {
            let argv = ["tidelet", "fleet"].iter().chain(args.iter());
            let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let Command::Fleet { args: got } = cli.command else {
                panic!("{args:?}: not the fleet command");
            };
            assert_eq!(
                got,
                args.iter()
                    .map(|a| a.into())
                    .collect::<Vec<std::ffi::OsString>>()
            );
        }
    }

    #[test]
    fn tidelet_fleet_runs_the_one_beside_it_else_the_one_on_the_path() {
        let beside = |p: &Path| p == Path::new("/usr/bin/tidelet-fleet");
        let cases = [
            ("/usr/bin/tidelet", "/usr/bin/tidelet-fleet"),
            ("/opt/tidelet/tidelet", "tidelet-fleet"),
            ("/", "tidelet-fleet"),
        ];
        for (exe, want) in cases {
            assert_eq!(
                fleet_program(Path::new(exe), beside),
                Path::new(want),
                "{exe}"
            );
        }
    }

    #[test]
    fn tidelet_fleet_parses_its_own_arguments() {
        let a = FleetArgs::try_parse_from(["tidelet-fleet", "--broker", "mqtt://h:1", "nodes"])
            .unwrap();
        assert_eq!(a.broker, "mqtt://h:1");
        assert!(matches!(a.command, FleetCmd::Nodes));
        assert!(
            FleetArgs::try_parse_from(["tidelet-fleet"]).is_err(),
            "a command is required"
        );
    }
}
