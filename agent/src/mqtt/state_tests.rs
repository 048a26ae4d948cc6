//! Tables of the session's transitions: each row is one input, the effects it must produce
//! (in order) and a summary of the state after it. Each table plays one story from a fresh
//! state, so a row's state is the sum of the rows above it.

use super::*;

/// Prefix `p/`, node `n1`, packets up to 1024 bytes, a 10 s lease, 4 events kept, 3
/// messages in flight.
fn fresh(hold_sweep: bool) -> SessionState {
    let settings = Settings {
        prefix: "p/".into(),
        node: "n1".into(),
        max_packet: 1024,
        lease_period: Duration::from_secs(10),
        event_buffer: 4,
        max_inflight: 3,
        hold_sweep,
    };
    SessionState::new(settings, Box::new(|n| format!("dropped {n}").into_bytes()))
}

fn set(suffix: &str, payload: &str) -> Input {
    Input::SetRetained {
        suffix: suffix.into(),
        payload: Some(payload.as_bytes().to_vec()),
        again: false,
    }
}

fn event(payload: &str) -> Input {
    Input::Event(payload.as_bytes().to_vec())
}

fn connack(nonce: &str) -> Input {
    Input::ConnAck {
        nonce: nonce.into(),
    }
}

fn sent(pkid: u16) -> Input {
    Input::PublishSent { pkid }
}

/// rumqttc's `AwaitAck(pkid)`: the next request collides with `pkid`, still in flight.
fn collides(pkid: u16) -> Input {
    Input::PublishHeld { pkid }
}

fn ack(pkid: u16) -> Input {
    Input::PubAck { pkid }
}

/// An incoming publish on the full `topic`.
fn msg(topic: &str, payload: &str) -> Input {
    Input::Message {
        topic: topic.into(),
        payload: payload.as_bytes().to_vec(),
    }
}

fn down() -> Input {
    Input::LinkDown { oversized: false }
}

fn timeout(nonce: &str) -> Input {
    Input::SyncTimeout {
        nonce: nonce.into(),
    }
}

fn tick(since_alive_secs: u64, now_secs: i64) -> Input {
    Input::LeaseTick {
        since_alive: Duration::from_secs(since_alive_secs),
        now_ns: now_secs * 1_000_000_000,
    }
}

fn strip(topic: &str) -> &str {
    topic.strip_prefix("p/").unwrap_or(topic)
}

/// `pubR node=x #1`: a publish (`R` retained) of `P node` with payload `x`, outbox token 1
/// (none for the sync marker). JSON payloads show as `{..}`, long ones as their size.
fn effect(e: &Effect) -> String {
    let text = |p: &[u8]| match p {
        [b'{', ..] => "{..}".to_string(),
        p if p.len() > 16 => format!("<{} bytes>", p.len()),
        p => String::from_utf8_lossy(p).into_owned(),
    };
    match e {
        Effect::Publish {
            topic,
            payload,
            retain,
            token,
        } => format!(
            "pub{} {}={}{}",
            if *retain { "R" } else { "" },
            strip(topic),
            text(payload),
            token.map(|t| format!(" #{t}")).unwrap_or_default()
        ),
        Effect::Subscribe(v) => {
            let v: Vec<&str> = v.iter().map(|t| strip(t)).collect();
            format!("sub {}", v.join(" "))
        }
        Effect::Unsubscribe(t) => format!("unsub {}", strip(t)),
        Effect::SyncTimer { nonce } => format!("timer {nonce}"),
        Effect::Down(Down::Desired {
            namespace,
            name,
            payload,
        }) => format!("down {namespace}/{name}={}", text(payload)),
        Effect::Down(Down::Synced { present }) => {
            let keys: Vec<&str> = present.iter().map(String::as_str).collect();
            format!("synced [{}]", keys.join(","))
        }
        Effect::Progress => "progress".into(),
        Effect::DiscardReplay => "discard".into(),
        Effect::CleanSession(c) => format!("clean {c}"),
    }
}

