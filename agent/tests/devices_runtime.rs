//! Privileged tests of device edits in real containers: a device plugin's `Allocate` answer
//! and a CDI spec, over device nodes made with `mknod` in a temp dir, turned into
//! `ContainerEdits` and started through the real `tidelet shim`; the container sees its nodes
//! with the right type, numbers and mode and can open them, and paths that would leave the
//! rootfs fail the start with a StartError naming them.
//!
//! They need root. Without root they are skipped, unless `TIDELET_REQUIRE_PRIVILEGED` is
//! set (as in CI), in which case they fail. The rootfs is a busybox-static tree.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use tidelet::cgroups::devices::DevKind;
use tidelet::devices::cdi::Registry;
use tidelet::devices::edits::{from_allocate, DeviceNode, RealHostFs};
use tidelet::runtime::{
    read_logs, spawn_supervisor, Client, ContainerRecord, ContainerSpec, ContainerState,
    SandboxSpec,
};
use tidelet_deviceplugin_api::v1beta1::{CdiDevice, ContainerAllocateResponse, DeviceSpec, Mount};

fn privileged() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("TIDELET_REQUIRE_PRIVILEGED").is_some() {
        panic!("TIDELET_REQUIRE_PRIVILEGED is set but the tests do not run as root");
    }
    eprintln!("skipping: needs root (set TIDELET_REQUIRE_PRIVILEGED to make this a failure)");
    false
}

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
            mounts: vec![],
            devices: vec![],
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
