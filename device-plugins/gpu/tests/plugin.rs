//! The real `tidelet-gpu-plugin` binary against a fake kubelet on a temp device-plugin
//! directory, with a temp `/dev` (real device nodes made with mknod, as root), a fake
//! `/proc/driver/nvidia/gpus` tree and a fake `/sys/class/drm` driver link.

// Test code: an unwrap that fails is a failed test, named with its location.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use tidelet_device_plugin::api::{HEALTHY, UNHEALTHY};
use tidelet_device_plugin::testkit::{
    alloc, mknod_char, next_list, pairs, privileged, registrations, spawn_plugin, watch,
    ChildGuard, FakeKubelet, WAIT,
};

const UUID: &str = "GPU-8f6c1e2a-1111-2222-3333-444455556666";

struct Tree {
    _tmp: tempfile::TempDir,
    dp: PathBuf,
    dev: PathBuf,
    proc: PathBuf,
    sys: PathBuf,
}

fn tree() -> Tree {
    let tmp = tempfile::tempdir().unwrap();
    let t = Tree {
        dp: tmp.path().join("device-plugins"),
        dev: tmp.path().join("dev"),
        proc: tmp.path().join("proc"),
        sys: tmp.path().join("sys"),
        _tmp: tmp,
    };
    for d in [&t.dp, &t.dev, &t.proc, &t.sys] {
        std::fs::create_dir_all(d).unwrap();
    }
    t
}

fn gpu_info(proc: &Path, bus: &str, text: &str) {
    let d = proc.join("driver/nvidia/gpus").join(bus);
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("information"), text).unwrap();
}

fn drm_driver(sys: &Path, node: &str, driver: &str) {
    let d = sys.join("class/drm").join(node).join("device");
    std::fs::create_dir_all(&d).unwrap();
    std::os::unix::fs::symlink(
        format!("../../bus/platform/drivers/{driver}"),
        d.join("driver"),
    )
    .unwrap();
}

fn spawn(t: &Tree, stderr: Stdio) -> ChildGuard {
    spawn_with(t, stderr, &[])
}

/// `spawn` with more flags after the tree's.
fn spawn_with(t: &Tree, stderr: Stdio, more: &[&str]) -> ChildGuard {
    let mut args = vec![
        "--device-plugin-dir".as_ref(),
        t.dp.as_os_str(),
        "--dev-root".as_ref(),
        t.dev.as_os_str(),
        "--proc-root".as_ref(),
        t.proc.as_os_str(),
        "--sys-root".as_ref(),
        t.sys.as_os_str(),
    ];
    args.extend(more.iter().map(|m| std::ffi::OsStr::new(*m)));
    spawn_plugin(env!("CARGO_BIN_EXE_tidelet-gpu-plugin"), &args, stderr)
}

