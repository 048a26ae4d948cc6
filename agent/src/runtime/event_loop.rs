//! The supervisor's event loop: one thread, one `poll(2)` over the signalfd, the listening
//! socket, client connections and the containers' stdout/stderr pipes; timers (stop grace
//! deadlines, `Wait` timeouts) are the poll timeout.
//!
//! It is the pod's one reaper: SIGCHLD -> `waitpid(-1, WNOHANG)` until nothing is left;
//! the exit of a container's init becomes an `Exited` record, anything else (orphans
//! reparented to us as subreaper) is just reaped. Every record change bumps `seq`, is
//! written to `containers/<name>.json` atomically, and only then is announced (replies,
//! pending `Wait`s). A container in its own PID namespace takes all its processes with it
//! when its init exits; in a shared or the host PID namespace leftovers are not killed.
//! When an init exits, what is already in its pipes is logged; output written later by
//! leftover processes is dropped (the pipes are closed).
//!
//! Memory is bounded: at most `MAX_CLIENTS` connections, request lines of at most
//! `MAX_LINE` bytes, and a fixed 16 KiB buffer per container stream.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, ErrorKind, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::container;
use super::hooks::{self, Stage};
use super::logs::{format_cri_line, now_nanos, LogFile, Stream, StreamBuffer};
use super::protocol::*;
use super::supervisor::{PID_FILE, RECORDS_DIR, SOCKET_FILE};

/// Longest request or response line.
pub const MAX_LINE: usize = 1 << 20;
/// Most client connections served at once; more are closed at once.
pub const MAX_CLIENTS: usize = 32;

/// How an exit is reported (pure): `(exit_code, signal, reason)`.
pub fn exit_outcome(
    status: WaitStatus,
    oom_before: Option<u64>,
    oom_after: Option<u64>,
) -> (i32, Option<i32>, &'static str) {
    let (code, signal) = match status {
        WaitStatus::Exited(_, c) => (c, None),
        WaitStatus::Signaled(_, s, _) => (128 + s as i32, Some(s as i32)),
        _ => (128, None),
    };
    let oom = matches!((oom_before, oom_after), (Some(b), Some(a)) if a > b);
    let reason = if oom {
        "OOMKilled"
    } else if code == 0 {
        "Completed"
    } else {
        "Error"
    };
    (code, signal, reason)
}

/// A container name usable as a file name (the agent sends DNS labels).
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= 253 && !name.starts_with('.') && !name.contains(['/', '\0'])
}

struct Pipe {
    fd: OwnedFd,
    stream: Stream,
    buf: StreamBuffer,
}

struct Container {
    record: ContainerRecord,
    pid: Option<i32>,
    stop_signal: i32,
    oom_file: Option<PathBuf>,
    oom_before: Option<u64>,
    pipes: Vec<Pipe>,
    log: Option<LogFile>,
    kill_at: Option<Instant>,
    /// The `poststop` hooks to run once it has exited, with their state.
    poststop: Option<PostStop>,
}

/// What a container's `poststop` hooks need once it is gone.
struct PostStop {
    hooks: Vec<hooks::Hook>,
    state: hooks::State,
}

struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
    /// A pending `Wait`: answer when `seq > since` or at the deadline.
    waiting: Option<(u64, Instant)>,
    /// A pending `Shutdown`: answer when every container has exited.
    shutdown: bool,
    closed: bool,
}

/// The state of one pod supervisor.
pub(crate) struct Supervisor {
    pod_dir: PathBuf,
    pid: i32,
    /// Each container gets its own PID namespace.
    own_pid_ns: bool,
    /// The pid 1 of the shared PID namespace, if any.
    pid_one: Option<i32>,
    sigfd: SignalFd,
    listener: UnixListener,
    clients: Vec<Client>,
    containers: BTreeMap<String, Container>,
    seq: u64,
    shutting_down: bool,
    /// Processes running `poststop` hooks (so that a shutdown waits for them).
    hook_runners: Vec<i32>,
    /// The pod's user namespace (`hostUsers: false`), which containers join.
    userns: Option<std::os::fd::OwnedFd>,
}

#[derive(Clone, Copy)]
enum Src {
    Signal,
    Listener,
    Client(usize),
    Pipe(usize, usize),
}

