//! The agent's allocator policy (issue 16, agent/src/malloc.rs): the long-lived agent runs
//! without glibc's per-thread caches, which it asks for through `GLIBC_TUNABLES` by executing
//! itself again at start. Checked from outside, on the real processes: the variable is in the
//! agent's and its supervisors' environment, the agent keeps its name, pid and arguments, and a
//! value the caller set is left alone.

use tidelet_e2e::*;

use crate::pod_yaml;

const NO_TCACHE: &str = "GLIBC_TUNABLES=glibc.malloc.tcache_count=0";

/// The `NAME=value` entries of `pid`'s environment.
fn environ(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap()
        .split(|b| *b == 0)
        .filter(|v| !v.is_empty())
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

fn tunables(pid: i32) -> Vec<String> {
    environ(pid)
        .into_iter()
        .filter(|v| v.starts_with("GLIBC_TUNABLES="))
        .collect()
}

#[test]
fn the_agent_runs_without_glibcs_thread_caches_under_its_own_name() {
    if !privileged() {
        return;
    }
    let a = Agent::start();
    let pid = a.pid().expect("the agent runs");
    assert_eq!(tunables(pid), [NO_TCACHE], "the agent's environment");
    // Executed again by its path, not through /proc/self/exe: ps, pgrep and systemd name it
    // after that file.
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap();
    assert_eq!(comm.trim(), "tidelet");
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    assert_eq!(args[0], bin().as_os_str().as_encoded_bytes(), "argv[0]");
    assert!(args.contains(&b"run".as_slice()), "{args:?}");
    assert!(
        args.contains(&a.manifests.as_os_str().as_encoded_bytes()),
        "{args:?}"
    );

    // Its pods' supervisors inherit it; their containers get only their own environment.
    a.write("app.yaml", &pod_yaml("app", "", &[("c", "sleep 3600", "")]));
    let name = a.full_name("app");
    a.wait_running(&name);
    let sups = a.supervisor_pids();
    assert_eq!(sups.len(), 1, "one supervisor: {sups:?}");
    assert_eq!(
        tunables(sups[0]),
        [NO_TCACHE],
        "the supervisor's environment"
    );
    let c = a.container_pid(&name, "c");
    assert_eq!(
        tunables(c),
        Vec::<String>::new(),
        "the container's environment"
    );
}

#[test]
fn a_callers_own_thread_cache_setting_is_kept() {
    if !privileged() {
        return;
    }
    // glibc parses the variable in place, ending each `name=value` with a NUL, so
    // /proc/PID/environ shows a second tunable as an entry of its own: the checks are on the
    // raw bytes.
    let raw = |pid: i32| {
        let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        format!(" {}", String::from_utf8_lossy(&env).replace('\0', " "))
    };
    let a = Agent::start_with(None, &[("GLIBC_TUNABLES", "glibc.malloc.tcache_count=2")]);
    let env = raw(a.pid().expect("the agent runs"));
    assert!(
        env.contains(" GLIBC_TUNABLES=glibc.malloc.tcache_count=2 "),
        "{env}"
    );
    assert!(!env.contains("tcache_count=0"), "{env}");
    // Another tunable of the caller's is kept, and the cache's setting added after it.
    let b = Agent::start_with(None, &[("GLIBC_TUNABLES", "glibc.malloc.arena_max=1")]);
    let env = raw(b.pid().expect("the agent runs"));
    assert!(
        env.contains(" GLIBC_TUNABLES=glibc.malloc.arena_max=1 glibc.malloc.tcache_count=0 "),
        "{env}"
    );
}
