//! Tests of CDI spec loading and name resolution, over real spec texts in temp dirs.

use super::*;

/// In the style of `nvidia-ctk cdi generate`: top-level edits with env, a hook and the
/// control nodes; one entry per GPU and `all`.
const NVIDIA_YAML: &str = r#"---
cdiVersion: 0.5.0
kind: nvidia.com/gpu
devices:
- name: gpu0
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
      hostPath: /host/dev/nvidia0
- name: gpu1
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia1
      type: c
      major: 195
      minor: 1
      fileMode: 438
      permissions: rw
      uid: 0
      gid: 44
- name: all
  containerEdits:
    deviceNodes:
    - path: /dev/nvidia0
    - path: /dev/nvidia1
containerEdits:
  env:
  - NVIDIA_VISIBLE_DEVICES=void
  deviceNodes:
  - path: /dev/nvidiactl
  - path: /dev/nvidia-uvm
  mounts:
  - hostPath: /usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15
    containerPath: /usr/lib/x86_64-linux-gnu/libcuda.so.550.54.15
    options:
    - ro
    - nosuid
    - nodev
    - bind
  hooks:
  - hookName: createContainer
    path: /usr/bin/nvidia-ctk
    args:
    - nvidia-ctk
    - hook
    - update-ldcache
    - --folder
    - /usr/lib/x86_64-linux-gnu
"#;

const VENDOR_JSON: &str = r#"{
  "cdiVersion": "0.8.0",
  "kind": "vendor.com/npu",
  "devices": [
    {"name": "npu0", "containerEdits": {
      "env": ["NPU=0"],
      "deviceNodes": [{"path": "/dev/npu0", "permissions": "rwm"}]}}
  ]
}"#;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn nvidia_style_spec_resolves_device_then_top_level_edits_once() {
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc-cdi");
    let file = write(&etc, "nvidia.yaml", NVIDIA_YAML);
    let (reg, errors) = Registry::load(std::slice::from_ref(&etc));
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        reg.device_names(),
        [
            "nvidia.com/gpu=all",
            "nvidia.com/gpu=gpu0",
            "nvidia.com/gpu=gpu1"
        ]
    );
    assert_eq!(reg.spec_file("nvidia.com/gpu=gpu0"), Some(file.as_path()));

    let e = reg
        .resolve(&["nvidia.com/gpu=gpu0".into(), "nvidia.com/gpu=gpu1".into()])
        .unwrap();
    assert_eq!(e.env, ["NVIDIA_VISIBLE_DEVICES=void"]);
    let paths: Vec<_> = e.device_nodes.iter().map(|n| n.path.as_str()).collect();
    // The devices' nodes in the order asked, then the spec's top-level ones, once.
    assert_eq!(
        paths,
        [
            "/dev/nvidia0",
            "/dev/nvidia1",
            "/dev/nvidiactl",
            "/dev/nvidia-uvm"
        ]
    );
    let gpu0 = &e.device_nodes[0];
    assert_eq!(gpu0.host_path, PathBuf::from("/host/dev/nvidia0"));
    assert_eq!(
        (gpu0.kind.as_deref(), gpu0.major, gpu0.file_mode),
        (None, None, None)
    );
    assert!(
        gpu0.origin.starts_with("nvidia.com/gpu=gpu0 ("),
        "{}",
        gpu0.origin
    );
    let ctl = &e.device_nodes[2];
    assert_eq!(
        ctl.host_path,
        PathBuf::from("/dev/nvidiactl"),
        "hostPath defaults to path"
    );
    let gpu1 = &e.device_nodes[1];
    assert_eq!(
        (gpu1.kind.as_deref(), gpu1.major, gpu1.minor, gpu1.file_mode),
        (Some("c"), Some(195), Some(1), Some(0o666))
    );
    assert_eq!(
        (gpu1.permissions.as_deref(), gpu1.uid, gpu1.gid),
        (Some("rw"), Some(0), Some(44))
    );
    assert_eq!(e.mounts.len(), 1);
    assert_eq!(e.mounts[0].options, ["ro", "nosuid", "nodev", "bind"]);
    assert_eq!(e.hooks.len(), 1);
    assert_eq!(e.hooks[0].hook_name, "createContainer");
    assert_eq!(e.hooks[0].path, PathBuf::from("/usr/bin/nvidia-ctk"));
    assert_eq!(e.hooks[0].args[2], "update-ldcache");

    let all = reg.resolve(&["nvidia.com/gpu=all".into()]).unwrap();
    assert_eq!(all.device_nodes.len(), 4);
    // The same name twice adds its edits once.
    let twice = reg
        .resolve(&["nvidia.com/gpu=gpu0".into(), "nvidia.com/gpu=gpu0".into()])
        .unwrap();
    assert_eq!(twice.device_nodes.len(), 3);
}

