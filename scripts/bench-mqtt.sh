#!/usr/bin/env bash
# tidelet's MQTT figures (issue 5), as root, with the release binary, against a real Mosquitto
# the harness starts on a free loopback port (never a system one):
#   1. a pod's state change (SIGKILL of its container) to its topic at a live subscriber
#      (REPS repetitions, 20 by default);
#   2. the idle cost on the wire of an agent with 10 pods and the default keepAlive/leasePeriod
#      (IDLE_SECS, 180 by default), beside a kubelet-style peer publishing the full node and pod
#      statuses every 10 s over one MQTT connection, both counted from `ss -tinp`;
#   3. convergence of the retained tree after a CHURN_SECS (60) broker outage with pod churn
#      (CONV_REPS, 3 by default);
#   4. FLEET (100) agents with one pod each against one Mosquitto: broker message rates, its
#      RSS, and each agent's memory with and without the mqtt section (FLEET_WINDOW_SECS, 60).
# PHASES (default 1234) picks the parts. About 14 minutes on 2 cores. Results go to stdout, as
# Markdown; docs/benchmarks.md records them. The measuring is in tests/bench/mqtt.rs. Run by
# hand, not in CI.
# Smoke run (each part once, debug build; CI runs it): cargo test -p tidelet-e2e --bench mqtt
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then echo "scripts/bench-mqtt.sh: run as root" >&2; exit 1; fi
need=()
command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v mosquitto_sub >/dev/null || need+=(mosquitto-clients)
command -v ss >/dev/null || need+=(iproute2)
command -v openssl >/dev/null || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi
export REPS=${REPS:-20} IDLE_SECS=${IDLE_SECS:-180} CHURN_SECS=${CHURN_SECS:-60}
export CONV_REPS=${CONV_REPS:-3} FLEET=${FLEET:-100} FLEET_WINDOW_SECS=${FLEET_WINDOW_SECS:-60}
export PHASES=${PHASES:-1234}
# 100 agents, their shims and mosquitto_sub clients: more than the default 1024 descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

cargo build --release --locked -p tidelet
cargo bench --locked --no-run -p tidelet-e2e --bench mqtt 2>/dev/null
echo "## tidelet MQTT benchmark ($(date -u +%Y-%m-%dT%H:%MZ))"
echo
echo "- machine: $(nproc) cores, $(free -m | awk '/Mem:/{print $2}') MiB, kernel $(uname -r); loadavg before $(cut -d' ' -f1-3 /proc/loadavg)"
echo "- broker: $(/usr/sbin/mosquitto -h 2>/dev/null | head -1)"
echo "- settings: REPS=$REPS IDLE_SECS=$IDLE_SECS CHURN_SECS=$CHURN_SECS CONV_REPS=$CONV_REPS FLEET=$FLEET FLEET_WINDOW_SECS=$FLEET_WINDOW_SECS PHASES=$PHASES"
echo
echo '```'
TIDELET_BIN=$PWD/target/release/tidelet cargo bench --locked -p tidelet-e2e --bench mqtt
echo '```'
echo
echo "- loadavg after: $(cut -d' ' -f1-3 /proc/loadavg)"
