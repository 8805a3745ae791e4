#!/usr/bin/env bash
# Scale-out run: several hub instances sharing one port (REALTIME_REUSE_PORT=true) and one
# redis-server, driven by the load tool with its clients sharded over child processes and
# source addresses (one process holds at most ~19,900 sockets here, one source address ~28k
# ephemeral ports).
#
#   bash bench/scale-out.sh                  # 6 instances, 100,000 clients, fanout 100 orgs x 100 ev/s
#   TARGET=nchan bash bench/scale-out.sh     # the same clients against nginx + Nchan, 6 workers
#
# Environment: INSTANCES (6), CLIENTS (100000), ORGS (100), RATE (100), DURATION (30 s),
# CONNECT_RATE (2500), REQUEST_TIMEOUT_MS (30000), SOURCE_ADDRS (5), BACKEND (redis; memory only makes sense with one
# instance), OUT (report file; default a temp file). Every server is started here on a free
# loopback port and stopped by pid at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${TARGET:=hub}" "${INSTANCES:=6}" "${CLIENTS:=100000}" "${ORGS:=100}" "${RATE:=100}"
: "${DURATION:=30}" "${CONNECT_RATE:=2500}" "${SOURCE_ADDRS:=5}" "${BACKEND:=redis}"
# With 2 saturated cores a client may take longer than actix's default 5 s to send its request
# head after connecting (nginx waits 60 s by default); give it the time instead of answering 408.
: "${REQUEST_TIMEOUT_MS:=30000}"
LOG_PREFIX=scale-out
# shellcheck source=bench/lib.sh
source bench/lib.sh
install_bench_deps
build_release

WORK=$(mktemp -d /tmp/scale-out.XXXXXX)
OUT=${OUT:-$WORK/report.json}
start_redis "$WORK"

PORT=$(free_port)
SERVER_PIDS=()
if [[ $TARGET == hub ]]; then
    for i in $(seq 1 "$INSTANCES"); do
        REALTIME_BACKEND=$BACKEND REDIS_URL="redis://127.0.0.1:$REDIS_PORT" \
            REALTIME_BIND="127.0.0.1:$PORT" REALTIME_REUSE_PORT=true RUST_LOG=warn REALTIME_MAX_NEW_STREAMS_PER_SECOND=0 \
            REALTIME_REQUEST_TIMEOUT_MS=$REQUEST_TIMEOUT_MS \
            "$HUB_BIN" >"$WORK/hub-$i.log" 2>&1 &
        PIDS+=("$!")
        SERVER_PIDS+=("$!")
    done
    wait_port "$PORT"
    sleep 1
else
    NCHAN_RESERVED_MEMORY=1024M NCHAN_BUFFER_LENGTH=2000 \
        start_nchan "$WORK/nginx" "$PORT" "$INSTANCES" memory reuseport
    sleep 1
fi

pid_args=()
for p in "${SERVER_PIDS[@]}"; do pid_args+=(--server-pid "$p"); done
tmpl=()
[[ $TARGET == nchan ]] && tmpl=("${NCHAN_TEMPLATE_ARGS[@]}")
log "$TARGET: $INSTANCES instance(s) on port $PORT; fanout $CLIENTS clients, $ORGS orgs, $RATE ev/s, $DURATION s"
status=0
"$LOAD" fanout --url "http://127.0.0.1:$PORT" -n "$CLIENTS" -m "$ORGS" -r "$RATE" -d "$DURATION" \
    --connect-rate "$CONNECT_RATE" --source-addrs "$SOURCE_ADDRS" --connect-timeout 30 \
    --drain-timeout 60 "${tmpl[@]}" "${pid_args[@]}" --json >"$OUT" || status=$?
python3 - "$OUT" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
d, l, s, k = r["delivery"], r["latency_ms"], r.get("server") or {}, r["connect"]
print(f"ok={r['ok']} connected={k['connected']}/{k['clients']} processes={r['config']['processes']}")
print(f"delivered={d['delivered']}/{d['expected']} missing={d['missing']} duplicates={d['duplicates']} out_of_order={d['out_of_order']} per_s={d['per_second']:.0f}")
print(f"latency ms p50={l['p50']:.1f} p90={l['p90']:.1f} p99={l['p99']:.1f} p99.9={l['p999']:.1f} max={l['max']:.1f}")
if s:
    print(f"servers rss idle={s['rss_idle_bytes']/2**20:.0f} MiB ({s['rss_per_idle_connection_bytes']:.0f} B/conn) cpu={s['cpu_s']:.1f} s over {s['cpu_window_s']:.1f} s => {s.get('cpu_s_per_million_deliveries') or 0:.2f} CPU-s per million")
PY
log "report: $OUT"
exit "$status"
