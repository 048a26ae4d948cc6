//! tidelet's own plugins (the real `tidelet-generic-plugin` and `tidelet-gpu-plugin` binaries)
//! with the real agent over real unix sockets, on device nodes made with mknod in temp
//! directories (tun's numbers 10:200 and fuse's 10:229: harmless to open, and not in the
//! default allow list, so the cgroup rules decide). On this cgroup v1 host the rules are
//! `devices.allow/deny`; the QEMU guests check the v2 eBPF program the same way.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use tidelet_e2e::*;

use crate::devices::{counts, wait_counts, wants};
use crate::pod_yaml;

const SERIAL: &str = "tidelet.io/serial";

fn node(path: &Path, major: u64, minor: u64) {
    if let Some(p) = path.parent() {
        std::fs::create_dir_all(p).unwrap();
    }
    mknod(
        path,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(major, minor),
    )
    .unwrap();
}

/// A running plugin process, killed on drop; its stderr goes to `log`.
struct Plugin {
    child: Option<Child>,
    log: PathBuf,
}

impl Plugin {
    fn start(name: &str, args: &[&std::ffi::OsStr], log: PathBuf) -> Plugin {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap();
        let child = Command::new(plugin_bin(name))
            .args(args)
            .args(["--scan-interval", "0.2"])
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        Plugin {
            child: Some(child),
            log,
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- plugin log ----\n{}", self.log());
        }
        self.kill9();
    }
}

struct Generic {
    dev: PathBuf,
    config: PathBuf,
    dp: PathBuf,
    log: PathBuf,
}

impl Generic {
    fn new(a: &Agent, tmp: &Path) -> Generic {
        let dev = tmp.join("dev");
        node(&dev.join("ttyUSB0"), 10, 200);
        let config = tmp.join("generic.yaml");
        std::fs::write(
            &config,
            format!(
                "groups:\n- resource: {SERIAL}\n  paths: [\"/dev/ttyUSB*\"]\n  permissions: rw\n"
            ),
        )
        .unwrap();
        Generic {
            dev,
            config,
            dp: a.device_plugin_dir(),
            log: tmp.join("generic.log"),
        }
    }

    fn start(&self) -> Plugin {
        Plugin::start(
            "tidelet-generic-plugin",
            &[
                "--config".as_ref(),
                self.config.as_os_str(),
                "--dev-root".as_ref(),
                self.dev.as_os_str(),
                "--device-plugin-dir".as_ref(),
                self.dp.as_os_str(),
            ],
            self.log.clone(),
        )
    }
}

fn logs(a: &Agent, pod: &str) -> String {
    String::from_utf8_lossy(&a.cli(&["logs", pod]).stdout).to_string()
}

fn wait_logs(a: &Agent, pod: &str, needles: &[&str]) -> String {
    let mut last = String::new();
    wait_for(
        &format!("{needles:?} in the logs of {pod}"),
        Duration::from_secs(15),
        || {
            last = logs(a, pod);
            needles.iter().all(|n| last.contains(n)).then_some(())
        },
    );
    last
}

fn describe(a: &Agent, pod: &str) -> String {
    String::from_utf8_lossy(&a.cli(&["describe", "pod", pod]).stdout).to_string()
}

/// Open the node read-write, say whether it worked: `opened` or the shell's error.
const OPEN: &str = "(exec 3<>DEV) && echo DEV=opened || echo DEV=refused";

