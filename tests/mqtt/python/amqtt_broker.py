"""amqtt (PyPI), the second MQTT broker implementation of the interop tests
(tests/e2e/mqtt_interop.rs, started by tests/harness/amqtt.rs).

It runs amqtt's own Broker class on the YAML config it is given, as amqtt's `amqtt -c FILE`
script does, and adds one thing: retained messages survive a restart. amqtt 0.12 keeps them
in memory only (its persistence plugin needs SQLAlchemy and aiosqlite, which we do not
pin), so a restarted amqtt would hold nothing and replay nothing; a broker deployed for a
fleet keeps them (Mosquitto's `persistence true`). On SIGTERM the retained messages are
written to --retained (JSON, payloads in base64) and loaded again at start by the
`RetainedFile` plugin, which the config must list with that path: on `broker_pre_start`,
after `Broker.start()` has cleared its state and before its listeners take clients. Sessions
and queued QoS 1 messages are not kept, as with Mosquitto without persistence.

Prints `ready <port>` on stdout once the listener is up.
"""

import argparse
import asyncio
import base64
import json
import logging
import os
import signal

from dataclasses import dataclass

from amqtt.broker import Broker, BrokerContext
from amqtt.plugins.base import BasePlugin
from amqtt.utils import read_yaml_config


def load(path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return []


class RetainedFile(BasePlugin[BrokerContext]):
    """Loads the retained messages saved by the last stop (see the module's doc)."""

    @dataclass
    class Config:
        path: str = ""

    async def on_broker_pre_start(self) -> None:
        items = load(self.config.path)
        for m in items:
            await self.context.retain_message(m["topic"], base64.b64decode(m["data"]), m["qos"])
        logging.info("loaded %d retained messages from %s", len(items), self.config.path)


def save(path, broker):
    items = [
        {"topic": m.topic, "data": base64.b64encode(bytes(m.data)).decode(), "qos": m.qos}
        for m in broker.retained_messages.values()
    ]
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(items, f)
    os.replace(tmp, path)
    return len(items)


async def main(args):
    broker = Broker(read_yaml_config(args.config))
    await broker.start()
    print("ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    n = save(args.retained, broker)
    logging.info("saved %d retained messages to %s", n, args.retained)
    await broker.shutdown()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--config", required=True)
    p.add_argument("--retained", required=True)
    p.add_argument("-d", "--debug", action="store_true")
    a = p.parse_args()
    logging.basicConfig(
        level=logging.DEBUG if a.debug else logging.INFO,
        format="[%(asctime)s] %(name)s :: %(levelname)s - %(message)s",
    )
    logging.getLogger("transitions").setLevel(logging.WARNING)
    asyncio.run(main(a))