/// `up req=2 acks=1 out=3 collided sync held=[a/b] stalled clean-next idle`: connected,
/// requests awaiting their packet id, packet ids awaiting their PUBACK, outbox messages in
/// flight, a request held back by a collision, a sync under way, the held sweep's keys, the
/// lease not renewed, the next connection clean, everything delivered. Zeros and `false`s
/// are left out.
fn summary(st: &SessionState) -> String {
    let mut v = vec![if st.connected { "up" } else { "down" }.to_string()];
    let counts = [
        ("req", st.requested.len()),
        ("acks", st.pkids.len()),
        ("out", st.outbox.in_flight()),
    ];
    for (name, n) in counts {
        if n > 0 {
            v.push(format!("{name}={n}"));
        }
    }
    let flags = [
        ("collided", st.collided.is_some()),
        ("sync", st.sync.is_some()),
    ];
    v.extend(flags.iter().filter(|f| f.1).map(|f| f.0.to_string()));
    if let Some(h) = &st.held {
        let keys: Vec<&str> = h.iter().map(String::as_str).collect();
        v.push(format!("held=[{}]", keys.join(",")));
    }
    let flags = [
        ("stalled", st.stalled),
        ("clean-next", st.clean_next),
        ("idle", st.idle()),
    ];
    v.extend(flags.iter().filter(|f| f.1).map(|f| f.0.to_string()));
    v.join(" ")
}

type Row = (Input, &'static [&'static str], &'static str);

/// Plays `rows` in order on `st`, checking each row's effects and the state after it.
fn play(st: &mut SessionState, rows: &[Row]) {
    for (i, (input, want, state)) in rows.iter().enumerate() {
        let got: Vec<String> = st.step(input.clone()).iter().map(effect).collect();
        assert_eq!(got, *want, "row {} ({input:?}): effects", i + 1);
        assert_eq!(summary(st), *state, "row {} ({input:?}): state", i + 1);
    }
}

const SUB: &str = "sub desired/pods/+/+ pods/+/+ sync";
const UNSUB: [&str; 2] = ["unsub pods/+/+", "unsub sync"];

/// Each requested publish pairs with the next `Outgoing::Publish(pkid)` in order (the
/// marker included, which the outbox does not track); a PUBACK acknowledges what its packet
/// id carried, in any order; PUBACKs of unknown ids (the marker's, strays) change nothing;
/// the in-flight cap holds the rest back until an acknowledgement.
#[test]
fn packet_ids_pair_with_requests_in_order_and_acks_find_their_object() {
    let mut st = fresh(false);
    play(
        &mut st,
        &[
            (set("node", "x"), &[], "down"),
            (
                connack("n1"),
                &[SUB, "pub sync=n1", "timer n1", "pubR node=x #1", "progress"],
                "up req=2 out=1 sync",
            ),
            (sent(1), &[], "up req=1 out=1 sync"),
            (sent(2), &[], "up acks=1 out=1 sync"),
            (ack(1), &[], "up acks=1 out=1 sync"),
            (ack(2), &["progress"], "up sync idle"),
            (set("node", "y"), &["pubR node=y #2"], "up req=1 out=1 sync"),
            (event("e1"), &["pub events=e1 #3"], "up req=2 out=2 sync"),
            (event("e2"), &["pub events=e2 #4"], "up req=3 out=3 sync"),
            (event("e3"), &[], "up req=3 out=3 sync"),
            (sent(3), &[], "up req=2 acks=1 out=3 sync"),
            (sent(4), &[], "up req=1 acks=2 out=3 sync"),
            (sent(5), &[], "up acks=3 out=3 sync"),
            (
                ack(5),
                &["pub events=e3 #5", "progress"],
                "up req=1 acks=2 out=3 sync",
            ),
            (ack(9), &[], "up req=1 acks=2 out=3 sync"),
            (ack(3), &["progress"], "up req=1 acks=1 out=2 sync"),
            (sent(6), &[], "up acks=2 out=2 sync"),
            (ack(4), &["progress"], "up acks=1 out=1 sync"),
            (ack(6), &["progress"], "up sync idle"),
        ],
    );
}

