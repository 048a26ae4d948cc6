//! Pods follow their manifests: start, replace, remove, restart with back-off, OOM kills,
//! logs, and an invalid edit that keeps the last good pod.

use std::time::Duration;

use tidelet_e2e::*;

use crate::pod_yaml;

#[test]
fn file_add_change_remove_drives_the_pod_and_leaves_nothing_behind() {
    if !privileged() {
        return;
    }
    let mut a = Agent::start();
    a.write(
        "app.yaml",
        &pod_yaml("app", "", &[("c", "echo hello-$HOSTNAME; sleep 3600", "")]),
    );
    let name = a.full_name("app");
    let p1 = a.wait_running(&name);
    let uid1 = p1["metadata"]["uid"].as_str().unwrap().to_string();
    assert_eq!(p1["metadata"]["namespace"], "default");
    assert_eq!(p1["spec"]["nodeName"], "e2e");
    assert_eq!(p1["status"]["phase"], "Running");
    assert!(p1["status"]["hostIP"].is_string());
    assert!(p1["status"]["startTime"].is_string());
    let ready = p1["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap();
    assert_eq!(ready["status"], "True");
    let pid1 = a.container_pid(&name, "c");

    // Logs: CRI files, printed by `tidelet logs`.
    let logs = wait_for("log line", Duration::from_secs(10), || {
        let out = a.cli(&["logs", &name]);
        let s = String::from_utf8_lossy(&out.stdout).to_string();
        s.contains("hello-").then_some(s)
    });
    assert_eq!(logs.trim(), format!("hello-{name}"));
    let table = String::from_utf8_lossy(&a.cli(&["get", "pods"]).stdout).to_string();
    assert!(table.starts_with("NAME"), "{table}");
    assert!(
        table.contains(&name) && table.contains("Running") && table.contains("1/1"),
        "{table}"
    );
    let wide = String::from_utf8_lossy(&a.cli(&["get", "pods", "-o", "wide"]).stdout).to_string();
    assert!(
        wide.contains("NODE") && wide.contains("e2e") && wide.contains("BestEffort"),
        "{wide}"
    );
    let yaml = String::from_utf8_lossy(&a.cli(&["get", "pods", "-o", "yaml"]).stdout).to_string();
    for want in [
        "apiVersion: v1",
        "kind: List",
        "kind: Pod",
        "qosClass: BestEffort",
        "phase: Running",
        &format!("name: {name}"),
    ] {
        assert!(yaml.contains(want), "-o yaml has {want:?}: {yaml}");
    }

    // Change the spec: the pod is replaced (new UID, new process, old one gone).
    a.write(
        "app.yaml",
        &pod_yaml("app", "", &[("c", "echo v2; sleep 3600", "")]),
    );
    let p2 = a.wait_pod(&name, "replaced", |p| {
        p["metadata"]["uid"] != uid1.as_str() && all_running(p)
    });
    assert_ne!(p2["metadata"]["uid"], p1["metadata"]["uid"]);
    wait_for("old container gone", Duration::from_secs(20), || {
        (!std::path::Path::new(&format!("/proc/{pid1}")).exists()).then_some(())
    });
    assert!(
        !a.root.join("pods").join(&uid1).exists(),
        "old pod's state removed"
    );

    // Remove the file: the pod goes, with its processes, mounts, cgroups and state.
    let uid2 = p2["metadata"]["uid"].as_str().unwrap().to_string();
    a.remove("app.yaml");
    wait_for("pod gone", Duration::from_secs(30), || {
        a.pod(&name).is_none().then_some(())
    });
    wait_for("supervisors gone", Duration::from_secs(10), || {
        a.supervisor_pids().is_empty().then_some(())
    });
    assert!(!a.root.join("pods").join(&uid2).exists());
    assert!(
        host_mounts_mentioning(a.root.to_str().unwrap()).is_empty(),
        "no mounts left"
    );
    let leftovers: Vec<_> = a
        .cgroup_dirs()
        .into_iter()
        .filter(|d| walk_has(d, &uid2))
        .collect();
    assert!(leftovers.is_empty(), "pod cgroups removed: {leftovers:?}");
    assert!(a.alive());
    a.stop_all();
}

fn walk_has(dir: &std::path::Path, needle: &str) -> bool {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| {
            e.file_type().map(|t| t.is_dir()).unwrap_or(false)
                && (e.file_name().to_string_lossy().contains(needle) || walk_has(&e.path(), needle))
        })
}

