#!/usr/bin/env bash
# Makes (or reuses) the Python venv of the grpcio device-plugin interop test
# (tests/e2e/devices_python.rs, tests/plugins/python/plugin.py) and prints its directory.
# Every package pinned, installed from PyPI without dependency resolution and then checked, as
# scripts/lint-yocto.sh does for oelint-adv; the venv lives under target/ and is reused while
# the pins match. As root on a fresh Debian 12 it installs python3-venv when venv is missing.
set -euo pipefail
cd "$(dirname "$0")/../../.."

GRPC_VERSION=1.85.4
VENV=target/python-grpc/grpcio-$GRPC_VERSION
# grpcio >= 1.57 sends the unix socket's path as :authority, which h2 refuses without
# tidelet_deviceplugin_api::AuthorityFix: this is the version the test holds to.
REQUIREMENTS="grpcio==$GRPC_VERSION
grpcio-tools==$GRPC_VERSION
protobuf==7.36.2
setuptools==84.2.1
typing_extensions==4.16.0"

. scripts/lib.sh
pinned_venv venv.sh "$VENV" "$REQUIREMENTS"
echo "$PWD/$VENV"
