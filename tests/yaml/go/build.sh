#!/usr/bin/env bash
# Builds (or reuses) yaml2json (tests/yaml/go/yaml2json.go): kubelet's reading of YAML,
# sigs.k8s.io/yaml over go-yaml v2, from Debian 12's packages, offline, in GOPATH mode over
# /usr/share/gocode as tests/plugins/go/build.sh explains. Prints the binary's path.
set -euo pipefail
cd "$(dirname "$0")/../../.."

. scripts/lib.sh
apt_need golang-go golang-k8s-sigs-yaml-dev golang-gopkg-yaml.v2-dev

OUT=$PWD/target/go-yaml2json
BIN=$OUT/yaml2json
mkdir -p "$OUT"
exec 9>"$OUT/.lock"
flock 9
stamp=$(
  {
    sha256sum tests/yaml/go/yaml2json.go tests/yaml/go/build.sh
    dpkg-query -W golang-go golang-k8s-sigs-yaml-dev golang-gopkg-yaml.v2-dev
  } | sha256sum | cut -d' ' -f1
)
if [ -x "$BIN" ] && [ "$(cat "$OUT/.stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "$BIN"
  exit 0
fi
rm -f "$OUT/.stamp"
export GO111MODULE=off GOPATH=/usr/share/gocode GOCACHE="$OUT/cache" GOPROXY=off GOFLAGS= \
  CGO_ENABLED=0
go build -o "$BIN.tmp" tests/yaml/go/yaml2json.go
mv "$BIN.tmp" "$BIN"
echo "$stamp" >"$OUT/.stamp"
echo "$BIN"