#[test]
fn crashing_container_restarts_with_backoff_and_policies_hold() {
    if !privileged() {
        return;
    }
    let mut a = Agent::start();
    a.write(
        "crash.yaml",
        &pod_yaml("crash", "", &[("c", "echo run; exit 3", "")]),
    );
    a.write(
        "once.yaml",
        &pod_yaml(
            "once",
            "  restartPolicy: OnFailure\n",
            &[("c", "exit 0", "")],
        ),
    );
    a.write(
        "never.yaml",
        &pod_yaml("never", "  restartPolicy: Never\n", &[("c", "exit 7", "")]),
    );
    let crash = a.full_name("crash");
    // First restart is immediate, the next after 10 s: within ~15 s it restarted twice and
    // shows CrashLoopBackOff in between.
    let p = a.wait_pod(&crash, "CrashLoopBackOff", |p| {
        let cs = &p["status"]["containerStatuses"][0];
        cs["state"]["waiting"]["reason"] == "CrashLoopBackOff"
            && cs["restartCount"].as_i64() >= Some(1)
    });
    let cs = Agent::container_status(&p, "c");
    assert_eq!(cs["lastState"]["terminated"]["exitCode"], 3);
    assert_eq!(cs["lastState"]["terminated"]["reason"], "Error");
    assert!(
        cs["state"]["waiting"]["message"]
            .as_str()
            .unwrap()
            .contains("back-off 10s"),
        "{cs}"
    );
    assert_eq!(p["status"]["phase"], "Running");
    let t0 = std::time::Instant::now();
    wait_for("second restart", Duration::from_secs(30), || {
        a.pod(&crash)
            .filter(|p| p["status"]["containerStatuses"][0]["restartCount"].as_i64() >= Some(2))
    });
    assert!(
        t0.elapsed() >= Duration::from_secs(5),
        "the second restart waited for its back-off"
    );

    let once = a.wait_pod(&a.full_name("once"), "Succeeded", |p| {
        p["status"]["phase"] == "Succeeded"
    });
    assert_eq!(
        Agent::container_status(&once, "c")["state"]["terminated"]["reason"],
        "Completed"
    );
    assert_eq!(Agent::container_status(&once, "c")["restartCount"], 0);
    let never = a.wait_pod(&a.full_name("never"), "Failed", |p| {
        p["status"]["phase"] == "Failed"
    });
    assert_eq!(
        Agent::container_status(&never, "c")["state"]["terminated"]["exitCode"],
        7
    );
    a.stop_all();
}

