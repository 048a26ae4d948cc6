//! Privileged tests of the pod runtime through the real `tidelet shim` binary: namespaces,
//! rootfs, logs, exit records, stop escalation, detachment, shutdown, OOM, exec.
//!
//! They need root. Without root they are skipped, unless `TIDELET_REQUIRE_PRIVILEGED` is
//! set (as in CI), in which case they fail. The rootfs is a busybox-static tree built in a
//! temp dir (Debian package `busybox-static`, `/bin/busybox`).

// Test code: an unwrap that fails is a failed test, named with its location.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tidelet::runtime::{
    exec::ExecUser, exec_in_container, read_logs, spawn_supervisor, BindMount, Client,
    ContainerRecord, ContainerSpec, ContainerState, SandboxSpec,
};

use tidelet_testgate::privileged_here as privileged;

/// A busybox rootfs (one lower dir) with a marker file and a symlink leading out of it.
fn busybox_rootfs(dir: &Path) -> PathBuf {
    let lower = dir.join("lower");
    let bin = lower.join("bin");
    fs::create_dir_all(&bin).unwrap();
    assert!(
        Path::new("/bin/busybox").exists(),
        "/bin/busybox is missing: apt-get install -y busybox-static"
    );
    fs::copy("/bin/busybox", bin.join("busybox")).unwrap();
    let list = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for applet in String::from_utf8(list.stdout).unwrap().lines() {
        if applet != "busybox" {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
    }
    fs::create_dir_all(lower.join("etc")).unwrap();
    fs::create_dir_all(lower.join("tmp")).unwrap();
    fs::write(lower.join("etc/marker"), "from-the-image\n").unwrap();
    std::os::unix::fs::symlink("../../../../../..", lower.join("evil")).unwrap();
    lower
}

struct Pod {
    _dir: tempfile::TempDir,
    root: PathBuf,
    pod_dir: PathBuf,
    lower: PathBuf,
    pid: i32,
    hostname: String,
    client: Client,
}

impl Drop for Pod {
    fn drop(&mut self) {
        // Never leave a supervisor (and so its containers) behind, whatever the test did.
        if alive(self.pid) {
            // SAFETY: kill(2) of the supervisor this test started.
            unsafe { libc::kill(self.pid, libc::SIGKILL) };
        }
    }
}

fn sandbox(pod_dir: &Path, hostname: &str) -> SandboxSpec {
    SandboxSpec {
        pod_uid: "uid-1".into(),
        pod_name: hostname.into(),
        namespace: "default".into(),
        hostname: hostname.into(),
        host_network: false,
        host_ipc: false,
        host_pid: false,
        share_process_namespace: false,
        pod_dir: pod_dir.into(),
        cgroup_procs: vec![],
        oom_score_adj: 0,
        sysctls: vec![],
        userns: None,
    }
}

fn start_pod(hostname: &str, edit: impl FnOnce(&mut SandboxSpec)) -> Pod {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let lower = busybox_rootfs(&root);
    let pod_dir = root.join("pod");
    let mut spec = sandbox(&pod_dir, hostname);
    edit(&mut spec);
    let pid = spawn_supervisor(Path::new(env!("CARGO_BIN_EXE_tidelet")), &pod_dir, &spec)
        .expect("supervisor starts");
    let client = Client::new(&pod_dir);
    Pod {
        _dir: dir,
        root,
        pod_dir,
        lower,
        pid,
        hostname: hostname.into(),
        client,
    }
}

impl Pod {
    fn spec(&self, name: &str, argv: &[&str]) -> ContainerSpec {
        let c = self.root.join("containers").join(name);
        let hostname_file = self.root.join("hostname");
        fs::write(&hostname_file, format!("{}\n", self.hostname)).unwrap();
        ContainerSpec {
            name: name.into(),
            attempt: 0,
            image: "busybox".into(),
            image_id: "sha256:test".into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            env: vec!["PATH=/bin".into(), "HOME=/".into()],
            cwd: "/".into(),
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            lowerdirs: vec![self.lower.clone()],
            upperdir: c.join("upper"),
            workdir: c.join("work"),
            rootfs: c.join("rootfs"),
            readonly_rootfs: false,
            security: tidelet::security::ContainerSecurity::runtime_default(),
            userns: None,
            mounts: vec![BindMount {
                source: hostname_file,
                destination: "/etc/hostname".into(),
                readonly: true,
            }],
            devices: vec![],
            hooks: vec![],
            annotations: Default::default(),
            cgroup_procs: vec![],
            oom_kill_file: None,
            oom_score_adj: 0,
            log_path: self.root.join("logs").join(name).join("0.log"),
            log_max_bytes: 1 << 20,
            log_max_files: 2,
            stop_signal: libc::SIGTERM,
        }
    }

    async fn run(&self, spec: ContainerSpec) -> ContainerRecord {
        self.client
            .start(spec)
            .await
            .expect("start request answered")
    }

    /// Wait until container `name` has exited; its record.
    async fn wait_exit(&self, name: &str, timeout: Duration) -> ContainerRecord {
        let deadline = Instant::now() + timeout;
        let mut since = 0;
        loop {
            let st = self
                .client
                .wait(since, Duration::from_millis(500))
                .await
                .unwrap();
            since = st.seq;
            if let Some(r) = st.containers.iter().find(|c| c.name == name) {
                if matches!(r.state, ContainerState::Exited { .. }) {
                    return r.clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not exit within {timeout:?}: {st:?}"
            );
        }
    }

    fn logs(&self, name: &str) -> String {
        let mut out = Vec::new();
        read_logs(
            &self.root.join("logs").join(name).join("0.log"),
            None,
            &mut out,
        )
        .unwrap();
        String::from_utf8(out).unwrap()
    }
}

fn running_pid(r: &ContainerRecord) -> i32 {
    match r.state {
        ContainerState::Running { pid, .. } => pid,
        ref other => panic!("{} is not running: {other:?}", r.name),
    }
}

fn exited(r: &ContainerRecord) -> (i32, Option<i32>, String, String) {
    match &r.state {
        ContainerState::Exited {
            exit_code,
            signal,
            reason,
            message,
            ..
        } => (*exit_code, *signal, reason.clone(), message.clone()),
        other => panic!("{} has not exited: {other:?}", r.name),
    }
}

fn ns(pid: &str, kind: &str) -> PathBuf {
    fs::read_link(format!("/proc/{pid}/ns/{kind}")).unwrap()
}

fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z'),
        Err(_) => false,
    }
}

