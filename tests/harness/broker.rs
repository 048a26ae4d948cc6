//! A real Mosquitto broker for the tests: `mosquitto -c <generated conf>` on a free loopback
//! port, in its own temp dir, optionally with TLS (certificates made by [`Pki`] with the
//! `openssl` CLI), mutual TLS, the shipped per-node ACL (`dist/mosquitto/acl`) and
//! persistence. It never uses a system mosquitto (Debian's package may start one on 1883).
//!
//! Tests look at the broker only through the real clients, `mosquitto_sub` and
//! `mosquitto_pub`, as a named identity ([`Identity`]): with mutual TLS the identity is a
//! client certificate whose CN is the name; with an ACL but no client certificates it is a
//! username/password from the broker's password file; without an ACL it is just a client id.

mod client;
mod conf;
mod pki;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

pub use client::{Message, Subscription};
pub use pki::Pki;

/// How long a client tool may take, and how long a broker may take to start or stop.
const TOOL_TIMEOUT: Duration = Duration::from_secs(10);

/// Users in the password file of every broker with `acl` (and without client certificates),
/// besides [`BrokerOpts::users`]: `e2e` is the harness agent's default node name.
pub const DEFAULT_USERS: &[&str] = &["node-a", "node-b", "operator", "e2e"];

/// What the broker enforces.
#[derive(Clone, Debug, Default)]
pub struct BrokerOpts {
    /// A TLS listener (`mqtts://`) with the generated server certificate.
    pub tls: bool,
    /// With `tls`: clients must present a certificate from the test CA
    /// (`require_certificate true`), and with `acl` its CN is their username.
    pub require_client_cert: bool,
    /// `allow_anonymous false` and the shipped `dist/mosquitto/acl`.
    pub acl: bool,
    /// Retained messages and sessions survive [`Broker::stop`]/[`Broker::start`].
    pub persistence: bool,
    /// More password-file users (with `acl` and without client certificates).
    pub users: Vec<String>,
    /// Run the shipped `dist/mosquitto/mosquitto.conf` itself, its `/etc` and `/var` paths
    /// and its port rewritten to this broker's (see [`BrokerOpts::shipped`]).
    pub shipped_conf: bool,
}

impl BrokerOpts {
    /// The shipped example configuration: mutual TLS, certificate CN as username, the
    /// shipped ACL, persistence.
    pub fn shipped() -> BrokerOpts {
        BrokerOpts {
            tls: true,
            require_client_cert: true,
            acl: true,
            persistence: true,
            users: vec![],
            shipped_conf: true,
        }
    }
}

/// Who a client tool connects as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Identity {
    /// The client `name`: its certificate (mutual TLS), or its username/password (ACL).
    Named(String),
    /// No certificate, no username.
    Anonymous,
    /// A certificate with CN `name` signed by a CA the broker does not trust.
    ForeignCa(String),
}

impl From<&str> for Identity {
    fn from(s: &str) -> Identity {
        Identity::Named(s.to_string())
    }
}

impl From<String> for Identity {
    fn from(s: String) -> Identity {
        Identity::Named(s)
    }
}

impl From<&Identity> for Identity {
    fn from(i: &Identity) -> Identity {
        i.clone()
    }
}

/// A running (or stopped) Mosquitto; killed on drop.
pub struct Broker {
    opts: BrokerOpts,
    dir: tempfile::TempDir,
    pki: Pki,
    port: u16,
    child: Option<Child>,
}

static CLIENT_SEQ: AtomicU64 = AtomicU64::new(0);

impl Broker {
    /// Generate the PKI and the config, and start the broker on a free port.
    pub fn new(opts: BrokerOpts) -> Broker {
        let dir = tempfile::Builder::new()
            .prefix("tidelet-mqtt-")
            .tempdir()
            .unwrap();
        let pki = Pki::generate(&dir.path().join("pki"));
        std::fs::create_dir_all(dir.path().join("data")).unwrap();
        let mut b = Broker {
            opts,
            dir,
            pki,
            port: 0,
            child: None,
        };
        if b.opts.acl && !b.cert_auth() {
            b.write_passwords();
        }
        b.start();
        b
    }

