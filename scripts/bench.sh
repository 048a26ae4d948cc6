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
# Issue 16 (what every pod pays): part (c) prints the agent's RSS with 20 pods, each pod's
# PSS (supervisor + container) and where one supervisor's pages are; part (e) the agent's RSS
# idle at start and after a churn (CHURN_ROUNDS rounds of CHURN_PODS pods created, half
# edited, all deleted). PARTS is a comma list of tidelet's parts (a, b, c, d, e; all when
# unset); with PARTS set, Podman runs only what those parts compare with: a or b -> its
# 2-container pod and 20 pods started (issue 17: with its CNI network), c -> its 20 pods'
# PSS (shared/peer/bench.sh's (d') alone), d -> issue 14's four variants. For example
#   sudo PARTS=c,e scripts/bench.sh
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
# Whether tidelet's part $1 is wanted (all are when PARTS is unset).
part() { [ -z "$PARTS" ] || [[ ",$PARTS," == *",$1,"* ]]; }

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

# Issue 17 (start-up with a pod network): Podman's 2-container pod (own network and
# hostNetwork) and its 20 pods, `podman kube play` (runc) until running, as shared/peer/bench.sh
# times its (a) and (b), PODMAN_RUNS times each. Podman 4.3 on Debian 12 gives them its CNI
# network (/etc/cni/net.d/87-podman-bridge.conflist: bridge with ipMasq, portmap, firewall,
# tuning), as tidelet's part (a) and (b) get tidelet's built-in bridge network.
podman_startup() {
  (
    cd /tmp/peer
    . ./env.sh
    down() {
      podman kube down "$1" >/dev/null 2>&1 || true
      for _ in $(seq 150); do
        pgrep -x conmon >/dev/null || pgrep -f 'podman.*container cleanup' >/dev/null || return 0
        sleep 0.1
      done
    }
    export -f down
    for y in pod2 pod2-hostnet all20; do
      f=/tmp/peer/yaml/$y.yaml
      hyperfine -N --style basic --runs "${PODMAN_RUNS:-5}" --warmup 1 \
        --prepare "bash -c 'down $f'" --cleanup "bash -c 'down $f'" \
        -n "kube-play-$y-runc" "podman --runtime runc kube play $f" \
        --export-json "/tmp/peer/startup-$y.json" >/dev/null
      jq -r '.results[] | (.times|sort) as $t |
        "\(.command)\tmedian=\(.median*10000|round/10)ms min=\(.min*10000|round/10)ms max=\(.max*10000|round/10)ms n=\($t|length)"' \
        "/tmp/peer/startup-$y.json"
      down "$f"
    done
  )
}

# Podman's 20 single-container pods (runc), as shared/peer/bench.sh's (d') measures them:
# every conmon, catatonit and container process in libpod_parent, RSS and PSS per pod.
podman_memory() {
  (
    cd /tmp/peer
    . ./env.sh
    podman kube down yaml/all20.yaml >/dev/null 2>&1 || true
    podman kube play yaml/all20.yaml >/dev/null 2>&1
    sleep 5
    local tr=0 tp=0 n=0 r p
    for pid in $(pgrep -x conmon) $(pgrep -x catatonit) $(pgrep -x sleep); do
      grep -q ':memory:/libpod_parent' "/proc/$pid/cgroup" || continue
      read -r r p < <(awk '/^Rss:/{r=$2} /^Pss:/{p=$2} END{print r, p}' "/proc/$pid/smaps_rollup")
      tr=$((tr + r)); tp=$((tp + p)); n=$((n + 1))
    done
    echo "podman 20 pods: $n processes (conmon + catatonit + sleep): per pod RSS $((tr / 20)) KiB, PSS $((tp / 20)) KiB"
    podman kube down yaml/all20.yaml >/dev/null 2>&1 || true
  )
}

if [ "${SKIP_PEER:-0}" != 1 ] && [ -f "$PEER_DIR/bench.sh" ]; then
  mkdir -p /tmp/peer
  cp "$PEER_DIR"/*.sh /tmp/peer/
  [ -f /tmp/peer/env.sh ] || bash /tmp/peer/setup.sh
  if [ -z "$PARTS" ]; then
    echo "=== Podman (podman kube play; shared/peer/bench.sh)"
    bash /tmp/peer/bench.sh
  else
    if part a || part b; then
      echo "=== Podman, issue 17: start-up with its pod network (podman kube play, runc)"
      echo "loadavg: $(cut -d' ' -f1-3 /proc/loadavg)"
      podman_startup
    fi
    if part c; then
      echo "=== Podman, 20 pods' memory (shared/peer/bench.sh's (d'))"
      podman_memory
    fi
  fi
  if part d; then
    echo "=== Podman, issue 14: the 2-container pod by confinement (podman kube play, runc)"
    echo "loadavg: $(cut -d' ' -f1-3 /proc/loadavg)"
    podman_hardening
  fi
  bash /tmp/peer/cleanup.sh
fi

echo "=== tidelet (release build; tests/bench/startup.rs)"
echo "loadavg: $(cut -d' ' -f1-3 /proc/loadavg)"
TIDELET_BIN=$PWD/target/release/tidelet RUNS=$RUNS HARDEN_RUNS=$HARDEN_RUNS \
  cargo bench --locked -p tidelet-e2e --bench startup
echo "stripped size: $(strip -o /tmp/tidelet.stripped target/release/tidelet && stat -c %s /tmp/tidelet.stripped) bytes"
echo "stripped size of tidelet-shim: $(strip -o /tmp/tidelet-shim.stripped target/release/tidelet-shim && stat -c %s /tmp/tidelet-shim.stripped) bytes"