#[tokio::test]
async fn pod_gets_own_namespaces_and_containers_share_them_with_separate_mnt_and_pid() {
    if !privileged() {
        return;
    }
    let pod = start_pod("pod-ns", |_| {});
    let sup = pod.pid.to_string();
    for kind in ["net", "ipc", "uts"] {
        assert_ne!(
            ns(&sup, kind),
            ns("self", kind),
            "supervisor {kind} namespace is the host's"
        );
    }
    let a = running_pid(&pod.run(pod.spec("a", &["sleep", "1000"])).await);
    let b = running_pid(&pod.run(pod.spec("b", &["sleep", "1000"])).await);
    let (a, b) = (a.to_string(), b.to_string());
    for kind in ["net", "ipc", "uts"] {
        assert_eq!(
            ns(&a, kind),
            ns(&sup, kind),
            "a shares {kind} with the infra process"
        );
        assert_eq!(
            ns(&b, kind),
            ns(&sup, kind),
            "b shares {kind} with the infra process"
        );
    }
    for kind in ["mnt", "pid"] {
        assert_ne!(
            ns(&a, kind),
            ns(&b, kind),
            "a and b have distinct {kind} namespaces"
        );
        assert_ne!(ns(&a, kind), ns("self", kind));
    }
    // The supervisor's memory per pod is a figure, measured by tests/bench/startup.rs
    // (docs/benchmarks.md), not asserted here.
    // No mount of the pod is visible in the host's mount namespace.
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(pod.root.to_str().unwrap()),
        "{mountinfo}"
    );
    pod.client.shutdown(0).await.unwrap();
}