#[tokio::test]
async fn nvidia_and_drm_gpus_are_registered_listed_allocated_and_watched() {
    if !privileged("nvidia_and_drm_gpus_are_registered_listed_allocated_and_watched") {
        return;
    }
    let t = tree();
    // GPU-like names with the numbers of harmless host devices.
    mknod_char(&t.dev.join("nvidia0"), 10, 200).unwrap();
    mknod_char(&t.dev.join("nvidiactl"), 1, 3).unwrap();
    mknod_char(&t.dev.join("nvidia-uvm"), 1, 5).unwrap();
    std::fs::write(t.dev.join("nvidia-modeset"), b"not a device").unwrap();
    mknod_char(&t.dev.join("dri/renderD128"), 10, 229).unwrap();
    mknod_char(&t.dev.join("dri/card0"), 1, 7).unwrap();
    gpu_info(&t.proc, "0000:01:00.0", &format!("Model: \t\t Test GPU\nGPU UUID: \t {UUID}\nBus Location: \t 0000:01:00.0\nDevice Minor: \t 0\n"));
    // No UUID shown and no node: listed by bus id, Unhealthy.
    gpu_info(
        &t.proc,
        "0000:02:00.0",
        "Model: \t\t Test GPU\nGPU UUID: \t ??\nDevice Minor: \t 1\n",
    );
    drm_driver(&t.sys, "renderD128", "panfrost");

    let mut k = FakeKubelet::start(&t.dp).unwrap();
    let _plugin = spawn(&t, Stdio::inherit());
    let regs = registrations(&mut k, 2).await;
    let names: Vec<(&str, &str, &str)> = regs
        .iter()
        .map(|r| {
            (
                r.resource_name.as_str(),
                r.endpoint.as_str(),
                r.version.as_str(),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![
            (
                "dri.tidelet.io/panfrost",
                "dri.tidelet.io-panfrost.sock",
                "v1beta1"
            ),
            ("nvidia.com/gpu", "nvidia.com-gpu.sock", "v1beta1"),
        ]
    );

    let (mut nv, mut nv_stream) = watch(&t.dp, "nvidia.com-gpu.sock").await;
    assert_eq!(
        next_list(&mut nv_stream).await,
        pairs(&[(UUID, HEALTHY), ("0000:02:00.0", UNHEALTHY)])
    );
    let resp = nv.allocate(alloc(&[UUID])).await.unwrap().into_inner();
    let c = &resp.container_responses[0];
    let specs: Vec<(String, String, String)> = c
        .devices
        .iter()
        .map(|d| {
            (
                d.container_path.clone(),
                d.host_path.clone(),
                d.permissions.clone(),
            )
        })
        .collect();
    let host = |n: &str| t.dev.join(n).to_string_lossy().into_owned();
    assert_eq!(
        specs,
        vec![
            ("/dev/nvidia0".into(), host("nvidia0"), "rw".into()),
            ("/dev/nvidiactl".into(), host("nvidiactl"), "rw".into()),
            ("/dev/nvidia-uvm".into(), host("nvidia-uvm"), "rw".into()),
        ],
        "the GPU and the control nodes that exist as char devices"
    );
    assert_eq!(
        c.envs.get("NVIDIA_VISIBLE_DEVICES").map(String::as_str),
        Some(UUID)
    );
    let e = nv.allocate(alloc(&["0000:02:00.0"])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("0000:02:00.0"), "{}", e.message());
    let e = nv.allocate(alloc(&["GPU-none"])).await.unwrap_err();
    assert!(e.message().contains("GPU-none"), "{}", e.message());

    // Health follows the node: removed, then back.
    std::fs::remove_file(t.dev.join("nvidia0")).unwrap();
    assert_eq!(
        next_list(&mut nv_stream).await,
        pairs(&[(UUID, UNHEALTHY), ("0000:02:00.0", UNHEALTHY)])
    );
    mknod_char(&t.dev.join("nvidia1"), 10, 200).unwrap();
    assert_eq!(
        next_list(&mut nv_stream).await,
        pairs(&[(UUID, UNHEALTHY), ("0000:02:00.0", HEALTHY)])
    );

    let (mut dri, mut dri_stream) = watch(&t.dp, "dri.tidelet.io-panfrost.sock").await;
    assert_eq!(
        next_list(&mut dri_stream).await,
        pairs(&[("renderD128", HEALTHY)])
    );
    let resp = dri
        .allocate(alloc(&["renderD128"]))
        .await
        .unwrap()
        .into_inner();
    let d = &resp.container_responses[0].devices;
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].container_path, "/dev/dri/renderD128");
    assert_eq!(d[0].host_path, host("dri/renderD128"));
    assert_eq!(d[0].permissions, "rw");
    assert!(resp.container_responses[0].envs.is_empty());
    // A regular file where the node was: Unhealthy.
    std::fs::remove_file(t.dev.join("dri/renderD128")).unwrap();
    std::fs::write(t.dev.join("dri/renderD128"), b"").unwrap();
    assert_eq!(
        next_list(&mut dri_stream).await,
        pairs(&[("renderD128", UNHEALTHY)])
    );
}

