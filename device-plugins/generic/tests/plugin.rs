//! The real `tidelet-generic-plugin` binary against a fake kubelet on a temp device-plugin
//! directory and a temp `/dev` (device nodes made with mknod as root, or symlinks to the
//! host's /dev/null where root is not needed).

// Test code: an unwrap that fails is a failed test, named with its location.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use tidelet_device_plugin::api::{HEALTHY, UNHEALTHY};
use tidelet_device_plugin::testkit::{
    alloc, mknod_char, next_list, pairs, privileged, registrations, spawn_plugin, watch,
    ChildGuard, FakeKubelet, WAIT,
};

struct Tree {
    _tmp: tempfile::TempDir,
    dp: PathBuf,
    dev: PathBuf,
    config: PathBuf,
}

fn tree(config: &str) -> Tree {
    let tmp = tempfile::tempdir().unwrap();
    let t = Tree {
        dp: tmp.path().join("device-plugins"),
        dev: tmp.path().join("dev"),
        config: tmp.path().join("generic.yaml"),
        _tmp: tmp,
    };
    std::fs::create_dir_all(&t.dp).unwrap();
    std::fs::create_dir_all(&t.dev).unwrap();
    std::fs::write(&t.config, config).unwrap();
    t
}

fn spawn(t: &Tree, stderr: Stdio) -> ChildGuard {
    spawn_with(t, stderr, &[])
}

/// `spawn` with more flags after the tree's.
fn spawn_with(t: &Tree, stderr: Stdio, more: &[&str]) -> ChildGuard {
    let mut args = vec![
        "--config".as_ref(),
        t.config.as_os_str(),
        "--device-plugin-dir".as_ref(),
        t.dp.as_os_str(),
        "--dev-root".as_ref(),
        t.dev.as_os_str(),
    ];
    args.extend(more.iter().map(|m| std::ffi::OsStr::new(*m)));
    spawn_plugin(env!("CARGO_BIN_EXE_tidelet-generic-plugin"), &args, stderr)
}

const SERIAL_AND_VIDEO: &str = r#"
groups:
- resource: tidelet.io/serial
  paths: ["/dev/ttyUSB*", "/dev/ttyACM*"]
  share: 2
  permissions: rw
- resource: tidelet.io/video
  paths: ["/dev/video*"]
  permissions: r
"#;