#[tokio::test]
async fn container_sees_its_rootfs_proc_dev_readonly_sys_hostname_and_lo_up() {
    if !privileged() {
        return;
    }
    let pod = start_pod("pod-view", |_| {});
    let script = "echo pid=$$; hostname; cat /etc/hostname /etc/marker; \
        for d in null zero full random urandom tty; do test -c /dev/$d && echo dev-$d; done; \
        test -c /dev/pts/ptmx && echo pts; readlink /dev/ptmx; test -d /dev/shm && test -d /dev/mqueue && echo shm-mq; \
        echo x > /dev/null && echo null-writable; touch /sys/x 2>/dev/null || echo sys-ro; \
        cat /sys/class/net/lo/flags; grep -c ' / ' /proc/self/mountinfo; test -e /proc/1/exe && echo proc; \
        echo to-stderr >&2; exit 0";
    pod.run(pod.spec("view", &["sh", "-c", script])).await;
    let rec = pod.wait_exit("view", Duration::from_secs(10)).await;
    assert_eq!(exited(&rec).0, 0, "{rec:?}: {}", pod.logs("view"));
    let out = pod.logs("view");
    for want in [
        "pid=1\n",
        "pod-view\npod-view\nfrom-the-image\n",
        "dev-null\ndev-zero\ndev-full\ndev-random\ndev-urandom\ndev-tty\n",
        "pts\npts/ptmx\nshm-mq\n",
        "null-writable\n",
        "sys-ro\n",
        "0x9\n",
        "proc\n",
        "to-stderr\n",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    let raw = fs::read_to_string(pod.root.join("logs/view/0.log")).unwrap();
    assert!(raw.lines().any(|l| l.ends_with(" stdout F pid=1")), "{raw}");
    assert!(
        raw.lines().any(|l| l.ends_with(" stderr F to-stderr")),
        "{raw}"
    );
    pod.client.shutdown(0).await.unwrap();
}

#[tokio::test]
async fn host_network_pod_shares_host_net_and_uts_namespaces() {
    if !privileged() {
        return;
    }
    let pod = start_pod("pod-hostnet", |s| {
        s.host_network = true;
        s.host_pid = true;
    });
    let sup = pod.pid.to_string();
    assert_eq!(ns(&sup, "net"), ns("self", "net"));
    assert_eq!(ns(&sup, "uts"), ns("self", "uts"));
    assert_ne!(ns(&sup, "ipc"), ns("self", "ipc"));
    let c = running_pid(&pod.run(pod.spec("c", &["sleep", "1000"])).await).to_string();
    assert_eq!(ns(&c, "net"), ns("self", "net"));
    assert_eq!(
        ns(&c, "pid"),
        ns("self", "pid"),
        "hostPID: the container is in the host's PID namespace"
    );
    assert_ne!(ns(&c, "mnt"), ns("self", "mnt"));
    pod.client.shutdown(0).await.unwrap();
}

#[tokio::test]
async fn exit_codes_and_start_errors_are_recorded_and_persisted() {
    if !privileged() {
        return;
    }
    let pod = start_pod("pod-exit", |_| {});
    pod.run(pod.spec("three", &["sh", "-c", "exit 3"])).await;
    pod.run(pod.spec("zero", &["true"])).await;
    let three = pod.wait_exit("three", Duration::from_secs(10)).await;
    assert_eq!(exited(&three), (3, None, "Error".into(), String::new()));
    let zero = pod.wait_exit("zero", Duration::from_secs(10)).await;
    assert_eq!(exited(&zero).2, "Completed");

    let missing = pod.run(pod.spec("missing", &["nosuchcmd"])).await;
    assert_eq!(
        exited(&missing),
        (
            128,
            None,
            "StartError".into(),
            "exec \"nosuchcmd\": No such file or directory".into()
        )
    );
    let mut bad_cwd = pod.spec("cwd", &["true"]);
    bad_cwd.cwd = "/no/such/dir".into();
    let (code, _, reason, msg) = exited(&pod.run(bad_cwd).await);
    assert_eq!((code, reason.as_str()), (128, "StartError"));
    assert_eq!(msg, "chdir \"/no/such/dir\": No such file or directory");

    let mut escape = pod.spec("escape", &["true"]);
    escape.mounts.push(BindMount {
        source: pod.root.join("hostname"),
        destination: "/evil/x".into(),
        readonly: false,
    });
    let msg = exited(&pod.run(escape).await).3;
    assert!(
        msg.contains("\"/evil/x\"") && msg.contains("leads out of the rootfs"),
        "{msg}"
    );
    let mut dotdot = pod.spec("dotdot", &["true"]);
    dotdot.mounts.push(BindMount {
        source: pod.root.join("hostname"),
        destination: "/etc/../../x".into(),
        readonly: false,
    });
    assert!(exited(&pod.run(dotdot).await).3.contains("contains \"..\""));

    let file: ContainerRecord =
        serde_json::from_slice(&fs::read(pod.pod_dir.join("containers/three.json")).unwrap())
            .unwrap();
    assert_eq!(file, three);
    let status = pod.client.status().await.unwrap();
    assert_eq!(
        status
            .containers
            .iter()
            .find(|c| c.name == "missing")
            .unwrap(),
        &missing
    );
    // A running container cannot be removed; an exited one can, with its record file.
    pod.client.remove("three").await.unwrap();
    assert!(!pod.pod_dir.join("containers/three.json").exists());
    pod.client.shutdown(0).await.unwrap();
}

#[tokio::test]
async fn readonly_rootfs_and_readonly_bind_mount_refuse_writes() {
    if !privileged() {
        return;
    }
    let pod = start_pod("pod-ro", |_| {});
    let mut spec = pod.spec("ro", &["sh", "-c", "touch /x 2>/dev/null && echo wrote || echo ro; (echo hi > /etc/hostname) 2>/dev/null || echo bind-ro"]);
    spec.readonly_rootfs = true;
    pod.run(spec).await;
    pod.wait_exit("ro", Duration::from_secs(10)).await;
    assert_eq!(pod.logs("ro"), "ro\nbind-ro\n");
    pod.client.shutdown(0).await.unwrap();
}

#[tokio::test]
async fn stop_escalates_to_sigkill_after_the_grace_period() {
    if !privileged() {
        return;
    }
    let pod = start_pod("pod-stop", |_| {});
    // `sleep` as pid 1 has no SIGTERM handler, so the kernel ignores SIGTERM: only SIGKILL ends it.
    let r = pod.run(pod.spec("sleeper", &["sleep", "1000"])).await;
    running_pid(&r);
    let t0 = Instant::now();
    pod.client.stop("sleeper", libc::SIGTERM, 1).await.unwrap();
    // A second supervisor for the same pod refuses to take its socket over.
    let again = spawn_supervisor(
        Path::new(env!("CARGO_BIN_EXE_tidelet")),
        &pod.pod_dir,
        &sandbox(&pod.pod_dir, "pod-stop"),
    )
    .unwrap_err()
    .to_string();
    assert!(
        again.contains(&format!("already serves this pod (pid {})", pod.pid)),
        "{again}"
    );
    let rec = pod.wait_exit("sleeper", Duration::from_secs(10)).await;
    let took = t0.elapsed();
    assert_eq!(exited(&rec), (137, Some(9), "Error".into(), String::new()));
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );
    // A container that handles SIGTERM ends at once with its own code.
    let r = pod
        .run(pod.spec(
            "polite",
            &[
                "sh",
                "-c",
                "trap 'exit 0' TERM; while true; do sleep 0.05; done",
            ],
        ))
        .await;
    running_pid(&r);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    pod.client.stop("polite", libc::SIGTERM, 30).await.unwrap();
    let rec = pod.wait_exit("polite", Duration::from_secs(10)).await;
    assert_eq!(exited(&rec).0, 0);
    assert!(t0.elapsed() < Duration::from_secs(5));
    pod.client.shutdown(0).await.unwrap();
}

