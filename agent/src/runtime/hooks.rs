//! OCI lifecycle hooks, as CDI specs give them (`containerEdits.hooks`), run the way the OCI
//! runtime spec says and runc does:
//!
//! | stage             | where it runs (path resolved there)          | when                                  | failure        |
//! |-------------------|----------------------------------------------|---------------------------------------|----------------|
//! | `prestart`        | the supervisor (runtime namespaces)          | mounts done, before `pivot_root`      | StartError     |
//! | `createRuntime`   | the supervisor (runtime namespaces)          | mounts done, before `pivot_root`      | StartError     |
//! | `createContainer` | the container's init, its mount namespace    | after `createRuntime`, before pivot   | StartError     |
//! | `startContainer`  | the container's init, after `pivot_root`     | just before `execve`                  | StartError     |
//! | `poststart`       | the supervisor                               | after `execve`, before Start answers  | warning        |
//! | `poststop`        | a child of the supervisor                    | after the exit is recorded            | warning        |
//!
//! A hook gets the container's OCI state as JSON on stdin (`ociVersion`, `id`, `status`,
//! `pid`, `bundle`, `annotations`), exactly the env its spec lists (nothing inherited), and
//! its `args` as argv (its `path` alone when there are none). The bundle directory (the
//! parent of the rootfs mount point) holds a `config.json` whose `root.path` names the
//! rootfs, which is what hooks such as `nvidia-ctk hook` read to find the container's files.
//!
//! Every hook has a timeout: its own, or [`DEFAULT_TIMEOUT`] (the OCI spec sets none, but a
//! hook that never ends must not hold a container's start, and the pod's supervisor, forever).
//! On timeout its whole process group is killed. Its stdout and stderr are kept (the last
//! [`MAX_OUTPUT`] bytes) for the error message.

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{Seek, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde::{Deserialize, Serialize};

/// The OCI runtime spec version of the state and `config.json` hooks are given.
pub const OCI_VERSION: &str = "1.0.2";

/// Timeout of a hook whose spec gives none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Most of a hook's output kept for its error message (the end of it).
pub const MAX_OUTPUT: usize = 4096;

/// When a hook runs (see the module's table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Stage {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::Prestart,
        Stage::CreateRuntime,
        Stage::CreateContainer,
        Stage::StartContainer,
        Stage::Poststart,
        Stage::Poststop,
    ];

    /// The OCI name (`hookName` in CDI).
    pub fn name(self) -> &'static str {
        match self {
            Stage::Prestart => "prestart",
            Stage::CreateRuntime => "createRuntime",
            Stage::CreateContainer => "createContainer",
            Stage::StartContainer => "startContainer",
            Stage::Poststart => "poststart",
            Stage::Poststop => "poststop",
        }
    }

    pub fn parse(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.name() == name)
    }

    /// The container's `status` in the state the hook gets.
    pub fn status(self) -> &'static str {
        match self {
            Stage::Prestart | Stage::CreateRuntime | Stage::CreateContainer => "creating",
            Stage::StartContainer => "created",
            Stage::Poststart => "running",
            Stage::Poststop => "stopped",
        }
    }

    /// Whether a failure stops the container from starting (OCI: the hooks before the
    /// process runs); after that, a failure is only logged.
    pub fn fatal(self) -> bool {
        !matches!(self, Stage::Poststart | Stage::Poststop)
    }

    /// Runs in the supervisor before the container's init may go on to `pivot_root`.
    pub fn before_pivot_in_runtime(self) -> bool {
        matches!(self, Stage::Prestart | Stage::CreateRuntime)
    }
}

/// One hook to run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hook {
    pub stage: Stage,
    pub path: PathBuf,
    /// argv, `args[0]` included; empty means `[path]`.
    #[serde(default)]
    pub args: Vec<String>,
    /// `KEY=VALUE`: the hook's whole environment.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub timeout_secs: Option<u32>,
}

impl Hook {
    pub fn timeout(&self) -> Duration {
        self.timeout_secs
            .map(|s| Duration::from_secs(u64::from(s)))
            .unwrap_or(DEFAULT_TIMEOUT)
    }

    /// `<stage> hook <path>`, for messages.
    pub fn describe(&self) -> String {
        format!("{} hook {}", self.stage.name(), self.path.display())
    }
}

/// The hooks of `stage`, in spec order.
pub fn of_stage(hooks: &[Hook], stage: Stage) -> impl Iterator<Item = &Hook> {
    hooks.iter().filter(move |h| h.stage == stage)
}

/// How long the hooks that run while a container starts may take at most, in all.
pub fn start_budget(hooks: &[Hook]) -> Duration {
    hooks
        .iter()
        .filter(|h| h.stage != Stage::Poststop)
        .map(Hook::timeout)
        .sum()
}