#[tokio::test]
async fn groups_are_registered_allocated_and_follow_hot_plug() {
    if !privileged("groups_are_registered_allocated_and_follow_hot_plug") {
        return;
    }
    let t = tree(SERIAL_AND_VIDEO);
    // Serial-like names with the numbers of harmless host devices (tun, fuse, kmsg).
    mknod_char(&t.dev.join("ttyUSB0"), 10, 200).unwrap();
    mknod_char(&t.dev.join("ttyACM0"), 10, 229).unwrap();
    mknod_char(&t.dev.join("video0"), 1, 11).unwrap();
    std::fs::write(t.dev.join("ttyUSB9"), b"a regular file is not a device").unwrap();

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
            ("tidelet.io/serial", "tidelet.io-serial.sock", "v1beta1"),
            ("tidelet.io/video", "tidelet.io-video.sock", "v1beta1")
        ]
    );

    let (mut serial, mut s) = watch(&t.dp, "tidelet.io-serial.sock").await;
    assert_eq!(
        next_list(&mut s).await,
        pairs(&[
            ("ttyACM0-0", HEALTHY),
            ("ttyACM0-1", HEALTHY),
            ("ttyUSB0-0", HEALTHY),
            ("ttyUSB0-1", HEALTHY)
        ])
    );
    let resp = serial
        .allocate(alloc(&["ttyUSB0-1", "ttyACM0-0"]))
        .await
        .unwrap()
        .into_inner();
    let specs: Vec<(String, String, String)> = resp.container_responses[0]
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
            ("/dev/ttyUSB0".into(), host("ttyUSB0"), "rw".into()),
            ("/dev/ttyACM0".into(), host("ttyACM0"), "rw".into())
        ]
    );
    let e = serial.allocate(alloc(&["ttyUSB9"])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(e.message().contains("ttyUSB9"), "{}", e.message());

    // Plugged in.
    mknod_char(&t.dev.join("ttyUSB1"), 10, 200).unwrap();
    assert_eq!(
        next_list(&mut s).await,
        pairs(&[
            ("ttyACM0-0", HEALTHY),
            ("ttyACM0-1", HEALTHY),
            ("ttyUSB0-0", HEALTHY),
            ("ttyUSB0-1", HEALTHY),
            ("ttyUSB1-0", HEALTHY),
            ("ttyUSB1-1", HEALTHY)
        ])
    );
    // Unplugged.
    std::fs::remove_file(t.dev.join("ttyACM0")).unwrap();
    assert_eq!(
        next_list(&mut s).await,
        pairs(&[
            ("ttyUSB0-0", HEALTHY),
            ("ttyUSB0-1", HEALTHY),
            ("ttyUSB1-0", HEALTHY),
            ("ttyUSB1-1", HEALTHY)
        ])
    );
    // No longer a device: kept, Unhealthy, and not allocatable.
    std::fs::remove_file(t.dev.join("ttyUSB0")).unwrap();
    std::fs::write(t.dev.join("ttyUSB0"), b"").unwrap();
    assert_eq!(
        next_list(&mut s).await,
        pairs(&[
            ("ttyUSB0-0", UNHEALTHY),
            ("ttyUSB0-1", UNHEALTHY),
            ("ttyUSB1-0", HEALTHY),
            ("ttyUSB1-1", HEALTHY)
        ])
    );
    let e = serial.allocate(alloc(&["ttyUSB0-0"])).await.unwrap_err();
    assert!(
        e.message().contains("ttyUSB0-0") && e.message().contains("Unhealthy"),
        "{}",
        e.message()
    );

    let (mut video, mut v) = watch(&t.dp, "tidelet.io-video.sock").await;
    assert_eq!(next_list(&mut v).await, pairs(&[("video0", HEALTHY)]));
    let resp = video
        .allocate(alloc(&["video0"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.container_responses[0].devices[0].permissions, "r");
    assert_eq!(
        resp.container_responses[0].devices[0].container_path,
        "/dev/video0"
    );
}

/// Nodes are symlinks to the host's /dev/null (a char device): runs without root.
#[tokio::test]
async fn an_empty_group_registers_then_fills_and_registers_again_after_a_kubelet_restart() {
    let t = tree("groups:\n- resource: tidelet.io/gpio\n  paths: [\"/dev/gpiochip*\"]\n- resource: tidelet.io/i2c\n  paths: [\"/dev/i2c/bus-?\"]\n  share: 3\n");
    let mut k = FakeKubelet::start(&t.dp).unwrap();
    let mut plugin = spawn(&t, Stdio::inherit());
    let regs = registrations(&mut k, 2).await;
    assert_eq!(regs[0].resource_name, "tidelet.io/gpio");
    assert_eq!(regs[1].resource_name, "tidelet.io/i2c");
    let (_c, mut s) = watch(&t.dp, "tidelet.io-gpio.sock").await;
    assert_eq!(
        next_list(&mut s).await,
        vec![],
        "registered with no device yet"
    );
    std::os::unix::fs::symlink("/dev/null", t.dev.join("gpiochip0")).unwrap();
    assert_eq!(next_list(&mut s).await, pairs(&[("gpiochip0", HEALTHY)]));

    std::fs::create_dir_all(t.dev.join("i2c")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", t.dev.join("i2c/bus-1")).unwrap();
    let (mut i2c, mut s2) = watch(&t.dp, "tidelet.io-i2c.sock").await;
    let mut list = next_list(&mut s2).await;
    if list.is_empty() {
        list = next_list(&mut s2).await;
    }
    assert_eq!(
        list,
        pairs(&[
            ("i2c_bus-1-0", HEALTHY),
            ("i2c_bus-1-1", HEALTHY),
            ("i2c_bus-1-2", HEALTHY)
        ])
    );
    let resp = i2c
        .allocate(alloc(&["i2c_bus-1-2"]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        resp.container_responses[0].devices[0].container_path,
        "/dev/i2c/bus-1"
    );
    assert_eq!(
        resp.container_responses[0].devices[0].host_path,
        t.dev.join("i2c/bus-1").to_string_lossy()
    );

    k.restart().unwrap();
    let regs = registrations(&mut k, 2).await;
    assert_eq!(regs[0].resource_name, "tidelet.io/gpio");
    assert_eq!(regs[1].resource_name, "tidelet.io/i2c");
    let (_c, mut s) = watch(&t.dp, "tidelet.io-gpio.sock").await;
    assert_eq!(next_list(&mut s).await, pairs(&[("gpiochip0", HEALTHY)]));

    plugin.terminate().unwrap();
    let status = plugin.exited_within(WAIT).await.expect("exits on SIGTERM");
    assert!(status.success(), "{status:?}");
    assert!(!t.dp.join("tidelet.io-gpio.sock").exists());
    assert!(!t.dp.join("tidelet.io-i2c.sock").exists());
}

#[tokio::test]
async fn a_refused_registration_makes_it_exit_non_zero() {
    let t = tree("groups:\n- resource: tidelet.io/serial\n  paths: [\"/dev/ttyUSB*\"]\n");
    let mut k = FakeKubelet::start(&t.dp).unwrap();
    k.refuse(Some("resource name tidelet.io/serial is already taken"));
    let mut plugin = spawn(&t, Stdio::piped());
    let status = plugin
        .exited_within(WAIT)
        .await
        .expect("exits after the refusal");
    assert_eq!(status.code(), Some(1));
    let mut err = String::new();
    std::io::Read::read_to_string(plugin.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(
        err.contains("already taken"),
        "the agent's message is logged: {err}"
    );
    let r = k
        .next_registration(Duration::from_secs(1))
        .await
        .expect("it did try");
    assert_eq!(r.resource_name, "tidelet.io/serial");
}

#[test]
fn a_bad_config_exits_2_naming_the_file_group_and_field() {
    let t = tree("groups:\n- resource: tidelet.io/serial\n  paths: [\"/dev/ttyUSB*\"]\n- resource: tidelet.io/video\n  paths: [\"/dev/video*\"]\n  share: 0\n");
    let out = Command::new(env!("CARGO_BIN_EXE_tidelet-generic-plugin"))
        .arg("--config")
        .arg(&t.config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{}: groups[1].share: \"0\": must be from 1 to 100",
            t.config.display()
        )),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_tidelet-generic-plugin"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "no --config");
}

/// A node two groups match (here through udev's by-id symlink) is offered once, by the first
/// group, with a warning: kubelet would otherwise hand one device to two containers.
#[tokio::test]
async fn a_node_two_groups_match_is_offered_once_by_the_first() {
    let t = tree("groups:\n- resource: tidelet.io/serial\n  paths: [\"/dev/ttyUSB*\"]\n- resource: tidelet.io/serial-by-id\n  paths: [\"/dev/serial/by-id/*\"]\n");
    std::os::unix::fs::symlink("/dev/null", t.dev.join("ttyUSB0")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", t.dev.join("ttyUSB1")).unwrap();
    std::fs::create_dir_all(t.dev.join("serial/by-id")).unwrap();
    std::os::unix::fs::symlink("../../ttyUSB0", t.dev.join("serial/by-id/usb-a")).unwrap();
    std::os::unix::fs::symlink("/dev/full", t.dev.join("serial/by-id/usb-b")).unwrap();
    let log = t.dp.join("../plugin.log");
    let mut k = FakeKubelet::start(&t.dp).unwrap();
    let _plugin = spawn(&t, Stdio::from(std::fs::File::create(&log).unwrap()));
    registrations(&mut k, 2).await;
    let (_c, mut s) = watch(&t.dp, "tidelet.io-serial.sock").await;
    assert_eq!(
        next_list(&mut s).await,
        pairs(&[("ttyUSB0", HEALTHY), ("ttyUSB1", HEALTHY)])
    );
    let (_c2, mut s2) = watch(&t.dp, "tidelet.io-serial-by-id.sock").await;
    assert_eq!(
        next_list(&mut s2).await,
        pairs(&[("serial_by-id_usb-b", HEALTHY)]),
        "usb-a is ttyUSB0, already offered"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let warning = text
        .lines()
        .find(|l| l.contains("already offered"))
        .unwrap_or_else(|| panic!("no warning in:\n{text}"));
    assert!(
        warning.contains("node=serial/by-id/usb-a")
            && warning.contains("held_by=tidelet.io/serial")
            && warning.contains("held_as=ttyUSB0"),
        "{warning}"
    );
    assert_eq!(
        text.matches("already offered").count(),
        1,
        "warned once, not at every scan:\n{text}"
    );
}

/// Scanning once an hour, the plugin still follows devices plugged and unplugged at once:
/// it watches the groups' directories with inotify, `serial/by-id/` too, which udev makes
/// with the first USB serial adapter (watched through `/dev` until it is there, and again
/// once it has gone). Symlinks to the host's char devices: runs without root.
#[tokio::test]
async fn hot_plug_is_seen_at_once_through_inotify_with_no_polling() {
    let t = tree("groups:\n- resource: tidelet.io/serial\n  paths: [\"/dev/ttyUSB*\"]\n- resource: tidelet.io/serial-by-id\n  paths: [\"/dev/serial/by-id/*\"]\n");
    let mut k = FakeKubelet::start(&t.dp).unwrap();
    let _plugin = spawn_with(&t, Stdio::inherit(), &["--scan-interval", "3600"]);
    registrations(&mut k, 2).await;
    let (_c, mut s) = watch(&t.dp, "tidelet.io-serial.sock").await;
    assert_eq!(next_list(&mut s).await, vec![]);
    let (_c2, mut s2) = watch(&t.dp, "tidelet.io-serial-by-id.sock").await;
    assert_eq!(next_list(&mut s2).await, vec![]);

    let link = |target: &str, rel: &str| std::os::unix::fs::symlink(target, t.dev.join(rel));
    link("/dev/null", "ttyUSB0").unwrap();
    assert_eq!(next_list(&mut s).await, pairs(&[("ttyUSB0", HEALTHY)]));
    // What udev does for an adapter: the directories, then the link.
    std::fs::create_dir_all(t.dev.join("serial/by-id")).unwrap();
    link("/dev/zero", "serial/by-id/usb-b").unwrap();
    assert_eq!(
        next_list(&mut s2).await,
        pairs(&[("serial_by-id_usb-b", HEALTHY)])
    );
    // Unplugged: the link goes, and the directories with the last adapter.
    std::fs::remove_dir_all(t.dev.join("serial")).unwrap();
    assert_eq!(next_list(&mut s2).await, vec![]);
    // And plugged in again.
    std::fs::create_dir_all(t.dev.join("serial/by-id")).unwrap();
    link("/dev/full", "serial/by-id/usb-c").unwrap();
    assert_eq!(
        next_list(&mut s2).await,
        pairs(&[("serial_by-id_usb-c", HEALTHY)])
    );
    // A node that is no longer a device (a file in its place) is Unhealthy at once.
    std::fs::remove_file(t.dev.join("ttyUSB0")).unwrap();
    std::fs::write(t.dev.join("ttyUSB0"), b"").unwrap();
    let now = next_list(&mut s).await;
    let now = if now.is_empty() {
        // The removal and the new file were seen apart.
        next_list(&mut s).await
    } else {
        now
    };
    assert_eq!(now, pairs(&[("ttyUSB0", UNHEALTHY)]));
}