#[tokio::test]
async fn supervisor_outlives_its_starter_and_records_exits_while_nobody_is_connected() {
    if !privileged() {
        return;
    }
    let pod = start_pod("pod-detached", |_| {});
    let stat = fs::read_to_string(format!("/proc/{}/stat", pod.pid)).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ppid: i32 = fields[1].parse().unwrap();
    assert_ne!(
        ppid as u32,
        std::process::id(),
        "the supervisor is still our child"
    );
    let sid: i32 = fields[3].parse().unwrap();
    // SAFETY: getsid(0) has no preconditions.
    let our_sid = unsafe { libc::getsid(0) };
    assert_ne!(sid, our_sid, "the supervisor is still in our session");
    pod.run(pod.spec("later", &["sh", "-c", "sleep 1; echo done; exit 7"]))
        .await;
    // SIGTERM to the supervisor (an agent service stopping) does not end the pod.
    // SAFETY: kill(2) of the supervisor this test started.
    assert_eq!(unsafe { libc::kill(pod.pid, libc::SIGTERM) }, 0);
    std::thread::sleep(Duration::from_millis(100));
    assert!(alive(pod.pid), "SIGTERM ended the supervisor");
    // Nobody asks: the record file must say it exited.
    let file = pod.pod_dir.join("containers/later.json");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rec: ContainerRecord = serde_json::from_slice(&fs::read(&file).unwrap()).unwrap();
        if let ContainerState::Exited { exit_code, .. } = rec.state {
            assert_eq!(exit_code, 7);
            break;
        }
        assert!(Instant::now() < deadline, "no exit recorded: {rec:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(pod.logs("later"), "done\n");
    assert!(
        fs::read_to_string(pod.pod_dir.join("shim.pid"))
            .unwrap()
            .trim()
            == pod.pid.to_string()
    );
    pod.client.shutdown(0).await.unwrap();
}

#[tokio::test]
async fn shutdown_leaves_no_process_socket_or_mount_behind() {
    if !privileged() {
        return;
    }
    let pod = start_pod("pod-down", |s| s.share_process_namespace = true);
    let a = running_pid(&pod.run(pod.spec("a", &["sleep", "1000"])).await);
    let b = running_pid(
        &pod.run(pod.spec("b", &["sh", "-c", "sleep 1000 & sleep 1000"]))
            .await,
    );
    assert_eq!(
        ns(&a.to_string(), "pid"),
        ns(&b.to_string(), "pid"),
        "shared PID namespace"
    );
    assert_ne!(ns(&a.to_string(), "pid"), ns("self", "pid"));
    assert_ne!(ns(&a.to_string(), "mnt"), ns(&b.to_string(), "mnt"));
    // Every process of the pod, found through its PID namespace.
    // (b's shell forks its background child asynchronously: wait for it to appear.)
    let pidns = ns(&a.to_string(), "pid");
    let deadline = Instant::now() + Duration::from_secs(10);
    let members = loop {
        let members: Vec<i32> = fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .filter(|p: &i32| {
                fs::read_link(format!("/proc/{p}/ns/pid")).ok().as_ref() == Some(&pidns)
            })
            .collect();
        if members.len() >= 4 || Instant::now() > deadline {
            break members;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(members.len() >= 4, "pid 1, a, b and b's child: {members:?}");
    let t0 = Instant::now();
    pod.client.shutdown(2).await.unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5));
    std::thread::sleep(Duration::from_millis(200));
    for p in members.iter().chain([&pod.pid]) {
        assert!(!alive(*p), "process {p} survived the shutdown");
    }
    assert!(!pod.pod_dir.join("shim.sock").exists());
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mountinfo.contains(pod.root.to_str().unwrap()),
        "{mountinfo}"
    );
}