impl Supervisor {
    pub(crate) fn new(
        pod_dir: PathBuf,
        pid: i32,
        own_pid_ns: bool,
        pid_one: Option<i32>,
        sigfd: SignalFd,
        listener: UnixListener,
        userns: Option<std::os::fd::OwnedFd>,
    ) -> Self {
        Self {
            pod_dir,
            pid,
            own_pid_ns,
            pid_one,
            sigfd,
            listener,
            clients: Vec::new(),
            containers: BTreeMap::new(),
            seq: 0,
            shutting_down: false,
            hook_runners: Vec::new(),
            userns,
        }
    }

    /// Serve until a `Shutdown` completes; returns the exit code.
    pub(crate) fn run(&mut self) -> i32 {
        tracing::info!(pod_dir = %self.pod_dir.display(), pid = self.pid, "supervisor running");
        loop {
            let ready = match self.poll_once() {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(error = %e, "poll failed");
                    std::thread::sleep(Duration::from_millis(100));
                    continue;
                }
            };
            // Pipes first, last pipe first: reading one may drop it (EOF), which must not
            // shift the indices of the others still to read, and container exits and new
            // starts (which change the container set) come after.
            let mut ready = ready;
            ready.sort_by_key(|s| match *s {
                Src::Pipe(c, p) => (0, usize::MAX - c, usize::MAX - p),
                Src::Signal => (1, 0, 0),
                Src::Listener => (2, 0, 0),
                Src::Client(i) => (3, i, 0),
            });
            for src in ready {
                match src {
                    Src::Signal => self.on_signals(),
                    Src::Listener => self.accept(),
                    Src::Client(i) => self.read_client(i),
                    Src::Pipe(name_idx, p) => self.read_pipe(name_idx, p),
                }
            }
            self.on_timers();
            self.clients.retain(|c| !c.closed);
            if self.shutting_down
                && self.containers.values().all(|c| c.pid.is_none())
                && self.hook_runners.is_empty()
            {
                self.finish_shutdown();
                return 0;
            }
        }
    }

    fn poll_once(&mut self) -> nix::Result<Vec<Src>> {
        let mut srcs = vec![Src::Signal, Src::Listener];
        let mut fds = vec![
            PollFd::new(self.sigfd.as_fd(), PollFlags::POLLIN),
            PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
        ];
        for (i, c) in self.clients.iter().enumerate() {
            srcs.push(Src::Client(i));
            fds.push(PollFd::new(c.stream.as_fd(), PollFlags::POLLIN));
        }
        for (ci, c) in self.containers.values().enumerate() {
            for (pi, p) in c.pipes.iter().enumerate() {
                srcs.push(Src::Pipe(ci, pi));
                fds.push(PollFd::new(p.fd.as_fd(), PollFlags::POLLIN));
            }
        }
        let timeout = self.next_deadline().map(|d| {
            let ms = d.saturating_duration_since(Instant::now()).as_millis() + 1;
            PollTimeout::try_from(ms.min(60_000) as i32).unwrap_or(PollTimeout::MAX)
        });
        let n = match poll(&mut fds, timeout.unwrap_or(PollTimeout::NONE)) {
            Err(Errno::EINTR) => 0,
            r => r?,
        };
        if n == 0 {
            return Ok(Vec::new());
        }
        Ok(fds
            .iter()
            .zip(srcs)
            .filter(|(f, _)| f.revents().is_some_and(|r| !r.is_empty()))
            .map(|(_, s)| s)
            .collect())
    }

    fn next_deadline(&self) -> Option<Instant> {
        let kills = self.containers.values().filter_map(|c| c.kill_at);
        let waits = self.clients.iter().filter_map(|c| c.waiting.map(|w| w.1));
        kills.chain(waits).min()
    }

    fn on_signals(&mut self) {
        let mut chld = false;
        while let Ok(Some(info)) = self.sigfd.read_signal() {
            match info.ssi_signo as i32 {
                libc::SIGCHLD => chld = true,
                sig => tracing::info!(
                    signal = sig,
                    "ignoring signal: pods outlive the agent; use Shutdown"
                ),
            }
        }
        if chld {
            self.reap();
        }
    }

    /// The one reaper.
    fn reap(&mut self) {
        loop {
            let status = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(s) => s,
            };
            let Some(pid) = status.pid().map(|p| p.as_raw()) else {
                continue;
            };
            if Some(pid) == self.pid_one {
                tracing::error!(pid, "pid 1 of the shared PID namespace exited");
                self.pid_one = None;
                continue;
            }
            if let Some(i) = self.hook_runners.iter().position(|p| *p == pid) {
                self.hook_runners.swap_remove(i);
                tracing::debug!(pid, ?status, "poststop hooks done");
                continue;
            }
            let name = self
                .containers
                .iter()
                .find(|(_, c)| c.pid == Some(pid))
                .map(|(n, _)| n.clone());
            match name {
                Some(name) => self.container_exited(&name, status),
                None => tracing::debug!(pid, "reaped orphan"),
            }
        }
    }

    fn container_exited(&mut self, name: &str, status: WaitStatus) {
        let Some(c) = self.containers.get_mut(name) else {
            return;
        };
        for p in &mut c.pipes {
            drain(p, &mut c.log, true);
        }
        c.pipes.clear();
        c.log = None;
        let oom_after = c
            .oom_file
            .as_deref()
            .and_then(|f| crate::cgroups::read_oom_kills(f).ok());
        let (exit_code, signal, reason) = exit_outcome(status, c.oom_before, oom_after);
        let started_at = match c.record.state {
            ContainerState::Running { started_at, .. } => started_at,
            ContainerState::Exited { started_at, .. } => started_at,
        };
        c.pid = None;
        c.kill_at = None;
        let state = ContainerState::Exited {
            exit_code,
            signal,
            reason: reason.into(),
            message: String::new(),
            started_at,
            finished_at: now_nanos(),
        };
        tracing::info!(container = %name, exit_code, reason, "container exited");
        let poststop = c.poststop.take();
        self.set_state(name, state);
        if let Some(p) = poststop {
            self.run_poststop(name, p);
        }
    }

    /// Run a container's `poststop` hooks in a child process, so that the loop (and the
    /// other containers' logs and requests) does not wait for them; it is reaped here.
    fn run_poststop(&mut self, name: &str, p: PostStop) {
        // SAFETY: fork of the single-threaded supervisor; the child runs the hooks and ends
        // with _exit.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                let code =
                    match hooks::run_stage(&p.hooks, Stage::Poststop, &p.state, &p.state.bundle) {
                        Ok(()) => 0,
                        Err(e) => {
                            tracing::warn!(container = %name, error = %e, "poststop hook failed");
                            1
                        }
                    };
                // SAFETY: ends the child without the parent's atexit handlers.
                unsafe { libc::_exit(code) };
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                self.hook_runners.push(child.as_raw());
            }
            Err(e) => {
                tracing::warn!(container = %name, error = %e, "cannot fork to run the poststop hooks");
            }
        }
    }

    /// Bump `seq`, store the record, persist it, then wake waiters.
    fn set_state(&mut self, name: &str, state: ContainerState) {
        self.seq += 1;
        let seq = self.seq;
        let Some(c) = self.containers.get_mut(name) else {
            return;
        };
        c.record.state = state;
        c.record.seq = seq;
        let path = self.pod_dir.join(RECORDS_DIR).join(format!("{name}.json"));
        if let Err(e) = crate::state::atomic_replace_json(&path, &c.record) {
            tracing::error!(path = %path.display(), error = %e, "cannot write container record");
        }
        self.wake_waiters();
    }

    fn status(&self) -> SandboxStatus {
        SandboxStatus {
            pid: self.pid,
            seq: self.seq,
            containers: self.containers.values().map(|c| c.record.clone()).collect(),
        }
    }

    fn wake_waiters(&mut self) {
        let seq = self.seq;
        let status = Response::Status {
            status: self.status(),
        };
        for c in &mut self.clients {
            if matches!(c.waiting, Some((since, _)) if seq > since) {
                c.waiting = None;
                respond(c, &status);
            }
        }
    }

    fn on_timers(&mut self) {
        let now = Instant::now();
        for (name, c) in &mut self.containers {
            if let (Some(at), Some(pid)) = (c.kill_at, c.pid) {
                if at <= now {
                    tracing::info!(container = %name, pid, "grace period over: SIGKILL");
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                    c.kill_at = None;
                }
            }
        }
        if self
            .clients
            .iter()
            .any(|c| matches!(c.waiting, Some((_, d)) if d <= now))
        {
            let status = Response::Status {
                status: self.status(),
            };
            for c in &mut self.clients {
                if matches!(c.waiting, Some((_, d)) if d <= now) {
                    c.waiting = None;
                    respond(c, &status);
                }
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    if self.clients.len() >= MAX_CLIENTS {
                        tracing::warn!("too many clients; closing a new connection");
                        continue;
                    }
                    if stream.set_nonblocking(true).is_ok() {
                        self.clients.push(Client {
                            stream,
                            buf: Vec::new(),
                            waiting: None,
                            shutdown: false,
                            closed: false,
                        });
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    return;
                }
            }
        }
    }

    fn read_client(&mut self, i: usize) {
        let mut chunk = [0u8; 4096];
        loop {
            let c = &mut self.clients[i];
            if c.closed {
                return;
            }
            match c.stream.read(&mut chunk) {
                Ok(0) => {
                    c.closed = true;
                    return;
                }
                Ok(n) => c.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    c.closed = true;
                    return;
                }
            }
            if c.buf.len() > MAX_LINE && !c.buf[..MAX_LINE].contains(&b'\n') {
                respond(
                    c,
                    &Response::Error {
                        message: format!("request line longer than {MAX_LINE} bytes"),
                    },
                );
                c.closed = true;
                return;
            }
        }
        // Handle complete lines, one at a time while no answer is pending.
        loop {
            let c = &mut self.clients[i];
            if c.closed || c.waiting.is_some() || c.shutdown {
                return;
            }
            let Some(nl) = c.buf.iter().position(|&b| b == b'\n') else {
                break;
            };
            let line: Vec<u8> = c.buf.drain(..=nl).collect();
            let resp = match serde_json::from_slice::<Request>(&line[..line.len() - 1]) {
                Ok(req) => self.handle(i, req),
                Err(e) => Some(Response::Error {
                    message: format!("bad request: {e}"),
                }),
            };
            if let Some(resp) = resp {
                respond(&mut self.clients[i], &resp);
            }
        }
        let c = &mut self.clients[i];
        if c.buf.capacity() > 64 * 1024 {
            c.buf.shrink_to(4096);
        }
    }

    /// Act on a request; `None` when the answer comes later.
    fn handle(&mut self, client: usize, req: Request) -> Option<Response> {
        let err = |message: String| Some(Response::Error { message });
        match req {
            Request::Start { spec } => Some(self.start(&spec)),
            Request::Stop {
                name,
                signal,
                grace_secs,
            } => match self.containers.get_mut(&name) {
                None => err(format!("no container {name:?}")),
                Some(c) => {
                    stop(&name, c, signal, grace_secs);
                    Some(Response::Ok)
                }
            },
            Request::Remove { name } => match self.containers.get(&name) {
                Some(c) if c.pid.is_some() => err(format!("container {name:?} is running")),
                Some(_) => {
                    self.containers.remove(&name);
                    let path = self.pod_dir.join(RECORDS_DIR).join(format!("{name}.json"));
                    match fs::remove_file(&path) {
                        Err(e) if e.kind() != ErrorKind::NotFound => {
                            err(format!("{}: {e}", path.display()))
                        }
                        _ => Some(Response::Ok),
                    }
                }
                None => Some(Response::Ok),
            },
            Request::Status => Some(Response::Status {
                status: self.status(),
            }),
            Request::Wait { since, timeout_ms } => {
                if self.seq > since {
                    return Some(Response::Status {
                        status: self.status(),
                    });
                }
                self.clients[client].waiting = Some((
                    since,
                    Instant::now() + Duration::from_millis(timeout_ms.min(3_600_000)),
                ));
                None
            }
            Request::Shutdown { grace_secs } => {
                self.shutting_down = true;
                self.clients[client].shutdown = true;
                for (name, c) in &mut self.containers {
                    let sig = c.stop_signal;
                    stop(name, c, sig, grace_secs);
                }
                None
            }
        }
    }

    fn start(&mut self, spec: &ContainerSpec) -> Response {
        let name = spec.name.clone();
        if self.shutting_down {
            return Response::Error {
                message: format!("start {name:?}: the pod is shutting down"),
            };
        }
        if !valid_name(&name) {
            return Response::Error {
                message: format!("start: invalid container name {name:?}"),
            };
        }
        if self.containers.get(&name).is_some_and(|c| c.pid.is_some()) {
            return Response::Error {
                message: format!("start {name:?}: already running"),
            };
        }
        let oom_before = spec
            .oom_kill_file
            .as_deref()
            .and_then(|f| crate::cgroups::read_oom_kills(f).ok());
        let started_at = now_nanos();
        let log = LogFile::open(&spec.log_path, spec.log_max_bytes, spec.log_max_files)
            .map_err(|e| format!("open log {:?}: {e}", spec.log_path.display().to_string()));
        let subject = hooks::Subject::new(self.container_id(spec), spec);
        let spawned = log
            .and_then(|log| write_bundle(spec, &subject.bundle).map(|()| log))
            .and_then(|log| {
                container::spawn(
                    spec,
                    self.own_pid_ns,
                    &subject,
                    self.userns.as_ref().map(std::os::fd::AsRawFd::as_raw_fd),
                )
                .map(|s| (s, log))
            });
        if let Ok((s, _)) = &spawned {
            // OCI: a poststart failure is a warning; the container runs on.
            let state = subject.state(Stage::Poststart, Some(s.pid));
            if let Err(e) = hooks::run_stage(&spec.hooks, Stage::Poststart, &state, &subject.bundle)
            {
                tracing::warn!(container = %name, error = %e, "poststart hook failed");
            }
        }
        let poststop: Vec<hooks::Hook> = hooks::of_stage(&spec.hooks, Stage::Poststop)
            .cloned()
            .collect();
        let poststop = (!poststop.is_empty() && spawned.is_ok()).then(|| PostStop {
            hooks: poststop,
            state: subject.state(Stage::Poststop, None),
        });
        let mut c = Container {
            record: ContainerRecord {
                name: name.clone(),
                attempt: spec.attempt,
                state: ContainerState::Running { pid: 0, started_at },
                seq: 0,
            },
            pid: None,
            stop_signal: if spec.stop_signal > 0 {
                spec.stop_signal
            } else {
                libc::SIGTERM
            },
            oom_file: spec.oom_kill_file.clone(),
            oom_before,
            pipes: Vec::new(),
            log: None,
            kill_at: None,
            poststop,
        };
        let state = match spawned {
            Ok((s, log)) => {
                tracing::info!(container = %name, pid = s.pid, "container started");
                for (fd, stream) in [(s.stdout, Stream::Stdout), (s.stderr, Stream::Stderr)] {
                    let _ = nix::fcntl::fcntl(
                        &fd,
                        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                    );
                    c.pipes.push(Pipe {
                        fd,
                        stream,
                        buf: StreamBuffer::default(),
                    });
                }
                c.log = Some(log);
                c.pid = Some(s.pid);
                ContainerState::Running {
                    pid: s.pid,
                    started_at,
                }
            }
            Err(message) => {
                tracing::warn!(container = %name, %message, "container failed to start");
                ContainerState::Exited {
                    exit_code: 128,
                    signal: None,
                    reason: "StartError".into(),
                    message,
                    started_at,
                    finished_at: now_nanos(),
                }
            }
        };
        self.containers.insert(name.clone(), c);
        self.set_state(&name, state);
        Response::Record {
            record: self.containers[&name].record.clone(),
        }
    }

    /// The id hooks see: `<pod uid>-<container>-<attempt>` (the pod dir is named by the UID).
    fn container_id(&self, spec: &ContainerSpec) -> String {
        let uid = self
            .pod_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        format!("{uid}-{}-{}", spec.name, spec.attempt)
    }

    fn read_pipe(&mut self, ci: usize, pi: usize) {
        let Some(c) = self.containers.values_mut().nth(ci) else {
            return;
        };
        let Some(p) = c.pipes.get_mut(pi) else { return };
        if !drain(p, &mut c.log, false) {
            let p = c.pipes.remove(pi);
            drop(p.fd);
        }
    }

    fn finish_shutdown(&mut self) {
        if let Some(pid) = self.pid_one.take() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            let _ = waitpid(Pid::from_raw(pid), None);
        }
        let _ = fs::remove_file(self.pod_dir.join(SOCKET_FILE));
        let _ = fs::remove_file(self.pod_dir.join(PID_FILE));
        for c in &mut self.clients {
            if c.shutdown {
                respond(c, &Response::Ok);
            }
        }
        tracing::info!(pod_dir = %self.pod_dir.display(), "supervisor shut down");
    }
}

