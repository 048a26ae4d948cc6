//! Tests of `from_allocate`: tables over a fake host, and real nodes made with `mknod` as root.

use std::collections::HashMap;

use tidelet_deviceplugin_api::v1beta1::{CdiDevice, DeviceSpec, Mount};

use super::*;

/// A host of a few files, for tables.
struct FakeHost(BTreeMap<PathBuf, HostStat>);

fn node(kind: FileKind, major: u32, minor: u32, mode: u32, gid: u32) -> HostStat {
    HostStat {
        kind,
        major,
        minor,
        mode,
        uid: 0,
        gid,
    }
}

fn host() -> FakeHost {
    let mut m = BTreeMap::new();
    let dev = |k, maj, min, mode, gid| node(k, maj, min, mode, gid);
    m.insert("/dev/nvidia0".into(), dev(FileKind::Char, 195, 0, 0o666, 0));
    m.insert("/dev/nvidia1".into(), dev(FileKind::Char, 195, 1, 0o666, 0));
    m.insert(
        "/dev/nvidiactl".into(),
        dev(FileKind::Char, 195, 255, 0o666, 0),
    );
    m.insert(
        "/dev/dri/renderD128".into(),
        dev(FileKind::Char, 226, 128, 0o660, 44),
    );
    m.insert("/dev/sda".into(), dev(FileKind::Block, 8, 0, 0o660, 6));
    m.insert(
        "/usr/lib/libcuda.so".into(),
        dev(FileKind::Regular, 0, 0, 0o644, 0),
    );
    m.insert("/opt/drivers".into(), dev(FileKind::Dir, 0, 0, 0o755, 0));
    FakeHost(m)
}

impl HostFs for FakeHost {
    fn stat(&self, path: &Path) -> std::io::Result<HostStat> {
        self.0
            .get(path)
            .copied()
            .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound))
    }
    fn exists(&self, path: &Path) -> bool {
        self.0.contains_key(path)
    }
}

fn dev(container: &str, host: &str, perms: &str) -> DeviceSpec {
    DeviceSpec {
        container_path: container.into(),
        host_path: host.into(),
        permissions: perms.into(),
    }
}

fn mount(container: &str, host: &str, ro: bool) -> Mount {
    Mount {
        container_path: container.into(),
        host_path: host.into(),
        read_only: ro,
    }
}

fn answer(
    envs: &[(&str, &str)],
    mounts: Vec<Mount>,
    devices: Vec<DeviceSpec>,
    annotations: &[(&str, &str)],
    cdi: &[&str],
) -> ContainerAllocateResponse {
    let map = |kv: &[(&str, &str)]| -> HashMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    ContainerAllocateResponse {
        envs: map(envs),
        mounts,
        devices,
        annotations: map(annotations),
        cdi_devices: cdi
            .iter()
            .map(|n| CdiDevice {
                name: n.to_string(),
            })
            .collect(),
    }
}