#[tokio::test]
async fn exec_runs_a_command_inside_the_container() {
    if !privileged() {
        return;
    }
    let pod = start_pod("pod-exec", |_| {});
    let pid = running_pid(&pod.run(pod.spec("target", &["sleep", "1000"])).await);
    let env = vec!["PATH=/bin".to_string(), "GREETING=hi".to_string()];
    let check = "grep -q from-the-image /etc/marker && [ \"$(hostname)\" = pod-exec ] && \
        grep -q sleep /proc/1/cmdline && [ \"$GREETING\" = hi ] && [ \"$(pwd)\" = /etc ] && exit 5";
    let argv: Vec<String> = ["sh", "-c", check].iter().map(|s| s.to_string()).collect();
    assert_eq!(
        exec_in_container(pid, &argv, &env, "/etc", ExecUser::default(), None, &[]).unwrap(),
        5
    );
    let argv = vec!["sh".to_string(), "-c".to_string(), "kill -9 $$".to_string()];
    assert_eq!(
        exec_in_container(pid, &argv, &env, "/", ExecUser::default(), None, &[]).unwrap(),
        137
    );
    // With the container's confinement, as `tidelet exec` passes it: its capabilities and
    // seccomp filter, not the caller's.
    let sec = tidelet::security::ContainerSecurity::runtime_default();
    let argv: Vec<String> = ["sh", "-c", "grep -q 'CapEff:.*00000000a80425fb' /proc/self/status && grep -q 'Seccomp:.*2' /proc/self/status && exit 7"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        exec_in_container(pid, &argv, &env, "/", ExecUser::default(), Some(&sec), &[]).unwrap(),
        7
    );
    let busy = pod.client.remove("target").await.unwrap_err().to_string();
    assert!(busy.contains("\"target\" is running"), "{busy}");
    let err = exec_in_container(
        pid,
        &["nosuchcmd".to_string()],
        &env,
        "/",
        ExecUser::default(),
        None,
        &[],
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("exec \"nosuchcmd\": No such file or directory"),
        "{err}"
    );
    pod.client.shutdown(0).await.unwrap();
}

