//! A device plugin written in Python with grpcio (from PyPI, pinned in
//! `tests/plugins/python/venv.sh`; its code generated from `api.proto` by grpc_tools.protoc at
//! start) against the real agent. grpcio sends the socket's path (percent-encoded by default)
//! as `:authority`, which h2 refuses: these tests fail without `tidelet_deviceplugin_api::AuthorityFix` in the agent's
//! registration server. They run, never skip, as root.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tidelet_e2e::*;

use crate::devices::{wait_counts, wants};
use crate::pod_yaml;

/// The venv's python (made by `tests/plugins/python/venv.sh`).
fn python() -> PathBuf {
    set_up("tests/plugins/python/venv.sh").join("bin/python")
}

/// The Python plugin, running; killed on drop, its output shown when the test fails.
struct PyPlugin {
    child: Child,
    calls: PathBuf,
    log: PathBuf,
}

impl PyPlugin {
    /// Serve `resource` on `<plugin dir>/<endpoint>` and register it; `authority`: the
    /// registration channel's `grpc.default_authority`, `None` for grpcio's own choice.
    fn start(
        a: &Agent,
        tmp: &Path,
        resource: &str,
        endpoint: &str,
        authority: Option<&str>,
    ) -> Self {
        let calls = tmp.join(format!("{endpoint}.calls"));
        let log = tmp.join(format!("{endpoint}.log"));
        let mount = tmp.join(format!("{endpoint}.mount"));
        std::fs::create_dir_all(&mount).unwrap();
        std::fs::write(mount.join("info"), format!("served-by={endpoint}\n")).unwrap();
        let f = std::fs::File::create(&log).unwrap();
        let mut cmd = Command::new(python());
        cmd.arg(workspace().join("tests/plugins/python/plugin.py"))
            .arg("--dir")
            .arg(a.device_plugin_dir())
            .args(["--resource", resource, "--endpoint", endpoint])
            .arg("--calls")
            .arg(&calls)
            .arg("--mount")
            .arg(&mount);
        if let Some(v) = authority {
            cmd.args(["--authority", v]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(f.try_clone().unwrap())
            .stderr(f)
            .spawn()
            .unwrap();
        PyPlugin { child, calls, log }
    }

    fn calls(&self) -> String {
        std::fs::read_to_string(&self.calls).unwrap_or_default()
    }

    /// Waits for the plugin's `registered` line; a refusal or an exit fails the test.
    fn wait_registered(&mut self) -> String {
        wait_for(
            "the Python plugin's registration",
            Duration::from_secs(60),
            || {
                let calls = self.calls();
                if let Some(l) = calls.lines().find(|l| l.starts_with("registered")) {
                    return Some(l.to_string());
                }
                if let Some(l) = calls.lines().find(|l| l.starts_with("register-failed")) {
                    panic!("the Python plugin's registration failed: {l}");
                }
                if let Some(st) = self.child.try_wait().unwrap() {
                    panic!(
                        "the Python plugin exited ({st}):\n{}",
                        std::fs::read_to_string(&self.log).unwrap_or_default()
                    );
                }
                None
            },
        )
    }
}

impl Drop for PyPlugin {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- Python plugin output ----\n{}\n---- its calls ----\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default(),
                self.calls()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_python_grpcio_plugin_registers_and_serves_a_pod() {
    if !privileged() {
        return;
    }
    const RES: &str = "example.com/python";
    let a = Agent::start_with_config(None);
    let tmp = tempfile::tempdir().unwrap();
    let mut p = PyPlugin::start(&a, tmp.path(), RES, "python.sock", None);
    let line = p.wait_registered();
    eprintln!("{line}");
    wait_counts(&a, RES, Some(("2", "2")));

    a.write(
        "py.yaml",
        &pod_yaml(
            "py",
            "",
            &[(
                "c",
                "echo got=$PY_DEVICES; cat /py-dev/info; sleep 3600",
                &wants(RES, 1),
            )],
        ),
    );
    let py = a.full_name("py");
    a.wait_running(&py);
    // The plugin's pick (the last device) was taken; its env var and mount reached the
    // container.
    wait_for("the container's output", Duration::from_secs(15), || {
        let out = String::from_utf8_lossy(&a.cli(&["logs", &py]).stdout).to_string();
        (out.contains("got=py1") && out.contains("served-by=python.sock")).then_some(())
    });
    let calls = p.calls();
    for want in [
        "GetPreferredAllocation available=py0,py1 size=1",
        "Allocate py1",
        "ListAndWatch",
    ] {
        assert!(
            calls.lines().any(|l| l == want),
            "{want:?} not in the calls:\n{calls}"
        );
    }
}

#[test]
fn a_python_grpcio_plugin_registers_whatever_authority_it_sends() {
    if !privileged() {
        return;
    }
    let a = Agent::start_with_config(None);
    let tmp = tempfile::tempdir().unwrap();
    let sock = a
        .device_plugin_dir()
        .join(tidelet_deviceplugin_api::KUBELET_SOCKET);
    let sock = sock.to_str().unwrap();
    // (resource, endpoint, grpc.default_authority). grpcio 1.85 sends each as it is, the empty
    // one too (checked on the wire: a literal `:authority` of length 0); without the option
    // (the other test) it sends the path percent-encoded, without its leading slash
    // (`tmp%2F...%2Fkubelet.sock`). h2 refuses all but `localhost`.
    let cases = [
        ("example.com/py-path", "py-path.sock", sock),
        ("example.com/py-localhost", "py-localhost.sock", "localhost"),
        ("example.com/py-empty", "py-empty.sock", ""),
    ];
    let mut plugins = Vec::new();
    for (res, endpoint, authority) in cases {
        let mut p = PyPlugin::start(&a, tmp.path(), res, endpoint, Some(authority));
        let line = p.wait_registered();
        eprintln!("{line}");
        wait_counts(&a, res, Some(("2", "2")));
        plugins.push(p);
    }
}