#[test]
fn a_plugin_answer_becomes_env_mounts_nodes_and_annotations() {
    let gpu = answer(
        &[("NVIDIA_VISIBLE_DEVICES", "0,1"), ("A_FIRST", "1")],
        vec![mount("/usr/lib/libcuda.so", "/usr/lib/libcuda.so", true)],
        vec![
            dev("/dev/nvidia0", "/dev/nvidia0", "rw"),
            dev("/dev/./gpus/../nvidia1", "/dev/nvidia1", "wr"),
            dev("/dev/nvidiactl", "/dev/nvidiactl", "mrw"),
        ],
        &[("gpu.example/ids", "0,1")],
        &[],
    );
    let dri = answer(
        &[("RENDER", "renderD128")],
        vec![mount("/opt/drivers", "/opt/drivers", false)],
        vec![dev("/dev/dri/renderD128", "/dev/dri/renderD128", "rw")],
        &[],
        &[],
    );
    let reg = Registry::default();
    let e = from_allocate(
        &[
            ("nvidia.com/gpu".to_string(), gpu.clone()),
            ("dri.tidelet.io/i915".to_string(), dri.clone()),
        ],
        &reg,
        &host(),
    )
    .unwrap();
    assert_eq!(
        e.env,
        [
            "A_FIRST=1",
            "NVIDIA_VISIBLE_DEVICES=0,1",
            "RENDER=renderD128"
        ]
    );
    assert_eq!(
        e.mounts,
        [
            BindMount {
                source: "/usr/lib/libcuda.so".into(),
                destination: "/usr/lib/libcuda.so".into(),
                readonly: true
            },
            BindMount {
                source: "/opt/drivers".into(),
                destination: "/opt/drivers".into(),
                readonly: false
            },
        ]
    );
    let nodes: Vec<_> = e
        .devices
        .iter()
        .map(|d| {
            (
                d.container_path.as_str(),
                d.kind,
                d.major,
                d.minor,
                d.file_mode,
                d.gid,
                d.permissions.as_str(),
            )
        })
        .collect();
    assert_eq!(
        nodes,
        [
            ("/dev/nvidia0", DevKind::Char, 195, 0, 0o666, 0, "rw"),
            ("/dev/nvidia1", DevKind::Char, 195, 1, 0o666, 0, "rw"),
            ("/dev/nvidiactl", DevKind::Char, 195, 255, 0o666, 0, "rwm"),
            (
                "/dev/dri/renderD128",
                DevKind::Char,
                226,
                128,
                0o660,
                44,
                "rw"
            ),
        ]
    );
    assert_eq!(
        e.annotations.get("gpu.example/ids").map(String::as_str),
        Some("0,1")
    );
    assert!(e.hooks.is_empty());
}

#[test]
fn bad_answers_are_refused_naming_resource_field_and_value() {
    let reg = Registry::default();
    type Case = (&'static str, ContainerAllocateResponse, &'static str);
    let cases: Vec<Case> = vec![
        (
            "missing mount host",
            answer(&[], vec![mount("/x", "/x", false)], vec![], &[], &[]),
            r#"Allocate answer for vendor.com/dev: mount host path "/x" does not exist"#,
        ),
        (
            "mount escapes",
            answer(
                &[],
                vec![mount("/../../etc/shadow", "/opt/drivers", false)],
                vec![],
                &[],
                &[],
            ),
            r#"mount container path "/../../etc/shadow": "..""#,
        ),
        (
            "mount relative",
            answer(
                &[],
                vec![mount("opt", "/opt/drivers", false)],
                vec![],
                &[],
                &[],
            ),
            r#"mount container path "opt": not an absolute path"#,
        ),
        (
            "device host missing",
            answer(&[], vec![], vec![dev("/dev/x", "/dev/x", "rw")], &[], &[]),
            r#"device host path "/dev/x": does not exist"#,
        ),
        (
            "device host is a file",
            answer(
                &[],
                vec![],
                vec![dev("/dev/x", "/usr/lib/libcuda.so", "rw")],
                &[],
                &[],
            ),
            r#"device host path "/usr/lib/libcuda.so": is not a device node (it is a regular file)"#,
        ),
        (
            "device escapes",
            answer(
                &[],
                vec![],
                vec![dev("/dev/../../x", "/dev/nvidia0", "rw")],
                &[],
                &[],
            ),
            r#"device container path "/dev/../../x": "..""#,
        ),
        (
            "device at root",
            answer(
                &[],
                vec![],
                vec![dev("/dev/..", "/dev/nvidia0", "rw")],
                &[],
                &[],
            ),
            "is the container's root",
        ),
        (
            "device empty path",
            answer(&[], vec![], vec![dev("", "/dev/nvidia0", "rw")], &[], &[]),
            r#"device container path "": empty path"#,
        ),
        (
            "bad permissions",
            answer(
                &[],
                vec![],
                vec![dev("/dev/nvidia0", "/dev/nvidia0", "rwx")],
                &[],
                &[],
            ),
            r#"permissions "rwx": only r, w and m"#,
        ),
        (
            "empty permissions",
            answer(
                &[],
                vec![],
                vec![dev("/dev/nvidia0", "/dev/nvidia0", "")],
                &[],
                &[],
            ),
            r#"permissions "": empty"#,
        ),
        (
            "env with =",
            answer(&[("A=B", "c")], vec![], vec![], &[], &[]),
            r#"env "A=B": a variable name may not contain '='"#,
        ),
        (
            "empty env key",
            answer(&[("", "c")], vec![], vec![], &[], &[]),
            r#"env "": empty variable name"#,
        ),
        (
            "one path, two nodes",
            answer(
                &[],
                vec![],
                vec![
                    dev("/dev/gpu", "/dev/nvidia0", "rw"),
                    dev("/dev/gpu", "/dev/nvidia1", "rw"),
                ],
                &[],
                &[],
            ),
            r#"device "/dev/gpu" is also given, differently, by Allocate answer for vendor.com/dev"#,
        ),
        (
            "unknown CDI device",
            answer(&[], vec![], vec![], &[], &["vendor.com/dev=d0"]),
            r#"CDI device "vendor.com/dev=d0" is not defined"#,
        ),
    ];
    for (what, a, want) in cases {
        let err =
            from_allocate(&[("vendor.com/dev".to_string(), a.clone())], &reg, &host()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(want), "{what}: {msg}");
        assert!(
            msg.contains("vendor.com/dev"),
            "{what}: the resource is not named: {msg}"
        );
    }
}

