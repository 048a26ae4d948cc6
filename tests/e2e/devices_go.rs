//! A device plugin written in Go with grpc-go (Debian 12's 1.33.3, built offline by
//! `tests/plugins/go/build.sh` from `api.proto`) against the real agent: the third gRPC
//! implementation after tonic and grpcio. It dials `kubelet.sock` as most Go plugins do (the
//! socket's path as a passthrough target, a custom unix dialer), so grpc-go sends the path as
//! `:authority`, which h2 refuses: this test fails without `tidelet_deviceplugin_api::AuthorityFix`
//! in the agent's registration server. It runs, never skips, as root.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::{json, Value};
use tidelet_e2e::*;

use crate::devices::{held, wait_counts, wants};
use crate::pod_yaml;

/// The plugin binary (built by `tests/plugins/go/build.sh`).
fn go_plugin() -> PathBuf {
    set_up("tests/plugins/go/build.sh")
}

/// The Go plugin, running; killed on drop, its output shown when the test fails.
struct GoPlugin {
    child: Child,
    /// Its stdout: one JSON object a line, a call or an event.
    calls: PathBuf,
    /// Its stderr.
    log: PathBuf,
}

impl GoPlugin {
    /// Serve `resource` on `<plugin dir>/<endpoint>` and register it.
    fn start(a: &Agent, tmp: &Path, resource: &str, endpoint: &str) -> Self {
        let calls = tmp.join(format!("{endpoint}.calls"));
        let log = tmp.join(format!("{endpoint}.log"));
        let mount = tmp.join(format!("{endpoint}.mount"));
        std::fs::create_dir_all(&mount).unwrap();
        std::fs::write(mount.join("info"), format!("served-by={endpoint}\n")).unwrap();
        let child = Command::new(go_plugin())
            .arg("--dir")
            .arg(a.device_plugin_dir())
            .args(["--resource", resource, "--endpoint", endpoint])
            .arg("--mount")
            .arg(&mount)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&calls).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        GoPlugin { child, calls, log }
    }

    fn raw_calls(&self) -> String {
        std::fs::read_to_string(&self.calls).unwrap_or_default()
    }

    /// Every complete line of its stdout, parsed (a line being written is left for later).
    fn calls(&self) -> Vec<Value> {
        let raw = self.raw_calls();
        let complete = &raw[..raw.rfind('\n').map_or(0, |i| i + 1)];
        complete
            .lines()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("the Go plugin wrote {l:?}, not JSON: {e}"))
            })
            .collect()
    }

    /// The calls named `name`, without the `call` field.
    fn calls_of(&self, name: &str) -> Vec<Value> {
        self.calls()
            .into_iter()
            .filter(|c| c["call"] == name)
            .map(|mut c| {
                c.as_object_mut().unwrap().remove("call");
                c
            })
            .collect()
    }

    fn signal(&self, s: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), s).unwrap();
    }

    /// Waits for the plugin's `registered` event and returns it; a refusal or an exit fails
    /// the test.
    fn wait_registered(&mut self) -> Value {
        wait_for(
            "the Go plugin's registration",
            Duration::from_secs(60),
            || {
                let calls = self.calls();
                if let Some(c) = calls.iter().find(|c| c["event"] == "registered") {
                    return Some(c.clone());
                }
                if let Some(c) = calls.iter().find(|c| c["event"] == "register-failed") {
                    panic!("the Go plugin's registration failed: {c}");
                }
                if let Some(st) = self.child.try_wait().unwrap() {
                    panic!(
                        "the Go plugin exited ({st}):\n{}",
                        std::fs::read_to_string(&self.log).unwrap_or_default()
                    );
                }
                None
            },
        )
    }
}

