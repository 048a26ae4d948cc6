//! Privileged tests of device edits in real containers: a device plugin's `Allocate` answer
//! and a CDI spec, over device nodes made with `mknod` in a temp dir, turned into
//! `ContainerEdits` and started through the real `tidelet shim`; the container sees its nodes
//! with the right type, numbers and mode and can open them, and paths that would leave the
//! rootfs fail the start with a StartError naming them. CDI hooks run at their OCI stages,
//! in the right namespaces, with the state on stdin, and a failing or hanging one fails the
//! start (or, after the start, only warns) without harming the pod.
//!
//! They need root. Without root they are skipped, unless `TIDELET_REQUIRE_PRIVILEGED` is
//! set (as in CI), in which case they fail. The rootfs is a busybox-static tree.

// Test code: an unwrap that fails is a failed test, named with its location.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use tidelet::cgroups::devices::DevKind;
use tidelet::devices::cdi::Registry;
use tidelet::devices::edits::{from_allocate, RealHostFs};
use tidelet::runtime::hooks::{Hook, Stage};
use tidelet::runtime::{
    read_logs, spawn_supervisor, Client, ContainerRecord, ContainerSpec, ContainerState,
    DeviceNode, SandboxSpec,
};
use tidelet_deviceplugin_api::v1beta1::{CdiDevice, ContainerAllocateResponse, DeviceSpec, Mount};

use tidelet_testgate::privileged_here as privileged;

struct Pod {
    _dir: tempfile::TempDir,
    root: PathBuf,
    lower: PathBuf,
    pid: i32,
    client: Client,
}