#[test]
fn container_paths_and_permissions_normalise() {
    let paths = [
        ("/dev/nvidia0", Ok("/dev/nvidia0")),
        ("//dev/./dri//renderD128", Ok("/dev/dri/renderD128")),
        ("/dev/x/../y", Ok("/dev/y")),
        ("/..", Err("leads out")),
        ("/dev/../../x", Err("leads out")),
        ("/", Err("root")),
        ("dev/x", Err("absolute")),
        ("", Err("empty")),
    ];
    for (p, want) in paths {
        match (normalize_container_path(p), want) {
            (Ok(got), Ok(w)) => assert_eq!(got, w, "{p}"),
            (Err(got), Err(w)) => assert!(got.contains(w), "{p}: {got}"),
            (got, w) => panic!("{p}: {got:?}, want {w:?}"),
        }
    }
    let perms = [
        ("rw", Ok("rw")),
        ("mwr", Ok("rwm")),
        ("rr", Ok("r")),
        ("", Err("empty")),
        ("rwx", Err("only")),
        ("RW", Err("only")),
    ];
    for (p, want) in perms {
        match (normalize_permissions(p), want) {
            (Ok(got), Ok(w)) => assert_eq!(got, w, "{p}"),
            (Err(got), Err(w)) => assert!(got.contains(w), "{p}: {got}"),
            (got, w) => panic!("{p}: {got:?}, want {w:?}"),
        }
    }
}

#[test]
fn the_same_node_from_two_answers_is_kept_once_with_both_accesses() {
    let a = answer(
        &[],
        vec![],
        vec![dev("/dev/nvidiactl", "/dev/nvidiactl", "rw")],
        &[],
        &[],
    );
    let b = answer(
        &[],
        vec![],
        vec![dev("/dev/nvidiactl", "/dev/nvidiactl", "m")],
        &[],
        &[],
    );
    let e = from_allocate(
        &[
            ("a.com/x".to_string(), a.clone()),
            ("b.com/y".to_string(), b.clone()),
        ],
        &Registry::default(),
        &host(),
    )
    .unwrap();
    assert_eq!(e.devices.len(), 1);
    assert_eq!(e.devices[0].permissions, "rwm");
}

