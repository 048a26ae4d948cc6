//! amqtt (PyPI), a second MQTT broker implementation beside Mosquitto, for the interop tests
//! (`tests/e2e/mqtt_interop.rs`): `tests/mqtt/python/amqtt_broker.py` (amqtt's own `Broker`
//! on a YAML config written to a temp dir) on a free loopback port, from the pinned venv of
//! `tests/mqtt/python/venv.sh`. It can be stopped and started again on the same port, and is
//! killed on drop.
//!
//! Plain TCP on 127.0.0.1 and anonymous clients only. What amqtt 0.12 cannot do that the
//! Mosquitto tests use: mutual TLS with the certificate's CN as the username (its TLS listener
//! has no `use_identity_as_username`), Mosquitto's `pattern ... %u` ACL lines (its topic ACL
//! plugin has no per-user pattern), and persistence without SQLAlchemy and aiosqlite (its
//! SQLite plugin), which the venv does not pin: the wrapper keeps the retained messages across
//! a restart itself (saved on SIGTERM, loaded at start), sessions are not kept.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::broker::{free_port, spawn_listening, terminate};
use crate::{set_up, workspace};

/// How long amqtt may take to start (a Python interpreter importing pydantic) or stop.
const TIMEOUT: Duration = Duration::from_secs(20);

/// The venv's python (made by `tests/mqtt/python/venv.sh`).
pub fn python() -> PathBuf {
    set_up("tests/mqtt/python/venv.sh").join("bin/python")
}

/// A running (or stopped) amqtt broker; killed on drop.
pub struct Amqtt {
    dir: tempfile::TempDir,
    port: u16,
    child: Option<Child>,
}

impl Amqtt {
    /// Start amqtt on a free loopback port.
    pub fn new() -> Amqtt {
        let dir = tempfile::Builder::new()
            .prefix("tidelet-amqtt-")
            .tempdir()
            .unwrap();
        let mut b = Amqtt {
            dir,
            port: 0,
            child: None,
        };
        b.start();
        b
    }

    /// Start again after [`stop`](Self::stop), on the same port, with the retained messages
    /// it saved. The first start picks a free port, and another if someone takes it meanwhile.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "amqtt already running");
        let first = self.port == 0;
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if first {
                self.port = free_port();
            }
            std::fs::write(self.conf_path(), self.config()).unwrap();
            let mut cmd = Command::new(python());
            cmd.arg(workspace().join("tests/mqtt/python/amqtt_broker.py"))
                .arg("--config")
                .arg(self.conf_path())
                .arg("--retained")
                .arg(self.retained_path());
            let log = self.dir.path().join("amqtt.log");
            match spawn_listening(cmd, &log, self.port, TIMEOUT) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(why) => {
                    let in_use = self.log().contains("address already in use");
                    if !in_use || Instant::now() > deadline {
                        panic!("amqtt did not start ({why}); its log:\n{}", self.log());
                    }
                    // Another process took the port: a new one (first start) or wait for it.
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// SIGTERM (the wrapper saves the retained messages) and wait; panics after 20 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if !terminate(&mut child, TIMEOUT) {
            panic!("amqtt ignored SIGTERM for {TIMEOUT:?}:\n{}", self.log());
        }
        assert!(
            self.log().contains("saved "),
            "amqtt stopped without saving its retained messages:\n{}",
            self.log()
        );
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    /// The `mqtt:` section of a tidelet config for node `node` on this broker (add more keys
    /// below it, indented by two spaces).
    pub fn agent_config(&self, node: &str) -> String {
        format!("mqtt:\n  broker: \"{}\"\n  clientId: {node}\n", self.url())
    }

    /// The broker's temp dir (config, log, saved retained messages).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// What amqtt logged, for panic messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("amqtt.log")).unwrap_or_default()
    }

    fn conf_path(&self) -> PathBuf {
        self.dir.path().join("amqtt.yaml")
    }

    /// amqtt's config: one plain TCP listener on loopback, anonymous clients, the wrapper's
    /// plugin that loads the retained messages saved by the last stop, and no `$SYS` plugin
    /// (its periodic publishes would only add noise to what the tests count).
    fn config(&self) -> String {
        format!(
            "# generated by tests/harness/amqtt.rs\n\
             listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:{}\n\
             plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n\
             \x20 amqtt_broker.RetainedFile:\n    path: {}\n",
            self.port,
            self.retained_path().display()
        )
    }

    fn retained_path(&self) -> PathBuf {
        self.dir.path().join("retained.json")
    }
}

impl Default for Amqtt {
    fn default() -> Amqtt {
        Amqtt::new()
    }
}

impl Drop for Amqtt {
    fn drop(&mut self) {
        self.kill();
    }
}