#[tokio::test]
async fn memory_cgroup_oom_kill_is_reported_as_oomkilled() {
    if !privileged() {
        return;
    }
    let base = Path::new("/sys/fs/cgroup/memory");
    if !base.join("memory.limit_in_bytes").exists() {
        // cgroup v2-only host: the v1 test does not apply; the cgroups module covers v2.
        assert!(
            Path::new("/sys/fs/cgroup/cgroup.controllers").exists(),
            "no memory cgroup at all"
        );
        return;
    }
    let cg = base.join(format!("tidelet-runtime-test-{}", std::process::id()));
    fs::create_dir_all(&cg).unwrap();
    fs::write(cg.join("memory.limit_in_bytes"), "16777216").unwrap();
    let _ = fs::write(cg.join("memory.memsw.limit_in_bytes"), "16777216");
    let pod = start_pod("pod-oom", |_| {});
    let mut spec = pod.spec("hog", &["tail", "/dev/zero"]);
    spec.cgroup_procs = vec![cg.join("cgroup.procs")];
    spec.oom_kill_file = Some(cg.join("memory.oom_control"));
    let pid = running_pid(&pod.run(spec).await);
    let rec = pod.wait_exit("hog", Duration::from_secs(30)).await;
    assert_eq!(
        exited(&rec),
        (137, Some(9), "OOMKilled".into(), String::new())
    );
    let _ = pid;
    pod.client.shutdown(0).await.unwrap();
    for _ in 0..50 {
        if fs::remove_dir(&cg).is_ok() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!cg.exists(), "cgroup {} left behind", cg.display());
}

