"""The control plane's side of the MQTT interop tests (tests/e2e/mqtt_interop.rs): a paho-mqtt
client (MQTT 3.1.1) driven over stdin, one JSON command a line, reporting on stdout, one JSON
object a line, everything it sees.

Commands:
  {"op": "publish", "id": N, "topic": T, "payload": S, "retain": B}   QoS 1; `published` once the
                                                                      broker acknowledged it
  {"op": "retained", "id": N, "filter": F}   a second, short-lived connection that subscribes
                                             to F and reports the retained messages it got
                                             before its own marker came back
  {"op": "quit"}

Events:
  {"event": "connected", "session_present": B}    (again after each reconnection)
  {"event": "subscribed", "filters": [...]}
  {"event": "message", "topic": T, "payload": S, "retained": B}
  {"event": "published", "id": N}
  {"event": "retained", "id": N, "topics": {T: S}, "duplicates": [T...], "outside": [T...]}
  {"event": "disconnected", "reason": S}

Payloads are text (the agent's are JSON, ours YAML); an empty payload is a deletion.
"""

import argparse
import json
import queue
import sys
import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

OUT = threading.Lock()


def emit(**kv):
    with OUT:
        sys.stdout.write(json.dumps(kv) + "\n")
        sys.stdout.flush()


def client(client_id, clean_session=True):
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        clean_session=clean_session,
        protocol=mqtt.MQTTv311,
    )
    # The broker restarts in the tests: come back quickly, as the agent does.
    c.reconnect_delay_set(min_delay=1, max_delay=1)
    return c


def retained(args, req_id, topic_filter, timeout=10.0):
    """The retained messages under `topic_filter`, on a fresh connection: they come before a
    marker this connection publishes after subscribing. Reports, as seen (not hidden), what
    the broker sent twice and what it sent outside the filter."""
    marker_topic = f"interop-sync/{uuid.uuid4().hex}"
    marker = uuid.uuid4().hex
    got = {}
    duplicates = []
    outside = []
    done = threading.Event()
    subscribed = threading.Event()

    c = client(f"interop-snap-{uuid.uuid4().hex[:8]}")

    def on_connect(cl, _u, _f, rc, _p):
        if rc == 0:
            cl.subscribe([(topic_filter, 1), (marker_topic, 1)])

    def on_subscribe(cl, _u, _mid, _rc, _p):
        subscribed.set()

    def on_message(_cl, _u, m):
        if m.topic == marker_topic:
            if m.payload.decode() == marker:
                done.set()
            return
        if not m.retain:
            return
        if not mqtt.topic_matches_sub(topic_filter, m.topic):
            outside.append(m.topic)
            return
        if m.topic in got:
            duplicates.append(m.topic)
        got[m.topic] = m.payload.decode("utf-8", "replace")

    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    c.on_message = on_message
    c.connect(args.host, args.port, keepalive=30)
    c.loop_start()
    try:
        if not subscribed.wait(timeout):
            emit(event="error", id=req_id, error=f"no SUBACK for {topic_filter} within {timeout}s")
            return
        c.publish(marker_topic, marker, qos=1)
        if not done.wait(timeout):
            emit(event="error", id=req_id, error=f"marker not back within {timeout}s")
            return
        # An empty retained message is not held by a broker: drop any that came anyway.
        topics = {t: p for t, p in got.items() if p}
        emit(event="retained", id=req_id, topics=topics, duplicates=duplicates, outside=outside)
    finally:
        c.disconnect()
        c.loop_stop()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--client-id", default="operator")
    p.add_argument("--subscribe", action="append", default=[])
    a = p.parse_args()

    pending = {}  # paho mid -> our request id
    acked = set()  # mids acknowledged before we recorded them
    lock = threading.Lock()
    c = client(a.client_id)

    def on_connect(cl, _u, flags, rc, _p):
        if rc != 0:
            emit(event="refused", reason=str(rc))
            return
        emit(event="connected", session_present=bool(flags.session_present))
        if a.subscribe:
            # Subscribed again on every connection: a clean session keeps nothing.
            cl.subscribe([(f, 1) for f in a.subscribe])

    def on_subscribe(_cl, _u, _mid, _rc, _p):
        emit(event="subscribed", filters=a.subscribe)

    def on_message(_cl, _u, m):
        emit(
            event="message",
            topic=m.topic,
            payload=m.payload.decode("utf-8", "replace"),
            retained=bool(m.retain),
        )

    def on_publish(_cl, _u, mid, _rc, _p):
        with lock:
            req = pending.pop(mid, None)
            if req is None:
                acked.add(mid)
        if req is not None:
            emit(event="published", id=req)

    def on_disconnect(_cl, _u, _f, rc, _p):
        emit(event="disconnected", reason=str(rc))

    c.on_connect = on_connect
    c.on_subscribe = on_subscribe
    c.on_message = on_message
    c.on_publish = on_publish
    c.on_disconnect = on_disconnect
    c.connect(a.host, a.port, keepalive=30)
    c.loop_start()

    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "quit":
            break
        if op == "publish":
            info = c.publish(cmd["topic"], cmd["payload"].encode(), qos=1, retain=cmd["retain"])
            with lock:
                if info.mid in acked:
                    acked.discard(info.mid)
                    done = True
                else:
                    pending[info.mid] = cmd["id"]
                    done = False
            if done:
                emit(event="published", id=cmd["id"])
        elif op == "retained":
            threading.Thread(
                target=retained, args=(a, cmd["id"], cmd["filter"]), daemon=True
            ).start()
        else:
            emit(event="error", error=f"unknown op {op!r}")
    c.disconnect()
    c.loop_stop()


if __name__ == "__main__":
    main()
