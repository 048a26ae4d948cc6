//! Running one CNI plugin: its config on stdin, its result on stdout, under a deadline and
//! with bounded output.
//!
//! libcni itself has neither (containernetworking/cni#550): a plugin that hangs holds the
//! runtime's call until the caller's context ends, and its output is buffered without limit.
//! tidelet must survive a plugin that hangs or prints without end, so each run:
//! - starts the plugin as the leader of a process group of its own, and on the deadline kills
//!   the whole group (the plugins fork `iptables`, which would otherwise outlive it);
//! - keeps at most [`MAX_STDOUT`] of stdout (a result is a few KiB) and fails past it, and only
//!   the last [`STDERR_TAIL`] bytes of stderr (free-form log, kept for the error message);
//! - gets a clean environment: `PATH` (the plugins run `iptables` and `tc`) and the `CNI_*`
//!   variables, nothing of the agent's own.
//!
//! It blocks: callers run it on a blocking thread.

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// The most a plugin may print on stdout.
pub const MAX_STDOUT: usize = 1 << 20;
/// How much of a plugin's stderr is kept (its end).
pub const STDERR_TAIL: usize = 4096;
/// `PATH` for plugins: where Debian, Yocto and Buildroot put `iptables`, `ip` and `tc`.
const PLUGIN_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One plugin run.
#[derive(Debug, Clone)]
pub struct Invocation<'a> {
    pub plugin: &'a Path,
    /// Command-line arguments (plugins get none; `iptables` does).
    pub args: &'a [String],
    /// The `CNI_*` variables.
    pub env: &'a [(String, String)],
    pub stdin: &'a [u8],
    pub timeout: Duration,
    /// A descriptor the plugin inherits (and whatever it starts): the attachment's lock, held
    /// until they are all gone, even when the agent that started them was killed.
    pub hold: Option<std::os::fd::RawFd>,
}

/// How a plugin run failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExecError {
    #[error("cannot run {}: {message}", plugin.display())]
    Spawn { plugin: PathBuf, message: String },
    #[error("{} did not finish within {}s and was killed", plugin.display(), timeout.as_secs_f64())]
    Timeout { plugin: PathBuf, timeout: Duration },
    #[error("{} printed more than {limit} bytes and was killed", plugin.display())]
    TooMuchOutput { plugin: PathBuf, limit: usize },
    /// The plugin exited non-zero or was killed by a signal: what it printed, to be read as
    /// a CNI error.
    #[error("{} {status}", plugin.display())]
    Failed {
        plugin: PathBuf,
        status: String,
        stdout: Vec<u8>,
        stderr: String,
    },
}