/// The bundle's `config.json`, for hooks (only when there are any), written atomically.
fn write_bundle(spec: &ContainerSpec, bundle: &std::path::Path) -> Result<(), String> {
    if spec.hooks.is_empty() {
        return Ok(());
    }
    let path = bundle.join("config.json");
    fs::create_dir_all(bundle)
        .and_then(|()| crate::state::atomic_replace_json(&path, &hooks::bundle_config(spec)))
        .map_err(|e| {
            format!(
                "write the bundle's {:?} for hooks: {e}",
                path.display().to_string()
            )
        })
}

fn stop(name: &str, c: &mut Container, signal: i32, grace_secs: u64) {
    let Some(pid) = c.pid else { return };
    let sig = Signal::try_from(signal).unwrap_or(Signal::SIGTERM);
    tracing::info!(container = %name, pid, signal = %sig, grace_secs, "stopping container");
    let _ = kill(Pid::from_raw(pid), sig);
    let at = Instant::now() + Duration::from_secs(grace_secs);
    c.kill_at = Some(c.kill_at.map_or(at, |old| old.min(at)));
}

/// Read what the pipe holds into the log. Returns false at EOF or on error. With
/// `finish`, the unterminated rest is logged too (the writer is gone).
fn drain(p: &mut Pipe, log: &mut Option<LogFile>, finish: bool) -> bool {
    let stream = p.stream;
    let mut emit = |partial: bool, msg: &[u8]| {
        if let Some(l) = log.as_mut() {
            if let Err(e) = l.write_line(&format_cri_line(now_nanos(), stream, partial, msg)) {
                tracing::warn!(error = %e, "cannot write container log");
            }
        }
    };
    let mut open = true;
    loop {
        match nix::unistd::read(&p.fd, p.buf.spare()) {
            Ok(0) => {
                open = false;
                break;
            }
            Ok(n) => p.buf.filled(n, &mut emit),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => break,
            Err(_) => {
                open = false;
                break;
            }
        }
    }
    if finish || !open {
        p.buf.finish(&mut emit);
    }
    open
}