/// A broker that acknowledges out of order makes rumqttc reuse a packet id still in flight:
/// it reports `AwaitAck`, holds that request back and sends it after the id's PUBACK. The
/// requests behind it keep their own pairing, and a link going down forgets the held one.
#[test]
fn a_packet_id_collision_holds_one_request_back_without_shifting_the_others() {
    let mut st = fresh(false);
    play(
        &mut st,
        &[
            (
                connack("n1"),
                &[SUB, "pub sync=n1", "timer n1", "progress"],
                "up req=1 sync idle",
            ),
            (sent(1), &[], "up sync idle"),
            (
                set("pods/ns/x", "x"),
                &["pubR pods/ns/x=x #1"],
                "up req=1 out=1 sync",
            ),
            (sent(2), &[], "up acks=1 out=1 sync"),
            (
                set("pods/ns/a", "a"),
                &["pubR pods/ns/a=a #2"],
                "up req=1 acks=1 out=2 sync",
            ),
            (
                set("pods/ns/b", "b"),
                &["pubR pods/ns/b=b #3"],
                "up req=2 acks=1 out=3 sync",
            ),
            (sent(3), &[], "up req=1 acks=2 out=3 sync"),
            // b would take id 2, which x still holds.
            (collides(2), &[], "up acks=2 out=3 collided sync"),
            (ack(3), &["progress"], "up acks=1 out=2 collided sync"),
            (
                set("pods/ns/c", "c"),
                &["pubR pods/ns/c=c #4"],
                "up req=1 acks=1 out=3 collided sync",
            ),
            // x is acknowledged; rumqttc then sends b as id 2, before c.
            (ack(2), &["progress"], "up req=1 out=2 collided sync"),
            (sent(2), &[], "up req=1 acks=1 out=2 sync"),
            (sent(4), &[], "up acks=2 out=2 sync"),
            (ack(2), &["progress"], "up acks=1 out=1 sync"),
            (ack(4), &["progress"], "up sync idle"),
            // Held back when the link goes down: forgotten with rumqttc's replay, and d is
            // sent again from the outbox after the reconnect.
            (
                set("pods/ns/d", "d"),
                &["pubR pods/ns/d=d #5"],
                "up req=1 out=1 sync",
            ),
            (collides(7), &[], "up out=1 collided sync"),
            (down(), &["discard", "progress"], "down"),
            (
                connack("n2"),
                &[
                    SUB,
                    "pub sync=n2",
                    "timer n2",
                    "pubR pods/ns/a=a #6",
                    "pubR pods/ns/b=b #7",
                    "pubR pods/ns/c=c #8",
                    "progress",
                ],
                "up req=4 out=3 sync",
            ),
            // The first id of the new connection is the marker's, not the forgotten d's.
            (sent(1), &[], "up req=3 out=3 sync"),
            (sent(2), &[], "up req=2 acks=1 out=3 sync"),
            (
                ack(2),
                &["pubR pods/ns/d=d #9", "progress"],
                "up req=3 out=3 sync",
            ),
        ],
    );
}

/// The sync sweep: retained desired pods go down as they come, pod topics are noted, and
/// the connection's own marker ends the sweep: the desired keys present go down, pod topics
/// without a live pod are cleared, the pod and sync topics unsubscribed. Markers of other
/// connections or prefixes, and anything after the sweep, start nothing. Without the marker
/// within the timeout, no sweep on that connection.
#[test]
fn the_sync_sweep_reports_desired_keys_and_clears_stale_pod_topics() {
    let mut st = fresh(false);
    play(
        &mut st,
        &[
            (set("pods/default/a", "a"), &[], "down"),
            (
                connack("n1"),
                &[
                    SUB,
                    "pub sync=n1",
                    "timer n1",
                    "pubR pods/default/a=a #1",
                    "progress",
                ],
                "up req=2 out=1 sync",
            ),
            (sent(1), &[], "up req=1 out=1 sync"),
            (sent(2), &[], "up acks=1 out=1 sync"),
            (ack(2), &["progress"], "up sync idle"),
            (
                msg("p/desired/pods/default/a", "manifest-a"),
                &["down default/a=manifest-a"],
                "up sync idle",
            ),
            (
                msg("p/desired/pods/default/b", "manifest-b"),
                &["down default/b=manifest-b"],
                "up sync idle",
            ),
            // Removed before the marker: not present.
            (
                msg("p/desired/pods/default/b", ""),
                &["down default/b="],
                "up sync idle",
            ),
            // Not a desired pod (three levels).
            (msg("p/desired/pods/default/a/x", "m"), &[], "up sync idle"),
            (msg("p/pods/default/a", "old-a"), &[], "up sync idle"),
            (msg("p/pods/default/stale", "old"), &[], "up sync idle"),
            (msg("p/pods/default/cleared", "old"), &[], "up sync idle"),
            (msg("p/pods/default/cleared", ""), &[], "up sync idle"),
            (msg("q/sync", "n1"), &[], "up sync idle"),
            (msg("p/sync", "n0"), &[], "up sync idle"),
            (
                msg("p/sync", "n1"),
                &[
                    UNSUB[0],
                    UNSUB[1],
                    "synced [default/a]",
                    "pubR pods/default/stale= #2",
                ],
                "up req=1 out=1",
            ),
            (msg("p/sync", "n1"), &[], "up req=1 out=1"),
            (msg("p/pods/default/late", "x"), &[], "up req=1 out=1"),
            (
                msg("p/desired/pods/default/c", "manifest-c"),
                &["down default/c=manifest-c"],
                "up req=1 out=1",
            ),
            // The tombstone was not acknowledged: sent again on the next connection.
            (down(), &["discard", "progress"], "down"),
            (
                connack("n2"),
                &[
                    SUB,
                    "pub sync=n2",
                    "timer n2",
                    "pubR pods/default/a=a #3",
                    "pubR pods/default/stale= #4",
                    "progress",
                ],
                "up req=3 out=2 sync",
            ),
            (timeout("n1"), &[], "up req=3 out=2 sync"),
            (timeout("n2"), &UNSUB, "up req=3 out=2"),
            (msg("p/pods/default/x", "x"), &[], "up req=3 out=2"),
            (msg("p/sync", "n2"), &[], "up req=3 out=2"),
            // A timer of a connection that went down before its marker came back.
            (down(), &["discard", "progress"], "down"),
            (
                connack("n3"),
                &[
                    SUB,
                    "pub sync=n3",
                    "timer n3",
                    "pubR pods/default/a=a #5",
                    "pubR pods/default/stale= #6",
                    "progress",
                ],
                "up req=3 out=2 sync",
            ),
            (down(), &["discard", "progress"], "down"),
            (timeout("n3"), &[], "down"),
        ],
    );
}

