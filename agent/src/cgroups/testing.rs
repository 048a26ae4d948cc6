//! Shared by the privileged tests that use real cgroups (cgroups, signals, cpumanager): the
//! root-or-skip rule, unique test cgroup names, cleanup guards and gated child processes.

use std::process::{Child, Command, Stdio};

use super::Cgroups;

pub(crate) const MOUNT_ROOT: &str = "/sys/fs/cgroup";
pub(crate) const MOUNTINFO: &str = "/proc/self/mountinfo";

pub(crate) use tidelet_testgate::privileged;

pub(crate) fn unique_base() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("tidelet-test-{}-{nanos:x}", std::process::id())
}

/// Kills and removes the test's cgroups even when an assertion fails.
pub(crate) struct Cleanup<'a> {
    pub(crate) cg: &'a dyn Cgroups,
    pub(crate) base: String,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.cg.kill_all(&self.base);
        let _ = self.cg.remove(&self.base);
    }
}

/// A child that waits for a line on stdin before running `script`.
pub(crate) fn gated(script: &str) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(format!("read go; {script}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

pub(crate) fn join(cg: &dyn Cgroups, path: &str, pid: u32) {
    for f in cg.procs_files(path) {
        std::fs::write(&f, pid.to_string()).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
    }
}