/// Run the plugin; its stdout when it exits 0.
pub fn run(inv: &Invocation<'_>) -> Result<Vec<u8>, ExecError> {
    let plugin = inv.plugin.to_path_buf();
    let mut cmd = Command::new(inv.plugin);
    cmd.args(inv.args)
        .env_clear()
        .env("PATH", PLUGIN_PATH)
        .envs(inv.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // A group of its own, so that a kill on the deadline reaches what it started.
        .process_group(0);
    if let Some(fd) = inv.hold {
        // SAFETY: fcntl is async-signal-safe; it only clears close-on-exec on `fd`.
        unsafe {
            cmd.pre_exec(move || {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            })
        };
    }
    let mut child = cmd.spawn().map_err(|e| ExecError::Spawn {
        plugin: plugin.clone(),
        message: e.to_string(),
    })?;
    let deadline = Instant::now() + inv.timeout;
    let out = pump(&mut child, inv.stdin, deadline);
    let status = match out {
        Ok(_) => wait_until(&mut child, deadline),
        Err(_) => None,
    };
    let Some(status) = status else {
        kill_group(&mut child);
        return Err(match out {
            Err(Pumped::TooMuch) => ExecError::TooMuchOutput {
                plugin,
                limit: MAX_STDOUT,
            },
            _ => ExecError::Timeout {
                plugin,
                timeout: inv.timeout,
            },
        });
    };
    let (stdout, stderr) = out.unwrap_or_default();
    if status.success() {
        return Ok(stdout);
    }
    Err(ExecError::Failed {
        plugin,
        status: status.to_string(),
        stdout,
        stderr: String::from_utf8_lossy(&stderr).trim().to_string(),
    })
}

#[derive(Debug)]
enum Pumped {
    TooMuch,
    Deadline,
}

/// Write stdin, read stdout and stderr, until both outputs close, the plugin exits with a
/// child still holding them, the output passes its bound or the deadline comes.
fn pump(child: &mut Child, input: &[u8], deadline: Instant) -> Result<(Vec<u8>, Vec<u8>), Pumped> {
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    for fd in [
        stdin.as_ref().map(|f| f.as_fd()),
        stdout.as_ref().map(|f| f.as_fd()),
        stderr.as_ref().map(|f| f.as_fd()),
    ]
    .into_iter()
    .flatten()
    {
        set_nonblocking(fd);
    }
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let mut written = 0;
    if input.is_empty() {
        stdin = None;
    }
    let mut buf = [0u8; 8192];
    while stdout.is_some() || stderr.is_some() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Pumped::Deadline);
        }
        // Wake at least every 50 ms: a plugin that exited while a process it started keeps
        // its stdout open would otherwise be waited on until the deadline.
        let wait = left.min(Duration::from_millis(50));
        let mut fds = Vec::with_capacity(3);
        if let Some(f) = &stdin {
            fds.push(PollFd::new(f.as_fd(), PollFlags::POLLOUT));
        }
        if let Some(f) = &stdout {
            fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
        }
        if let Some(f) = &stderr {
            fds.push(PollFd::new(f.as_fd(), PollFlags::POLLIN));
        }
        let timeout = PollTimeout::try_from(wait.as_millis().max(1) as i32)
            .unwrap_or(PollTimeout::from(50u8));
        let n = match poll(&mut fds, timeout) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return Err(Pumped::Deadline),
        };
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if n == 0 {
            if matches!(child.try_wait(), Ok(Some(_))) {
                break;
            }
            continue;
        }
        let mut i = 0;
        if let Some(f) = &mut stdin {
            if ready[i] {
                match f.write(&input[written..]) {
                    Ok(k) => written += k,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    // The plugin closed its stdin (or exited): it read what it wanted.
                    Err(_) => written = input.len(),
                }
                if written >= input.len() {
                    stdin = None;
                }
            }
            i += 1;
        }
        if let Some(f) = &mut stdout {
            if ready[i] {
                match f.read(&mut buf) {
                    Ok(0) => stdout = None,
                    Ok(k) => {
                        if out.len() + k > MAX_STDOUT {
                            return Err(Pumped::TooMuch);
                        }
                        out.extend_from_slice(&buf[..k]);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => stdout = None,
                }
            }
            i += 1;
        }
        if let Some(f) = &mut stderr {
            if ready[i] {
                match f.read(&mut buf) {
                    Ok(0) => stderr = None,
                    Ok(k) => {
                        err.extend_from_slice(&buf[..k]);
                        if err.len() > STDERR_TAIL {
                            err.drain(..err.len() - STDERR_TAIL);
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => stderr = None,
                }
            }
        }
    }
    Ok((out, err))
}

fn set_nonblocking(fd: std::os::fd::BorrowedFd<'_>) {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    if let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) {
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        let _ = fcntl(fd, FcntlArg::F_SETFL(flags));
    }
}

/// The plugin's exit status, once it exits before the deadline.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<std::process::ExitStatus> {
    let mut nap = Duration::from_micros(200);
    loop {
        match child.try_wait() {
            Ok(Some(st)) => return Some(st),
            Ok(None) => {}
            Err(_) => return None,
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        std::thread::sleep(nap.min(left));
        nap = (nap * 2).min(Duration::from_millis(20));
    }
}