/// While the agent adopts its pods (hold_sweep), the stale pod topics every sync finds are
/// kept aside, not cleared; `PodsReady` clears those that still have no live pod (once), and
/// later syncs sweep at once.
#[test]
fn the_held_sweep_keeps_stale_topics_until_the_pods_are_ready() {
    let mut st = fresh(true);
    play(
        &mut st,
        &[
            (set("pods/default/live", "l"), &[], "down held=[]"),
            (
                connack("n1"),
                &[
                    SUB,
                    "pub sync=n1",
                    "timer n1",
                    "pubR pods/default/live=l #1",
                    "progress",
                ],
                "up req=2 out=1 sync held=[]",
            ),
            (
                msg("p/pods/default/live", "old"),
                &[],
                "up req=2 out=1 sync held=[]",
            ),
            (
                msg("p/pods/default/stale", "old"),
                &[],
                "up req=2 out=1 sync held=[]",
            ),
            (
                msg("p/sync", "n1"),
                &[UNSUB[0], UNSUB[1], "synced []"],
                "up req=2 out=1 held=[default/live,default/stale]",
            ),
            (
                down(),
                &["discard", "progress"],
                "down held=[default/live,default/stale]",
            ),
            (
                connack("n2"),
                &[
                    SUB,
                    "pub sync=n2",
                    "timer n2",
                    "pubR pods/default/live=l #2",
                    "progress",
                ],
                "up req=2 out=1 sync held=[default/live,default/stale]",
            ),
            (
                msg("p/pods/default/adopted", "old"),
                &[],
                "up req=2 out=1 sync held=[default/live,default/stale]",
            ),
            (
                msg("p/sync", "n2"),
                &[UNSUB[0], UNSUB[1], "synced []"],
                "up req=2 out=1 held=[default/adopted,default/live,default/stale]",
            ),
            // Adopted meanwhile: published, so not stale any more.
            (
                set("pods/default/adopted", "a"),
                &["pubR pods/default/adopted=a #3"],
                "up req=3 out=2 held=[default/adopted,default/live,default/stale]",
            ),
            (
                Input::PodsReady,
                &["pubR pods/default/stale= #4"],
                "up req=4 out=3",
            ),
            (Input::PodsReady, &[], "up req=4 out=3"),
            (down(), &["discard", "progress"], "down"),
            (
                connack("n3"),
                &[
                    SUB,
                    "pub sync=n3",
                    "timer n3",
                    "pubR pods/default/adopted=a #5",
                    "pubR pods/default/live=l #6",
                    "pubR pods/default/stale= #7",
                    "progress",
                ],
                "up req=4 out=3 sync",
            ),
            (
                msg("p/pods/default/stale2", "old"),
                &[],
                "up req=4 out=3 sync",
            ),
            // Not held any more: cleared at once (sent when the in-flight cap allows).
            (
                msg("p/sync", "n3"),
                &[UNSUB[0], UNSUB[1], "synced []"],
                "up req=4 out=3",
            ),
            (sent(1), &[], "up req=3 out=3"),
            (sent(2), &[], "up req=2 acks=1 out=3"),
            (
                ack(2),
                &["pubR pods/default/stale2= #8", "progress"],
                "up req=3 out=3",
            ),
        ],
    );
}

