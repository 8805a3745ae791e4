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
log() { printf '[scale-out] %s\n' "$*" >&2; }

for dep in redis-server python3; do
    command -v "$dep" >/dev/null || { log "$dep is missing (bench/compare-nchan.sh installs it)"; exit 2; }
done
if [[ $TARGET == nchan && ! -e /usr/lib/nginx/modules/ngx_nchan_module.so ]]; then
    log "nginx + Nchan missing: run bench/compare-nchan.sh once (it installs them)"
    exit 2
fi

cargo build --release --quiet --bin dashclaw-realtime --bin dashclaw-realtime-load
HUB_BIN=$PWD/target/release/dashclaw-realtime
LOAD=$PWD/target/release/dashclaw-realtime-load
WORK=$(mktemp -d /tmp/scale-out.XXXXXX)
OUT=${OUT:-$WORK/report.json}
PIDS=()
cleanup() {
    # Servers first, Redis last (it was started first).
    for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill "${PIDS[i]}" 2>/dev/null || true; done
    wait 2>/dev/null || true
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() {
    for _ in $(seq 1 200); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    log "nothing listens on port $1"
    return 1
}

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
    --maxclients 10000 --dir "$WORK" --logfile "$WORK/redis.log" &
PIDS+=("$!")
wait_port "$REDIS_PORT"

PORT=$(free_port)
SERVER_PIDS=()
if [[ $TARGET == hub ]]; then
    for i in $(seq 1 "$INSTANCES"); do
        REALTIME_BACKEND=$BACKEND REDIS_URL="redis://127.0.0.1:$REDIS_PORT" \
            REALTIME_BIND="127.0.0.1:$PORT" REALTIME_REUSE_PORT=true RUST_LOG=warn \
            REALTIME_REQUEST_TIMEOUT_MS=$REQUEST_TIMEOUT_MS \
            "$HUB_BIN" >"$WORK/hub-$i.log" 2>&1 &
        PIDS+=("$!")
        SERVER_PIDS+=("$!")
    done
    wait_port "$PORT"
    sleep 1
else
    dir=$WORK/nginx
    mkdir -p "$dir/logs" "$dir/tmp"
    cat >"$dir/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
worker_processes $INSTANCES;
worker_rlimit_nofile 19900;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 19800; multi_accept on; }
http {
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    keepalive_requests 1000000;
    nchan_max_reserved_memory 1024M;
    server {
        listen 127.0.0.1:$PORT backlog=4096 reuseport;
        location ~ ^/sub/([\w-]+)\$ {
            nchan_subscriber eventsource;
            nchan_channel_id \$1;
            nchan_subscriber_first_message newest;
        }
        location ~ ^/pub/([\w-]+)\$ {
            nchan_publisher;
            nchan_channel_id \$1;
            nchan_message_timeout 10m;
            nchan_message_buffer_length 2000;
        }
    }
}
EOF
    /usr/sbin/nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' >"$dir/logs/stdout.log" 2>&1 &
    master=$!
    PIDS+=("$master")
    wait_port "$PORT"
    sleep 1
    mapfile -t workers < <(pgrep -P "$master" || true)
    SERVER_PIDS=("$master" "${workers[@]}")
fi

pid_args=()
for p in "${SERVER_PIDS[@]}"; do pid_args+=(--server-pid "$p"); done
tmpl=()
[[ $TARGET == nchan ]] && tmpl=(--stream-path '/sub/{org}' --publish-path '/pub/{org}' --ready-event '')
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
