#!/usr/bin/env bash
# Rolling restart: INSTANCES hub instances sharing one port (REALTIME_REUSE_PORT=true) on one
# redis-server of our own, CLIENTS clients following their streams as EventSource does, fan-out
# publishing throughout, and each instance restarted in turn (SIGTERM, wait for its exit, start it
# again) by the load tool's `rolling-restart` scenario. The report gives missing and duplicate
# deliveries (must be 0), reconnect times, delivery latency before / during / after the
# restarts and the peak new-stream rate any instance saw (clients' count and the hubs' own
# counters from /v1/ops/stats).
#
#   bash bench/rolling-restart.sh                          # the hub: 3 instances, 10,000 clients
#   TARGET=nchan bash bench/rolling-restart.sh             # nginx + Nchan (Redis store), 3 workers,
#                                                          #   each worker in turn stopped gracefully
#                                                          #   (SIGQUIT; the master starts a new one)
#   TARGET=nchan NCHAN_RESTART=reload bash bench/rolling-restart.sh   # `nginx -s reload` per step
#
# Environment: INSTANCES (3), CLIENTS (10000), ORGS (100), RATE (100 events/s over all orgs),
# BEFORE / AFTER (20 s of publishing around the restarts), CONNECT_RATE (2000), SOURCE_ADDRS (4),
# DRAIN_DELAY (REALTIME_DRAIN_DELAY_SECONDS, 5), GRACE (REALTIME_SHUTDOWN_GRACE_SECONDS, and
# Nchan's worker_shutdown_timeout, 10), STEP_PAUSE (10 s after an instance serves again, so
# its reconnected clients settle before the next step), STATS_WATCHERS (16), OUT (report file; default a temp
# file), HUB_BIN and LOAD (binaries to use instead of a release build), INSTALL_DEPS (0: install
# nothing).
# Every server is started here on a free loopback port and stopped by pid at the end; never the
# Redis on 6379.
#
# Internal: `bash bench/rolling-restart.sh --step WORK I` restarts instance I of the run in WORK
# (the load tool runs it as --restart-cmd) and exits 0 once the new instance serves.
set -euo pipefail
cd "$(dirname "$0")/.."
LOG_PREFIX=rolling-restart

log() { printf '[%s] %s\n' "$LOG_PREFIX" "$*" >&2; }

# Whether pid $1 is gone (a zombie counts as gone: it no longer serves).
gone() {
    local state
    state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 0
    [[ $state == Z ]]
}

wait_gone() { # pid seconds
    local i
    for ((i = 0; i < $2 * 10; i++)); do
        gone "$1" && return 0
        sleep 0.1
    done
    return 1
}

# Start hub instance I of the run in WORK (settings in WORK/hub.env); returns once it listens.
start_hub_instance() { # work i
    local work=$1 i=$2 logf pid
    # shellcheck disable=SC1091
    source "$work/hub.env"
    logf="$work/hub-$i.$(date +%s%N).log"
    "$HUB_BIN" >"$logf" 2>&1 </dev/null &
    pid=$!
    echo "$pid" >"$work/hub-$i.pid"
    echo "$pid" >>"$work/started-pids"
    for _ in $(seq 1 300); do
        grep -q "dashclaw-realtime listening" "$logf" && return 0
        if gone "$pid"; then
            log "hub $i exited at start:"
            tail -5 "$logf" >&2
            return 1
        fi
        sleep 0.1
    done
    log "hub $i did not start listening within 30 s"
    return 1
}

nginx_workers() { # master pid
    pgrep -P "$1" | sort -n
}

# One restart step: the hub's instance I, or an Nchan worker / reload.
step() { # work i
    local work=$1 i=$2 pid
    # shellcheck disable=SC1091
    source "$work/hub.env"
    if [[ $TARGET == hub ]]; then
        pid=$(cat "$work/hub-$i.pid")
        log "step $i: SIGTERM to hub $i (pid $pid)"
        kill -TERM "$pid"
        # Drain delay + grace + margin.
        wait_gone "$pid" $((DRAIN_DELAY + GRACE + 30)) || {
            log "hub $i (pid $pid) did not exit"
            return 1
        }
        start_hub_instance "$work" "$i"
        log "step $i: hub $i serves again (pid $(cat "$work/hub-$i.pid"))"
        sleep "$STEP_PAUSE"
        return 0
    fi
    local master old w
    master=$(cat "$work/nginx/nginx.pid")
    mapfile -t old < <(nginx_workers "$master")
    if [[ $NCHAN_RESTART == reload ]]; then
        log "step $i: nginx -s reload (workers ${old[*]})"
        /usr/sbin/nginx -p "$work/nginx" -c "$work/nginx/nginx.conf" -s reload
        for w in "${old[@]}"; do wait_gone "$w" $((GRACE + 30)) || return 1; done
    else
        # The oldest worker not yet restarted: SIGQUIT is nginx's graceful stop of a worker;
        # the master starts a replacement.
        w=${old[0]}
        log "step $i: SIGQUIT to nginx worker $w"
        kill -QUIT "$w"
        wait_gone "$w" $((GRACE + 30)) || return 1
    fi
    for _ in $(seq 1 100); do
        if (($(nginx_workers "$master" | wc -l) >= INSTANCES)); then
            sleep "$STEP_PAUSE"
            return 0
        fi
        sleep 0.1
    done
    log "nginx has fewer than $INSTANCES workers after step $i"
    return 1
}

if [[ ${1:-} == --step ]]; then
    step "$2" "$3"
    exit
fi

