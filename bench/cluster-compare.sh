#!/usr/bin/env bash
# Redis Cluster against one Redis, same run: 3 hub instances on a private Redis Cluster
# (3 masters + 3 replicas, REDIS_URL=redis+cluster://…) and 3 hub instances on one private
# redis-server, driven by the same load tool with the same scenarios, one after the other:
# `fanout`, `burst`, and `publish` (HTTP publish throughput: the load tool's burst with few
# clients and 8 publisher connections). Clients are spread round-robin over the 3 hubs of a
# target and org j publishes through hub j mod 3, so every event crosses instances.
#
# Besides the load tool's figures it reads every Redis node's CPU (`INFO cpu`, user+sys) and
# published messages (`INFO commandstats`: SPUBLISH on the cluster, PUBLISH on one Redis)
# before and after each run, and reports Redis CPU per published event for each shard (a
# master's CPU over the messages it published; canaries, 3 a second per shard, included) and
# for the whole of Redis (every node, replicas included, over the events the load tool
# published).
#
#   bash bench/cluster-compare.sh            # the README's sizes (about 4 minutes)
#   bash bench/cluster-compare.sh --quick    # a smoke run of a few seconds per scenario
#
# Sizes by environment: FANOUT_CLIENTS (3000), FANOUT_ORGS (100), FANOUT_RATE (500),
# FANOUT_SECONDS (30), BURST_CLIENTS (300), BURST_SECONDS (10), PUBLISH_ORGS (30),
# PUBLISH_SECONDS (10), SCENARIOS (subset of "fanout burst publish"), OUT (directory for the
# JSON reports; default a fresh temp dir).
#
# Every server is started here on a free loopback port (cluster nodes below 55000, their bus
# port +10000 free too) and stopped by pid when the script ends. On 2 shared cores the cluster
# cannot show more throughput than one Redis (six redis-servers and six hubs share them):
# compare the ratios and the CPU per event, not absolute figures.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1
if ((QUICK)); then
    : "${FANOUT_CLIENTS:=60}" "${FANOUT_ORGS:=12}" "${FANOUT_RATE:=60}" "${FANOUT_SECONDS:=3}"
    : "${BURST_CLIENTS:=30}" "${BURST_SECONDS:=2}" "${PUBLISH_SECONDS:=2}"
fi
: "${FANOUT_CLIENTS:=3000}" "${FANOUT_ORGS:=100}" "${FANOUT_RATE:=500}" "${FANOUT_SECONDS:=30}"
: "${BURST_CLIENTS:=300}" "${BURST_SECONDS:=10}" "${PUBLISH_ORGS:=30}" "${PUBLISH_SECONDS:=10}"
: "${SCENARIOS:=fanout burst publish}"
TARGETS="single cluster"

LOG_PREFIX=cluster-compare
# shellcheck source=bench/lib.sh
source bench/lib.sh
install_bench_deps
build_release

WORK=$(mktemp -d /tmp/cluster-compare.XXXXXX)
OUT=${OUT:-$WORK/reports}
mkdir -p "$OUT"

# --- Redis: one server, and a cluster --------------------------------------------------------
start_redis "$WORK"
SINGLE_PORTS=("$REDIS_PORT")

# A free port below 55000 whose bus port (+10000) is free too.
cluster_port() {
    python3 - "$@" <<'PY'
import socket, sys
taken = {int(p) for p in sys.argv[1:]}
for _ in range(1000):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
    if port >= 55000 or port in taken or port + 10000 in taken:
        continue
    b = socket.socket()
    try:
        b.bind(("127.0.0.1", port + 10000))
    except OSError:
        continue
    finally:
        b.close()
    print(port); break
PY
}

CLUSTER_PORTS=()
for i in 1 2 3 4 5 6; do
    port=$(cluster_port "${CLUSTER_PORTS[@]}")
    mkdir -p "$WORK/node-$port"
    redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
        --cluster-config-file nodes.conf --cluster-node-timeout 5000 --save '' --appendonly no \
        --maxclients 10000 --dir "$WORK/node-$port" --logfile "$WORK/node-$port/redis.log" &
    PIDS+=("$!")
    CLUSTER_PORTS+=("$port")
done
for port in "${CLUSTER_PORTS[@]}"; do wait_port "$port"; done
addresses=()
for port in "${CLUSTER_PORTS[@]}"; do addresses+=("127.0.0.1:$port"); done
redis-cli --cluster create "${addresses[@]}" --cluster-replicas 1 --cluster-yes >"$WORK/create.log"
for _ in $(seq 1 300); do
    ok=1
    for port in "${CLUSTER_PORTS[@]}"; do
        redis-cli -p "$port" cluster info | grep -q 'cluster_state:ok' || ok=0
    done
    ((ok)) && break
    sleep 0.2