/// SIGKILL the plugin's process group and reap the plugin.
fn kill_group(child: &mut Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p
    }

    fn run_script(body: &str, stdin: &[u8], timeout_ms: u64) -> Result<Vec<u8>, ExecError> {
        let dir = tempfile::tempdir().unwrap();
        let p = script(dir.path(), "plugin", body);
        let env = vec![("CNI_COMMAND".to_string(), "ADD".to_string())];
        run(&Invocation {
            plugin: &p,
            args: &[],
            env: &env,
            stdin,
            timeout: Duration::from_millis(timeout_ms),
            hold: None,
        })
    }

    #[test]
    fn a_plugin_reads_its_config_and_env_and_prints_its_result() {
        let out = run_script(
            r#"cat; echo " $CNI_COMMAND ${HOME:-nohome}""#,
            b"{\"a\":1}",
            5000,
        )
        .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "{\"a\":1} ADD nohome\n");
    }

    #[test]
    fn a_big_config_is_written_while_the_output_is_read() {
        // More than a pipe holds both ways: neither side may block on the other.
        let input = vec![b'x'; 300_000];
        let out = run_script("cat", &input, 5000).unwrap();
        assert_eq!(out.len(), input.len());
    }

    #[test]
    fn failures_keep_stdout_and_the_tail_of_stderr() {
        let err = run_script(
            r#"i=0; while [ $i -lt 2000 ]; do echo "log line $i" >&2; i=$((i+1)); done
               echo '{"code":7,"msg":"bad"}'; exit 1"#,
            b"",
            5000,
        )
        .unwrap_err();
        let ExecError::Failed {
            stdout,
            stderr,
            status,
            ..
        } = err
        else {
            panic!("{err:?}")
        };
        assert_eq!(stdout, b"{\"code\":7,\"msg\":\"bad\"}\n");
        assert!(stderr.len() <= STDERR_TAIL, "{}", stderr.len());
        assert!(stderr.ends_with("log line 1999"), "{stderr}");
        assert!(status.contains("exit status: 1"), "{status}");
    }

    #[test]
    fn a_hanging_plugin_and_what_it_started_are_killed_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("child.pid");
        let body = format!("sleep 30 & echo $! > {}; wait", marker.display());
        let t = Instant::now();
        let err = run_script(&body, b"", 300).unwrap_err();
        assert!(matches!(err, ExecError::Timeout { .. }), "{err:?}");
        assert!(t.elapsed() < Duration::from_secs(10));
        let pid: i32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild was in the plugin's group: gone (or a zombie of init's for a moment).
        let alive = || {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map(|s| !s.contains(") Z "))
                .unwrap_or(false)
        };
        let until = Instant::now() + Duration::from_secs(5);
        while alive() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!alive(), "the plugin's child survived");
    }

    #[test]
    fn endless_output_is_cut_at_the_bound() {
        let err = run_script("yes 0123456789abcdef", b"", 20_000).unwrap_err();
        assert!(matches!(err, ExecError::TooMuchOutput { .. }), "{err:?}");
    }

    #[test]
    fn a_plugin_that_exits_while_its_child_holds_stdout_is_not_waited_for() {
        let t = Instant::now();
        let out = run_script("echo done; sleep 20 &", b"", 10_000).unwrap();
        assert_eq!(out, b"done\n");
        assert!(t.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn a_plugin_that_cannot_run_says_so() {
        let env = vec![];
        let err = run(&Invocation {
            plugin: Path::new("/nonexistent/bridge"),
            args: &[],
            env: &env,
            stdin: b"",
            timeout: Duration::from_secs(1),
            hold: None,
        })
        .unwrap_err();
        // Natively the spawn fails; under qemu-user (the aarch64 unit tests in CI) the emulator
        // starts and then exits 127, as a shell does for a missing command.
        let spawn_failed = matches!(err, ExecError::Spawn { .. });
        let emulated = matches!(&err, ExecError::Failed { status, .. } if status.contains("127"));
        assert!(spawn_failed || emulated, "{err:?}");
    }
}