#[test]
fn oom_kill_is_reported_as_oomkilled() {
    if !privileged() {
        return;
    }
    let mut a = Agent::start();
    let limits = "    resources:\n      limits: {memory: 16Mi}\n";
    a.write(
        "oom.yaml",
        &pod_yaml(
            "oom",
            "  restartPolicy: Never\n",
            &[(
                "c",
                "exec dd if=/dev/zero of=/dev/null bs=64M count=1",
                limits,
            )],
        ),
    );
    let p = a.wait_pod(&a.full_name("oom"), "terminated", |p| {
        p["status"]["containerStatuses"][0]["state"]["terminated"].is_object()
    });
    let t = &p["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(t["reason"], "OOMKilled", "{t}");
    assert_eq!(t["exitCode"], 137);
    a.stop_all();
}

#[test]
fn killed_from_outside_is_noticed_and_restarted() {
    if !privileged() {
        return;
    }
    let mut a = Agent::start();
    a.write("k.yaml", &pod_yaml("k", "", &[("c", "sleep 3600", "")]));
    let name = a.full_name("k");
    a.wait_running(&name);
    let pid = a.container_pid(&name, "c");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let p = a.wait_pod(&name, "restarted", |p| {
        p["status"]["containerStatuses"][0]["restartCount"] == 1 && all_running(p)
    });
    let last = &Agent::container_status(&p, "c")["lastState"]["terminated"];
    assert_eq!(last["exitCode"], 137);
    assert_eq!(last["signal"], 9);
    assert_ne!(a.container_pid(&name, "c"), pid);
    a.stop_all();
}

#[test]
fn stop_sends_signal_then_kills_after_grace() {
    if !privileged() {
        return;
    }
    let mut a = Agent::start();
    // The container traps TERM and records it in a hostPath file; the grace period is 2 s.
    let dir = a.dir.path().join("shared");
    std::fs::create_dir_all(&dir).unwrap();
    let spec = format!(
        "  volumes:\n  - name: out\n    hostPath: {{path: {}}}\n",
        dir.display()
    );
    let mut yaml = pod_yaml(
        "grace",
        &spec,
        &[(
            "c",
            "trap 'echo got-term > /out/term' TERM; touch /out/trapped; while true; do sleep 0.1; done",
            "",
        )],
    );
    yaml.push_str("    volumeMounts:\n    - {name: out, mountPath: /out}\n");
    a.write("grace.yaml", &yaml);
    let name = a.full_name("grace");
    a.wait_running(&name);
    // Only once the shell has installed its trap can the test expect it to fire.
    wait_for("the container's TERM trap", Duration::from_secs(10), || {
        dir.join("trapped").exists().then_some(())
    });
    let t0 = std::time::Instant::now();
    a.remove("grace.yaml");
    wait_for("pod gone", Duration::from_secs(30), || {
        a.pod(&name).is_none().then_some(())
    });
    assert_eq!(
        read_trim(dir.join("term")),
        "got-term",
        "the stop signal reached the container"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(1500),
        "it was given its grace period before SIGKILL"
    );
    a.stop_all();
}

#[test]
fn invalid_edit_keeps_the_last_good_pod_until_fixed() {
    if !privileged() {
        return;
    }
    let mut a = Agent::start();
    a.write(
        "keep.yaml",
        &pod_yaml("keep", "", &[("c", "sleep 3600", "")]),
    );
    let name = a.full_name("keep");
    let p1 = a.wait_running(&name);
    let pid = a.container_pid(&name, "c");
    a.write("keep.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: keep}\nspec:\n  containers:\n  - name: c\n    image: [not, a, string\n");
    let p = a.wait_pod(&name, "invalid manifest reported", |p| {
        p["status"]["reason"] == "InvalidManifest"
    });
    assert!(
        p["status"]["message"]
            .as_str()
            .unwrap()
            .contains("keep.yaml"),
        "{p}"
    );
    assert_eq!(p["metadata"]["uid"], p1["metadata"]["uid"]);
    assert_eq!(a.container_pid(&name, "c"), pid, "still the same process");
    let desc = String::from_utf8_lossy(&a.cli(&["describe", "pod", &name]).stdout).to_string();
    assert!(desc.contains("InvalidManifest"), "{desc}");
    // Fix it with a new spec: replaced.
    a.write(
        "keep.yaml",
        &pod_yaml("keep", "", &[("c", "sleep 3601", "")]),
    );
    a.wait_pod(&name, "replaced", |p| {
        p["metadata"]["uid"] != p1["metadata"]["uid"]
            && all_running(p)
            && p["status"]["reason"].is_null()
    });
    a.stop_all();
}

#[test]
fn logs_follow_and_rotate_by_size() {
    if !privileged() {
        return;
    }
    let mut a =
        Agent::start_with_config(Some("containerLogMaxSize: 8Ki\ncontainerLogMaxFiles: 3\n"));
    // 400 numbered lines of ~100 bytes (40 KB) rotate an 8 KiB log several times; then one
    // line every 100 ms for `logs -f`.
    a.write("chatty.yaml", &pod_yaml("chatty", "", &[("c", "i=0; while [ $i -lt 400 ]; do printf 'line %04d %090d\\n' $i 0; i=$((i+1)); done; j=0; while true; do echo tick-$j; j=$((j+1)); sleep 0.1; done", "")]));
    let name = a.full_name("chatty");
    let p = a.wait_running(&name);
    let uid = p["metadata"]["uid"].as_str().unwrap().to_string();
    let dir = a
        .root
        .join("logs")
        .join(format!("default_{name}_{uid}"))
        .join("c");
    let files = wait_for("rotated log files", Duration::from_secs(20), || {
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .ok()?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .collect();
        names.sort();
        (names.len() >= 3).then_some(names)
    });
    assert_eq!(
        files,
        vec!["0.log", "0.log.1", "0.log.2"],
        "at most containerLogMaxFiles files"
    );
    for f in &files {
        let size = std::fs::metadata(dir.join(f)).unwrap().len();
        assert!(
            size <= 8 * 1024 + 200,
            "{f} is {size} bytes, over the limit"
        );
    }
    // CRI format on disk: "<RFC3339Nano> stdout F <line>".
    let raw = std::fs::read_to_string(dir.join("0.log.2")).unwrap();
    let first = raw.lines().next().unwrap();
    let parts: Vec<&str> = first.splitn(4, ' ').collect();
    assert!(parts[0].ends_with('Z') && parts[0].contains('T'), "{first}");
    assert_eq!(&parts[1..3], &["stdout", "F"], "{first}");
    // `tidelet logs` prints the kept files oldest first, in order, without the CRI prefix;
    // once the 400 lines are all written (the ticks follow them: a loaded machine may still be
    // writing them when the third file appears).
    let out = wait_for("the 400 lines written", Duration::from_secs(20), || {
        let out = String::from_utf8_lossy(&a.cli(&["logs", &name]).stdout).to_string();
        out.contains("tick-").then_some(out)
    });
    let nums: Vec<u32> = out
        .lines()
        .filter_map(|l| l.strip_prefix("line "))
        .map(|l| l[..4].parse().unwrap())
        .collect();
    assert!(
        !nums.is_empty() && nums.windows(2).all(|w| w[1] == w[0] + 1),
        "in order, no gaps: {nums:?}"
    );
    assert!(
        *nums.last().unwrap() == 399,
        "ends with the last line: {nums:?}"
    );

    // -f follows new lines as they are written.
    let mut child = std::process::Command::new(bin())
        .arg("--root-dir")
        .arg(&a.root)
        .args(["logs", "-f", &name])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let start = std::time::Instant::now();
    let mut ticks = std::collections::BTreeSet::new();
    while ticks.len() < 5 && start.elapsed() < Duration::from_secs(20) {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
            if let Some(n) = l.strip_prefix("tick-") {
                ticks.insert(n.parse::<u32>().unwrap());
            }
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        ticks.len() >= 5,
        "logs -f kept printing new lines: {ticks:?}"
    );
    a.stop_all();
}

#[test]
fn one_file_holds_several_pods_and_hidden_or_editor_files_are_ignored() {
    if !privileged() {
        return;
    }
    let mut a = Agent::start();
    let two = format!(
        "{}---\n{}",
        pod_yaml("m1", "", &[("c", "sleep 3600", "")]),
        pod_yaml("m2", "", &[("c", "sleep 3600", "")])
    );
    a.write("multi.yaml", &two);
    a.write(
        ".hidden.yaml",
        &pod_yaml("hidden", "", &[("c", "sleep 3600", "")]),
    );
    a.write(
        "multi.yaml~",
        &pod_yaml("backup", "", &[("c", "sleep 3600", "")]),
    );
    a.write(
        "notes.txt",
        &pod_yaml("txt", "", &[("c", "sleep 3600", "")]),
    );
    a.write("p.json", r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"js"},"spec":{"terminationGracePeriodSeconds":1,"containers":[{"name":"c","image":"localhost/busybox:1.35","command":["sleep","3600"]}]}}"#);
    for p in ["m1", "m2", "js"] {
        a.wait_running(&a.full_name(p));
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut names: Vec<String> = a
        .pods()
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    assert_eq!(names, vec!["js-e2e", "m1-e2e", "m2-e2e"]);
    a.remove("multi.yaml");
    wait_for(
        "both pods of the file gone",
        Duration::from_secs(30),
        || (a.pods().len() == 1).then_some(()),
    );
    a.stop_all();
}

/// A version of pod `stale` whose container notes its start and its TERM in `/out/log`, traps
/// TERM and so lives out its 6 s grace period.
fn stale_version(version: &str, dir: &std::path::Path) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: stale\nspec:\n  terminationGracePeriodSeconds: 6\n  volumes:\n  - name: out\n    hostPath: {{path: {}}}\n  containers:\n  - name: c\n    image: localhost/busybox:1.35\n    imagePullPolicy: Never\n    command: [sh, -c, \"trap 'echo term-{version} >> /out/log' TERM; echo start-{version} >> /out/log; while true; do sleep 0.1; done\"]\n    volumeMounts:\n    - {{name: out, mountPath: /out}}\n",
        dir.display()
    )
}