    /// Start the broker again after [`stop`](Self::stop), on the same port and data dir.
    /// The first start picks a free port, retrying if another process takes it meanwhile.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "broker already running");
        let first = self.port == 0;
        let deadline = Instant::now() + TOOL_TIMEOUT;
        loop {
            if first {
                self.port = free_port();
            }
            std::fs::write(self.conf_path(), self.config()).unwrap();
            let mut cmd = Command::new(tool("mosquitto"));
            cmd.arg("-c").arg(self.conf_path());
            let log = self.dir.path().join("mosquitto.out");
            match spawn_listening(cmd, &log, self.port, TOOL_TIMEOUT) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(why) => {
                    let in_use = self.log().contains("Address already in use");
                    if !in_use || Instant::now() > deadline {
                        panic!("mosquitto did not start ({why}); its log:\n{}", self.log());
                    }
                    // Another process holds the port: a new one (first start) or wait for it.
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    /// SIGTERM (mosquitto saves its persistence file) and wait; SIGKILL after 10 s.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if !terminate(&mut child, TOOL_TIMEOUT) {
            panic!(
                "mosquitto ignored SIGTERM for {TOOL_TIMEOUT:?}:\n{}",
                self.log()
            );
        }
    }

    /// SIGKILL: a broker crash (nothing saved since the last autosave).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP: a broker that hangs with its connections open (TCP still accepts, nothing
    /// answers), as a stuck broker or a silent network partition looks to a client.
    /// Returns once the kernel shows it stopped.
    pub fn freeze(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGSTOP);
        let pid = self.pid().unwrap();
        let stopped = poll(TOOL_TIMEOUT, || (proc_state(pid)? == 'T').then_some(()));
        assert!(
            stopped.is_some(),
            "mosquitto {pid} not stopped after SIGSTOP"
        );
    }

    /// SIGCONT after [`freeze`](Self::freeze).
    pub fn thaw(&mut self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
    }

    /// Whether the broker is stopped by [`freeze`](Self::freeze) (`/proc/<pid>/stat` state
    /// `T`).
    pub fn frozen(&self) -> bool {
        self.pid().and_then(proc_state) == Some('T')
    }

    fn signal(&mut self, sig: nix::sys::signal::Signal) {
        let child = self.child.as_ref().expect("broker not running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, sig).unwrap_or_else(|e| panic!("{sig} to mosquitto: {e}"));
    }

    /// The broker's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the broker process is running.
    pub fn running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// `mqtt://127.0.0.1:PORT`, or `mqtts://` with `tls`.
    pub fn url(&self) -> String {
        let scheme = if self.opts.tls { "mqtts" } else { "mqtt" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn opts(&self) -> &BrokerOpts {
        &self.opts
    }

    /// The broker's temp dir (config, log, `data/`, `pki/`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pki(&self) -> &Pki {
        &self.pki
    }

    /// The test CA certificate (PEM): tidelet's `caFile`.
    pub fn ca(&self) -> PathBuf {
        self.pki.ca()
    }

    /// The client certificate with CN `name` (made on first use): tidelet's `certFile`.
    pub fn client_cert(&self, name: &str) -> PathBuf {
        self.pki.client_cert(name)
    }

    /// The key of [`client_cert`](Self::client_cert): tidelet's `keyFile`.
    pub fn client_key(&self, name: &str) -> PathBuf {
        self.pki.client_key(name)
    }

    /// The password of user `name` in the broker's password file.
    pub fn password(&self, name: &str) -> String {
        format!("pw-{name}-secret")
    }

    /// A file holding [`password`](Self::password) (no newline): tidelet's `passwordFile`.
    pub fn password_file(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(format!("password-{name}"));
        std::fs::write(&p, self.password(name)).unwrap();
        p
    }

    /// The broker's log (and anything it printed), for panic messages.
    pub fn log(&self) -> String {
        let mut s =
            std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default();
        s.push_str(
            &std::fs::read_to_string(self.dir.path().join("mosquitto.out")).unwrap_or_default(),
        );
        s
    }

    /// Wait until a line of the broker's log contains `needle`, and return that line; panics
    /// with the log after `timeout`.
    pub fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        let found = poll(timeout, || {
            self.log()
                .lines()
                .find(|l| l.contains(needle))
                .map(str::to_string)
        });
        found.unwrap_or_else(|| {
            panic!(
                "no {needle:?} in the broker's log after {timeout:?}:\n{}",
                self.log()
            )
        })
    }

    /// Whether the client with id `client_id` is connected now, from the broker's log: its
    /// last "New client connected ... as <id>" is later than its last disconnection.
    pub fn client_connected(&self, client_id: &str) -> bool {
        client_connected_in(&self.log(), client_id)
    }

    /// Wait until [`client_connected`](Self::client_connected) is `want`.
    pub fn wait_client(&self, client_id: &str, want: bool, timeout: Duration) {
        let ok = poll(timeout, || {
            (self.client_connected(client_id) == want).then_some(())
        });
        if ok.is_none() {
            panic!(
                "client {client_id:?} still {} after {timeout:?}; broker log:\n{}",
                if want { "not connected" } else { "connected" },
                self.log()
            );
        }
    }

    /// The broker's own counters (`$SYS/broker/...`, refreshed every second: `sys_interval
    /// 1`), e.g. `messages/received`, `bytes/sent`, `clients/connected`: name → value. Only
    /// on a broker without `acl`: the shipped ACL gives no one `$SYS`.
    pub fn sys_stats(&self) -> BTreeMap<String, String> {
        assert!(
            !self.opts.acl,
            "the shipped ACL does not let anyone read $SYS"
        );
        self.retained("$SYS/broker/#", "operator")
            .into_iter()
            .map(|(t, v)| {
                let name = t.trim_start_matches("$SYS/broker/").to_string();
                (name, String::from_utf8_lossy(&v).into_owned())
            })
            .collect()
    }

    /// The `mqtt:` section of a tidelet config for node `node` on this broker (connection and
    /// identity only: add `topicPrefix`, `leasePeriod`... below it, indented by two spaces).
    pub fn agent_config(&self, node: &str) -> String {
        let mut s = format!("mqtt:\n  broker: \"{}\"\n  clientId: {node}\n", self.url());
        if self.opts.tls {
            writeln!(s, "  caFile: {}", self.ca().display()).unwrap();
        }
        if self.cert_auth() {
            writeln!(s, "  certFile: {}", self.client_cert(node).display()).unwrap();
            writeln!(s, "  keyFile: {}", self.client_key(node).display()).unwrap();
        } else if self.opts.acl {
            self.assert_user(node);
            writeln!(s, "  username: {node}").unwrap();
            writeln!(s, "  passwordFile: {}", self.password_file(node).display()).unwrap();
        }
        s
    }

    /// The connection flags of `tidelet fleet` as `as_client`
    /// (`--broker URL [--ca F] [--cert F --key F | --username U --password-file F]`).
    pub fn fleet_args(&self, as_client: impl Into<Identity>) -> Vec<String> {
        let mut a = vec!["--broker".to_string(), self.url()];
        if self.opts.tls {
            a.extend(["--ca".into(), path_str(&self.ca())]);
        }
        match self.credentials(&as_client.into()) {
            Credentials::Cert { cert, key } => a.extend([
                "--cert".into(),
                path_str(&cert),
                "--key".into(),
                path_str(&key),
            ]),
            Credentials::User(n) => a.extend([
                "--username".into(),
                n.clone(),
                "--password-file".into(),
                path_str(&self.password_file(&n)),
            ]),
            Credentials::None => {}
        }
        a
    }

    /// The connection and identity arguments of `mosquitto_sub`/`mosquitto_pub` as
    /// `as_client`, with a fresh client id (so a test client never takes over the session of
    /// an agent whose client id is the node name).
    pub fn client_args(&self, as_client: impl Into<Identity>) -> Vec<String> {
        let id = as_client.into();
        let label = match &id {
            Identity::Named(n) | Identity::ForeignCa(n) => n.as_str(),
            Identity::Anonymous => "anonymous",
        };
        let seq = CLIENT_SEQ.fetch_add(1, Ordering::Relaxed);
        let client_id = format!("harness-{label}-{}-{seq}", std::process::id());
        let mut a: Vec<String> = ["-h", "127.0.0.1", "-V", "mqttv311"]
            .into_iter()
            .map(String::from)
            .collect();
        a.extend(["-p".into(), self.port.to_string(), "-i".into(), client_id]);
        if self.opts.tls {
            a.extend(["--cafile".into(), path_str(&self.ca())]);
        }
        if let Identity::ForeignCa(_) = id {
            assert!(self.opts.tls, "a foreign-CA client needs a TLS broker");
        }
        match self.credentials(&id) {
            Credentials::Cert { cert, key } => a.extend([
                "--cert".into(),
                path_str(&cert),
                "--key".into(),
                path_str(&key),
            ]),
            Credentials::User(n) => {
                a.extend(["-u".into(), n.clone(), "-P".into(), self.password(&n)])
            }
            Credentials::None => {}
        }
        a
    }

    /// Publish with `mosquitto_pub` at QoS 1 (it returns once the broker has it); an empty
    /// retained payload clears the topic's retained message. `Err` if the client could not
    /// connect or publish. A publish the ACL denies still succeeds here: MQTT 3.1.1 has no
    /// way to say no, the broker drops it silently.
    pub fn try_publish(
        &self,
        topic: &str,
        payload: &[u8],
        retain: bool,
        as_client: impl Into<Identity>,
    ) -> Result<(), String> {
        let mut args = self.client_args(as_client);
        args.extend(["-q".into(), "1".into(), "-t".into(), topic.into()]);
        if retain {
            args.push("-r".into());
        }
        // `-s` reads the whole of stdin as one message, bytes as they are.
        args.push(if payload.is_empty() { "-n" } else { "-s" }.into());
        client::run_tool(&tool("mosquitto_pub"), &args, payload, TOOL_TIMEOUT).map(|_| ())
    }

    /// [`try_publish`](Self::try_publish), panicking on failure.
    pub fn publish(
        &self,
        topic: &str,
        payload: &[u8],
        retain: bool,
        as_client: impl Into<Identity>,
    ) {
        if let Err(e) = self.try_publish(topic, payload, retain, as_client) {
            panic!(
                "publish to {topic:?} failed: {e}\nbroker log:\n{}",
                self.log()
            );
        }
    }

    /// A background `mosquitto_sub` on `topic_filter`, started once the broker acknowledged
    /// it (so anything published afterwards reaches it).
    pub fn try_subscribe(
        &self,
        topic_filter: &str,
        as_client: impl Into<Identity>,
    ) -> Result<Subscription, String> {
        let args = self.client_args(as_client);
        Subscription::start(
            &tool("mosquitto_sub"),
            &args,
            topic_filter,
            None,
            TOOL_TIMEOUT,
        )
    }

    /// A subscription on `topic_filter` and the exact set of retained messages under it when
    /// it began (topic → payload); [`Subscription::next`] then gives the live changes, none
    /// missed. The end of the retained messages is found with a marker `as_client` publishes
    /// (not retained) on a private sync topic of its own tree, `tidelet/<name>/harness-sync/`
    /// (`harness-sync/` without an ACL), which the subscription hides.
    pub fn try_subscribe_with_retained(
        &self,
        topic_filter: &str,
        as_client: impl Into<Identity>,
    ) -> Result<(Subscription, BTreeMap<String, Vec<u8>>), String> {
        let id = as_client.into();
        let seq = CLIENT_SEQ.fetch_add(1, Ordering::Relaxed);
        let nonce = format!("{}-{seq}-{}", std::process::id(), crate::random_suffix());
        let topic = match &id {
            Identity::Named(n) if self.opts.acl => format!("tidelet/{n}/harness-sync/{nonce}"),
            _ => format!("harness-sync/{nonce}"),
        };
        let sync = client::SyncMarker {
            topic: topic.clone(),
            marker: nonce.clone().into_bytes(),
        };
        let args = self.client_args(&id);
        let mut sub = Subscription::start(
            &tool("mosquitto_sub"),
            &args,
            topic_filter,
            Some(sync),
            TOOL_TIMEOUT,
        )?;
        self.try_publish(&topic, nonce.as_bytes(), false, &id)?;
        let retained = sub.take_retained(TOOL_TIMEOUT)?;
        Ok((sub, retained))
    }

    /// [`try_subscribe_with_retained`](Self::try_subscribe_with_retained), panicking on
    /// failure.
    pub fn subscribe_with_retained(
        &self,
        topic_filter: &str,
        as_client: impl Into<Identity>,
    ) -> (Subscription, BTreeMap<String, Vec<u8>>) {
        self.try_subscribe_with_retained(topic_filter, as_client)
            .unwrap_or_else(|e| {
                panic!(
                    "subscribe {topic_filter:?}: {e}\nbroker log:\n{}",
                    self.log()
                )
            })
    }

    /// [`try_subscribe`](Self::try_subscribe), panicking on failure.
    pub fn subscribe(&self, topic_filter: &str, as_client: impl Into<Identity>) -> Subscription {
        self.try_subscribe(topic_filter, as_client)
            .unwrap_or_else(|e| {
                panic!(
                    "subscribe {topic_filter:?}: {e}\nbroker log:\n{}",
                    self.log()
                )
            })
    }

    /// A [`subscribe`](Self::subscribe) with a persistent session: client id `session` and
    /// `-c`, so the broker keeps the subscription and queues QoS 1 messages for it while
    /// `mosquitto_sub` is away (it reconnects by itself), and with `persistence` across a
    /// broker restart once the session is saved ([`wait_saved`](Self::wait_saved)).
    pub fn subscribe_durable(
        &self,
        topic_filter: &str,
        as_client: impl Into<Identity>,
        session: &str,
    ) -> Subscription {
        let mut args = self.client_args(as_client);
        let id = args
            .iter()
            .position(|a| a == "-i")
            .expect("client_args sets -i")
            + 1;
        args[id] = session.to_string();
        args.push("-c".into());
        let sub = Subscription::start(
            &tool("mosquitto_sub"),
            &args,
            topic_filter,
            None,
            TOOL_TIMEOUT,
        );
        sub.unwrap_or_else(|e| panic!("durable subscribe {topic_filter:?} as {session}: {e}"))
    }

    /// With `persistence`: wait until the broker has saved its database twice after this
    /// call (a save under way at the call may hold older state), so that a [`kill`](Self::kill)
    /// now keeps everything it held before the call. Panics with the log after 15 s.
    pub fn wait_saved(&self) {
        assert!(
            self.opts.persistence,
            "wait_saved needs BrokerOpts::persistence"
        );
        let db = self.dir.path().join("data/mosquitto.db");
        let mtime = || std::fs::metadata(&db).and_then(|m| m.modified()).ok();
        let mut last = Some(std::time::SystemTime::now());
        for _ in 0..2 {
            let saved = poll(Duration::from_secs(15), || {
                let m = mtime();
                (m > last).then_some(m)
            });
            last = saved
                .unwrap_or_else(|| panic!("{} not saved again:\n{}", db.display(), self.log()));
        }
    }

    /// Every retained message under `topic_filter` that `as_client` may read: topic → payload.
    pub fn try_retained(
        &self,
        topic_filter: &str,
        as_client: impl Into<Identity>,
    ) -> Result<BTreeMap<String, Vec<u8>>, String> {
        self.try_subscribe_with_retained(topic_filter, as_client)
            .map(|(_, retained)| retained)
    }

    /// [`try_retained`](Self::try_retained), panicking on failure.
    pub fn retained(
        &self,
        topic_filter: &str,
        as_client: impl Into<Identity>,
    ) -> BTreeMap<String, Vec<u8>> {
        self.try_retained(topic_filter, as_client)
            .unwrap_or_else(|e| {
                panic!(
                    "retained {topic_filter:?}: {e}\nbroker log:\n{}",
                    self.log()
                )
            })
    }

    /// Wait until the retained payload of `topic` (empty if none) satisfies `predicate`, as
    /// the `operator` (who reads all of `tidelet/#`), and return it. It subscribes once and
    /// follows live changes, so it costs one client, not one per poll. Panics after `timeout`
    /// with the last payload seen and the broker's log.
    pub fn wait_retained(
        &self,
        topic: &str,
        mut predicate: impl FnMut(&[u8]) -> bool,
        timeout: Duration,
    ) -> Vec<u8> {
        let deadline = Instant::now() + timeout;
        let (mut sub, mut retained) = self.subscribe_with_retained(topic, "operator");
        let mut current = retained.remove(topic).unwrap_or_default();
        loop {
            if predicate(&current) {
                return current;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match sub.next(left) {
                Some(m) if m.topic == topic => current = m.payload,
                Some(_) => {}
                None => panic!(
                    "timed out after {timeout:?} waiting for the retained {topic:?} to match; \
                     last payload: {:?}\nbroker log:\n{}",
                    String::from_utf8_lossy(&current),
                    self.log()
                ),
            }
        }
    }

    /// What `id` shows this broker, whichever client presents it: [`fleet_args`] and
    /// [`client_args`] only spell it differently.
    ///
    /// [`fleet_args`]: Self::fleet_args
    /// [`client_args`]: Self::client_args
    fn credentials(&self, id: &Identity) -> Credentials {
        match id {
            Identity::Named(n) if self.cert_auth() => Credentials::Cert {
                cert: self.client_cert(n),
                key: self.client_key(n),
            },
            Identity::Named(n) if self.opts.acl => {
                self.assert_user(n);
                Credentials::User(n.clone())
            }
            Identity::Named(_) | Identity::Anonymous => Credentials::None,
            Identity::ForeignCa(n) => Credentials::Cert {
                cert: self.pki.foreign_cert(n),
                key: self.pki.foreign_key(n),
            },
        }
    }

    pub(super) fn cert_auth(&self) -> bool {
        self.opts.tls && self.opts.require_client_cert
    }

    pub(super) fn users(&self) -> Vec<String> {
        let mut u: Vec<String> = DEFAULT_USERS.iter().map(|s| s.to_string()).collect();
        u.extend(self.opts.users.iter().cloned());
        u
    }

    fn assert_user(&self, name: &str) {
        assert!(
            self.users().iter().any(|u| u == name),
            "user {name:?} is not in the password file: add it to BrokerOpts::users"
        );
    }
}

/// See [`Broker::credentials`].
enum Credentials {
    /// A client certificate and its key.
    Cert { cert: PathBuf, key: PathBuf },
    /// A user of the broker's password file.
    User(String),
    /// Nothing beyond the connection itself.
    None,
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Call `f` every 20 ms until it returns `Some`, for at most `timeout`.
fn poll<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The state letter of `/proc/<pid>/stat` (after the parenthesised command name).
fn proc_state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// See [`Broker::client_connected`].
fn client_connected_in(log: &str, client_id: &str) -> bool {
    let connected = format!(" as {client_id} (");
    let client = format!("Client {client_id} ");
    let socket_error = format!("Socket error on client {client_id}, ");
    let mut state = false;
    for line in log.lines() {
        if line.contains("New client connected from") && line.contains(&connected) {
            state = true;
        } else if line.contains(&socket_error)
            || line.contains(&client)
                && (line.contains("disconnected") || line.contains("closed its connection"))
                && !line.contains("already connected")
            || line.contains(&client) && line.contains("exceeded timeout")
        {
            state = false;
        }
    }
    state
}

/// A loopback port nobody listens on right now (bound, read and released): a broker's, or
/// the address of a broker that is not there.
pub fn free_port() -> u16 {
    let l = TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// A loopback port that refuses connections for as long as the returned socket lives: bound
/// but never listening. Unlike [`free_port`], a broker another test starts meanwhile cannot
/// take it, so a client pointed at it never reaches someone else's broker.
pub fn refused_port() -> (std::os::fd::OwnedFd, u16) {
    use nix::sys::socket::{bind, getsockname, socket, AddressFamily, SockFlag, SockType};
    use nix::sys::socket::{SockaddrIn, SockaddrLike};
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrIn::new(127, 0, 0, 1, 0),
    )
    .expect("bind 127.0.0.1:0");
    let addr: SockaddrIn = getsockname(std::os::fd::AsRawFd::as_raw_fd(&fd)).expect("getsockname");
    debug_assert_eq!(addr.family(), Some(AddressFamily::Inet));
    (fd, addr.port())
}

/// The path of a Mosquitto tool: on `PATH`, or in `/usr/sbin` (`mosquitto` itself, which a
/// non-root `PATH` often lacks), or `/usr/bin`.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("{name} not found: apt-get install mosquitto mosquitto-clients"))
}

fn path_str(p: &Path) -> String {
    p.to_str().expect("utf-8 temp path").to_string()
}

/// Spawn a server (`cmd`, its stdout and stderr appended to `log`) and wait until it accepts
/// connections on loopback `port`. `Err` (the child reaped) when it exits first or is not
/// listening within `timeout`; the caller reads its log to tell a port taken meanwhile.
pub(crate) fn spawn_listening(
    mut cmd: Command,
    log: &std::path::Path,
    port: u16,
    timeout: Duration,
) -> Result<Child, String> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return Err(format!("exited with {st}"));
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(child);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("not listening on {port} after {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGTERM and wait for the child; `false` (it is SIGKILLed and reaped) if it is still there
/// after `timeout`.
pub(crate) fn terminate(child: &mut Child, timeout: Duration) -> bool {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = Instant::now() + timeout;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::client_connected_in;

    #[test]
    fn client_connected_follows_the_last_connect_or_disconnect_line() {
        let connect = "05:00:00: New client connected from 127.0.0.1:4000 as node-a (p2, c0, k60, u'node-a').";
        let connect_other =
            "05:00:00: New client connected from 127.0.0.1:4001 as node-ab (p2, c0, k60).";
        let cases: &[(&[&str], bool)] = &[
            (&[], false),
            (&[connect], true),
            (&[connect_other], false),
            (&[connect, "05:00:01: Client node-a disconnected."], false),
            (
                &[connect, "05:00:01: Client node-a closed its connection."],
                false,
            ),
            (
                &[
                    connect,
                    "05:00:01: Client node-a has exceeded timeout, disconnecting.",
                ],
                false,
            ),
            (
                &[
                    connect,
                    "05:00:01: Socket error on client node-a, disconnecting.",
                ],
                false,
            ),
            (&[connect, "05:00:01: Client node-ab disconnected."], true),
            (
                &[connect, "05:00:01: Client node-a disconnected.", connect],
                true,
            ),
            (
                &[
                    connect,
                    "05:00:01: Client node-a already connected, closing old connection.",
                    connect,
                ],
                true,
            ),
        ];
        for (lines, want) in cases {
            assert_eq!(
                client_connected_in(&lines.join("\n"), "node-a"),
                *want,
                "{lines:?}"
            );
        }
    }
}