#[test]
fn json_and_yaml_specs_load_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("cdi");
    write(&d, "a.yaml", NVIDIA_YAML);
    write(&d, "b.json", VENDOR_JSON);
    write(&d, "notes.txt", "not a spec");
    let (reg, errors) = Registry::load(&[d]);
    assert!(errors.is_empty(), "{errors:?}");
    let e = reg.resolve(&["vendor.com/npu=npu0".into()]).unwrap();
    assert_eq!(e.env, ["NPU=0"]);
    assert_eq!(e.device_nodes[0].permissions.as_deref(), Some("rwm"));
}

#[test]
fn missing_dirs_are_fine_and_unknown_names_name_the_dirs() {
    let dir = tempfile::tempdir().unwrap();
    let dirs = [dir.path().join("nope1"), dir.path().join("nope2")];
    let (reg, errors) = Registry::load(&dirs);
    assert!(errors.is_empty(), "{errors:?}");
    let err = reg.resolve(&["vendor.com/npu=npu0".into()]).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, ResolveError::Unknown { .. }), "{msg}");
    assert!(
        msg.contains("vendor.com/npu=npu0") && msg.contains("nope1") && msg.contains("nope2"),
        "{msg}"
    );
}

#[test]
fn malformed_qualified_names_are_refused() {
    let reg = Registry::default();
    let cases = [
        ("gpu0", "not a qualified name"),
        ("vendor.com=gpu0", "vendor/class"),
        ("vendor.com/gpu=", "empty"),
        ("vendor.com/gpu=-x", "start and end"),
        ("1vendor/gpu=x", "start with a letter"),
        ("vendor.com/g@u=x", "only letters"),
        ("vendor.com/gpu/x=a", "only letters"),
    ];
    for (name, want) in cases {
        let err = reg.resolve(&[name.to_string()]).unwrap_err();
        assert!(matches!(err, ResolveError::BadName { .. }), "{name}: {err}");
        assert!(err.to_string().contains(want), "{name}: {err}");
    }
}

#[test]
fn later_dirs_take_priority_and_same_dir_clashes_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let low = dir.path().join("etc");
    let high = dir.path().join("run");
    write(&low, "npu.json", VENDOR_JSON);
    let over = VENDOR_JSON.replace("NPU=0", "NPU=from-run");
    write(&high, "npu.json", &over);
    let (reg, errors) = Registry::load(&[low.clone(), high.clone()]);
    assert!(errors.is_empty(), "{errors:?}");
    let e = reg.resolve(&["vendor.com/npu=npu0".into()]).unwrap();
    assert_eq!(e.env, ["NPU=from-run"]);
    assert_eq!(
        reg.spec_file("vendor.com/npu=npu0"),
        Some(high.join("npu.json").as_path())
    );

    // Same directory: the first file (by name) keeps the device, the second is reported.
    write(&low, "zz-npu.json", &over);
    let (reg, errors) = Registry::load(std::slice::from_ref(&low));
    assert_eq!(errors.len(), 1, "{errors:?}");
    let msg = errors[0].to_string();
    assert!(
        msg.contains("zz-npu.json") && msg.contains("npu.json") && msg.contains("already defined"),
        "{msg}"
    );
    let e = reg.resolve(&["vendor.com/npu=npu0".into()]).unwrap();
    assert_eq!(e.env, ["NPU=0"]);
}

