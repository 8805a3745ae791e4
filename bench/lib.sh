# Shared by bench/compare-nchan.sh and bench/scale-out.sh (sourced, not run). The caller sets
# LOG_PREFIX before sourcing. Every server is started here on a free loopback port, recorded in
# PIDS, and stopped by pid when the calling script exits (newest first, so Redis goes last).

log() { printf '[%s] %s\n' "$LOG_PREFIX" "$*" >&2; }

# nginx + Nchan, redis-server and python3 from Debian when missing.
install_bench_deps() {
    local need=()
    [[ -x /usr/sbin/nginx ]] || need+=(nginx)
    [[ -e /usr/lib/nginx/modules/ngx_nchan_module.so ]] || need+=(libnginx-mod-nchan)
    command -v redis-server >/dev/null || need+=(redis-server)
    command -v redis-cli >/dev/null || need+=(redis-tools)
    command -v python3 >/dev/null || need+=(python3)
    ((${#need[@]})) || return 0
    log "installing ${need[*]} from Debian"
    # Keep the package scripts from starting a system nginx on port 80.
    local made_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
        made_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}"
    ((made_policy)) && rm -f /usr/sbin/policy-rc.d
    return 0
}

# The hub and the load tool, release build; sets HUB_BIN and LOAD (both given: no build).
build_release() {
    if [[ -n ${HUB_BIN:-} && -n ${LOAD:-} ]]; then
        return 0
    fi
    log "building the hub and the load tool (release)"
    cargo build --release --quiet --bin dashclaw-realtime --bin dashclaw-realtime-load
    HUB_BIN=$PWD/target/release/dashclaw-realtime
    LOAD=$PWD/target/release/dashclaw-realtime-load
}

PIDS=()
cleanup() {
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

stop_pid() {
    kill "$1" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || return 0; sleep 0.1; done
    kill -9 "$1" 2>/dev/null || true
}

# A redis-server of our own in DIR, no persistence; sets REDIS_PORT.
start_redis() { # dir
    REDIS_PORT=$(free_port)
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
        --maxclients 10000 --dir "$1" --logfile "$1/redis.log" &
    PIDS+=("$!")
    wait_port "$REDIS_PORT"
}

# nginx + Nchan set up as the equivalent of the hub: one EventSource channel per org at
# /sub/{org}, publishing at /pub/{org}, a 10-minute message buffer of NCHAN_BUFFER_LENGTH
# messages, newest-first subscription like the hub's live join. STORE is memory or redis (the
# redis-server at REDIS_PORT); LISTEN_FLAGS e.g. "reuseport"; NGINX_MAIN_EXTRA is added to the
# main context (e.g. "worker_shutdown_timeout 10s;"). Sets STOP_PID (the master) and
# SERVER_PIDS (master and workers, what the load tool measures).
start_nchan() { # dir port workers store [listen_flags]
    local dir=$1 port=$2 workers=$3 store=$4 flags=${5:-}
    mkdir -p "$dir/logs" "$dir/tmp"
    local redis_conf=""
    if [[ $store == redis ]]; then
        redis_conf="nchan_redis_url \"redis://127.0.0.1:$REDIS_PORT\"; nchan_use_redis on;"
    fi
    cat >"$dir/nginx.conf" <<CONF
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
worker_processes $workers;
worker_rlimit_nofile 19900;
${NGINX_MAIN_EXTRA:-}
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
    nchan_max_reserved_memory ${NCHAN_RESERVED_MEMORY:-512M};
    server {
        listen 127.0.0.1:$port backlog=4096 $flags;
        location ~ ^/sub/([\w-]+)\$ {
            nchan_subscriber eventsource;
            nchan_channel_id \$1;
            nchan_subscriber_first_message newest;
            $redis_conf
        }
        location ~ ^/pub/([\w-]+)\$ {
            nchan_publisher;
            nchan_channel_id \$1;
            nchan_message_timeout 10m;
            nchan_message_buffer_length ${NCHAN_BUFFER_LENGTH:-20000};
            $redis_conf
        }
    }
}
CONF
    /usr/sbin/nginx -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;' >"$dir/logs/stdout.log" 2>&1 &
    STOP_PID=$!
    PIDS+=("$STOP_PID")
    wait_port "$port"
    local worker_pids=()
    for _ in $(seq 1 50); do
        mapfile -t worker_pids < <(pgrep -P "$STOP_PID" || true)
        ((${#worker_pids[@]} >= workers)) && break
        sleep 0.1
    done
    SERVER_PIDS=("$STOP_PID" "${worker_pids[@]}")
}

# Load-tool flags that point it at Nchan's locations (it has no realtime.connected event).
NCHAN_TEMPLATE_ARGS=(--stream-path '/sub/{org}' --publish-path '/pub/{org}' --ready-event '')