impl Drop for GoPlugin {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- Go plugin stderr ----\n{}\n---- its calls ----\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default(),
                self.raw_calls()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The health `tidelet get node` shows for each device of `resource`, by ID.
fn device_health(a: &Agent, resource: &str) -> Vec<(String, String)> {
    let out = a.cli(&["get", "node"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The device table's rows: RESOURCE DEVICE HEALTH HELD-BY.
    let mut v: Vec<(String, String)> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() == 4 && f[0] == resource && f[2].ends_with("ealthy"))
        .map(|f| (f[1].to_string(), f[2].to_string()))
        .collect();
    v.sort();
    v
}

fn wait_device_health(a: &Agent, resource: &str, want: &[(&str, &str)]) {
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(d, h)| (d.to_string(), h.to_string()))
        .collect();
    wait_for(
        &format!("`tidelet get node` to list {want:?}"),
        Duration::from_secs(15),
        || (device_health(a, resource) == want).then_some(()),
    );
}

#[test]
fn a_go_grpc_plugin_registers_and_serves_pods() {
    if !privileged() {
        return;
    }
    const RES: &str = "example.com/gofoo";
    let a = Agent::start_with_config(None);
    let tmp = tempfile::tempdir().unwrap();
    let mut p = GoPlugin::start(&a, tmp.path(), RES, "gofoo.sock");
    let reg = p.wait_registered();
    eprintln!("{reg}");
    // What grpc-go put on the wire (read there by the plugin's dialer): the socket's path, the
    // :authority h2 refuses. Were it `localhost`, this test would not be testing AuthorityFix.
    let sock = a
        .device_plugin_dir()
        .join(tidelet_deviceplugin_api::KUBELET_SOCKET);
    assert_eq!(reg["authority"], sock.to_str().unwrap(), "{reg}");
    assert_eq!(reg["grpc"], "1.33.3", "{reg}");

    // ListAndWatch's devices, then a health change, reach the node's status.
    wait_counts(&a, RES, Some(("3", "3")));
    wait_device_health(
        &a,
        RES,
        &[("go0", "Healthy"), ("go1", "Healthy"), ("go2", "Healthy")],
    );
    p.signal(Signal::SIGUSR1);
    wait_counts(&a, RES, Some(("3", "2")));
    wait_device_health(
        &a,
        RES,
        &[("go0", "Unhealthy"), ("go1", "Healthy"), ("go2", "Healthy")],
    );

    // One device: the plugin's preferred pick among the healthy ones (the last: the agent
    // alone would take go1), with its env var, mount and device node in the container.
    a.write(
        "one.yaml",
        &pod_yaml(
            "one",
            "",
            &[(
                "c",
                "echo got=$GO_DEVICES; cat /go-dev/info; echo node=$(stat -c %t,%T /dev/go-null); echo x >/dev/go-null && echo wrote-ok; sleep 3600",
                &wants(RES, 1),
            )],
        ),
    );
    let one = a.full_name("one");
    a.wait_running(&one);
    wait_for("pod one's output", Duration::from_secs(15), || {
        let out = String::from_utf8_lossy(&a.cli(&["logs", &one]).stdout).to_string();
        [
            "got=go2\n",
            "served-by=gofoo.sock\n",
            "node=1,3\n",
            "wrote-ok\n",
        ]
        .iter()
        .all(|w| out.contains(w))
        .then_some(())
    });
    assert_eq!(
        p.calls_of("GetPreferredAllocation"),
        vec![
            json!({"available": ["go1", "go2"], "must_include": null, "size": 1, "picked": ["go2"]})
        ]
    );
    assert_eq!(p.calls_of("Allocate"), vec![json!({"devices": ["go2"]})]);
    assert_eq!(
        p.calls_of("PreStartContainer"),
        vec![json!({"devices": ["go2"]})]
    );

    // Two more: one healthy device is free, so the pod is held and the plugin not asked.
    a.write(
        "two.yaml",
        &pod_yaml(
            "two",
            "",
            &[("c", "echo got=$GO_DEVICES; sleep 3600", &wants(RES, 2))],
        ),
    );
    let two = a.full_name("two");
    let held_two = held(&a, &two, "UnexpectedAdmissionError");
    let msg = held_two["status"]["message"].as_str().unwrap();
    assert!(
        msg.contains(&format!(
            "requested number of devices unavailable for {RES}. Requested: 2, Available: 1"
        )),
        "{msg}"
    );
    assert_eq!(p.calls_of("Allocate").len(), 1, "{}", p.raw_calls());

    // go0 healthy again: the held pod starts on a retry, with go0 and go1.
    p.signal(Signal::SIGUSR2);
    wait_counts(&a, RES, Some(("3", "3")));
    a.wait_running(&two);
    wait_for("pod two's output", Duration::from_secs(15), || {
        let out = String::from_utf8_lossy(&a.cli(&["logs", &two]).stdout).to_string();
        out.contains("got=go0,go1\n").then_some(())
    });
    assert_eq!(
        p.calls_of("Allocate"),
        vec![
            json!({"devices": ["go2"]}),
            json!({"devices": ["go0", "go1"]})
        ]
    );
    assert_eq!(
        p.calls_of("GetPreferredAllocation")[1..],
        [
            json!({"available": ["go0", "go1"], "must_include": null, "size": 2, "picked": ["go0", "go1"]})
        ]
    );
    // One stream all along, which sent each health change.
    assert_eq!(p.calls_of("ListAndWatch").len(), 1, "{}", p.raw_calls());
    let sent: Vec<Value> = p
        .calls()
        .into_iter()
        .filter(|c| c["event"] == "ListAndWatch-sent")
        .map(|c| c["devices"]["go0"].clone())
        .collect();
    assert_eq!(
        sent,
        ["Healthy", "Unhealthy", "Healthy"],
        "{}",
        p.raw_calls()
    );
}
