#!/usr/bin/env bash
# tidelet's start-up and memory figures beside Podman's, in one run on one machine (as root):
# the same busybox image and the same Pod YAML. Results go to stdout; docs/benchmarks.md
# records them. Podman's side is the project's baseline scripts (shared/peer: podman kube play
# with runc and crun, runc/crun run -d, idle RSS/PSS); set PEER_DIR to their folder, or
# SKIP_PEER=1 to measure tidelet alone.
#
# Issue 14 (what confinement costs a pod's start): tidelet's part (d) starts the 2-container
# pod hardened (the default), opted out (Unconfined, capabilities add ALL), privileged and
# with hostUsers: false, in HARDEN_RUNS interleaved rounds; Podman's same four variants run
# PODMAN_HARDEN_RUNS times each (runc). Podman's hostUsers: false needs a subordinate range
# for its user "containers": one is added to /etc/subuid and /etc/subgid for the run and
# removed after. PARTS=d measures only issue 14's figures (tidelet's part (d) and Podman's
# four variants, not the rest of the baseline).
#
# Smoke run (every part of tests/bench/startup.rs once, debug build, a few seconds):
#   cargo build -p tidelet && cargo test -p tidelet-e2e --bench startup
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "scripts/bench.sh: run as root" >&2; exit 1; fi
PEER_DIR=${PEER_DIR:-../shared/peer}
RUNS=${RUNS:-7}
HARDEN_RUNS=${HARDEN_RUNS:-31}
PODMAN_HARDEN_RUNS=${PODMAN_HARDEN_RUNS:-10}
PARTS=${PARTS:-}
export PARTS

cargo build --release --locked -p tidelet
cargo bench --locked --no-run -p tidelet-e2e --bench startup 2>/dev/null
echo "machine: $(nproc) cores, $(free -m | awk '/Mem:/{print $2}') MiB, kernel $(uname -r); loadavg $(cut -d' ' -f1-3 /proc/loadavg)"

# Podman's 2-container pod under the four confinements of issue 14, `podman kube play` (runc)
# until both containers run, as shared/peer/bench.sh times it. Podman 4.3 ignores a
# container's seccompProfile: its opted-out pod names Unconfined with the pod annotation.
podman_hardening() {
  local P=/tmp/peer y=/tmp/peer/yaml out=/tmp/peer/yaml-h14
  mkdir -p "$out"
  cp "$y/pod2.yaml" "$out/hardened.yaml"
  sed '/^ *imagePullPolicy: Never$/{p;s/imagePullPolicy: Never/securityContext: {capabilities: {add: [ALL]}}/}
       s/^metadata:$/&\n  annotations: {seccomp.security.alpha.kubernetes.io\/pod: unconfined}/' \
    "$y/pod2.yaml" >"$out/opted-out.yaml"
  sed '/^ *imagePullPolicy: Never$/{p;s/imagePullPolicy: Never/securityContext: {privileged: true}/}' \
    "$y/pod2.yaml" >"$out/privileged.yaml"
  sed 's/^spec:$/&\n  hostUsers: false/' "$y/pod2.yaml" >"$out/host-users-false.yaml"
  if ! grep -q '^containers:' /etc/subuid 2>/dev/null; then
    echo "containers:3000000:6553600" >>/etc/subuid
    echo "containers:3000000:6553600" >>/etc/subgid
    trap "sed -i '/^containers:3000000:6553600\$/d' /etc/subuid /etc/subgid" EXIT
  fi
  (
    cd $P
    . ./env.sh
    # shared/peer/bench.sh's down: until conmon and Podman's cleanup processes are gone.
    down() {
      podman kube down "$1" >/dev/null 2>&1 || true
      for _ in $(seq 150); do
        pgrep -x conmon >/dev/null || pgrep -f 'podman.*container cleanup' >/dev/null || return 0
        sleep 0.1
      done
    }
    export -f down
    for v in hardened opted-out privileged host-users-false; do
      f=$out/$v.yaml
      # What each variant really got (Seccomp, CapEff, uid_map of its containers).
      podman kube play "$f" >/dev/null
      for c in $(podman ps --filter pod=bench2 --format '{{.Names}}' | grep -v -- -infra); do
        pid=$(podman inspect -f '{{.State.Pid}}' "$c")
        echo "podman $v: $c: $(grep -E '^(Seccomp|CapEff):' /proc/$pid/status | tr -s '\t\n' '  ')uid_map $(head -1 /proc/$pid/uid_map | tr -s ' ')"
      done
      down "$f"
      if ! hyperfine -N --style basic --runs "$PODMAN_HARDEN_RUNS" --warmup 1 \
        --prepare "bash -c 'down $f'" --cleanup "bash -c 'down $f'" \
        -n "kube-play-pod2-$v-runc" "podman --runtime runc kube play $f" \
        --export-json "$out/$v.json" >/dev/null; then
        echo "podman $v: a run failed; once more, showing why:"
        down "$f"
        podman --runtime runc kube play "$f" 2>&1 | grep -v syslog | tail -5 || true
        podman pod ls
        down "$f"
        continue
      fi
      jq -r '.results[] | (.times|sort) as $t |
        "\(.command)\tmedian=\(.median*10000|round/10)ms p90=\($t[(($t|length)*9/10|ceil)-1]*10000|round/10)ms min=\(.min*10000|round/10)ms max=\(.max*10000|round/10)ms n=\($t|length)"' \
        "$out/$v.json"
    done
  )
}

if [ "${SKIP_PEER:-0}" != 1 ] && [ -f "$PEER_DIR/bench.sh" ]; then
  mkdir -p /tmp/peer
  cp "$PEER_DIR"/*.sh /tmp/peer/
  [ -f /tmp/peer/env.sh ] || bash /tmp/peer/setup.sh
  if [ "$PARTS" != d ]; then
    echo "=== Podman (podman kube play; shared/peer/bench.sh)"
    bash /tmp/peer/bench.sh
  fi
  echo "=== Podman, issue 14: the 2-container pod by confinement (podman kube play, runc)"
  echo "loadavg: $(cut -d' ' -f1-3 /proc/loadavg)"
  podman_hardening
  bash /tmp/peer/cleanup.sh
fi

echo "=== tidelet (release build; tests/bench/startup.rs)"
echo "loadavg: $(cut -d' ' -f1-3 /proc/loadavg)"
TIDELET_BIN=$PWD/target/release/tidelet RUNS=$RUNS HARDEN_RUNS=$HARDEN_RUNS \
  cargo bench --locked -p tidelet-e2e --bench startup
echo "stripped size: $(strip -o /tmp/tidelet.stripped target/release/tidelet && stat -c %s /tmp/tidelet.stripped) bytes"