#[test]
fn invalid_specs_are_skipped_with_file_field_and_reason_while_others_load() {
    let base = VENDOR_JSON;
    let cases: &[(&str, String, &str, &str)] = &[
        (
            "bad-kind.json",
            base.replace("vendor.com/npu", "vendor.com"),
            "field kind",
            "vendor/class",
        ),
        (
            "bad-class.json",
            base.replace("vendor.com/npu", "vendor.com/-npu"),
            "field kind",
            "start with a letter",
        ),
        (
            "too-old.json",
            base.replace("0.8.0", "0.4.0").replace(
                "\"path\": \"/dev/npu0\"",
                "\"path\": \"/dev/npu0\", \"hostPath\": \"/dev/n\"",
            ),
            "field cdiVersion = \"0.4.0\"",
            "deviceNodes hostPath or a device name not starting with a letter needs version 0.5.0",
        ),
        (
            "gids-need-0.7.json",
            base.replace("0.8.0", "0.6.0")
                .replace("\"env\": [\"NPU=0\"]", "\"additionalGids\": [44]"),
            "field cdiVersion",
            "additionalGids needs version 0.7.0",
        ),
        (
            "bad-version.json",
            base.replace("0.8.0", "9.9.9"),
            "field cdiVersion",
            "unknown version",
        ),
        (
            "relative.json",
            base.replace("\"/dev/npu0\"", "\"dev/npu0\""),
            "field devices[0].containerEdits.deviceNodes[0].path",
            "not an absolute path",
        ),
        (
            "bad-perm.json",
            base.replace("\"rwm\"", "\"rwx\""),
            "devices[0].containerEdits.deviceNodes[0].permissions",
            "only r, w and m",
        ),
        (
            "bad-env.json",
            base.replace("NPU=0", "NPU"),
            "devices[0].containerEdits.env[0]",
            "KEY=VALUE",
        ),
        (
            "bad-name.json",
            base.replace("\"npu0\"", "\"npu 0\""),
            "devices[0].name",
            "only letters",
        ),
        (
            "no-devices.json",
            r#"{"cdiVersion":"0.6.0","kind":"a.com/b","devices":[]}"#.into(),
            "field devices",
            "at least one",
        ),
        (
            "wrong-type.json",
            base.replace("\"permissions\": \"rwm\"", "\"major\": \"x\""),
            "devices[0].containerEdits.deviceNodes[0].major",
            "invalid type",
        ),
        (
            "missing-kind.json",
            r#"{"cdiVersion":"0.6.0","devices":[]}"#.into(),
            "field .",
            "missing field `kind`",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().join("cdi");
    for (name, text, _, _) in cases {
        write(&d, name, text);
    }
    write(&d, "good.yaml", NVIDIA_YAML);
    let (reg, errors) = Registry::load(std::slice::from_ref(&d));
    assert_eq!(errors.len(), cases.len(), "{errors:#?}");
    for (name, _, field, reason) in cases {
        let e = errors
            .iter()
            .map(|e| e.to_string())
            .find(|e| e.contains(&d.join(name).display().to_string()))
            .unwrap_or_else(|| panic!("no error for {name}: {errors:#?}"));
        assert!(e.contains(field) && e.contains(reason), "{name}: {e}");
    }
    assert!(reg.resolve(&["nvidia.com/gpu=gpu0".into()]).is_ok());
    assert!(reg.resolve(&["vendor.com/npu=npu0".into()]).is_err());
}

#[test]
fn invalid_yaml_hooks_duplicates_and_malformed_text_name_file_and_field() {
    let cases: &[(&str, &str, &str)] = &[
        (
            NVIDIA_YAML_HOOK_UNKNOWN,
            "containerEdits.hooks[0].hookName",
            "unknown hook",
        ),
        (
            "cdiVersion: 0.6.0\nkind: a.com/b\ndevices:\n- name: x\n- name: x\n",
            "devices[1].name",
            "duplicate device name",
        ),
        (
            "cdiVersion: 0.6.0\nkind: a.com/b\ndevices:\n- name: x\n  containerEdits:\n    deviceNodes:\n    - path: /dev/x\n    - path: [oops\n",
            "",
            "",
        ),
        (
            "cdiVersion: 0.6.0\nkind: a.com/b\ndevices:\n- name: x\n  containerEdits:\n    deviceNodes:\n    - path: /dev/x\n    - hostPath: /dev/y\n",
            "devices[0].containerEdits.deviceNodes[1]",
            "missing field `path`",
        ),
        (
            "cdiVersion: 0.6.0\nkind: a.com/b\ndevices:\n- name: x\n  containerEdits:\n    mounts:\n    - hostPath: /a\n      containerPath: b\n",
            "devices[0].containerEdits.mounts[0].containerPath",
            "not an absolute path",
        ),
        (
            "cdiVersion: 0.6.0\nkind: a.com/b\ndevices:\n- name: x\ncontainerEdits:\n  hooks:\n  - hookName: poststop\n    path: /bin/true\n    timeout: 0\n",
            "containerEdits.hooks[0].timeout",
            "must be > 0",
        ),
    ];
    for (i, (text, field, reason)) in cases.iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(dir.path(), &format!("spec{i}.yaml"), text);
        let (reg, errors) = Registry::load(&[dir.path().to_path_buf()]);
        assert_eq!(errors.len(), 1, "case {i}: {errors:?}");
        assert!(reg.device_names().is_empty(), "case {i}");
        let msg = errors[0].to_string();
        assert!(msg.contains(&file.display().to_string()), "case {i}: {msg}");
        assert!(
            msg.contains(field) && msg.contains(reason),
            "case {i}: {msg}"
        );
        if field.is_empty() {
            assert!(
                matches!(errors[0], SpecError::Parse { .. }),
                "case {i}: {msg}"
            );
        }
    }
}

const NVIDIA_YAML_HOOK_UNKNOWN: &str = r#"cdiVersion: 0.5.0
kind: nvidia.com/gpu
devices:
- name: gpu0
containerEdits:
  hooks:
  - hookName: beforeEverything
    path: /usr/bin/nvidia-ctk
"#;

#[test]
fn prestart_hooks_are_accepted_as_legacy() {
    let dir = tempfile::tempdir().unwrap();
    let text = NVIDIA_YAML_HOOK_UNKNOWN.replace("beforeEverything", "prestart");
    write(dir.path(), "s.yaml", &text);
    let (reg, errors) = Registry::load(&[dir.path().to_path_buf()]);
    assert!(errors.is_empty(), "{errors:?}");
    let e = reg.resolve(&["nvidia.com/gpu=gpu0".into()]).unwrap();
    assert_eq!(e.hooks[0].hook_name, "prestart");
}

#[test]
fn a_spec_over_the_size_limit_is_refused_unparsed() {
    let dir = tempfile::tempdir().unwrap();
    let mut big = String::from("{\"cdiVersion\":\"0.6.0\",\"kind\":\"a.com/b\",\"devices\":[");
    while big.len() as u64 <= MAX_SPEC_BYTES {
        big.push_str("                                                            ");
    }
    big.push_str("{\"name\":\"x\"}]}");
    let file = write(dir.path(), "big.json", &big);
    write(dir.path(), "ok.json", VENDOR_JSON);
    let (reg, errors) = Registry::load(&[dir.path().to_path_buf()]);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        matches!(errors[0], SpecError::TooLarge { .. }),
        "{}",
        errors[0]
    );
    assert!(errors[0].to_string().contains(&file.display().to_string()));
    assert_eq!(reg.device_names(), ["vendor.com/npu=npu0"]);
}

#[test]
fn kind_and_device_name_rules_follow_the_cdi_parser() {
    let kinds = [
        ("vendor.com/foo", true),
        ("foo.bar.baz/foo-bar123.B_az", true),
        ("nvidia.com/gpu", true),
        ("foo", false),
        ("vendor.com/foo/", false),
        ("vendor.com/foo/bar", false),
        ("/foo", false),
        ("vendor.com/", false),
        ("vendor-/foo", false),
        ("9vendor/foo", false),
    ];
    for (k, ok) in kinds {
        assert_eq!(validate_kind(k).is_ok(), ok, "{k}: {:?}", validate_kind(k));
    }
    let names = [
        ("gpu0", true),
        ("0", true),
        ("GPU-0a_b.c:d", true),
        ("0000:01:00.0", true),
        ("", false),
        ("-gpu", false),
        ("gpu:", false),
        ("gp u", false),
        ("gpu/0", false),
    ];
    for (n, ok) in names {
        assert_eq!(validate_device_name(n).is_ok(), ok, "{n}");
    }
}
