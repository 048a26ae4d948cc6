//! Device plugins against the real agent over real unix sockets: registration rules, extended
//! resources in the node status, admission, `Allocate` answers in the container, checkpoints
//! across a restart, and the bad inputs of the issue, with a plugin the tests control
//! (`harness/plugin.rs`). tidelet's own plugins are tested in `devices_real.rs`.

use std::time::Duration;

use tidelet_deviceplugin_api::v1beta1::ContainerAllocateResponse;
use tidelet_e2e::plugin::{healthy, FakePlugin};
use tidelet_e2e::*;

use crate::pod_yaml;

pub const RES: &str = "example.com/fake";

/// A container asking for `n` of `resource`.
pub fn wants(resource: &str, n: u32) -> String {
    format!("    resources:\n      limits: {{{resource:?}: \"{n}\"}}\n")
}

pub fn node_json(a: &Agent) -> serde_json::Value {
    let out = a.cli(&["get", "node", "-o", "json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The node's (capacity, allocatable) of `resource`, `None` when it is not listed.
pub fn counts(a: &Agent, resource: &str) -> Option<(String, String)> {
    let n = node_json(a);
    let st = &n["status"];
    let c = st["capacity"][resource].as_str()?;
    let al = st["allocatable"][resource].as_str()?;
    Some((c.to_string(), al.to_string()))
}

pub fn wait_counts(a: &Agent, resource: &str, want: Option<(&str, &str)>) {
    let want = want.map(|(c, al)| (c.to_string(), al.to_string()));
    wait_for(
        &format!("node {resource} (capacity, allocatable) = {want:?}"),
        Duration::from_secs(15),
        || (counts(a, resource) == want).then_some(()),
    );
}

pub fn held(a: &Agent, name: &str, reason: &str) -> serde_json::Value {
    a.wait_pod(name, &format!("held with reason {reason}"), |p| {
        p["status"]["reason"] == reason
    })
}

fn node_events(a: &Agent) -> String {
    let out = a.cli(&["describe", "node"]);
    String::from_utf8_lossy(&out.stdout).to_string()
}

/// Answers with an env var naming the devices given.
fn env_answer() -> tidelet_e2e::plugin::Answer {
    std::sync::Arc::new(|ids: &[String]| {
        Some(ContainerAllocateResponse {
            envs: [("FAKE_DEVICES".to_string(), ids.join(","))].into(),
            annotations: [("example.com/fake".to_string(), "yes".to_string())].into(),
            ..Default::default()
        })
    })
}

/// The fake plugin on `fake.sock` with `ids`, answering with `answer`, registered and seen
/// in the node's capacity.
fn registered(a: &Agent, ids: &[&str], answer: tidelet_e2e::plugin::Answer) -> FakePlugin {
    let p = FakePlugin::serve(&a.device_plugin_dir(), RES, "fake.sock", healthy(ids));
    p.set_answer(answer);
    p.register().unwrap();
    let n = ids.len().to_string();
    wait_counts(a, RES, Some((&n, &n)));
    p
}

#[test]
fn registrations_are_checked_and_refusals_named() {
    if !privileged() {
        return;
    }
    let a = Agent::start_with_config(None);
    let dir = a.device_plugin_dir();
    let p = FakePlugin::serve(&dir, RES, "fake-a.sock", healthy(&["d0", "d1"]));
    p.register().unwrap();
    wait_counts(&a, RES, Some(("2", "2")));

    // The name is taken by a live plugin.
    let q = FakePlugin::serve(&dir, RES, "fake-b.sock", healthy(&["x"]));
    let e = q.register().unwrap_err();
    assert!(
        e.contains("\"example.com/fake\" is already registered by the plugin at \"fake-a.sock\""),
        "{e}"
    );
    // An unsupported API version.
    let e = q.register_as("v1alpha1", "example.com/other").unwrap_err();
    assert!(
        e.contains("unsupported device-plugin API version \"v1alpha1\"; tidelet supports v1beta1"),
        "{e}"
    );
    // Malformed resource names.
    for (name, want) in [
        ("gpu", "must be <domain>/<name>"),
        ("Example.com/gpu", "is not a DNS subdomain"),
        ("kubernetes.io/gpu", "reserved for the system"),
        ("example.com/-gpu", "must be 1 to 63 letters"),
    ] {
        let e = q.register_as("v1beta1", name).unwrap_err();
        assert!(e.contains(want), "{name}: {e}");
    }
    // The refusals are node events; the first plugin's devices are untouched.
    let ev = node_events(&a);
    assert!(ev.contains("DevicePluginRejected"), "{ev}");
    assert!(ev.contains("already registered"), "{ev}");
    assert_eq!(counts(&a, RES), Some(("2".into(), "2".into())));
    // A pod runs all along.
    a.write("ok.yaml", &pod_yaml("ok", "", &[("c", "sleep 3600", "")]));
    a.wait_running(&a.full_name("ok"));
}

#[test]
fn ten_thousand_devices_are_refused_and_other_plugins_keep_working() {
    if !privileged() {
        return;
    }
    let a = Agent::start_with_config(None);
    let dir = a.device_plugin_dir();
    let good = FakePlugin::serve(&dir, RES, "good.sock", healthy(&["d0"]));
    good.register().unwrap();
    let ids: Vec<String> = (0..10_000).map(|i| format!("dev{i}")).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let flood = FakePlugin::serve(&dir, "example.com/flood", "flood.sock", healthy(&refs));
    flood.register().unwrap();
    a.wait_log_line(
        "10000 devices, more than the 1024 tidelet takes",
        Duration::from_secs(15),
    );
    // The node event follows the log line (the agent's notice reader posts it).
    wait_for(
        "the DevicePluginStopped node event",
        Duration::from_secs(15),
        || {
            node_events(&a)
                .contains("DevicePluginStopped")
                .then_some(())
        },
    );
    // Nothing of it counted; the good plugin is untouched; pods run.
    wait_counts(&a, "example.com/flood", Some(("0", "0")));
    assert_eq!(counts(&a, RES), Some(("1".into(), "1".into())));
    good.set_answer(env_answer());
    a.write(
        "user.yaml",
        &pod_yaml(
            "user",
            "",
            &[("c", "echo got=$FAKE_DEVICES; sleep 3600", &wants(RES, 1))],
        ),
    );
    a.wait_running(&a.full_name("user"));
}

#[test]
fn extended_resources_are_admitted_allocated_and_freed() {
    if !privileged() {
        return;
    }
    let a = Agent::start_with_config(None);
    let p = registered(&a, &["d0", "d1"], env_answer());

    a.write(
        "one.yaml",
        &pod_yaml(
            "one",
            "",
            &[("c", "echo got=$FAKE_DEVICES; sleep 3600", &wants(RES, 1))],
        ),
    );
    let one = a.full_name("one");
    a.wait_running(&one);
    // The plugin's env reached the container.
    wait_for("the container's output", Duration::from_secs(10), || {
        let out = a.cli(&["logs", &one]);
        String::from_utf8_lossy(&out.stdout)
            .contains("got=d0")
            .then_some(())
    });
    assert_eq!(p.allocations(), vec![vec!["d0".to_string()]]);

    // Two more than are free: kubelet's UnexpectedAdmissionError; the first pod runs on.
    a.write(
        "two.yaml",
        &pod_yaml("two", "", &[("c", "sleep 3600", &wants(RES, 2))]),
    );
    let two = a.full_name("two");
    let p2 = held(&a, &two, "UnexpectedAdmissionError");
    let msg = p2["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("Allocate failed due to requested number of devices unavailable for example.com/fake. Requested: 2, Available: 1, which is unexpected"),
        "{msg}"
    );
    // A resource nobody offers: OutOf<resource>.
    a.write(
        "none.yaml",
        &pod_yaml(
            "none",
            "",
            &[("c", "sleep 3600", &wants("example.com/none", 1))],
        ),
    );
    let p3 = held(&a, &a.full_name("none"), "OutOfexample.com/none");
    assert!(
        p3["status"]["message"]
            .as_str()
            .unwrap()
            .contains("Node didn't have enough resource: example.com/none, requested: 1, used: 0, capacity: 0"),
        "{p3}"
    );
    // get node and describe pod show who holds what.
    let t = a.cli(&["get", "node"]);
    let table = String::from_utf8_lossy(&t.stdout);
    let row = |start: &str| -> Vec<String> {
        table
            .lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line {start:?} in\n{table}"))
            .split_whitespace()
            .map(String::from)
            .collect()
    };
    assert_eq!(row("example.com/fake  ")[2..], ["2", "2", "1"], "{table}");
    let d0 = row(&format!("{RES:<32} d0 "));
    assert_eq!(
        d0[2..],
        ["Healthy".to_string(), format!("default/{one}/c")],
        "{table}"
    );
    let d = a.cli(&["describe", "pod", &one]);
    let text = String::from_utf8_lossy(&d.stdout);
    assert!(text.contains("c: example.com/fake: d0"), "{text}");
    // The plugin's annotations are shown with the devices.
    assert!(text.contains("example.com/fake=yes"), "{text}");

    // The first pod goes: its device is free, and the second pod gets both.
    a.remove("one.yaml");
    wait_for("pod one gone", Duration::from_secs(20), || {
        a.pod(&one).is_none().then_some(())
    });
    a.wait_running(&two);
    let last = p.allocations().last().cloned().unwrap();
    assert_eq!(last, vec!["d0".to_string(), "d1".to_string()]);
}

#[test]
fn an_allocate_that_never_answers_fails_the_pod_not_the_agent() {
    if !privileged() {
        return;
    }
    let a = Agent::start_with_config(Some("devices:\n  allocateTimeout: 2s\n"));
    let p = registered(&a, &["d0"], std::sync::Arc::new(|_: &[String]| None));
    a.write(
        "hang.yaml",
        &pod_yaml("hang", "", &[("c", "sleep 3600", &wants(RES, 1))]),
    );
    a.write(
        "other.yaml",
        &pod_yaml("other", "", &[("c", "sleep 3600", "")]),
    );
    let hang = a.full_name("hang");
    let p1 = held(&a, &hang, "UnexpectedAdmissionError");
    let msg = p1["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains("Allocate failed for example.com/fake")
            && msg.contains("did not answer within 2s"),
        "{msg}"
    );
    a.wait_running(&a.full_name("other"));
    // The device was not left reserved: once the plugin answers, the pod starts on a retry.
    p.set_answer(env_answer());
    let mut w = a.pod(&hang).unwrap();
    wait_for("pod hang running", Duration::from_secs(40), || {
        w = a.pod(&hang).unwrap();
        all_running(&w).then_some(())
    });
}

#[test]
fn a_gone_plugin_keeps_capacity_for_its_grace_period_then_is_removed() {
    if !privileged() {
        return;
    }
    let a = Agent::start_with_config(Some("devices:\n  pluginGracePeriod: 4s\n"));
    let dir = a.device_plugin_dir();
    let p = FakePlugin::serve(&dir, RES, "fake.sock", healthy(&["d0", "d1"]));
    p.register().unwrap();
    wait_counts(&a, RES, Some(("2", "2")));
    // A device turning unhealthy leaves capacity and drops allocatable.
    let mut list = healthy(&["d0", "d1"]);
    list[1].health = "Unhealthy".into();
    p.set_devices(list);
    wait_counts(&a, RES, Some(("2", "1")));
    p.stop();
    wait_counts(&a, RES, Some(("2", "0")));
    wait_counts(&a, RES, None);
    let ev = node_events(&a);
    assert!(
        ev.contains("DevicePluginStopped") && ev.contains("DevicePluginRemoved"),
        "{ev}"
    );
}

#[test]
fn allocations_survive_an_agent_restart_and_plugins_register_again() {
    if !privileged() {
        return;
    }
    let mut a = Agent::start_with_config(None);
    let p = registered(&a, &["d0", "d1"], env_answer());
    a.write(
        "keep.yaml",
        &pod_yaml(
            "keep",
            "",
            &[("c", "echo got=$FAKE_DEVICES; sleep 3600", &wants(RES, 1))],
        ),
    );
    let keep = a.full_name("keep");
    let before = a.wait_running(&keep);
    let cp = std::fs::read_to_string(a.root.join("device_manager_state")).unwrap();
    assert!(
        cp.contains("\"d0\"") && cp.contains(before["metadata"]["uid"].as_str().unwrap()),
        "{cp}"
    );

    a.kill9();
    a.spawn();
    // The agent removed the old sockets, as kubelet does, so plugins know to register again.
    let sock = a.device_plugin_dir().join("fake.sock");
    wait_for(
        "the stale plugin socket removed",
        Duration::from_secs(10),
        || (!sock.exists()).then_some(()),
    );
    // Until the plugin is back the resource is known but has nothing allocatable.
    wait_counts(&a, RES, Some(("2", "0")));
    drop(p);
    let p = registered(&a, &["d0", "d1"], env_answer());
    let after = a.wait_running(&keep);
    assert_eq!(after["metadata"]["uid"], before["metadata"]["uid"]);
    assert_eq!(after["status"]["containerStatuses"][0]["restartCount"], 0);
    // It still holds d0: a pod asking for two is refused, one for one gets d1 without the
    // kept pod being allocated again.
    a.write(
        "two.yaml",
        &pod_yaml("two", "", &[("c", "sleep 3600", &wants(RES, 2))]),
    );
    held(&a, &a.full_name("two"), "UnexpectedAdmissionError");
    a.remove("two.yaml");
    a.write(
        "one.yaml",
        &pod_yaml("one", "", &[("c", "sleep 3600", &wants(RES, 1))]),
    );
    a.wait_running(&a.full_name("one"));
    assert_eq!(p.allocations(), vec![vec!["d1".to_string()]]);
}

/// The waiting reason and message of a pod's first container, once it has one.
#[test]
fn allocate_answers_with_bad_paths_fail_the_container_naming_the_path() {
    use tidelet_deviceplugin_api::v1beta1::{DeviceSpec, Mount};
    if !privileged() {
        return;
    }
    let a = Agent::start_with_config(None);
    let dir = a.device_plugin_dir();
    let missing = FakePlugin::serve(
        &dir,
        "example.com/missing",
        "missing.sock",
        healthy(&["m0"]),
    );
    missing.set_answer(std::sync::Arc::new(|_: &[String]| {
        Some(ContainerAllocateResponse {
            mounts: vec![Mount {
                container_path: "/opt/lib".into(),
                host_path: "/nonexistent/tidelet-e2e/lib".into(),
                read_only: true,
            }],
            ..Default::default()
        })
    }));
    missing.register().unwrap();
    let escape = FakePlugin::serve(&dir, "example.com/escape", "escape.sock", healthy(&["e0"]));
    escape.set_answer(std::sync::Arc::new(|_: &[String]| {
        Some(ContainerAllocateResponse {
            devices: vec![DeviceSpec {
                container_path: "/dev/../../etc/evil".into(),
                host_path: "/dev/null".into(),
                permissions: "rw".into(),
            }],
            ..Default::default()
        })
    }));
    escape.register().unwrap();
    wait_counts(&a, "example.com/escape", Some(("1", "1")));
    a.write(
        "missing.yaml",
        &pod_yaml(
            "missing",
            "",
            &[("c", "sleep 3600", &wants("example.com/missing", 1))],
        ),
    );
    a.write(
        "escape.yaml",
        &pod_yaml(
            "escape",
            "",
            &[("c", "sleep 3600", &wants("example.com/escape", 1))],
        ),
    );
    a.write(
        "fine.yaml",
        &pod_yaml("fine", "", &[("c", "sleep 3600", "")]),
    );
    let m = a.waiting_message(&a.full_name("missing"), "CreateContainerConfigError");
    assert!(
        m.contains("example.com/missing")
            && m.contains("\"/nonexistent/tidelet-e2e/lib\" does not exist"),
        "{m}"
    );
    let m = a.waiting_message(&a.full_name("escape"), "CreateContainerConfigError");
    assert!(
        m.contains("example.com/escape") && m.contains("/dev/../../etc/evil"),
        "{m}"
    );
    assert!(!std::path::Path::new("/etc/evil").exists());
    a.wait_running(&a.full_name("fine"));
}

/// A CDI spec directory with one valid spec (device `example.com/fake=dev0`: an env var and
/// a device node) and one invalid spec.
fn cdi_dir(root: &std::path::Path, node: &std::path::Path) -> std::path::PathBuf {
    let d = root.join("cdi");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join("fake.yaml"),
        format!(
            "cdiVersion: 0.6.0\nkind: example.com/fake\ndevices:\n- name: dev0\n  containerEdits:\n    env: [FAKE_CDI=dev0]\n    deviceNodes:\n    - path: /dev/fake0\n      hostPath: {}\n      permissions: rw\n",
            node.display()
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("broken.json"),
        "{\"cdiVersion\": \"0.6.0\", \"kind\": \"no-slash\", \"devices\": []}",
    )
    .unwrap();
    d
}

#[test]
fn cdi_devices_named_by_a_plugin_reach_the_container_and_bad_specs_are_named() {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    use tidelet_deviceplugin_api::v1beta1::CdiDevice;
    if !privileged() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    // tun's numbers: not in the default allow list, harmless to open.
    let node = tmp.path().join("fake0");
    mknod(
        &node,
        SFlag::S_IFCHR,
        Mode::from_bits_truncate(0o666),
        makedev(10, 200),
    )
    .unwrap();
    let cdi = cdi_dir(tmp.path(), &node);
    let a = Agent::start_with_config(Some(&format!(
        "devices:\n  cdiSpecDirs: [{}]\n",
        cdi.display()
    )));
    let dir = a.device_plugin_dir();
    let p = FakePlugin::serve(&dir, RES, "fake.sock", healthy(&["dev0", "dev1"]));
    p.set_answer(std::sync::Arc::new(|ids: &[String]| {
        Some(ContainerAllocateResponse {
            cdi_devices: ids
                .iter()
                .map(|i| CdiDevice {
                    name: format!("example.com/fake={i}"),
                })
                .collect(),
            ..Default::default()
        })
    }));
    p.register().unwrap();
    wait_counts(&a, RES, Some(("2", "2")));
    a.write(
        "cdi.yaml",
        &pod_yaml(
            "cdi",
            "",
            &[(
                "c",
                "echo cdi=$FAKE_CDI; ls -l /dev/fake0; (exec 3<>/dev/fake0) && echo opened; sleep 3600",
                &wants(RES, 1),
            )],
        ),
    );
    let cdi_pod = a.full_name("cdi");
    a.wait_running(&cdi_pod);
    wait_for(
        "the CDI container's output",
        Duration::from_secs(10),
        || {
            let out = a.cli(&["logs", &cdi_pod]);
            let text = String::from_utf8_lossy(&out.stdout).to_string();
            (text.contains("cdi=dev0") && text.contains("10, 200") && text.contains("opened"))
                .then_some(())
        },
    );
    // The broken spec was skipped with its file and reason in the log.
    let log = a.agent_log();
    assert!(
        log.contains("broken.json") && log.contains("CDI spec skipped"),
        "{log}"
    );
    // dev1 has no CDI spec: the container is refused, naming the device and the directories.
    a.write(
        "nocdi.yaml",
        &pod_yaml("nocdi", "", &[("c", "sleep 3600", &wants(RES, 1))]),
    );
    let m = a.waiting_message(&a.full_name("nocdi"), "CreateContainerConfigError");
    assert!(
        m.contains("example.com/fake=dev1") && m.contains(&cdi.display().to_string()),
        "{m}"
    );
}

/// A host program as CDI hooks are (nvidia-ctk's are Go binaries): at `createContainer` it
/// finds the rootfs through the bundle's `config.json` and writes a file into it; at
/// `poststop` it leaves the state it got in `$OUT`; `fail` makes it exit 3.
const CDI_HOOK: &str = r#"#!/usr/bin/python3
import json, os, sys
state = json.load(sys.stdin)
if sys.argv[1] == "fail":
    sys.stderr.write("no driver for " + state["id"] + "\n")
    sys.exit(3)
if sys.argv[1] == "createContainer":
    with open(os.path.join(state["bundle"], "config.json")) as f:
        root = os.path.join(state["bundle"], json.load(f)["root"]["path"])
    with open(os.path.join(root, "etc", "ld.so.conf.d-hook"), "w") as f:
        f.write("hook saw pid %d status %s\n" % (state["pid"], state["status"]))
if sys.argv[1] == "poststop":
    with open(os.environ["OUT"], "w") as f:
        json.dump(state, f)
"#;

#[test]
fn cdi_hooks_of_a_plugins_device_run_and_a_failing_one_fails_only_its_container() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tidelet_deviceplugin_api::v1beta1::CdiDevice;
    if !privileged() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let hook = tmp.path().join("cdi-hook");
    std::fs::write(&hook, CDI_HOOK).unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = tmp.path().join("poststop.json");
    let cdi = tmp.path().join("cdi");
    std::fs::create_dir_all(&cdi).unwrap();
    let h = |stage: &str, arg: &str| {
        format!(
            "    - hookName: {stage}\n      path: {}\n      args: [cdi-hook, {arg}]\n      env: [OUT={}]\n",
            hook.display(),
            out.display()
        )
    };
    std::fs::write(
        cdi.join("hooked.yaml"),
        format!(
            "cdiVersion: 0.5.0\nkind: example.com/hooked\ndevices:\n- name: good\n  containerEdits:\n    env: [HOOKED=good]\n    hooks:\n{}{}- name: bad\n  containerEdits:\n    hooks:\n{}",
            h("createContainer", "createContainer"),
            h("poststop", "poststop"),
            h("createContainer", "fail"),
        ),
    )
    .unwrap();
    let mut a = Agent::start_with_config(Some(&format!(
        "devices:\n  cdiSpecDirs: [{}]\n",
        cdi.display()
    )));
    let dir = a.device_plugin_dir();
    let p = FakePlugin::serve(&dir, RES, "fake.sock", healthy(&["d0", "d1"]));
    // The first Allocate names the good CDI device, every later one the bad.
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    p.set_answer(std::sync::Arc::new(move |_ids: &[String]| {
        let name = match calls.fetch_add(1, Ordering::SeqCst) {
            0 => "example.com/hooked=good",
            _ => "example.com/hooked=bad",
        };
        Some(ContainerAllocateResponse {
            cdi_devices: vec![CdiDevice { name: name.into() }],
            ..Default::default()
        })
    }));
    p.register().unwrap();
    wait_counts(&a, RES, Some(("2", "2")));
    a.write(
        "good.yaml",
        &pod_yaml(
            "good",
            "",
            &[(
                "c",
                "echo hooked=$HOOKED; cat /etc/ld.so.conf.d-hook; sleep 3600",
                &wants(RES, 1),
            )],
        ),
    );
    let good = a.full_name("good");
    a.wait_running(&good);
    let pid = a.container_pid(&good, "c");
    wait_for(
        "the hooked container's output",
        Duration::from_secs(10),
        || {
            let text = String::from_utf8_lossy(&a.cli(&["logs", &good]).stdout).to_string();
            // The hook ran before the container's process: it saw its pid, as the agent shows it
            // (the pid in the agent's namespace), with the status of a container being created.
            (text.contains("hooked=good")
                && text.contains(&format!("hook saw pid {pid} status creating")))
            .then_some(())
        },
    );

    // The bad device's hook fails: its container does not start, with the hook's words; the
    // good pod runs on.
    a.write(
        "bad.yaml",
        &pod_yaml(
            "bad",
            "  restartPolicy: Never\n",
            &[("c", "echo should-not-run", &wants(RES, 1))],
        ),
    );
    let bad = a.wait_pod(&a.full_name("bad"), "start error", |p| {
        p["status"]["containerStatuses"][0]["state"]["terminated"].is_object()
    });
    let t = &bad["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(t["reason"], "StartError", "{t}");
    let m = t["message"].as_str().unwrap_or_default();
    assert!(
        m.contains(&format!(
            "createContainer hook {}: exit status 3",
            hook.display()
        )) && m.contains("no driver for"),
        "{m}"
    );
    assert_eq!(a.container_pid(&good, "c"), pid);

    // Deleting the good pod runs its poststop hook, with the state of a stopped container.
    a.remove("good.yaml");
    let state = wait_for("the poststop hook", Duration::from_secs(30), || {
        let text = std::fs::read_to_string(&out).ok()?;
        serde_json::from_str::<serde_json::Value>(&text).ok()
    });
    assert_eq!(state["status"], "stopped", "{state}");
    assert!(
        state["id"].as_str().unwrap_or_default().ends_with("-c-0"),
        "{state}"
    );
    assert!(a.alive());
}

#[test]
fn preferred_allocation_is_asked_and_pre_start_called_before_each_start() {
    use tidelet_deviceplugin_api::v1beta1::DevicePluginOptions;
    if !privileged() {
        return;
    }
    let a = Agent::start_with_config(None);
    let dir = a.device_plugin_dir();
    let p = FakePlugin::serve_with(
        &dir,
        RES,
        "fake.sock",
        healthy(&["d0", "d1", "d2"]),
        DevicePluginOptions {
            pre_start_required: true,
            get_preferred_allocation_available: true,
        },
    );
    p.set_preferred(&["d2"]);
    p.register().unwrap();
    wait_counts(&a, RES, Some(("3", "3")));
    // Exits at once: restarted (restartPolicy Always), so PreStartContainer comes again.
    a.write(
        "pref.yaml",
        &pod_yaml("pref", "", &[("c", "sleep 1; exit 1", &wants(RES, 1))]),
    );
    let pref = a.full_name("pref");
    wait_for(
        "two PreStartContainer calls",
        Duration::from_secs(30),
        || (p.prestarts().len() >= 2).then_some(()),
    );
    assert_eq!(
        p.preferred_asked(),
        vec![vec!["d0".to_string(), "d1".to_string(), "d2".to_string()]]
    );
    // The plugin's pick was taken, once; every start was announced with it.
    assert_eq!(p.allocations(), vec![vec!["d2".to_string()]]);
    assert!(
        p.prestarts().iter().all(|ids| ids == &["d2".to_string()]),
        "{:?}",
        p.prestarts()
    );
    assert!(a.pod(&pref).is_some());
}