/// Write one response line; a client that cannot take it within a second is dropped.
fn respond(c: &mut Client, resp: &Response) {
    let mut line = serde_json::to_vec(resp).unwrap_or_else(|e| {
        format!("{{\"result\":\"error\",\"message\":\"encode: {e}\"}}").into_bytes()
    });
    line.push(b'\n');
    if write_all_timeout(&mut c.stream, &line, Duration::from_secs(1)).is_err() {
        c.closed = true;
    }
}

fn write_all_timeout(s: &mut UnixStream, mut data: &[u8], timeout: Duration) -> io::Result<()> {
    let deadline = Instant::now() + timeout;
    while !data.is_empty() {
        match s.write(data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::Error::new(ErrorKind::TimedOut, "client does not read"));
                }
                let mut fds = [PollFd::new(s.as_fd(), PollFlags::POLLOUT)];
                let _ = poll(
                    &mut fds,
                    PollTimeout::try_from(left.as_millis() as i32 + 1).unwrap_or(PollTimeout::MAX),
                );
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exits_map_to_codes_and_reasons() {
        let p = Pid::from_raw(7);
        type Case = (
            WaitStatus,
            Option<u64>,
            Option<u64>,
            (i32, Option<i32>, &'static str),
        );
        let cases: &[Case] = &[
            (WaitStatus::Exited(p, 0), None, None, (0, None, "Completed")),
            (WaitStatus::Exited(p, 3), None, None, (3, None, "Error")),
            (
                WaitStatus::Signaled(p, Signal::SIGKILL, false),
                None,
                None,
                (137, Some(9), "Error"),
            ),
            (
                WaitStatus::Signaled(p, Signal::SIGKILL, false),
                Some(0),
                Some(1),
                (137, Some(9), "OOMKilled"),
            ),
            (
                WaitStatus::Signaled(p, Signal::SIGKILL, false),
                Some(2),
                Some(2),
                (137, Some(9), "Error"),
            ),
            (
                WaitStatus::Exited(p, 0),
                Some(0),
                None,
                (0, None, "Completed"),
            ),
            (
                WaitStatus::Signaled(p, Signal::SIGTERM, false),
                Some(0),
                Some(0),
                (143, Some(15), "Error"),
            ),
        ];
        for (status, before, after, want) in cases {
            assert_eq!(
                exit_outcome(*status, *before, *after),
                *want,
                "{status:?} {before:?} {after:?}"
            );
        }
    }

    #[test]
    fn container_names_must_be_plain_file_names() {
        for (name, ok) in [
            ("app", true),
            ("a-1", true),
            ("", false),
            ("../x", false),
            (".hidden", false),
            ("a/b", false),
        ] {
            assert_eq!(valid_name(name), ok, "{name:?}");
        }
    }
}