/// Pods ready while the link is down: the stale topics are cleared on the next connection.
#[test]
fn a_held_sweep_released_offline_clears_on_the_next_connection() {
    let mut st = fresh(true);
    play(
        &mut st,
        &[
            (
                connack("n1"),
                &[SUB, "pub sync=n1", "timer n1", "progress"],
                "up req=1 sync held=[] idle",
            ),
            (
                msg("p/pods/default/stale", "old"),
                &[],
                "up req=1 sync held=[] idle",
            ),
            (
                msg("p/sync", "n1"),
                &[UNSUB[0], UNSUB[1], "synced []"],
                "up req=1 held=[default/stale] idle",
            ),
            (
                down(),
                &["discard", "progress"],
                "down held=[default/stale]",
            ),
            (Input::PodsReady, &[], "down"),
            (
                connack("n2"),
                &[
                    SUB,
                    "pub sync=n2",
                    "timer n2",
                    "pubR pods/default/stale= #1",
                    "progress",
                ],
                "up req=2 out=1 sync",
            ),
        ],
    );
}

/// Every link-down forgets packet ids and requests and has rumqttc's replay discarded; every
/// CONNACK republishes the current truth once (`online` first, the latest payload of each
/// object, unacknowledged events back in front). An oversized incoming message makes the
/// next connection a clean session, once.
#[test]
fn reconnection_forgets_packet_ids_and_republishes_the_current_truth_once() {
    let mut st = fresh(false);
    play(
        &mut st,
        &[
            (set("online", "on"), &[], "down"),
            (set("node", "n"), &[], "down"),
            (event("e1"), &[], "down"),
            (
                connack("n1"),
                &[
                    SUB,
                    "pub sync=n1",
                    "timer n1",
                    "pubR online=on #1",
                    "pubR node=n #2",
                    "pub events=e1 #3",
                    "progress",
                ],
                "up req=4 out=3 sync",
            ),
            (sent(1), &[], "up req=3 out=3 sync"),
            (sent(2), &[], "up req=2 acks=1 out=3 sync"),
            (ack(2), &["progress"], "up req=2 out=2 sync"),
            (down(), &["discard", "progress"], "down"),
            // A PUBACK of the old connection finds nothing.
            (ack(2), &[], "down"),
            (set("node", "n2"), &[], "down"),
            (down(), &["discard", "progress"], "down"),
            (
                connack("n2"),
                &[
                    SUB,
                    "pub sync=n2",
                    "timer n2",
                    "pubR online=on #4",
                    "pubR node=n2 #5",
                    "pub events=e1 #6",
                    "progress",
                ],
                "up req=4 out=3 sync",
            ),
            (
                Input::LinkDown { oversized: true },
                &["discard", "clean true", "progress"],
                "down clean-next",
            ),
            (down(), &["discard", "progress"], "down clean-next"),
            (
                connack("n3"),
                &[
                    "clean false",
                    SUB,
                    "pub sync=n3",
                    "timer n3",
                    "pubR online=on #7",
                    "pubR node=n2 #8",
                    "pub events=e1 #9",
                    "progress",
                ],
                "up req=4 out=3 sync",
            ),
            (down(), &["discard", "progress"], "down"),
            (
                connack("n4"),
                &[
                    SUB,
                    "pub sync=n4",
                    "timer n4",
                    "pubR online=on #10",
                    "pubR node=n2 #11",
                    "pub events=e1 #12",
                    "progress",
                ],
                "up req=4 out=3 sync",
            ),
            // A clean stop: nothing more is sent.
            (Input::Disconnected, &["progress"], "down req=4 out=3 sync"),
            (set("node", "n3"), &[], "down req=4 out=3 sync"),
        ],
    );
}