/// Device nodes here are symlinks to the host's /dev/null (a char device), so this runs
/// without root.
#[tokio::test]
async fn registers_again_after_kubelet_restarts_and_removes_its_socket_on_sigterm() {
    let t = tree();
    std::fs::create_dir_all(t.dev.join("dri")).unwrap();
    std::os::unix::fs::symlink("/dev/null", t.dev.join("dri/renderD128")).unwrap();
    let mut k = FakeKubelet::start(&t.dp).unwrap();
    let mut plugin = spawn(&t, Stdio::inherit());
    let r = registrations(&mut k, 1).await;
    assert_eq!(
        r[0].resource_name, "dri.tidelet.io/render",
        "no driver link: the generic name"
    );
    let sock = t.dp.join(&r[0].endpoint);
    assert!(sock.exists());

    // kubelet restart: all sockets removed, kubelet.sock bound again.
    k.restart().unwrap();
    let r = registrations(&mut k, 1).await;
    assert_eq!(r[0].resource_name, "dri.tidelet.io/render");
    let (_c, mut s) = watch(&t.dp, &r[0].endpoint).await;
    assert_eq!(next_list(&mut s).await, pairs(&[("renderD128", HEALTHY)]));

    // Only kubelet.sock made again: registers again too.
    k.recreate_socket().unwrap();
    let r = registrations(&mut k, 1).await;
    assert_eq!(r[0].resource_name, "dri.tidelet.io/render");

    plugin.terminate().unwrap();
    let status = plugin.exited_within(WAIT).await.expect("exits on SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(!sock.exists(), "its socket is removed");
}

/// Scanning once an hour, so the render node is found through the watch on the dev root
/// (and then on `dri/`, made with the first GPU's node).
#[tokio::test]
async fn no_gpus_registers_nothing_until_one_appears() {
    let t = tree();
    let mut k = FakeKubelet::start(&t.dp).unwrap();
    let _plugin = spawn_with(&t, Stdio::inherit(), &["--scan-interval", "3600"]);
    assert!(
        k.next_registration(Duration::from_millis(1500))
            .await
            .is_none(),
        "nothing to register"
    );
    // As the kernel does it: the device in sysfs first, then its node.
    drm_driver(&t.sys, "renderD129", "etnaviv");
    std::fs::create_dir_all(t.dev.join("dri")).unwrap();
    std::os::unix::fs::symlink("/dev/null", t.dev.join("dri/renderD129")).unwrap();
    let r = registrations(&mut k, 1).await;
    assert_eq!(r[0].resource_name, "dri.tidelet.io/etnaviv");
    let (_c, mut s) = watch(&t.dp, "dri.tidelet.io-etnaviv.sock").await;
    assert_eq!(next_list(&mut s).await, pairs(&[("renderD129", HEALTHY)]));
    drm_driver(&t.sys, "renderD130", "etnaviv");
    std::os::unix::fs::symlink("/dev/zero", t.dev.join("dri/renderD130")).unwrap();
    assert_eq!(
        next_list(&mut s).await,
        pairs(&[("renderD129", HEALTHY), ("renderD130", HEALTHY)])
    );
}

#[tokio::test]
async fn a_refused_registration_makes_it_exit_non_zero() {
    let t = tree();
    std::fs::create_dir_all(t.dev.join("dri")).unwrap();
    std::os::unix::fs::symlink("/dev/null", t.dev.join("dri/renderD128")).unwrap();
    let mut k = FakeKubelet::start(&t.dp).unwrap();
    k.refuse(Some("resource dri.tidelet.io/render is already registered"));
    let mut plugin = spawn(&t, Stdio::piped());
    let status = plugin
        .exited_within(WAIT)
        .await
        .expect("exits after the refusal");
    assert_eq!(status.code(), Some(1));
    let mut err = String::new();
    std::io::Read::read_to_string(plugin.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(
        err.contains("already registered"),
        "the agent's message is logged: {err}"
    );
    assert!(k.next_registration(Duration::from_secs(1)).await.is_some());
    assert!(
        !t.dp.join("dri.tidelet.io-render.sock").exists(),
        "its socket is removed"
    );
}

#[test]
fn a_bad_command_line_exits_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_tidelet-gpu-plugin"))
        .args(["--scan-interval", "never"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--scan-interval \"never\""));
}
