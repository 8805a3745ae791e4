#!/usr/bin/env bash
# Side-by-side load runs: dashclaw-realtime (memory and Redis backends) against nginx + Nchan
# (memory store and Redis store), same load tool, same scenarios, same machine, one table of
# ratios (ours / Nchan) at the end.
#
#   bash bench/compare-nchan.sh            # the issue's sizes (about 12 minutes)
#   bash bench/compare-nchan.sh --quick    # small sizes, a smoke run (about 3 minutes)
#
# Sizes can be overridden by environment: IDLE_CLIENTS, FANOUT_CLIENTS, FANOUT_ORGS, FANOUT_RATE,
# FANOUT_SECONDS, BURST_CLIENTS, BURST_SECONDS, STORM_CLIENTS, STORM_ORGS, STORM_BEHIND,
# TARGETS (subset of "hub-memory nchan-memory hub-redis nchan-redis"),
# SCENARIOS (subset of "idle fanout burst resume-storm"), NGINX_WORKERS (default 2 = cores),
# OUT (directory for the JSON reports; default a fresh temp dir).
#
# Every server here is started by this script on a free loopback port (its own redis-server
# too) and stopped by pid when the script ends.
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
[[ "${1:-}" == "--quick" ]] && QUICK=1
if ((QUICK)); then
    : "${IDLE_CLIENTS:=2000}" "${FANOUT_CLIENTS:=1000}" "${FANOUT_RATE:=100}" "${FANOUT_SECONDS:=10}"
    : "${BURST_CLIENTS:=200}" "${BURST_SECONDS:=5}" "${STORM_CLIENTS:=1000}"
fi
: "${IDLE_CLIENTS:=18000}" "${FANOUT_CLIENTS:=10000}" "${FANOUT_ORGS:=100}" "${FANOUT_RATE:=500}"
: "${FANOUT_SECONDS:=60}" "${BURST_CLIENTS:=1000}" "${BURST_SECONDS:=10}"
: "${STORM_CLIENTS:=10000}" "${STORM_ORGS:=100}" "${STORM_BEHIND:=100}"
: "${TARGETS:=hub-memory nchan-memory hub-redis nchan-redis}"
: "${SCENARIOS:=idle fanout burst resume-storm}"
: "${NGINX_WORKERS:=2}"

LOG_PREFIX=compare-nchan
# shellcheck source=bench/lib.sh
source bench/lib.sh
install_bench_deps
build_release

WORK=$(mktemp -d /tmp/compare-nchan.XXXXXX)
OUT=${OUT:-$WORK/reports}
mkdir -p "$OUT"
start_redis "$WORK"

# --- servers -----------------------------------------------------------------------------------
# start_<kind> PORT sets SERVER_PIDS (the pids the load tool measures) and STOP_PID.
start_hub() { # backend port
    local backend=$1 port=$2
    REALTIME_BACKEND=$backend REDIS_URL="redis://127.0.0.1:$REDIS_PORT" \
        REALTIME_BIND="127.0.0.1:$port" RUST_LOG=warn REALTIME_MAX_NEW_STREAMS_PER_SECOND=0 \
        "$HUB_BIN" >"$WORK/hub-$backend.log" 2>&1 &
    STOP_PID=$!
    PIDS+=("$STOP_PID")
    wait_port "$port"
    SERVER_PIDS=("$STOP_PID")
}

# --- scenarios ---------------------------------------------------------------------------------
scenario_args() { # scenario
    case $1 in
        idle) echo "-n $IDLE_CLIENTS -m $FANOUT_ORGS -d 5 --connect-rate 3000" ;;
        fanout) echo "-n $FANOUT_CLIENTS -m $FANOUT_ORGS -r $FANOUT_RATE -d $FANOUT_SECONDS --connect-rate 3000" ;;
        burst) echo "-n $BURST_CLIENTS -m 1 -d $BURST_SECONDS --publishers 1 --drain-timeout 60" ;;
        resume-storm) echo "-n $STORM_CLIENTS -m $STORM_ORGS --events $STORM_ORGS --behind $STORM_BEHIND --connect-rate 3000 --drain-timeout 60" ;;
    esac
}