done
((ok)) || { log "the cluster did not form"; exit 1; }
log "cluster: ${CLUSTER_PORTS[*]}; one Redis: $REDIS_PORT"

# --- hubs: 3 per target ------------------------------------------------------------------------
declare -A HUB_URLS HUB_PIDS
start_hubs() { # target redis_url
    local target=$1 url=$2 urls=() pids=()
    for i in 1 2 3; do
        local port
        port=$(free_port)
        REALTIME_BACKEND=redis REDIS_URL="$url" REALTIME_BIND="127.0.0.1:$port" RUST_LOG=warn REALTIME_MAX_NEW_STREAMS_PER_SECOND=0 \
            "$HUB_BIN" >"$WORK/hub-$target-$i.log" 2>&1 &
        PIDS+=("$!")
        pids+=("$!")
        urls+=("http://127.0.0.1:$port")
        wait_port "$port"
    done
    for u in "${urls[@]}"; do
        for _ in $(seq 1 300); do
            curl -fsS "$u/readyz" >/dev/null 2>&1 && break
            sleep 0.1
        done
        curl -fsS "$u/readyz" >/dev/null || { log "$target hub $u never ready"; exit 1; }
    done
    HUB_URLS[$target]="${urls[*]}"
    HUB_PIDS[$target]="${pids[*]}"
}
start_hubs single "redis://127.0.0.1:$REDIS_PORT"
start_hubs cluster "redis+cluster://127.0.0.1:${CLUSTER_PORTS[0]},127.0.0.1:${CLUSTER_PORTS[1]}"

# --- Redis counters ----------------------------------------------------------------------------
# One JSON line per node: port, role, CPU seconds (user+sys), PUBLISH and SPUBLISH calls.
redis_snapshot() { # file ports...
    local file=$1
    shift
    : >"$file"
    for port in "$@"; do
        {
            echo "port:$port"
            redis-cli -p "$port" role | head -1 | sed 's/^/role:/'
            redis-cli -p "$port" info cpu
            redis-cli -p "$port" info commandstats
        } | tr -d '\r' | python3 -c '
import json, re, sys
d = {}
for line in sys.stdin:
    k, _, v = line.strip().partition(":")
    if k in ("port",):
        d["port"] = int(v)
    elif k == "role":
        d["role"] = v
    elif k in ("used_cpu_user", "used_cpu_sys"):
        d["cpu_s"] = d.get("cpu_s", 0.0) + float(v)
    elif k in ("cmdstat_publish", "cmdstat_spublish"):
        d[k[8:]] = int(re.search(r"calls=(\d+)", v).group(1))
print(json.dumps(d))' >>"$file"
    done
}

# --- scenarios ---------------------------------------------------------------------------------
scenario_cmd() { # scenario
    case $1 in
        fanout) echo "fanout -n $FANOUT_CLIENTS -m $FANOUT_ORGS -r $FANOUT_RATE -d $FANOUT_SECONDS --connect-rate 3000" ;;
        burst) echo "burst -n $BURST_CLIENTS -m 3 -d $BURST_SECONDS --publishers 3 --drain-timeout 60" ;;
        publish) echo "burst -n $PUBLISH_ORGS -m $PUBLISH_ORGS --batch 1 --publishers 8 -d $PUBLISH_SECONDS --drain-timeout 60" ;;
    esac
}

run_one() { # target scenario
    local target=$1 scenario=$2 url_args=() pid_args=() ports
    for u in ${HUB_URLS[$target]}; do url_args+=(--url "$u"); done
    for p in ${HUB_PIDS[$target]}; do pid_args+=(--server-pid "$p"); done
    if [[ $target == cluster ]]; then ports=("${CLUSTER_PORTS[@]}"); else ports=("${SINGLE_PORTS[@]}"); fi
    log "$target: $scenario ($(scenario_cmd "$scenario"))"
    redis_snapshot "$OUT/$target-$scenario.redis-before" "${ports[@]}"
    # shellcheck disable=SC2046
    "$LOAD" $(scenario_cmd "$scenario") "${url_args[@]}" "${pid_args[@]}" --json \
        >"$OUT/$target-$scenario.json" 2>"$OUT/$target-$scenario.err" || true
    redis_snapshot "$OUT/$target-$scenario.redis-after" "${ports[@]}"
    sleep 1
}

for scenario in $SCENARIOS; do
    for target in $TARGETS; do
        run_one "$target" "$scenario"
    done
