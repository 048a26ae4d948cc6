//! The real Mosquitto clients, driven for the tests: a [`Subscription`] is a background
//! `mosquitto_sub` whose output a reader thread parses into [`Message`]s, and [`run_tool`] runs
//! a `mosquitto_pub` (or any short-lived client) with a deadline.
//!
//! `mosquitto_sub` prints each message as one line `M<TAB>retain<TAB>topic<TAB>hex payload`
//! (`-F`), so payloads with spaces, newlines or binary bytes parse exactly; with `-d` it also
//! prints its protocol steps, of which the reader keeps only `received SUBACK`.
//!
//! Where the retained messages end: the broker sends a subscription's retained messages right
//! after its SUBACK, and handles a later publish only after that. So a subscription that also
//! listens on a private *sync topic* knows it has every retained message once a marker that
//! its own client published there after the SUBACK comes back ([`Subscription::take_retained`]).

use std::collections::{BTreeMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// The `-F` format of every subscription: see the module comment.
pub const FORMAT: &str = "M\\t%r\\t%t\\t%x\\n";

/// How many parsed lines a subscription holds before its reader thread (and then
/// `mosquitto_sub`, then the broker's queue for it) waits for the test to read them.
const CHANNEL_CAPACITY: usize = 8192;

/// One message as a subscriber saw it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    /// The retain flag as delivered: set for messages sent because they were retained when the
    /// subscription began; MQTT 3.1.1 clears it on live deliveries.
    pub retained: bool,
}

impl Message {
    /// The payload as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }

    /// The payload as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.payload).ok()
    }
}

/// What is known of the retained messages of a subscription started with a sync topic.
pub struct SyncMarker {
    /// The topic the marker is published on (the subscription's second filter).
    pub topic: String,
    /// The marker's payload, unique to this subscription.
    pub marker: Vec<u8>,
}

enum Line {
    Subscribed,
    Message(Message),
}

/// A running `mosquitto_sub`; killed on drop.
pub struct Subscription {
    filter: String,
    /// The sync topic, whose messages [`next`](Self::next) hides.
    sync: Option<SyncMarker>,
    /// Live messages [`take_retained`](Self::take_retained) read past, for `next`.
    pending: VecDeque<Message>,
    child: Child,
    rx: Receiver<Line>,
    stderr: PathBuf,
    _stderr_dir: tempfile::TempDir,
}