run_one() { # target scenario
    local target=$1 scenario=$2 port kind backend
    port=$(free_port)
    kind=${target%%-*}
    backend=${target#*-}
    redis-cli -p "$REDIS_PORT" flushall >/dev/null
    local tmpl=()
    if [[ $kind == hub ]]; then
        start_hub "$backend" "$port"
    else
        start_nchan "$WORK/nginx-$backend" "$port" "$NGINX_WORKERS" "$backend"
        tmpl=("${NCHAN_TEMPLATE_ARGS[@]}")
    fi
    local pid_args=()
    for p in "${SERVER_PIDS[@]}"; do pid_args+=(--server-pid "$p"); done
    log "$target: $scenario ($(scenario_args "$scenario"))"
    # shellcheck disable=SC2046
    "$LOAD" "$scenario" --url "http://127.0.0.1:$port" --source-addrs 4 \
        $(scenario_args "$scenario") "${tmpl[@]}" "${pid_args[@]}" --json \
        >"$OUT/$target-$scenario.json" 2>"$OUT/$target-$scenario.err" || true
    stop_pid "$STOP_PID"
    sleep 1
}

for scenario in $SCENARIOS; do
    for target in $TARGETS; do
        run_one "$target" "$scenario"
    done
done

# --- table -------------------------------------------------------------------------------------
log "reports in $OUT"
python3 - "$OUT" "$TARGETS" "$SCENARIOS" <<'PY'
import json, os, sys
out, targets, scenarios = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()

def load(t, s):
    try:
        with open(os.path.join(out, f"{t}-{s}.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None

def get(r, path):
    for k in path.split("."):
        if r is None:
            return None
        r = r.get(k) if isinstance(r, dict) else None
    return r

# (scenario, label, extractor, better) ; better: "lower" or "higher" or None (no ratio)
rows = [
    ("idle", "connected", lambda r: f"{get(r,'connect.connected')}/{get(r,'config.clients')}", None),
    ("idle", "RSS per idle connection (B)", lambda r: get(r, "server.rss_per_idle_connection_bytes"), "lower"),
    ("idle", "PSS per idle connection (B)", lambda r: get(r, "server.pss_per_idle_connection_bytes"), "lower"),
    ("fanout", "delivered / expected", lambda r: f"{get(r,'delivery.delivered')}/{get(r,'delivery.expected')}", None),
    ("fanout", "missing + duplicate", lambda r: (get(r,'delivery.missing') or 0) + (get(r,'delivery.duplicates') or 0), None),
    ("fanout", "latency p50 (ms)", lambda r: get(r, "latency_ms.p50"), "lower"),
    ("fanout", "latency p99 (ms)", lambda r: get(r, "latency_ms.p99"), "lower"),
    ("fanout", "latency p99.9 (ms)", lambda r: get(r, "latency_ms.p999"), "lower"),
    ("fanout", "server CPU-s per million deliveries", lambda r: get(r, "server.cpu_s_per_million_deliveries"), "lower"),
    ("burst", "saturation deliveries/s", lambda r: get(r, "burst.saturation_deliveries_per_s"), "higher"),
    ("burst", "published events/s", lambda r: get(r, "burst.published_events_per_s"), "higher"),
    ("burst", "drain (s)", lambda r: get(r, "burst.drain_s"), None),
    ("burst", "missing + duplicate", lambda r: (get(r,'delivery.missing') or 0) + (get(r,'delivery.duplicates') or 0), None),
    ("resume-storm", "all caught up (s)", lambda r: get(r, "resume.caught_up_s"), "lower"),
    ("resume-storm", "clients caught up", lambda r: f"{get(r,'resume.clients_caught_up')}/{get(r,'config.clients')}", None),
    ("resume-storm", "missing + duplicate", lambda r: (get(r,'delivery.missing') or 0) + (get(r,'delivery.duplicates') or 0), None),
]

def fmt(v):
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.2f}"
    return f"{v:,}" if isinstance(v, int) else str(v)

pairs = [(f"hub-{b}", f"nchan-{b}") for b in ("memory", "redis")
         if f"hub-{b}" in targets or f"nchan-{b}" in targets]
head = ["scenario", "metric"]
for h, n in pairs:
    head += [h, n, "ours / Nchan"]
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for scen, label, fn, better in rows:
    if scen not in scenarios:
        continue
    cells = [scen, label]
    for h, n in pairs:
        rh, rn = load(h, scen), load(n, scen)
        vh = fn(rh) if rh else None
        vn = fn(rn) if rn else None
        ratio = ""
        if better and isinstance(vh, (int, float)) and isinstance(vn, (int, float)) and vn:
            ratio = f"{vh / vn:.2f}"
        cells += [fmt(vh), fmt(vn), ratio]
    print("| " + " | ".join(cells) + " |")
bad = [f"{t}-{s}" for t in targets for s in scenarios if not get(load(t, s), "ok")]
if bad:
    print(f"\nruns not OK (failed clients, missing or duplicate deliveries, or timeouts): {', '.join(bad)}")
PY