/// The worker decides on the newest manifest after every wait: an edit or a delete that comes
/// while the old version is being torn down (its grace period) is what happens next; the
/// version in between never starts (issue 16: 11 of 290 starts in a churn ran a stale one).
#[test]
fn a_manifest_superseded_during_a_teardown_never_starts() {
    if !privileged() {
        return;
    }
    let mut a = Agent::start();
    let dir = a.dir.path().join("stale-out");
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("log");
    let name = a.full_name("stale");
    let lines = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let wait_line = |what: &str| {
        wait_for(what, Duration::from_secs(30), || {
            lines().iter().any(|l| l == what).then_some(())
        })
    };
    a.write("stale.yaml", &stale_version("a", &dir));
    a.wait_running(&name);
    wait_line("start-a");
    // Edit to b: a gets TERM and has 6 s to go; edit to c meanwhile.
    a.write("stale.yaml", &stale_version("b", &dir));
    wait_line("term-a");
    a.write("stale.yaml", &stale_version("c", &dir));
    wait_line("start-c");
    a.wait_running(&name);
    // Then edit to d, and delete the file while c is being torn down.
    a.write("stale.yaml", &stale_version("d", &dir));
    wait_line("term-c");
    a.remove("stale.yaml");
    wait_for("pod gone", Duration::from_secs(30), || {
        a.pod(&name).is_none().then_some(())
    });
    // With the bug, b started after a's teardown and d after c's (then torn down in turn);
    // gone means every teardown is over, so a stale start would be in the log by now.
    assert_eq!(lines(), ["start-a", "term-a", "start-c", "term-c"]);
    a.stop_all();
}