impl Drop for Pod {
    fn drop(&mut self) {
        // Never leave a supervisor (and so its containers) behind, whatever the test did.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// A pod supervisor over a busybox rootfs (with a symlink leading out of it at `/evil`).
fn start_pod(name: &str) -> Pod {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let lower = root.join("lower");
    fs::create_dir_all(lower.join("bin")).unwrap();
    assert!(
        Path::new("/bin/busybox").exists(),
        "/bin/busybox is missing: apt-get install -y busybox-static"
    );
    fs::copy("/bin/busybox", lower.join("bin/busybox")).unwrap();
    for applet in ["sh", "stat", "echo", "cat", "test"] {
        std::os::unix::fs::symlink("busybox", lower.join("bin").join(applet)).unwrap();
    }
    std::os::unix::fs::symlink("../../../../../..", lower.join("evil")).unwrap();
    let pod_dir = root.join("pod");
    let spec = SandboxSpec {
        pod_uid: format!("uid-{name}"),
        pod_name: name.into(),
        namespace: "default".into(),
        hostname: name.into(),
        host_network: false,
        host_ipc: false,
        host_pid: false,
        share_process_namespace: false,
        pod_dir: pod_dir.clone(),
        cgroup_procs: vec![],
        oom_score_adj: 0,
        sysctls: vec![],
        userns: None,
    };
    let pid = spawn_supervisor(Path::new(env!("CARGO_BIN_EXE_tidelet")), &pod_dir, &spec)
        .expect("supervisor starts");
    Pod {
        client: Client::new(&pod_dir),
        _dir: dir,
        root,
        lower,
        pid,
    }
}

impl Pod {
    fn spec(&self, name: &str, script: &str) -> ContainerSpec {
        let c = self.root.join("containers").join(name);
        ContainerSpec {
            name: name.into(),
            attempt: 0,
            image: "busybox".into(),
            image_id: "sha256:test".into(),
            argv: vec!["sh".into(), "-c".into(), script.into()],
            env: vec!["PATH=/bin".into()],
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
            mounts: vec![],
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

    /// Start it and wait for its exit; the record and its output.
    async fn run_to_exit(&self, spec: ContainerSpec) -> (ContainerRecord, String) {
        let name = spec.name.clone();
        let log = spec.log_path.clone();
        let rec = self.client.start(spec).await.expect("start answered");
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut since = 0;
        let mut rec = rec;
        while !matches!(rec.state, ContainerState::Exited { .. }) {
            assert!(Instant::now() < deadline, "{name} did not exit: {rec:?}");
            let st = self
                .client
                .wait(since, Duration::from_millis(500))
                .await
                .unwrap();
            since = st.seq;
            if let Some(r) = st.containers.into_iter().find(|c| c.name == name) {
                rec = r;
            }
        }
        let mut out = Vec::new();
        let _ = read_logs(&log, None, &mut out);
        (rec, String::from_utf8_lossy(&out).into_owned())
    }
}

fn exit_of(r: &ContainerRecord) -> (i32, String, String) {
    match &r.state {
        ContainerState::Exited {
            exit_code,
            reason,
            message,
            ..
        } => (*exit_code, reason.clone(), message.clone()),
        other => panic!("not exited: {other:?}"),
    }
}

fn mknod_at(path: &Path, major: u64, minor: u64, mode: u32) {
    mknod(
        path,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(mode),
        makedev(major, minor),
    )
    .unwrap();
    fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
}

#[tokio::test]
async fn allocated_and_cdi_devices_appear_in_the_container_with_their_numbers_and_mode() {
    if !privileged() {
        return;
    }
    let pod = start_pod("pod-devices");
    // Host side: device nodes under GPU-like names with the numbers of harmless devices
    // (tun 10:200, kmsg 1:11), a library to bind in, and a CDI spec.
    let host = pod.root.join("host");
    fs::create_dir_all(host.join("dev")).unwrap();
    mknod_at(&host.join("dev/nvidia0"), 10, 200, 0o666);
    mknod_at(&host.join("dev/npu0"), 1, 11, 0o620);
    fs::write(host.join("libgpu.so"), "not really a library\n").unwrap();
    let cdi_dir = pod.root.join("cdi");
    fs::create_dir_all(&cdi_dir).unwrap();
    let spec_text = format!(
        "cdiVersion: 0.6.0\nkind: vendor.com/npu\ndevices:\n- name: npu0\n  containerEdits:\n    \
         env: [NPU_VISIBLE=0]\n    deviceNodes:\n    - path: /dev/accel/npu0\n      hostPath: {}\n",
        host.join("dev/npu0").display()
    );
    fs::write(cdi_dir.join("npu.yaml"), spec_text).unwrap();
    let (cdi, errors) = Registry::load(&[cdi_dir]);
    assert!(errors.is_empty(), "{errors:?}");

    let s = |p: &Path| p.to_str().unwrap().to_string();
    let answer = ContainerAllocateResponse {
        envs: HashMap::from([("GPU_VISIBLE".to_string(), "0".to_string())]),
        mounts: vec![Mount {
            container_path: "/usr/lib/libgpu.so".into(),
            host_path: s(&host.join("libgpu.so")),
            read_only: true,
        }],
        devices: vec![DeviceSpec {
            container_path: "/dev/nvidia0".into(),
            host_path: s(&host.join("dev/nvidia0")),
            permissions: "rw".into(),
        }],
        annotations: HashMap::new(),
        cdi_devices: vec![CdiDevice {
            name: "vendor.com/npu=npu0".into(),
        }],
    };
    let edits = from_allocate(
        &[("nvidia.com/gpu".to_string(), answer.clone())],
        &cdi,
        &RealHostFs,
    )
    .unwrap();

    let script = "stat -c '%n %F %t:%T %a' /dev/nvidia0 /dev/accel/npu0; \
        echo env $GPU_VISIBLE $NPU_VISIBLE; cat /usr/lib/libgpu.so; \
        exec 3<>/dev/nvidia0 && echo opened-gpu; exec 4>/dev/accel/npu0 && echo opened-npu";
    let mut spec = pod.spec("gpu", script);
    spec.env.extend(edits.env.iter().cloned());
    spec.mounts.extend(edits.mounts.iter().cloned());
    spec.devices = edits.devices.clone();
    let (rec, out) = pod.run_to_exit(spec).await;
    assert_eq!(exit_of(&rec).0, 0, "{rec:?}\n{out}");
    for want in [
        "/dev/nvidia0 character special file a:c8 666\n",
        "/dev/accel/npu0 character special file 1:b 620\n",
        "env 0 0\n",
        "not really a library\n",
        "opened-gpu\n",
        "opened-npu\n",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    pod.client.shutdown(0).await.unwrap();
}

#[tokio::test]
async fn device_paths_leaving_the_rootfs_fail_the_start_naming_the_path() {
    if !privileged() {
        return;
    }
    let pod = start_pod("pod-devices-bad");
    let node = |path: &str| DeviceNode {
        container_path: path.into(),
        host_path: "/dev/null".into(),
        kind: DevKind::Char,
        major: 1,
        minor: 3,
        file_mode: 0o666,
        uid: 0,
        gid: 0,
        permissions: "rw".into(),
    };
    let cases = [
        (
            "dotdot",
            "/dev/../../x",
            "device node \"/dev/../../x\": contains \"..\"",
        ),
        (
            "symlink",
            "/evil/x",
            "device node \"/evil/x\": a symbolic link in it leads out of the rootfs",
        ),
    ];
    for (name, path, want) in cases {
        let mut spec = pod.spec(name, "echo should-not-run");
        spec.devices = vec![node(path)];
        let (rec, out) = pod.run_to_exit(spec).await;
        let (code, reason, msg) = exit_of(&rec);
        assert_eq!((code, reason.as_str()), (128, "StartError"), "{msg}");
        assert!(msg.contains(want), "{name}: {msg}");
        assert!(!out.contains("should-not-run"), "{out}");
    }
    assert!(
        !Path::new("/x").exists(),
        "a node was made outside the rootfs"
    );
    pod.client.shutdown(0).await.unwrap();
}

/// A host-side hook (Python, as hooks are usually host programs): records its argv[1], the
/// state it read, its env, mount namespace and cwd as one JSON line in `$HOOK_LOG`; at
/// `createContainer` it writes a file into the rootfs found through the bundle's
/// `config.json` (the way `nvidia-ctk hook` finds it); `fail` as argv[2] makes it exit 3.
const HOOK_PY: &str = r#"#!/usr/bin/python3
import json, os, sys
stage = sys.argv[1]
state = json.load(sys.stdin)
rec = {"stage": stage, "state": state, "env": dict(os.environ),
       "mntns": os.readlink("/proc/self/ns/mnt"), "cwd": os.getcwd()}
if stage == "createContainer":
    with open(os.path.join(state["bundle"], "config.json")) as f:
        cfg = json.load(f)
    root = os.path.join(state["bundle"], cfg["root"]["path"])
    with open(os.path.join(root, "etc-from-hook"), "w") as f:
        f.write("written by the createContainer hook\n")
with open(os.environ["HOOK_LOG"], "a") as f:
    f.write(json.dumps(rec) + "\n")
if len(sys.argv) > 2 and sys.argv[2] == "fail":
    sys.stderr.write("no driver for " + stage + "\n")
    sys.exit(3)
"#;

/// `HOOK_PY` as a CDI spec's hook of `stage`.
fn cdi_hook(stage: &str, hook: &Path, log: &Path, extra: &str) -> String {
    format!(
        "  - hookName: {stage}\n    path: {}\n    args: [cdi-hook, {stage}{extra}]\n    env: [HOOK_LOG={}, FROM_SPEC=1]\n    timeout: 20\n",
        hook.display(),
        log.display()
    )
}

/// `HOOK_PY` in the pod's temp dir, and the log it will write.
fn install_hook(pod: &Pod) -> (PathBuf, PathBuf) {
    let hook = pod.root.join("hook.py");
    fs::write(&hook, HOOK_PY).unwrap();
    fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (hook, pod.root.join("hooks.log"))
}

fn hook_log(path: &Path) -> Vec<serde_json::Value> {
    fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn cdi_hooks_run_at_their_oci_stages_around_a_real_container() {
    if !privileged() {
        return;
    }
    let pod = start_pod("pod-hooks");
    let (hook, log) = install_hook(&pod);
    let cdi_dir = pod.root.join("cdi");
    fs::create_dir_all(&cdi_dir).unwrap();
    // Every stage but startContainer runs the host's hook; startContainer runs after
    // pivot_root, so its path is the container's busybox sh, and it leaves the state it read
    // in the container's /dev/shm.
    let mut text = "cdiVersion: 0.6.0\nkind: vendor.com/npu\ndevices:\n- name: npu0\n  containerEdits:\n    env: [NPU_VISIBLE=0]\ncontainerEdits:\n  hooks:\n".to_string();
    for stage in [
        "prestart",
        "createRuntime",
        "createContainer",
        "poststart",
        "poststop",
    ] {
        text += &cdi_hook(stage, &hook, &log, "");
    }
    text += "  - hookName: startContainer\n    path: /bin/sh\n    args: [sh, -c, 'cat > /dev/shm/start-state.json; echo $FROM_SPEC > /dev/shm/start-env']\n    env: [FROM_SPEC=2]\n";
    fs::write(cdi_dir.join("npu.yaml"), text).unwrap();
    let (cdi, errors) = Registry::load(&[cdi_dir]);
    assert!(errors.is_empty(), "{errors:?}");
    let answer = ContainerAllocateResponse {
        annotations: HashMap::from([("vendor.com/npu".to_string(), "npu0".to_string())]),
        cdi_devices: vec![CdiDevice {
            name: "vendor.com/npu=npu0".into(),
        }],
        ..Default::default()
    };
    let edits =
        from_allocate(&[("vendor.com/npu".to_string(), answer)], &cdi, &RealHostFs).unwrap();
    assert_eq!(edits.hooks.len(), 6);

    // A read-only rootfs: the createContainer hook still writes into it (it runs before the
    // read-only remount, as with runc), the container itself cannot.
    let script = "cat /etc-from-hook; cat /dev/shm/start-state.json; echo; \
        echo start-env $(cat /dev/shm/start-env); echo env $NPU_VISIBLE; \
        touch /x 2>/dev/null && echo rootfs-writable || echo rootfs-read-only";
    let mut spec = pod.spec("npu", script);
    spec.readonly_rootfs = true;
    tidelet::devices::apply_edits(&mut spec, edits);
    assert_eq!(spec.hooks.len(), 6);
    let bundle = spec.rootfs.parent().unwrap().to_path_buf();
    let (rec, out) = pod.run_to_exit(spec).await;
    assert_eq!(exit_of(&rec).0, 0, "{rec:?}\n{out}");
    for want in [
        "written by the createContainer hook\n",
        "\"status\":\"created\"",
        "start-env 2\n",
        "env 0\n",
        "rootfs-read-only\n",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    let start_state: serde_json::Value =
        serde_json::from_str(out.lines().find(|l| l.contains("\"ociVersion\"")).unwrap()).unwrap();
    assert_eq!(start_state["id"], "pod-npu-0");
    assert_eq!(start_state["bundle"], bundle.to_str().unwrap());
    assert_eq!(start_state["annotations"]["vendor.com/npu"], "npu0");
    let container_pid = start_state["pid"].as_i64().unwrap();

    // poststop runs once the exit is recorded, in the background: wait for it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while hook_log(&log).len() < 5 {
        assert!(Instant::now() < deadline, "hooks ran: {:?}", hook_log(&log));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let recs = hook_log(&log);
    let stages: Vec<&str> = recs.iter().map(|r| r["stage"].as_str().unwrap()).collect();
    assert_eq!(
        stages,
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "poststart",
            "poststop"
        ]
    );
    let host_ns = fs::read_link("/proc/self/ns/mnt").unwrap();
    for r in &recs {
        let stage = r["stage"].as_str().unwrap();
        let status = match stage {
            "poststart" => "running",
            "poststop" => "stopped",
            _ => "creating",
        };
        assert_eq!(r["state"]["status"], status, "{stage}");
        assert_eq!(r["state"]["ociVersion"], "1.0.2", "{stage}");
        assert_eq!(r["state"]["id"], "pod-npu-0", "{stage}");
        assert_eq!(r["state"]["bundle"], bundle.to_str().unwrap(), "{stage}");
        assert_eq!(
            r["state"]["annotations"]["vendor.com/npu"], "npu0",
            "{stage}"
        );
        assert_eq!(r["cwd"], bundle.to_str().unwrap(), "{stage}");
        // Exactly the spec's env: nothing of the agent's (no PATH, no HOME).
        assert_eq!(r["env"]["FROM_SPEC"], "1", "{stage}");
        assert!(
            r["env"].get("PATH").is_none() && r["env"].get("HOME").is_none(),
            "{stage}: {}",
            r["env"]
        );
        // The runtime's mount namespace, except createContainer: the container's.
        let in_container = stage == "createContainer";
        assert_eq!(
            r["mntns"] != host_ns.to_str().unwrap(),
            in_container,
            "{stage}: {}",
            r["mntns"]
        );
        if stage == "poststop" {
            assert!(r["state"].get("pid").is_none(), "{r}");
        } else {
            assert_eq!(r["state"]["pid"].as_i64(), Some(container_pid), "{stage}");
        }
    }
    pod.client.shutdown(0).await.unwrap();
}

#[tokio::test]
async fn a_failing_or_hanging_hook_fails_the_start_and_the_pod_runs_on() {
    if !privileged() {
        return;
    }
    let pod = start_pod("pod-hooks-bad");
    let (hook, log) = install_hook(&pod);
    let h = |stage: Stage, args: &[&str], timeout_secs| Hook {
        stage,
        path: hook.clone(),
        args: args.iter().map(|s| s.to_string()).collect(),
        env: vec![format!("HOOK_LOG={}", log.display())],
        timeout_secs,
    };
    let sleeper = |stage| Hook {
        stage,
        path: "/bin/sleep".into(),
        args: vec!["sleep".into(), "600".into()],
        env: vec![],
        timeout_secs: Some(1),
    };
    // (name, hooks, what the StartError says)
    let cases: Vec<(&str, Vec<Hook>, &str)> =
        vec![
        (
            "create-container-fails",
            vec![h(Stage::CreateContainer, &["x", "createContainer", "fail"], None)],
            "createContainer hook {hook}: exit status 3: output: \"no driver for createContainer\"",
        ),
        (
            "create-runtime-fails",
            vec![h(Stage::CreateRuntime, &["x", "createRuntime", "fail"], None)],
            "createRuntime hook {hook}: exit status 3: output: \"no driver for createRuntime\"",
        ),
        (
            "create-runtime-hangs",
            vec![sleeper(Stage::CreateRuntime)],
            "createRuntime hook /bin/sleep: timed out after 1 s",
        ),
        (
            "start-container-missing",
            vec![Hook {
                stage: Stage::StartContainer,
                path: "/no/such/hook".into(),
                args: vec![],
                env: vec![],
                timeout_secs: None,
            }],
            "startContainer hook /no/such/hook: start: No such file or directory",
        ),
    ];
    for (name, hooks, want) in cases {
        let mut spec = pod.spec(name, "echo should-not-run");
        spec.hooks = hooks;
        let (rec, out) = pod.run_to_exit(spec).await;
        let (code, reason, msg) = exit_of(&rec);
        assert_eq!(
            (code, reason.as_str()),
            (128, "StartError"),
            "{name}: {msg}"
        );
        let want = want.replace("{hook}", hook.to_str().unwrap());
        assert!(msg.starts_with(&want), "{name}: {msg}\nwant: {want}");
        assert!(!out.contains("should-not-run"), "{name}: {out}");
    }
    // No hook process outlived its container's failed start.
    let sleeping = fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| fs::read_to_string(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| c == "sleep\x00600\x00")
        .count();
    assert_eq!(sleeping, 0, "a timed-out hook is still running");
    // poststart and poststop failures are warnings: the container runs and ends normally.
    let mut spec = pod.spec("post-fails", "echo ran");
    spec.hooks = vec![
        h(Stage::Poststart, &["x", "poststart", "fail"], None),
        h(Stage::Poststop, &["x", "poststop", "fail"], None),
    ];
    let (rec, out) = pod.run_to_exit(spec).await;
    assert_eq!(exit_of(&rec).0, 0, "{rec:?}");
    assert_eq!(
        out.lines().last().map(|l| l.ends_with("ran")),
        Some(true),
        "{out}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while hook_log(&log).len() < 2 + 2 {
        assert!(Instant::now() < deadline, "{:?}", hook_log(&log));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And the supervisor still starts containers.
    let (rec, out) = pod.run_to_exit(pod.spec("after", "echo still-fine")).await;
    assert_eq!(exit_of(&rec).0, 0, "{rec:?}");
    assert!(out.contains("still-fine"), "{out}");
    pod.client.shutdown(0).await.unwrap();
}