/// A publish rumqttc's request channel refuses never gets a packet id: it leaves the
/// pairing queue (so the next id pairs with the next request); a refused marker means no
/// sweep on this connection; a refused object stays in flight until the next reconnect.
#[test]
fn a_refused_request_leaves_the_pairing_queue() {
    let mut st = fresh(false);
    play(
        &mut st,
        &[
            (set("node", "x"), &[], "down"),
            (
                connack("n1"),
                &[SUB, "pub sync=n1", "timer n1", "pubR node=x #1", "progress"],
                "up req=2 out=1 sync",
            ),
            (Input::Refused { token: None }, &[], "up req=1 out=1"),
            (sent(1), &[], "up acks=1 out=1"),
            (
                set("pods/ns/a", "a"),
                &["pubR pods/ns/a=a #2"],
                "up req=1 acks=1 out=2",
            ),
            (
                set("pods/ns/b", "b"),
                &["pubR pods/ns/b=b #3"],
                "up req=2 acks=1 out=3",
            ),
            (
                Input::Refused { token: Some(2) },
                &[],
                "up req=1 acks=1 out=3",
            ),
            (sent(2), &[], "up acks=2 out=3"),
            (ack(2), &["progress"], "up acks=1 out=2"),
            (msg("p/pods/default/stale", "old"), &[], "up acks=1 out=2"),
            (msg("p/sync", "n1"), &[], "up acks=1 out=2"),
            (down(), &["discard", "progress"], "down"),
            (
                connack("n2"),
                &[
                    SUB,
                    "pub sync=n2",
                    "timer n2",
                    "pubR node=x #4",
                    "pubR pods/ns/a=a #5",
                    "pubR pods/ns/b=b #6",
                    "progress",
                ],
                "up req=4 out=3 sync",
            ),
        ],
    );
}

/// The lease is renewed on a tick only while the agent's loop was alive within two
/// periods; payloads over `maxPacketSize` (with the topic and header) are refused, never
/// sent.
#[test]
fn the_lease_stops_with_the_agent_loop_and_oversized_payloads_are_refused() {
    let mut st = fresh(false);
    let fits_node = "n".repeat(1024 - 2 - 4 - 9);
    let over_node = "n".repeat(1024 - 2 - 4 - 9 + 1);
    let fits_event = "e".repeat(1024 - 2 - 6 - 9);
    let over_event = "e".repeat(1024 - 2 - 6 - 9 + 1);
    play(
        &mut st,
        &[
            (tick(5, 100), &[], "down"),
            (
                connack("n1"),
                &[
                    SUB,
                    "pub sync=n1",
                    "timer n1",
                    "pubR lease={..} #1",
                    "progress",
                ],
                "up req=2 out=1 sync",
            ),
            (sent(1), &[], "up req=1 out=1 sync"),
            (sent(2), &[], "up acks=1 out=1 sync"),
            (ack(2), &["progress"], "up sync idle"),
            (tick(21, 110), &[], "up sync stalled idle"),
            (tick(31, 120), &[], "up sync stalled idle"),
            (
                tick(20, 130),
                &["pubR lease={..} #2"],
                "up req=1 out=1 sync",
            ),
            (sent(3), &[], "up acks=1 out=1 sync"),
            (ack(3), &["progress"], "up sync idle"),
            (
                Input::SetRetained {
                    suffix: "node".into(),
                    payload: Some(over_node.into_bytes()),
                    again: false,
                },
                &[],
                "up sync idle",
            ),
            (
                Input::SetRetained {
                    suffix: "node".into(),
                    payload: Some(fits_node.into_bytes()),
                    again: false,
                },
                &["pubR node=<1009 bytes> #3"],
                "up req=1 out=1 sync",
            ),
            (
                Input::Event(over_event.into_bytes()),
                &[],
                "up req=1 out=1 sync",
            ),
            (
                Input::Event(fits_event.into_bytes()),
                &["pub events=<1007 bytes> #4"],
                "up req=2 out=2 sync",
            ),
        ],
    );
    let lease: serde_json::Value =
        serde_json::from_slice(st.outbox.live(topics::LEASE).expect("the lease is set")).unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], "n1");
    assert_eq!(lease["spec"]["renewTime"], "1970-01-01T00:02:10.000000Z");
}