impl Subscription {
    /// Start `mosquitto_sub` (path `bin`) with `args` (connection and identity) on `filter`,
    /// and return once the broker acknowledged the subscription, or the client's error.
    /// With `sync`, it also subscribes (in the same SUBSCRIBE, after `filter`) to the sync
    /// topic: publish the marker there, then call [`take_retained`](Self::take_retained).
    pub fn start(
        bin: &std::path::Path,
        args: &[String],
        filter: &str,
        sync: Option<SyncMarker>,
        timeout: Duration,
    ) -> Result<Subscription, String> {
        let dir = tempfile::tempdir().unwrap();
        let stderr = dir.path().join("stderr");
        // mosquitto_sub flushes the messages it prints but not its debug lines, of which we
        // need the SUBACK as soon as it comes: line-buffer its stdout.
        let child = Command::new("stdbuf")
            .arg("-oL")
            .arg(bin)
            .args(args)
            .args(["-d", "-q", "1", "-F", FORMAT, "-t", filter])
            .args(sync.iter().flat_map(|s| ["-t", s.topic.as_str()]))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
        let mut sub = Subscription {
            filter: filter.to_string(),
            sync,
            pending: VecDeque::new(),
            child,
            rx: sync_channel(1).1,
            stderr,
            _stderr_dir: dir,
        };
        let stdout = sub.child.stdout.take().unwrap();
        let (tx, rx) = sync_channel(CHANNEL_CAPACITY);
        sub.rx = rx;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).split(b'\n') {
                let Ok(line) = line else { break };
                let parsed = if line.ends_with(b"received SUBACK") {
                    Some(Line::Subscribed)
                } else {
                    parse_line(&line).map(Line::Message)
                };
                if let Some(l) = parsed {
                    if tx.send(l).is_err() {
                        break;
                    }
                }
            }
        });
        match sub.rx.recv_timeout(timeout) {
            Ok(Line::Subscribed) => Ok(sub),
            Ok(Line::Message(m)) => Err(format!("message before SUBACK: {m:?}")),
            Err(RecvTimeoutError::Timeout) => Err(format!(
                "mosquitto_sub on {filter:?}: no SUBACK within {timeout:?}: {}",
                sub.stderr()
            )),
            Err(RecvTimeoutError::Disconnected) => {
                let _ = sub.child.wait();
                Err(format!(
                    "mosquitto_sub on {filter:?} exited before subscribing: {}",
                    sub.stderr()
                ))
            }
        }
    }

    /// The filter this subscription is on.
    pub fn filter(&self) -> &str {
        &self.filter
    }

    /// The next message, waiting at most `timeout`; `None` on timeout or when the client
    /// ended (see [`alive`](Self::alive)).
    pub fn next(&mut self, timeout: Duration) -> Option<Message> {
        if let Some(m) = self.pending.pop_front() {
            return Some(m);
        }
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Line::Message(m)) if self.is_sync(&m) => continue,
                Ok(Line::Message(m)) => return Some(m),
                // A second SUBACK cannot happen (one SUBSCRIBE): ignore it all the same.
                Ok(Line::Subscribed) => continue,
                Err(_) => return None,
            }
        }
    }

    fn is_sync(&self, m: &Message) -> bool {
        self.sync.as_ref().is_some_and(|s| m.topic == s.topic)
    }

    /// Every message received so far, without waiting.
    pub fn drain(&mut self) -> Vec<Message> {
        let mut v: Vec<Message> = self.pending.drain(..).collect();
        while let Ok(l) = self.rx.try_recv() {
            match l {
                Line::Message(m) if !self.is_sync(&m) => v.push(m),
                _ => {}
            }
        }
        v
    }

    /// Wait for a message for which `pred` holds; panic naming `what` and listing what came
    /// instead after `timeout`.
    pub fn wait_for(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pred: impl FnMut(&Message) -> bool,
    ) -> Message {
        let deadline = Instant::now() + timeout;
        let mut seen = Vec::new();
        while let Some(m) = self.next(deadline.saturating_duration_since(Instant::now())) {
            if pred(&m) {
                return m;
            }
            seen.push(format!("{} {:?}", m.topic, m.text()));
        }
        panic!(
            "subscription {:?}: timed out after {timeout:?} waiting for {what}; saw {} other \
             message(s): {:?}; mosquitto_sub stderr: {}",
            self.filter,
            seen.len(),
            seen.iter().rev().take(20).collect::<Vec<_>>(),
            self.stderr()
        )
    }

    /// The retained messages under the filter when the subscription began: every message
    /// with the retain flag until the sync marker comes back (the marker must have been
    /// published after [`start`](Self::start) returned). Call it first, before reading
    /// anything else. `Err` after `timeout` without the marker.
    pub fn take_retained(
        &mut self,
        timeout: Duration,
    ) -> Result<BTreeMap<String, Vec<u8>>, String> {
        let Some(sync) = &self.sync else {
            return Err("this subscription has no sync topic".into());
        };
        let (topic, marker) = (sync.topic.clone(), sync.marker.clone());
        let deadline = Instant::now() + timeout;
        let mut out = BTreeMap::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(Line::Message(m)) if m.topic == topic => {
                    if m.payload == marker {
                        return Ok(out);
                    }
                }
                Ok(Line::Message(m)) if m.retained => {
                    out.insert(m.topic, m.payload);
                }
                // A live message already: kept for `next`, after the retained state.
                Ok(Line::Message(m)) => self.pending.push_back(m),
                Ok(Line::Subscribed) => {}
                Err(e) => {
                    return Err(format!(
                        "subscription {:?}: the sync marker on {topic:?} did not come back \
                         ({e:?}) within {timeout:?}: {}",
                        self.filter,
                        self.stderr()
                    ))
                }
            }
        }
    }

    /// Whether `mosquitto_sub` still runs.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// What `mosquitto_sub` wrote on stderr (connection errors).
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Parse one `-F` line (`M`, retain, topic, hex); `None` for anything else.
pub fn parse_line(line: &[u8]) -> Option<Message> {
    let line = std::str::from_utf8(line).ok()?;
    let rest = line.strip_prefix("M\t")?;
    let (retain, rest) = rest.split_once('\t')?;
    // Topics may hold tabs in theory; the hex payload cannot, so split from the right.
    let (topic, hex) = rest.rsplit_once('\t')?;
    Some(Message {
        topic: topic.to_string(),
        payload: from_hex(hex)?,
        retained: retain == "1",
    })
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Run `bin args` with `stdin` fed to it, killed after `timeout`: `Ok(stdout)` if it exited
/// with 0, else `Err` with its status and stderr.
pub fn run_tool(
    bin: &std::path::Path,
    args: &[String],
    stdin: &[u8],
    timeout: Duration,
) -> Result<String, String> {
    let mut child = Command::new(bin)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("spawn {}: {e}", bin.display()))?;
    let mut input = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stdout.read_to_end(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = writer.join();
    let out = String::from_utf8_lossy(&out_t.join().unwrap()).into_owned();
    let err = String::from_utf8_lossy(&err_t.join().unwrap()).into_owned();
    match status {
        Some(st) if st.success() => Ok(out),
        Some(st) => Err(format!(
            "{} exited with {st}: {}",
            bin.display(),
            err.trim()
        )),
        None => Err(format!(
            "{} still running after {timeout:?}, killed: {}",
            bin.display(),
            err.trim()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_format_lines_including_odd_payloads() {
        /// A line, and the topic, payload and retain flag it parses to.
        type Case<'a> = (&'a [u8], Option<(&'a str, &'a [u8], bool)>);
        let cases: &[Case] = &[
            (
                b"M\t1\ttidelet/a/node\t7b7d",
                Some(("tidelet/a/node", b"{}", true)),
            ),
            (b"M\t0\ta/b\t", Some(("a/b", b"", false))),
            (
                b"M\t0\ta b/c\t610a00ff",
                Some(("a b/c", b"a\n\x00\xff", false)),
            ),
            (b"M\t1\ta\tb\t6162", Some(("a\tb", b"ab", true))),
            (b"Client x received SUBACK", None),
            (b"M\t1\ta\t6", None),
            (b"M\t1\ta\tzz", None),
            (b"", None),
        ];
        for (line, want) in cases {
            let got = parse_line(line);
            let want = want.map(|(t, p, r)| Message {
                topic: t.into(),
                payload: p.to_vec(),
                retained: r,
            });
            assert_eq!(got, want, "line {:?}", String::from_utf8_lossy(line));
        }
    }
}