: "${TARGET:=hub}" "${NCHAN_RESTART:=worker}" "${INSTANCES:=3}" "${CLIENTS:=10000}" "${ORGS:=100}"
: "${RATE:=100}" "${BEFORE:=20}" "${AFTER:=20}" "${CONNECT_RATE:=2000}" "${SOURCE_ADDRS:=4}"
: "${DRAIN_DELAY:=5}" "${GRACE:=10}" "${STATS_WATCHERS:=16}" "${STEP_PAUSE:=10}"
# shellcheck source=bench/lib.sh
source bench/lib.sh
WORK=$(mktemp -d /tmp/rolling-restart.XXXXXX)
# Hubs restarted by a step are not children of this script: stop them by their recorded pids.
stop_all() {
    if [[ -e $WORK/started-pids ]]; then
        while read -r p; do kill "$p" 2>/dev/null || true; done <"$WORK/started-pids"
        while read -r p; do wait_gone "$p" 30 || kill -9 "$p" 2>/dev/null || true; done <"$WORK/started-pids"
    fi
    cleanup
}
trap stop_all EXIT
# INSTALL_DEPS=0: use what is installed (load/tests/load_tool.rs runs this with the hub only).
[[ ${INSTALL_DEPS:-1} == 0 ]] || install_bench_deps
build_release
OUT=${OUT:-$WORK/report.json}
start_redis "$WORK"
PORT=$(free_port)

{
    printf 'export TARGET=%q NCHAN_RESTART=%q INSTANCES=%q DRAIN_DELAY=%q GRACE=%q HUB_BIN=%q STEP_PAUSE=%q\n' \
        "$TARGET" "$NCHAN_RESTART" "$INSTANCES" "$DRAIN_DELAY" "$GRACE" "$HUB_BIN" "$STEP_PAUSE"
    printf 'export REALTIME_BACKEND=redis REDIS_URL=%q REALTIME_BIND=%q REALTIME_REUSE_PORT=true\n' \
        "redis://127.0.0.1:$REDIS_PORT" "127.0.0.1:$PORT"
    printf 'export REALTIME_DRAIN_DELAY_SECONDS=%q REALTIME_SHUTDOWN_GRACE_SECONDS=%q\n' \
        "$DRAIN_DELAY" "$GRACE"
    printf 'export REALTIME_REQUEST_TIMEOUT_MS=30000 RUST_LOG=%q\n' \
        'warn,dashclaw_realtime=info,dashclaw_realtime::access=warn'
} >"$WORK/hub.env"

tmpl=()
watchers=0
if [[ $TARGET == hub ]]; then
    for i in $(seq 1 "$INSTANCES"); do start_hub_instance "$WORK" "$i"; done
    watchers=$STATS_WATCHERS
else
    NGINX_MAIN_EXTRA="worker_shutdown_timeout ${GRACE}s;" NCHAN_BUFFER_LENGTH=2000 \
        start_nchan "$WORK/nginx" "$PORT" "$INSTANCES" redis reuseport
    tmpl=("${NCHAN_TEMPLATE_ARGS[@]}")
fi
sleep 1

log "$TARGET: $INSTANCES instance(s) on port $PORT; $CLIENTS clients, $ORGS orgs, $RATE ev/s; restarting each in turn"
status=0
# Producer-supplied event ids make a publish retried after a lost response idempotent on the hub
# (Nchan stores every POST).
"$LOAD" rolling-restart --url "http://127.0.0.1:$PORT" -n "$CLIENTS" -m "$ORGS" -r "$RATE" \
    --connect-rate "$CONNECT_RATE" --source-addrs "$SOURCE_ADDRS" --connect-timeout 30 \
    --drain-timeout 120 --before "$BEFORE" --after "$AFTER" --restarts "$INSTANCES" \
    --restart-cmd "bash bench/rolling-restart.sh --step $WORK {i}" \
    --restart-timeout $((DRAIN_DELAY + GRACE + STEP_PAUSE + 90)) --stats-watchers "$watchers" \
    --publish-body '{"id":"evt_{org}_{seq}","event":"load.tick","payload":{"seq":{seq},"sent_us":{sent_us}}}' \
    --max-duration 1800 "${tmpl[@]}" --json >"$OUT" || status=$?
python3 - "$OUT" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
d, k, g = r["delivery"], r["connect"], r.get("rolling") or {}
print(f"ok={r['ok']} connected={k['connected']}/{k['clients']} disconnects={k['disconnects']} attempts={k['attempts']} failures={k['failures']}")
print(f"delivered={d['delivered']}/{d['expected']} missing={d['missing']} duplicates={d['duplicates']} out_of_order={d['out_of_order']} resyncs={d['resyncs']}")
for s in g.get("steps", []):
    print(f"restart {s['step']}: {s['seconds']:.1f} s {'ok' if s['ok'] else 'FAILED ' + str(s.get('error'))}")
q = lambda n: g.get(n) or {}
print(f"reconnect ms p50={q('reconnect_ms').get('p50', 0):.0f} p99={q('reconnect_ms').get('p99', 0):.0f} (n={q('reconnect_ms').get('count', 0)})")
for n in ("before", "during", "after"):
    l = q(f"latency_{n}_ms")
    print(f"delivery {n:<6} ms p50={l.get('p50', 0):.1f} p99={l.get('p99', 0):.1f} max={l.get('max', 0):.1f} (n={l.get('count', 0)})")
print(f"peak new streams/s on one instance: clients {g.get('client_opens_peak_per_s', 0):.0f}, hubs {g.get('hub_opened_peak_per_s')}")
PY
log "report: $OUT"
exit "$status"