/// The container's OCI state, as a hook reads it on stdin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct State {
    pub oci_version: String,
    pub id: String,
    pub status: String,
    /// The container's init, as the supervisor sees it; absent once it is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    pub bundle: PathBuf,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl State {
    pub fn new(
        id: &str,
        stage: Stage,
        pid: Option<i32>,
        bundle: &Path,
        annotations: &BTreeMap<String, String>,
    ) -> State {
        State {
            oci_version: OCI_VERSION.into(),
            id: id.into(),
            status: stage.status().into(),
            pid,
            bundle: bundle.to_path_buf(),
            annotations: annotations.clone(),
        }
    }
}

/// The container the hooks of one start are about: its id, its bundle and its annotations,
/// built once per start and shared by the supervisor's and the child's hook runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subject {
    pub id: String,
    /// The bundle: the parent of the rootfs mount point (see [`bundle_dir`]).
    pub bundle: PathBuf,
    pub annotations: BTreeMap<String, String>,
}

impl Subject {
    pub fn new(id: String, spec: &super::ContainerSpec) -> Subject {
        Subject {
            id,
            bundle: bundle_dir(spec),
            annotations: spec.annotations.clone(),
        }
    }

    /// The state the hooks of `stage` get; `pid` as the supervisor sees the container's init.
    pub fn state(&self, stage: Stage, pid: Option<i32>) -> State {
        State::new(&self.id, stage, pid, &self.bundle, &self.annotations)
    }
}

/// What the bundle's `config.json` says: the parts of the OCI config that hooks use to find
/// and understand the container (its rootfs above all). The bundle is the directory above
/// the rootfs mount point.
pub fn bundle_config(spec: &super::ContainerSpec) -> serde_json::Value {
    let root_path = spec
        .rootfs
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| spec.rootfs.display().to_string());
    let mounts: Vec<serde_json::Value> = spec
        .mounts
        .iter()
        .map(|m| {
            let mut options = vec!["rbind"];
            if m.readonly {
                options.push("ro");
            }
            serde_json::json!({
                "destination": m.destination,
                "type": "bind",
                "source": m.source,
                "options": options,
            })
        })
        .collect();
    serde_json::json!({
        "ociVersion": OCI_VERSION,
        "root": { "path": root_path, "readonly": spec.readonly_rootfs },
        "process": {
            "args": spec.argv,
            "env": spec.env,
            "cwd": if spec.cwd.is_empty() { "/" } else { spec.cwd.as_str() },
            "user": { "uid": spec.uid, "gid": spec.gid, "additionalGids": spec.additional_gids },
        },
        "mounts": mounts,
        "annotations": spec.annotations,
    })
}

/// The bundle directory of `spec`'s container: the parent of its rootfs mount point.
pub fn bundle_dir(spec: &super::ContainerSpec) -> PathBuf {
    spec.rootfs
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| spec.rootfs.clone())
}

/// Run `hooks` of `stage` one after another with `state`, stopping at the first failure.
/// `cwd`: where they run (the bundle, or `/` inside the container).
pub fn run_stage(hooks: &[Hook], stage: Stage, state: &State, cwd: &Path) -> Result<(), String> {
    let mut hs = of_stage(hooks, stage).peekable();
    if hs.peek().is_none() {
        return Ok(());
    }
    let json =
        serde_json::to_vec(state).map_err(|e| format!("{} hooks: state: {e}", stage.name()))?;
    for h in hs {
        run(h, &json, cwd)?;
    }
    Ok(())
}