#[test]
fn conflicting_annotations_between_answers_are_refused() {
    let a = answer(&[], vec![], vec![], &[("k", "1")], &[]);
    let b = answer(&[], vec![], vec![], &[("k", "2")], &[]);
    let err = from_allocate(
        &[
            ("a.com/x".to_string(), a.clone()),
            ("b.com/y".to_string(), b.clone()),
        ],
        &Registry::default(),
        &host(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("b.com/y") && msg.contains("\"k\"") && msg.contains("\"2\""),
        "{msg}"
    );
}

const CDI_SPEC: &str = r#"cdiVersion: 0.7.0
kind: vendor.com/gpu
devices:
- name: gpu0
  containerEdits:
    env: [GPU=0]
    deviceNodes:
    - path: /dev/gpu0
      hostPath: /dev/nvidia0
      permissions: rw
- name: gpu1
  containerEdits:
    deviceNodes:
    - path: /dev/gpu1
      type: c
      major: 195
      minor: 1
      fileMode: 384
      gid: 7
- name: missing
  containerEdits:
    deviceNodes:
    - path: /dev/ghost
- name: blockdev
  containerEdits:
    deviceNodes:
    - path: /dev/disk0
      hostPath: /dev/sda
- name: fifo
  containerEdits:
    deviceNodes:
    - path: /dev/fifo
      type: p
containerEdits:
  env: [GPU_DRIVER=550, GPU=overridden-by-top-level]
  deviceNodes:
  - path: /dev/nvidiactl
  mounts:
  - hostPath: /usr/lib/libcuda.so
    containerPath: /usr/lib/libcuda.so
    options: [ro, nosuid, nodev, bind]
  hooks:
  - hookName: createContainer
    path: /usr/bin/nvidia-ctk
    args: [nvidia-ctk, hook, update-ldcache]
  additionalGids: [44]
"#;

fn cdi_registry(dir: &Path) -> Registry {
    std::fs::write(dir.join("gpu.yaml"), CDI_SPEC).unwrap();
    let (reg, errors) = Registry::load(&[dir.to_path_buf()]);
    assert!(errors.is_empty(), "{errors:?}");
    reg
}

#[test]
fn cdi_names_from_the_answer_and_annotations_add_their_edits() {
    let dir = tempfile::tempdir().unwrap();
    let reg = cdi_registry(dir.path());
    let a = answer(
        &[("FROM_PLUGIN", "1")],
        vec![],
        vec![],
        &[("cdi.k8s.io/vendor-gpu", "vendor.com/gpu=gpu1")],
        &["vendor.com/gpu=gpu0"],
    );
    let e = from_allocate(&[("vendor.com/gpu".to_string(), a.clone())], &reg, &host()).unwrap();
    assert_eq!(
        e.env,
        [
            "FROM_PLUGIN=1",
            "GPU=overridden-by-top-level",
            "GPU_DRIVER=550"
        ]
    );
    let nodes: Vec<_> = e
        .devices
        .iter()
        .map(|d| {
            (
                d.container_path.as_str(),
                d.host_path.to_str().unwrap(),
                d.major,
                d.minor,
                d.file_mode,
                d.gid,
                d.permissions.as_str(),
            )
        })
        .collect();
    // Annotation names come first (they are read before cdi_devices), then gpu0, then the
    // spec's top-level node once. gpu1 is fully described, so it needs no host node.
    assert_eq!(
        nodes,
        [
            ("/dev/gpu1", "/dev/gpu1", 195, 1, 0o600, 7, "rwm"),
            ("/dev/gpu0", "/dev/nvidia0", 195, 0, 0o666, 0, "rw"),
            (
                "/dev/nvidiactl",
                "/dev/nvidiactl",
                195,
                255,
                0o666,
                0,
                "rwm"
            ),
        ]
    );
    assert_eq!(e.mounts.len(), 1);
    assert!(e.mounts[0].readonly);
    assert_eq!(e.hooks.len(), 1);
    assert_eq!(e.hooks[0].path, PathBuf::from("/usr/bin/nvidia-ctk"));
    assert_eq!(e.additional_gids, [44]);
    assert_eq!(
        e.annotations
            .get("cdi.k8s.io/vendor-gpu")
            .map(String::as_str),
        Some("vendor.com/gpu=gpu1")
    );

    let block = answer(&[], vec![], vec![], &[], &["vendor.com/gpu=blockdev"]);
    let e = from_allocate(
        &[("vendor.com/gpu".to_string(), block.clone())],
        &reg,
        &host(),
    )
    .unwrap();
    assert_eq!(
        (e.devices[0].kind, e.devices[0].major, e.devices[0].gid),
        (DevKind::Block, 8, 6)
    );
}

#[test]
fn cdi_nodes_that_cannot_be_made_are_refused_naming_device_and_spec() {
    let dir = tempfile::tempdir().unwrap();
    let reg = cdi_registry(dir.path());
    let cases = [
        (
            "vendor.com/gpu=missing",
            r#"device host path "/dev/ghost": does not exist"#,
        ),
        ("vendor.com/gpu=fifo", r#"type "p" is not supported"#),
    ];
    for (name, want) in cases {
        let a = answer(&[], vec![], vec![], &[], &[name]);
        let msg = from_allocate(&[("vendor.com/gpu".to_string(), a.clone())], &reg, &host())
            .unwrap_err()
            .to_string();
        assert!(msg.contains(want), "{name}: {msg}");
        assert!(
            msg.contains(name) && msg.contains("gpu.yaml"),
            "{name}: {msg}"
        );
    }
}

use tidelet_testgate::privileged;

/// Root only: real nodes made with `mknod` in a temp dir, read back through `RealHostFs`.
#[test]
fn real_host_nodes_are_read_through_stat() {
    if !privileged("real_host_nodes_are_read_through_stat") {
        return;
    }
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let tun = d.join("tun");
    let kmsg = d.join("kmsg");
    mknod(
        &tun,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o600),
        makedev(10, 200),
    )
    .unwrap();
    mknod(
        &kmsg,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o644),
        makedev(1, 11),
    )
    .unwrap();
    std::fs::set_permissions(&tun, std::os::unix::fs::PermissionsExt::from_mode(0o620)).unwrap();
    nix::unistd::chown(&tun, None, Some(nix::unistd::Gid::from_raw(5))).unwrap();
    std::os::unix::fs::symlink(&tun, d.join("by-path-tun")).unwrap();
    std::fs::write(d.join("file"), "x").unwrap();
    let p = |n: &str| d.join(n).to_str().unwrap().to_string();
    let a = answer(
        &[],
        vec![mount("/etc/x", &p("file"), true)],
        vec![
            dev("/dev/net/tun", &p("by-path-tun"), "rw"),
            dev("/dev/kmsg", &p("kmsg"), "w"),
        ],
        &[],
        &[],
    );
    let e = from_allocate(
        &[("tidelet.io/test".to_string(), a.clone())],
        &Registry::default(),
        &RealHostFs,
    )
    .unwrap();
    let got: Vec<_> = e
        .devices
        .iter()
        .map(|d| {
            (
                d.container_path.as_str(),
                d.kind,
                d.major,
                d.minor,
                d.file_mode,
                d.uid,
                d.gid,
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("/dev/net/tun", DevKind::Char, 10, 200, 0o620, 0, 5),
            ("/dev/kmsg", DevKind::Char, 1, 11, 0o644, 0, 0),
        ]
    );
    assert_eq!(e.mounts[0].source, d.join("file"));
    for (host_path, want) in [
        (p("file"), "is not a device node"),
        (p("nope"), "does not exist"),
    ] {
        let bad = answer(&[], vec![], vec![dev("/dev/x", &host_path, "rw")], &[], &[]);
        let msg = from_allocate(
            &[("tidelet.io/test".to_string(), bad.clone())],
            &Registry::default(),
            &RealHostFs,
        )
        .unwrap_err()
        .to_string();
        assert!(msg.contains(want) && msg.contains(&host_path), "{msg}");
    }
}
