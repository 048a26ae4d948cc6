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

PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null || { echo "venv.sh: $PYTHON not found" >&2; exit 1; }
if [ "$(cat "$VENV/.requirements" 2>/dev/null)" != "$REQUIREMENTS" ]; then
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  if ! "$PYTHON" -m venv "$VENV" >/dev/null 2>&1; then
    # Debian's python3 lacks ensurepip until python3-venv is installed.
    if [ "$(id -u)" != 0 ]; then
      echo "venv.sh: '$PYTHON -m venv' failed; install python3-venv (apt-get install python3-venv)" >&2
      exit 1
    fi
    rm -rf "$VENV"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq python3-venv >/dev/null 2>&1 \
      || { apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null; }
    "$PYTHON" -m venv "$VENV"
  fi
  printf '%s\n' "$REQUIREMENTS" >"$VENV/requirements.txt"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps \
    -r "$VENV/requirements.txt" >&2
  "$VENV/bin/pip" check >/dev/null \
    || { "$VENV/bin/pip" check >&2; echo "venv.sh: pinned grpcio requirements are inconsistent" >&2; exit 1; }
  printf '%s' "$REQUIREMENTS" >"$VENV/.requirements"
fi
echo "$PWD/$VENV"
