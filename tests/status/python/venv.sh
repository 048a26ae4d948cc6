#!/usr/bin/env bash
# Makes (or reuses) the Python venv of the status-schema test (tests/e2e/status_schema.rs,
# tests/status/python/validate.py) and prints its directory: kubernetes-validate, which checks
# the Pod, Node, Event and Lease objects tidelet writes against the Kubernetes OpenAPI schemas
# it ships (strict: unknown fields are errors). Every package pinned, installed from PyPI
# without dependency resolution and then checked (scripts/lib.sh's pinned_venv, as
# tests/plugins/python/venv.sh does); the venv lives under target/ and is reused while the pins
# match. As root on a fresh Debian 12 it installs python3-venv when venv is missing.
set -euo pipefail
cd "$(dirname "$0")/../../.."

KUBERNETES_VALIDATE_VERSION=1.37.0
VENV=target/python-status/kubernetes-validate-$KUBERNETES_VALIDATE_VERSION
# kubernetes-validate 1.37.0 ships schemas up to Kubernetes 1.37, the API tidelet compiles in
# (k8s-openapi's v1_37). The rest are its dependencies, resolved once for Debian 12's
# python3 (3.11) and pinned.
REQUIREMENTS="kubernetes-validate==$KUBERNETES_VALIDATE_VERSION
attrs==26.1.0
importlib_resources==7.1.0
jsonschema==4.26.0
jsonschema-specifications==2025.9.1
packaging==26.4
PyYAML==6.0.4
referencing==0.37.0
rpds-py==2026.9.1
typing_extensions==4.16.0"

. scripts/lib.sh
pinned_venv venv.sh "$VENV" "$REQUIREMENTS"
echo "$PWD/$VENV"