done

# --- table -------------------------------------------------------------------------------------
log "reports in $OUT"
python3 - "$OUT" "$SCENARIOS" <<'PY'
import json, os, sys
out, scenarios = sys.argv[1], sys.argv[2].split()

def load(t, s):
    try:
        with open(os.path.join(out, f"{t}-{s}.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

def nodes(t, s, when):
    try:
        with open(os.path.join(out, f"{t}-{s}.redis-{when}")) as f:
            return {d["port"]: d for d in map(json.loads, f) if d}
    except (OSError, ValueError):
        return {}

def get(r, path):
    for k in path.split("."):
        if r is None:
            return None
        r = r.get(k) if isinstance(r, dict) else None
    return r

def published(r):
    return sum(o.get("events", 0) - o.get("failed_events", 0) for o in (r or {}).get("publish", []))

def redis_cpu(t, s):
    """(µs of Redis CPU per published event over every node, [(port, µs per message, messages)] per master)."""
    before, after = nodes(t, s, "before"), nodes(t, s, "after")
    events = published(load(t, s))
    total = sum(after[p].get("cpu_s", 0) - before.get(p, {}).get("cpu_s", 0) for p in after)
    shards = []
    for p, a in sorted(after.items()):
        if a.get("role") != "master":
            continue
        b = before.get(p, {})
        msgs = (a.get("spublish", 0) - b.get("spublish", 0)) + (a.get("publish", 0) - b.get("publish", 0))
        cpu = a.get("cpu_s", 0) - b.get("cpu_s", 0)
        shards.append((p, cpu * 1e6 / msgs if msgs else None, msgs))
    return (total * 1e6 / events if events else None), shards

def missing_dup(r):
    return (get(r, "delivery.missing") or 0) + (get(r, "delivery.duplicates") or 0)

rows = [
    ("fanout", "delivered / expected", lambda r: f"{get(r,'delivery.delivered')}/{get(r,'delivery.expected')}", None),
    ("fanout", "missing + duplicate", missing_dup, None),
    ("fanout", "latency p50 (ms)", lambda r: get(r, "latency_ms.p50"), "lower"),
    ("fanout", "latency p99 (ms)", lambda r: get(r, "latency_ms.p99"), "lower"),
    ("fanout", "hub CPU-s per million deliveries (3 hubs)", lambda r: get(r, "server.cpu_s_per_million_deliveries"), "lower"),
    ("burst", "saturation deliveries/s", lambda r: get(r, "burst.saturation_deliveries_per_s"), "higher"),
    ("burst", "published events/s", lambda r: get(r, "burst.published_events_per_s"), "higher"),
    ("burst", "missing + duplicate", missing_dup, None),
    ("publish", "published events/s (HTTP, 1 event per request, 8 connections)", lambda r: get(r, "burst.published_events_per_s"), "higher"),
    ("publish", "missing + duplicate", missing_dup, None),
]

def fmt(v):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}"
    return f"{v:,}" if isinstance(v, int) else str(v)

print("| scenario | metric | 3 hubs, one Redis | 3 hubs, cluster (3 masters + 3 replicas) | cluster / one Redis |")
print("|---|---|---|---|---|")
for scen, label, fn, better in rows:
    if scen not in scenarios:
        continue
    rs, rc = load("single", scen), load("cluster", scen)
    vs, vc = (fn(rs) if rs else None), (fn(rc) if rc else None)
    ratio = ""
    if better and isinstance(vs, (int, float)) and isinstance(vc, (int, float)) and vs:
        ratio = f"{vc / vs:.2f}"
    print(f"| {scen} | {label} | {fmt(vs)} | {fmt(vc)} | {ratio} |")
for scen in scenarios:
    (ts, ss), (tc, sc) = redis_cpu("single", scen), redis_cpu("cluster", scen)
    ratio = f"{tc / ts:.2f}" if ts and tc else ""
    print(f"| {scen} | Redis CPU per published event, all nodes (µs) | {fmt(ts)} | {fmt(tc)} | {ratio} |")
    per = lambda shards: ", ".join(f"{p}: {fmt(u)} ({m:,} msgs)" for p, u, m in shards) or "n/a"
    print(f"| {scen} | Redis CPU per published message, per shard master (µs) | {per(ss)} | {per(sc)} | |")
bad = [f"{t}-{s}" for t in ("single", "cluster") for s in scenarios if not get(load(t, s), "ok")]
if bad:
    print(f"\nruns not OK (failed clients, missing or duplicate deliveries, or timeouts): {', '.join(bad)}")
PY
