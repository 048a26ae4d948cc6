#!/usr/bin/env bash
# Builds (or reuses) the Go device plugin of the grpc-go interop test
# (tests/e2e/devices_go.rs, tests/plugins/go/plugin.go) and prints the binary's path.
# Offline, from Debian 12's packages only: proxy.golang.org is not reachable from CI, so no Go
# module is downloaded. As root it installs the packages that are missing.
#
# GOPATH mode (GO111MODULE=off, still supported by Go 1.19) over /usr/share/gocode, where
# Debian's golang-*-dev packages put their sources: every import resolves there with no go.mod
# and no go.sum. Module mode would need a `replace` for each of grpc-go's ten-odd dependencies,
# pointing into the same tree, and go.sum lines for modules that are not downloaded.
#
# The code is generated with protoc-gen-go 1.3 (`plugins=grpc`), not protoc-gen-go-grpc:
# Debian's grpc-go 1.33.3 is built against golang/protobuf 1.3.5, whose marshalling wants
# messages of that generator (protoc-gen-go-grpc's companion generator, APIv2's protoc-gen-go,
# is not packaged in Debian 12 anyway).
set -euo pipefail
cd "$(dirname "$0")/../../.."

. scripts/lib.sh
apt_need golang-go golang-google-grpc-dev golang-github-golang-protobuf-1-3-dev \
  protoc-gen-go-1-3 protobuf-compiler

OUT=$PWD/target/go-plugin
BIN=$OUT/tidelet-go-plugin
mkdir -p "$OUT"
# One build at a time (scripts/test.sh and a test run alone may meet).
exec 9>"$OUT/.lock"
flock 9

# The build is reused while its inputs are the same: the sources, this script and the
# versions of the packages it builds from.
stamp=$(
  {
    sha256sum tests/plugins/go/plugin.go tests/plugins/go/build.sh \
      device-plugins/api/proto/api.proto
    dpkg-query -W golang-go golang-google-grpc-dev golang-github-golang-protobuf-1-3-dev \
      protoc-gen-go-1-3 protobuf-compiler golang-golang-x-net-dev
  } | sha256sum | cut -d' ' -f1
)
if [ -x "$BIN" ] && [ "$(cat "$OUT/.stamp" 2>/dev/null)" = "$stamp" ]; then
  echo "$BIN"
  exit 0
fi
rm -f "$OUT/.stamp"

# The generated package is tidelet/v1beta1 in our own GOPATH entry, in front of Debian's.
gen=$OUT/gopath/src/tidelet/v1beta1
rm -rf "$gen"
mkdir -p "$gen"
protoc -Idevice-plugins/api/proto --go_out=plugins=grpc:"$gen" api.proto

export GO111MODULE=off GOPATH="$OUT/gopath:/usr/share/gocode" GOCACHE="$OUT/cache" \
  GOPROXY=off GOFLAGS= CGO_ENABLED=0
go build -o "$BIN.tmp" tests/plugins/go/plugin.go
mv "$BIN.tmp" "$BIN"
echo "$stamp" >"$OUT/.stamp"
echo "$BIN"