#[test]
fn a_pod_opens_the_device_it_was_given_and_a_pod_without_it_is_denied() {
    if !privileged() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let a = Agent::start_with_config(None);
    let g = Generic::new(&a, tmp.path());
    let _p = g.start();
    wait_counts(&a, SERIAL, Some(("1", "1")));

    let yes_cmd = format!(
        "ls -l /dev/ttyUSB0; {}; sleep 3600",
        OPEN.replace("DEV", "/dev/ttyUSB0")
    );
    a.write(
        "yes.yaml",
        &pod_yaml("granted", "", &[("c", &yes_cmd, &wants(SERIAL, 1))]),
    );
    // Without the device: the container makes the same node itself (mknod is allowed, as in
    // containerd's defaults) but the cgroup rules refuse to open it.
    let no_cmd = format!(
        "mknod /dev/ttyUSB0 c 10 200; ls -l /dev/ttyUSB0; {}; sleep 3600",
        OPEN.replace("DEV", "/dev/ttyUSB0")
    );
    a.write("no.yaml", &pod_yaml("denied", "", &[("c", &no_cmd, "")]));
    let (yes, no) = (a.full_name("granted"), a.full_name("denied"));
    a.wait_running(&yes);
    a.wait_running(&no);
    let out = wait_logs(&a, &yes, &["/dev/ttyUSB0=opened"]);
    assert!(out.contains("10, 200"), "{out}");
    let out = wait_logs(&a, &no, &["/dev/ttyUSB0=refused"]);
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(out.contains("10, 200"), "the node was made: {out}");
    // The rules as the kernel holds them (v1 devices.list of the containers' cgroups).
    let uid = |n: &str| {
        a.pod(n).unwrap()["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let list = |n: &str| {
        let p = a.controller_cgroup("devices", &format!("kubepods/besteffort/pod{}/c", uid(n)));
        read_trim(p.join("devices.list"))
    };
    let (ly, ln) = (list(&yes), list(&no));
    assert!(ly.lines().any(|l| l == "c 10:200 rw"), "{ly}");
    assert!(!ln.contains("10:200"), "{ln}");
    assert!(ln.lines().any(|l| l == "c 1:3 rwm"), "{ln}");
    // Who holds it.
    let d = describe(&a, &yes);
    assert!(d.contains(&format!("c: {SERIAL}: ttyUSB0")), "{d}");
}

#[test]
fn unplug_plugin_restart_and_agent_restart_keep_the_holder_running() {
    if !privileged() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut a = Agent::start_with_config(Some("devices:\n  pluginGracePeriod: 1h\n"));
    let g = Generic::new(&a, tmp.path());
    let mut p = g.start();
    wait_counts(&a, SERIAL, Some(("1", "1")));
    a.write(
        "hold.yaml",
        &pod_yaml("hold", "", &[("c", "sleep 3600", &wants(SERIAL, 1))]),
    );
    let hold = a.full_name("hold");
    let before = a.wait_running(&hold);

    // Unplugged while held: the plugin drops it, the node has nothing to give, the pod runs
    // on and is shown holding a device that is gone.
    std::fs::remove_file(g.dev.join("ttyUSB0")).unwrap();
    wait_counts(&a, SERIAL, Some(("0", "0")));
    wait_for(
        "describe pod marks the device unhealthy",
        Duration::from_secs(10),
        || {
            describe(&a, &hold)
                .contains("(unhealthy: ttyUSB0)")
                .then_some(())
        },
    );
    assert!(all_running(&a.pod(&hold).unwrap()));
    // Plugged back: healthy again, still held by the same pod.
    node(&g.dev.join("ttyUSB0"), 10, 200);
    wait_counts(&a, SERIAL, Some(("1", "1")));
    wait_for(
        "describe pod without unhealthy devices",
        Duration::from_secs(10),
        || (!describe(&a, &hold).contains("unhealthy")).then_some(()),
    );

    // The plugin dies: capacity stays (grace period), allocatable drops; it comes back and
    // registers again.
    p.kill9();
    wait_counts(&a, SERIAL, Some(("1", "0")));
    let mut p = g.start();
    wait_counts(&a, SERIAL, Some(("1", "1")));

    // The agent restarts: it removes the sockets, the plugin registers again by itself.
    a.kill9();
    a.spawn();
    wait_for(
        "the plugin's second registration after the agent restart",
        Duration::from_secs(20),
        || (counts(&a, SERIAL) == Some(("1".into(), "1".into()))).then_some(()),
    );
    let after = a.wait_running(&hold);
    assert_eq!(after["metadata"]["uid"], before["metadata"]["uid"]);
    assert_eq!(after["status"]["containerStatuses"][0]["restartCount"], 0);
    let d = describe(&a, &hold);
    assert!(d.contains(&format!("c: {SERIAL}: ttyUSB0")), "{d}");
    // Still held: a second pod asking for it is refused.
    a.write(
        "second.yaml",
        &pod_yaml("second", "", &[("c", "sleep 3600", &wants(SERIAL, 1))]),
    );
    crate::devices::held(&a, &a.full_name("second"), "UnexpectedAdmissionError");
    p.kill9();
}

#[test]
fn the_gpu_plugin_hands_over_nvidia_gpus_with_their_control_nodes_and_render_nodes() {
    if !privileged() {
        return;
    }
    const UUID: &str = "GPU-8f6c1e2a-1111-2222-3333-444455556666";
    let tmp = tempfile::tempdir().unwrap();
    let (dev, proc_, sys) = (
        tmp.path().join("dev"),
        tmp.path().join("proc"),
        tmp.path().join("sys"),
    );
    node(&dev.join("nvidia0"), 10, 200);
    node(&dev.join("nvidiactl"), 10, 229);
    node(&dev.join("dri/renderD128"), 10, 200);
    let gpu = proc_.join("driver/nvidia/gpus/0000:01:00.0");
    std::fs::create_dir_all(&gpu).unwrap();
    std::fs::write(
        gpu.join("information"),
        format!("Model: \t\t Test GPU\nGPU UUID: \t {UUID}\nBus Location: \t 0000:01:00.0\nDevice Minor: \t 0\n"),
    )
    .unwrap();
    let drm = sys.join("class/drm/renderD128/device");
    std::fs::create_dir_all(&drm).unwrap();
    std::os::unix::fs::symlink("../../bus/platform/drivers/panfrost", drm.join("driver")).unwrap();

    let a = Agent::start_with_config(None);
    let dp = a.device_plugin_dir();
    let _p = Plugin::start(
        "tidelet-gpu-plugin",
        &[
            "--device-plugin-dir".as_ref(),
            dp.as_os_str(),
            "--dev-root".as_ref(),
            dev.as_os_str(),
            "--proc-root".as_ref(),
            proc_.as_os_str(),
            "--sys-root".as_ref(),
            sys.as_os_str(),
        ],
        tmp.path().join("gpu.log"),
    );
    wait_counts(&a, "nvidia.com/gpu", Some(("1", "1")));
    wait_counts(&a, "dri.tidelet.io/panfrost", Some(("1", "1")));
    let cuda = format!(
        "echo visible=$NVIDIA_VISIBLE_DEVICES; {}; {}; sleep 3600",
        OPEN.replace("DEV", "/dev/nvidia0"),
        OPEN.replace("DEV", "/dev/nvidiactl")
    );
    a.write(
        "cuda.yaml",
        &pod_yaml("cuda", "", &[("c", &cuda, &wants("nvidia.com/gpu", 1))]),
    );
    let mali = format!("{}; sleep 3600", OPEN.replace("DEV", "/dev/dri/renderD128"));
    a.write(
        "mali.yaml",
        &pod_yaml(
            "mali",
            "",
            &[("c", &mali, &wants("dri.tidelet.io/panfrost", 1))],
        ),
    );
    let (cuda_pod, mali_pod) = (a.full_name("cuda"), a.full_name("mali"));
    a.wait_running(&cuda_pod);
    a.wait_running(&mali_pod);
    wait_logs(
        &a,
        &cuda_pod,
        &[
            &format!("visible={UUID}"),
            "/dev/nvidia0=opened",
            "/dev/nvidiactl=opened",
        ],
    );
    wait_logs(&a, &mali_pod, &["/dev/dri/renderD128=opened"]);
    // The render-node pod got no NVIDIA node: opening one it makes itself is refused.
    assert!(!logs(&a, &mali_pod).contains("nvidia"));
}