/// Run one hook to its end: state on stdin, output kept, killed at its timeout. `Ok` only for
/// exit status 0. The error starts with `<stage> hook <path>`.
pub fn run(hook: &Hook, state: &[u8], cwd: &Path) -> Result<(), String> {
    let what = hook.describe();
    let started = Instant::now();
    // Checked before the spawn, so that a missing hook is named as such everywhere (under
    // qemu-user a failed exec shows only as exit status 127).
    std::fs::metadata(&hook.path).map_err(|e| format!("{what}: start: {e}"))?;
    let stdin = state_fd(state).map_err(|e| format!("{what}: state for stdin: {e}"))?;
    let (out_r, out_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| format!("{what}: output pipe: {}", e.desc()))?;
    let out_w2 = out_w
        .try_clone()
        .map_err(|e| format!("{what}: output pipe: {e}"))?;
    let mut cmd = Command::new(&hook.path);
    if let Some((arg0, rest)) = hook.args.split_first() {
        cmd.arg0(arg0).args(rest);
    }
    cmd.env_clear()
        .envs(hook.env.iter().map(|kv| split_env(kv)))
        .current_dir(cwd)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(out_w))
        .stderr(Stdio::from(out_w2))
        // Its own process group, so that a timeout kills whatever it started too.
        .process_group(0);
    let mut child = cmd.spawn().map_err(|e| format!("{what}: start: {e}"))?;
    drop(cmd);
    let pid = child.id() as i32;
    let deadline = started + hook.timeout();
    let mut out = Tail::default();
    let mut out_r = Some(out_r);
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Ok(s),
            Ok(None) => {}
            Err(e) => break Err(format!("{what}: wait: {e}")),
        }
        let now = Instant::now();
        if now >= deadline {
            // SAFETY: kill(2) of the hook's own process group (its pid, made a leader above).
            unsafe { libc::kill(-pid, libc::SIGKILL) };
            let _ = child.wait();
            drain_rest(&mut out_r, &mut out);
            return Err(format!(
                "{what}: timed out after {} s{}",
                hook.timeout().as_secs_f32(),
                out.suffix()
            ));
        }
        // Wakes at output, at EOF (the hook ended, unless something it started holds the
        // pipe) or after a short nap that grows, so a quick hook costs no fixed delay.
        let waited = now.duration_since(started);
        let nap = (waited / 4).clamp(Duration::from_millis(1), Duration::from_millis(20));
        let _ = drain(&mut out_r, &mut out, nap.min(deadline - now));
    };
    drain_rest(&mut out_r, &mut out);
    let status = status?;
    if status.success() {
        return Ok(());
    }
    use std::os::unix::process::ExitStatusExt;
    let how = match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => format!("{status}"),
    };
    Err(format!("{what}: {how}{}", out.suffix()))
}

/// `KEY=VALUE` split; a bare `KEY` is an empty value.
fn split_env(kv: &str) -> (&OsStr, &OsStr) {
    match kv.split_once('=') {
        Some((k, v)) => (OsStr::new(k), OsStr::new(v)),
        None => (OsStr::new(kv), OsStr::new("")),
    }
}

/// An in-memory file holding `state`, positioned at its start: the hook reads it at its own
/// pace, and no pipe can fill up with nobody reading.
fn state_fd(state: &[u8]) -> std::io::Result<OwnedFd> {
    // SAFETY: memfd_create with a static NUL-terminated name; the fd is owned below.
    let fd = unsafe { libc::memfd_create(c"tidelet-hook-state".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just created and is owned by nothing else.
    let mut f = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    f.write_all(state)?;
    f.rewind()?;
    Ok(OwnedFd::from(f))
}

/// Read what is there (waiting up to `wait` for something) into `out`; at EOF the pipe is
/// dropped, and later calls only sleep.
fn drain(pipe: &mut Option<OwnedFd>, out: &mut Tail, wait: Duration) -> usize {
    let Some(fd) = pipe else {
        std::thread::sleep(wait);
        return 0;
    };
    let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::from(ms)) {
        Ok(n) if n > 0 => {}
        _ => return 0,
    }
    let mut buf = [0u8; 4096];
    match nix::unistd::read(fd.as_fd(), &mut buf) {
        Ok(0) => *pipe = None,
        Ok(n) => {
            out.push(&buf[..n]);
            return n;
        }
        Err(nix::errno::Errno::EINTR) | Err(nix::errno::Errno::EAGAIN) => {}
        Err(_) => *pipe = None,
    }
    0
}

/// Read what is left once the hook is gone: a bounded number of reads, since something it
/// started may still hold the pipe and write.
fn drain_rest(pipe: &mut Option<OwnedFd>, out: &mut Tail) {
    for _ in 0..256 {
        if pipe.is_none() {
            return;
        }
        if drain(pipe, out, Duration::ZERO) == 0 && pipe.is_some() {
            return;
        }
    }
}

/// The last `MAX_OUTPUT` bytes of a hook's output.
#[derive(Default)]
struct Tail {
    buf: std::collections::VecDeque<u8>,
    dropped: bool,
}

impl Tail {
    fn push(&mut self, data: &[u8]) {
        self.buf.extend(data);
        while self.buf.len() > MAX_OUTPUT {
            self.buf.pop_front();
            self.dropped = true;
        }
    }

    /// `: output: "…"` for an error message, or nothing.
    fn suffix(&self) -> String {
        let (a, b) = self.buf.as_slices();
        let mut v = a.to_vec();
        v.extend_from_slice(b);
        let text = String::from_utf8_lossy(&v);
        let text = text.trim();
        if text.is_empty() {
            return String::new();
        }
        let more = if self.dropped { "…" } else { "" };
        format!(": output: {:?}", format!("{more}{text}"))
    }
}

#[cfg(test)]
#[path = "hooks_tests.rs"]
mod tests;