#[tokio::test]
async fn long_lines_become_partial_pieces_and_the_log_rotates_by_size() {
    if !privileged() {
        return;
    }
    let pod = start_pod("pod-logs", |_| {});
    let mut spec = pod.spec(
        "chatty",
        &["sh", "-c", "head -c 40000 /dev/zero | tr '\\0' a; echo; i=0; while [ $i -lt 300 ]; do echo line-$i; i=$((i+1)); done"],
    );
    spec.log_max_bytes = 30_000;
    spec.log_max_files = 3;
    pod.run(spec).await;
    let rec = pod.wait_exit("chatty", Duration::from_secs(10)).await;
    assert_eq!(exited(&rec).0, 0);
    let log = pod.root.join("logs/chatty/0.log");
    let rotated: Vec<PathBuf> = (1..5)
        .map(|n| PathBuf::from(format!("{}.{n}", log.display())))
        .collect();
    assert!(
        rotated[0].exists() && rotated[1].exists(),
        "two rotated files"
    );
    assert!(!rotated[2].exists(), "at most 3 files are kept");
    for f in [&log, &rotated[0], &rotated[1]] {
        assert!(
            fs::metadata(f).unwrap().len() <= 30_000,
            "{} is too big",
            f.display()
        );
    }
    let raw: String = [&rotated[1], &rotated[0], &log]
        .iter()
        .map(|f| fs::read_to_string(f).unwrap())
        .collect();
    assert_eq!(
        raw.lines().filter(|l| l.contains(" stdout P ")).count(),
        2,
        "40000 bytes = 2 full 16 KiB pieces + rest"
    );
    let text = pod.logs("chatty");
    let mut want = format!("{}\n", "a".repeat(40_000));
    for i in 0..300 {
        want.push_str(&format!("line-{i}\n"));
    }
    assert_eq!(text, want);
    pod.client.shutdown(0).await.unwrap();
}

#[tokio::test]
async fn supervisor_start_failure_is_reported_with_its_reason() {
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pod_dir = dir.path().join("pod");
    let mut spec = sandbox(&pod_dir, "pod-bad");
    spec.cgroup_procs = vec![dir.path().join("no-such-cgroup/cgroup.procs")];
    let err =
        spawn_supervisor(Path::new(env!("CARGO_BIN_EXE_tidelet")), &pod_dir, &spec).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("join cgroup")
            && msg.contains("no-such-cgroup/cgroup.procs")
            && msg.contains("No such file"),
        "{msg}"
    );
    assert!(!pod_dir.join("shim.sock").exists());
    let mut spec = sandbox(&pod_dir, "bad_host name!");
    spec.hostname = "x".repeat(100);
    let msg = spawn_supervisor(Path::new(env!("CARGO_BIN_EXE_tidelet")), &pod_dir, &spec)
        .unwrap_err()
        .to_string();
    assert!(msg.contains("sethostname"), "{msg}");
}

#[tokio::test]
async fn wait_answers_on_change_or_at_its_timeout() {
    if !privileged() {
        return;
    }
    let pod = start_pod("pod-wait", |_| {});
    let st = pod.client.status().await.unwrap();
    assert_eq!((st.pid, st.seq, st.containers.len()), (pod.pid, 0, 0));
    let t0 = Instant::now();
    let st = pod
        .client
        .wait(0, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(
        t0.elapsed() >= Duration::from_millis(290),
        "answered early: {st:?}"
    );
    assert_eq!(st.seq, 0);
    let waiter = {
        let client = pod.client.clone();
        tokio::spawn(async move { client.wait(1, Duration::from_secs(10)).await })
    };
    let r = pod.run(pod.spec("quick", &["sh", "-c", "sleep 0.3"])).await;
    assert_eq!(r.seq, 1);
    let t0 = Instant::now();
    let st = waiter.await.unwrap().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert_eq!(st.seq, 2);
    assert!(matches!(
        st.containers[0].state,
        ContainerState::Exited { exit_code: 0, .. }
    ));
    let err = pod.client.remove("nope").await;
    assert!(err.is_ok(), "removing an unknown container is a no-op");
    let err = pod
        .client
        .stop("nope", 15, 0)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no container \"nope\"") && err.contains("stop"),
        "{err}"
    );
    pod.client.shutdown(0).await.unwrap();
}
