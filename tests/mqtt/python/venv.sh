#!/usr/bin/env bash
# Makes (or reuses) the Python venv of the MQTT interop tests (tests/e2e/mqtt_interop.rs):
# paho-mqtt, the control plane's client there (tests/mqtt/python/client.py), and amqtt, the
# second broker implementation (tests/mqtt/python/amqtt_broker.py); prints its directory.
# Every package pinned, the transitive dependencies too, installed from PyPI without
# dependency resolution and then checked (`pip check`), as tests/plugins/python/venv.sh does;
# the venv lives under target/ and is reused while the pins match. As root on a fresh Debian 12
# it installs python3-venv when venv is missing. Works with Debian 12's python3 (3.11).
set -euo pipefail
cd "$(dirname "$0")/../../.."

PAHO_VERSION=2.2.0
AMQTT_VERSION=0.12.1
VENV=target/python-mqtt/paho-$PAHO_VERSION-amqtt-$AMQTT_VERSION
# amqtt's dependencies (the broker script's CLI, its config schema, its password hashing)
# are all needed to import amqtt.broker; paho-mqtt has none.
REQUIREMENTS="paho-mqtt==$PAHO_VERSION
amqtt==$AMQTT_VERSION
annotated-doc==0.0.7
annotated-types==0.8.0
argon2-cffi==25.1.0
argon2-cffi-bindings==26.2.0
cffi==2.1.1
dacite==1.9.2
markdown-it-py==4.3.0
mdurl==0.1.2
psutil==7.2.2
pwdlib==0.4.2
pycparser==3.12
pydantic==2.14.4
pydantic_core==2.50.5
Pygments==2.21.0
PyYAML==6.0.4
rich==15.0.0
shellingham==1.5.4
six==1.17.0
transitions==0.9.3
typer==0.29.3
typing-inspection==0.4.5
typing_extensions==4.16.0
websockets==15.0.1"

. scripts/lib.sh
pinned_venv venv.sh "$VENV" "$REQUIREMENTS"
echo "$PWD/$VENV"
