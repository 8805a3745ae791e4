#!/usr/bin/env bash
# Memory that follows the load: the hub's RSS during and after a churn run (memory backend).
# Each round publishes 6,000 events of ~300 bytes (120 per org, 50 orgs) while 1,000 clients are
# disconnected, then reconnects all of them with Last-Event-ID (each replays ~120 events)
# and drops them. After the last round nothing is connected; once the replay window
# (REPLAY_WINDOW seconds) has passed and every supervisor retired, the process should give
# its memory back. RSS is sampled every second into $OUT/rss.csv (seconds, KiB, phase).
#
#   bash bench/memory-churn.sh                 # 4 rounds, 60-s window, ~4 minutes
#   ROUNDS=2 bash bench/memory-churn.sh
set -euo pipefail
cd "$(dirname "$0")/.."
: "${ROUNDS:=4}" "${REPLAY_WINDOW:=60}" "${CLIENTS:=1000}" "${ORGS:=50}" "${BEHIND:=120}"

LOG_PREFIX=memory-churn
# shellcheck source=bench/lib.sh
source bench/lib.sh
build_release

WORK=$(mktemp -d /tmp/memory-churn.XXXXXX)
OUT=${OUT:-$WORK}
mkdir -p "$OUT"
port=$(free_port)
REALTIME_BACKEND=memory REALTIME_BIND="127.0.0.1:$port" RUST_LOG=warn \
    REALTIME_REPLAY_WINDOW_SECONDS=$REPLAY_WINDOW "$HUB_BIN" >"$WORK/hub.log" 2>&1 &
HUB=$!
PIDS+=("$HUB")
wait_port "$port"

phase=start
echo "$phase" >"$WORK/phase"
start=$(date +%s)
(
    while kill -0 "$HUB" 2>/dev/null; do
        rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$HUB/status" 2>/dev/null || echo 0)
        echo "$(($(date +%s) - start)),$rss,$(cat "$WORK/phase")"
        sleep 1
    done
) >"$OUT/rss.csv" &
SAMPLER=$!
PIDS+=("$SAMPLER")

set_phase() { echo "$1" >"$WORK/phase"; log "$1 (RSS $(awk '/^VmRSS:/ {print $2}' /proc/$HUB/status) KiB)"; }

for round in $(seq 1 "$ROUNDS"); do
    set_phase "round-$round"
    "$LOAD" resume-storm --url "http://127.0.0.1:$port" -n "$CLIENTS" -m "$ORGS" \
        --events $((ORGS * 4)) --behind "$BEHIND" -r 5000 --publishers 4 --drain-timeout 60 \
        --publish-body '{"event":"load.tick","payload":{"seq":{seq},"sent_us":{sent_us},"pad":"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}' \
        --json >"$OUT/round-$round.json"
done
set_phase "idle"
# The window, the memory sweep (5 s), supervisors retiring (30 s idle), and some slack.
sleep $((REPLAY_WINDOW + 60))
set_phase "end"
sleep 2
kill "$SAMPLER" 2>/dev/null || true
python3 - "$OUT/rss.csv" <<'PY'
import sys
rows=[l.strip().split(',') for l in open(sys.argv[1]) if l.count(',')==2]
by_phase={}
for t,rss,phase in rows:
    by_phase.setdefault(phase,[]).append(int(rss))
print("| phase | RSS min (MiB) | RSS max (MiB) | RSS last (MiB) |")
print("|---|---|---|---|")
for phase,vals in by_phase.items():
    print(f"| {phase} | {min(vals)/1024:.1f} | {max(vals)/1024:.1f} | {vals[-1]/1024:.1f} |")
PY
log "samples in $OUT/rss.csv"
