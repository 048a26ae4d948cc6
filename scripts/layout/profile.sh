#!/usr/bin/env bash
# Records which of the agent's functions run in a day of its life, into scripts/layout/hot.txt,
# the profile scripts/layout/linker orders the shipped binaries by (see its header for why).
#
# The day: an agent (an unstripped release build of this tree, under valgrind's callgrind) starts
# on an empty manifest directory, imports nothing (the image is imported before it starts), then
# runs PODS two-container pods with requests, limits, env and labels; every container of one is
# killed (a restart); half of them are edited (a new UID: teardown and a new pod) and all are
# deleted; it idles IDLE_SECS between steps (the eviction monitor, the status writer and the
# reconcile loop run as on a quiet board) and stops on SIGTERM. With MQTT=1 (default when
# mosquitto is installed) it reports to a Mosquitto broker on loopback throughout.
# Only the `run` path is profiled: the CLI's commands used to drive it run natively.
#
# Run as root, on a quiet or busy machine alike (it counts what runs, not how fast):
#   scripts/layout/profile.sh            # about 5 minutes; rewrites scripts/layout/hot.txt
# PODS is more than a B-tree node holds (11): with fewer, the agent's maps of pods never split
# or rebalance, and large sorts never run, so that code stayed unplaced and a 20-pod churn drew
# in 64 KiB of cold code for each of them (about 0.7 MiB of RSS).
# Environment: PODS (default 16), IDLE_SECS (default 5), OUT (default scripts/layout/hot.txt).
set -euo pipefail
cd "$(dirname "$0")/../.."
if [ "$(id -u)" != 0 ]; then echo "scripts/layout/profile.sh: run as root" >&2; exit 1; fi
command -v valgrind >/dev/null || { echo "scripts/layout/profile.sh: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
PODS=${PODS:-16}
IDLE_SECS=${IDLE_SECS:-5}
OUT=${OUT:-scripts/layout/hot.txt}
MQTT=${MQTT:-$(command -v mosquitto >/dev/null && echo 1 || echo 0)}

# The same code as the shipped build (same profile), with its symbols kept.
CARGO_PROFILE_RELEASE_STRIP=false cargo build --release --locked -p tidelet --target-dir target/layout
bin=$PWD/target/layout/release/tidelet
bash images/build-test-images.sh target/test-images >/dev/null

work=$(mktemp -d /tmp/tidelet-layout.XXXXXX)
cg=tidelet-layout-$$
agent=
broker=
cleanup() {
  [ -n "$agent" ] && kill -9 "$agent" 2>/dev/null || true
  [ -n "$broker" ] && kill "$broker" 2>/dev/null || true
  # Whatever the agent left (a failed run): its pods' processes, then their cgroups.
  for d in /sys/fs/cgroup/*/"$cg" /sys/fs/cgroup/"$cg"; do
    [ -d "$d" ] || continue
    find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -9 2>/dev/null || true
    sleep 0.2
    find "$d" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/root" "$work/manifests" "$work/plugins"
"$bin" --root-dir "$work/root" image import target/test-images/busybox.oci.tar >/dev/null
config=()
if [ "$MQTT" = 1 ]; then
  port=$((20000 + RANDOM % 20000))
  printf 'listener %s 127.0.0.1\nallow_anonymous true\n' "$port" >"$work/mosquitto.conf"
  mosquitto -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
  broker=$!
  printf 'mqtt:\n  broker: "mqtt://127.0.0.1:%s"\n' "$port" >"$work/config.yaml"
  config=(--config "$work/config.yaml")
fi

cli() { "$bin" --root-dir "$work/root" "$@"; }
# GLIBC_TUNABLES as the agent sets it for itself (agent/src/malloc.rs): with it already set the
# agent does not execute itself again, which under valgrind would run valgrind's own binary.
GLIBC_TUNABLES=glibc.malloc.tcache_count=0 TIDELET_LOG=info valgrind --tool=callgrind --demangle=no --callgrind-out-file=target/layout/callgrind.out \
  "$bin" --root-dir "$work/root" run --static-pod-path "$work/manifests" --node-name layout \
  --cgroup-root "$cg" --device-plugin-dir "$work/plugins" "${config[@]}" >"$work/agent.log" 2>&1 &
agent=$!
# Waits up to $2 seconds for `$1` (a shell condition) to hold.
wait_until() {
  local i
  for ((i = 0; i < $2 * 5; i++)); do
    if eval "$1"; then return 0; fi
    kill -0 "$agent" 2>/dev/null || { echo "the agent exited:"; tail -30 "$work/agent.log"; exit 1; } >&2
    sleep 0.2
  done
  echo "scripts/layout/profile.sh: timed out waiting for: $1" >&2
  tail -30 "$work/agent.log" >&2
  exit 1
}
running() { [ "$(cli get pods 2>/dev/null | grep -c ' Running ')" = "$1" ]; }
count() { [ "$(cli get pods 2>/dev/null | tail -n +2 | grep -c .)" = "$1" ]; }
pod() {
  cat <<YAML
apiVersion: v1
kind: Pod
metadata:
  name: p$1
  labels: {app: p$1, version: "$2"}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: sleeper
    image: localhost/busybox:1.35
    imagePullPolicy: Never
    command: ["sleep", "3600"]
    env: [{name: VERSION, value: "$2"}]
    resources:
      requests: {memory: "16Mi", cpu: "50m"}
      limits:   {memory: "64Mi", cpu: "100m"}
  - name: echoer
    image: localhost/busybox:1.35
    imagePullPolicy: Never
    command: ["sh", "-c", "echo hello; sleep 3600"]
YAML
}
wait_until 'cli get pods >/dev/null 2>&1' 300
echo "== agent up under callgrind; $PODS pods"
sleep "$IDLE_SECS"
for i in $(seq 1 "$PODS"); do pod "$i" 1 >"$work/manifests/p$i.yaml"; done
wait_until "running $PODS" 600
sleep "$IDLE_SECS"
echo "== a container of p1 killed (its sleep, from inside), restarted; logs read"
cli exec p1-layout -c echoer -- kill -9 -1 || true
sleep "$IDLE_SECS"
cli logs p1-layout -c echoer >/dev/null
wait_until "running $PODS" 600
echo "== half edited"
for i in $(seq 1 2 "$PODS"); do pod "$i" 2 >"$work/manifests/p$i.yaml.tmp" && mv "$work/manifests/p$i.yaml.tmp" "$work/manifests/p$i.yaml"; done
sleep "$IDLE_SECS"
wait_until "running $PODS" 600
cli describe pod p1-layout >/dev/null
echo "== all deleted"
rm -f "$work/manifests"/*.yaml
wait_until "count 0" 600
sleep "$IDLE_SECS"
kill -TERM "$agent"
wait "$agent" || true
agent=

# The functions of the tidelet binary that ran, hottest (most instructions) first, by their
# key (scripts/layout/linker.py: the demangled name without what differs between builds).
python3 - target/layout/callgrind.out "$bin" "$OUT" <<'PY'
import re, sys, collections
path, binary, out = sys.argv[1:]
names, cost = {}, collections.Counter()
ob = fn = None
obs = {}
spec = re.compile(r'^(c?ob|c?fn|fl|fi|fe|cfi|cfl)=\((\d+)\)(?: (.*))?$')
in_calls = False
npos = 1  # position columns before the cost ("positions: line" unless told otherwise)
for line in open(path, errors='replace'):
    if line.startswith('positions:'):
        npos = len(line.split()) - 1
        continue
    m = spec.match(line.rstrip('\n'))
    if m:
        kind, ident, name = m.groups()
        table = obs if kind.endswith('ob') else names if kind.endswith('fn') else None
        if table is not None and name:
            table[ident] = name
        if kind == 'ob':
            ob = obs.get(ident)
        elif kind == 'fn':
            fn = names.get(ident)
        continue
    if line.startswith('calls='):
        in_calls = True
        continue
    if line[:1] in '0123456789+-*':
        if in_calls:  # the inclusive cost of a call: not this function's own
            in_calls = False
            continue
        if ob == binary and fn:
            parts = line.split()
            if len(parts) > npos:
                cost[fn] += int(parts[npos])
import importlib.machinery, importlib.util, os
loader = importlib.machinery.SourceFileLoader("linker", os.path.join("scripts", "layout", "linker.py"))
linker = importlib.util.module_from_spec(importlib.util.spec_from_loader("linker", loader))
loader.exec_module(linker)
ranked = [name for name, _ in cost.most_common()]
keys = {}
for k in linker.keys(ranked):
    keys.setdefault(k, None)
with open(out, 'w') as f:
    f.write('# The agent\'s functions that run in a day of its life (scripts/layout/profile.sh),\n')
    f.write('# hottest first, by the keys of scripts/layout/linker.py (demangled names).\n')
    for k in keys:
        f.write(k + '\n')
print(f"{len(cost)} functions ran, {len(keys)} keys written to {out}")
PY
# cargo does not know the profile is an input of the agent's link: make the next build link it.
touch agent/src/main.rs
