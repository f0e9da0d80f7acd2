#!/usr/bin/env bash
# Perpetua vs Redis vs PostgreSQL: the same checkout workload, the same latency accounting and
# the same end-of-run verification against each, on this machine, over loopback.
#
# Builds release binaries, starts stockd, redis-server and PostgreSQL on free loopback ports in
# temporary directories (installing redis-server and postgresql with apt-get if they are
# missing), runs the standard scenarios on each, stops everything, prints a Markdown table with
# the ratios, and keeps every JSON report.
#
#   benches/compare.sh                      # everything (about 20 minutes)
#   QUICK=1 benches/compare.sh              # short steps, to try the script (about 5 minutes)
#   TARGETS="perpetua redis" SCENARIOS="batch100" benches/compare.sh
#
# Scenarios:
#   single    one movement per request, open loop: the highest rate that keeps p99 under
#             P99_MS (default 5) ms (stock-loadgen --find-max)
#   single-closed  one movement per request, closed loop with 1024 clients: the most it takes
#   batch100  100 movements per request, closed loop
#   flash     a flash sale: checkouts on the 10 hottest SKUs, one movement per request, closed loop
# Durability: the engine with --fsync always; Redis with appendonly yes + appendfsync always;
# PostgreSQL with synchronous_commit = on and fsync = on. Beside them, labelled weaker runs:
# Redis appendfsync everysec and PostgreSQL synchronous_commit = off (WEAK=0 to skip them).
#
# Environment: OUT (results folder; default benches/results/compare-DATE), TARGETS, SCENARIOS,
# QUICK, WEAK, P99_MS, DURATION (closed-loop runs; default 20s), STEP (find-max steps; 8s),
# SKUS (100000), LOCATIONS (4), CONCURRENCY (256), RUN_TIMEOUT (seconds per run; 600),
# ALERTS (target: reorder alerts from each system, the engine's through a change-feed subscriber;
# inferred: from the acknowledged movements, for all).
# Each report also gives the CPU time per movement of the server and of the load generator
# (from /proc), figures that hold even when other work shares the machine.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
STAMP="$(date +%Y%m%d-%H%M%S)"
OUT="${OUT:-$ROOT/benches/results/compare-$STAMP}"
TARGETS="${TARGETS:-perpetua redis postgres}"
SCENARIOS="${SCENARIOS:-single single-closed batch100 flash}"
QUICK="${QUICK:-0}"
WEAK="${WEAK:-1}"
P99_MS="${P99_MS:-5}"
if [[ "$QUICK" == 1 ]]; then
  DURATION="${DURATION:-5s}"; STEP="${STEP:-3s}"; STEPS="${STEPS:-5}"; SKUS="${SKUS:-20000}"
else
  DURATION="${DURATION:-20s}"; STEP="${STEP:-8s}"; STEPS="${STEPS:-10}"; SKUS="${SKUS:-100000}"
fi
LOCATIONS="${LOCATIONS:-4}"
CONCURRENCY="${CONCURRENCY:-256}"
RUN_TIMEOUT="${RUN_TIMEOUT:-600}"
ALERTS="${ALERTS:-target}"
mkdir -p "$OUT"
WORK="$(mktemp -d /tmp/perpetua-compare.XXXXXX)"
chmod 755 "$WORK"
PIDS=()
PG_BIN=""
PG_DATA=""

log() { printf '[compare] %s\n' "$*" >&2; }

cleanup() {
  set +e
  for pid in "${PIDS[@]:-}"; do
    [[ -n "$pid" ]] && kill "$pid" 2>/dev/null
  done
  if [[ -n "$PG_DATA" && -d "$PG_DATA" ]]; then
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast -w -t 30 stop >/dev/null 2>&1
    cp "$WORK/pgrun/postgres.log" "$OUT/postgres.log" 2>/dev/null
  fi
  for pid in "${PIDS[@]:-}"; do
    [[ -n "$pid" ]] && timeout 15 tail --pid="$pid" -f /dev/null 2>/dev/null
  done
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

free_port() { # $1: tcp or udp
  python3 - "$1" <<'EOF'
import socket, sys
kind = socket.SOCK_DGRAM if sys.argv[1] == "udp" else socket.SOCK_STREAM
s = socket.socket(socket.AF_INET, kind)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
EOF
}

wait_for() { # $1: seconds, $2...: command that succeeds once ready
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    (( SECONDS < deadline )) || return 1
    sleep 0.2
  done
}

apt_updated=0
apt_install() {
  if [[ $apt_updated == 0 ]]; then
    log "apt-get update"
    timeout 300 apt-get update -qq
    apt_updated=1
  fi
  log "apt-get install $*"
  DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -qq "$@" >/dev/null
}

load_average() { cut -d' ' -f1-3 /proc/loadavg; }

# ---- build -------------------------------------------------------------------------------
log "building release binaries (stockd, stock-loadgen)"
timeout 3600 cargo build --release -q -p perpetua-engine --bin stockd -p perpetua-loadgen --bin stock-loadgen
STOCKD="$ROOT/target/release/stockd"
LOADGEN="$ROOT/target/release/stock-loadgen"

# ---- servers -----------------------------------------------------------------------------
start_stockd() {
  STOCKD_PORT="$(free_port udp)"
  STOCKD_DIR="$WORK/stockd"
  "$STOCKD" --listen "127.0.0.1:$STOCKD_PORT" --data-dir "$STOCKD_DIR" --metrics-listen off --fsync always \
    >"$OUT/stockd.log" 2>&1 &
  STOCKD_PID=$!
  PIDS+=($STOCKD_PID)
  wait_for 30 grep -q "listening on" "$OUT/stockd.log" || { log "stockd did not start: see $OUT/stockd.log"; exit 1; }
  log "stockd on 127.0.0.1:$STOCKD_PORT (fsync always)"
}

start_redis() {
  command -v redis-server >/dev/null || apt_install redis-server
  REDIS_PORT="$(free_port tcp)"
  mkdir -p "$WORK/redis"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --dir "$WORK/redis" --appendonly yes --appendfsync always \
    --save "" --daemonize no >"$OUT/redis.log" 2>&1 &
  REDIS_PID=$!
  PIDS+=($REDIS_PID)
  wait_for 30 redis-cli -p "$REDIS_PORT" ping || { log "redis-server did not start: see $OUT/redis.log"; exit 1; }
  log "redis-server on 127.0.0.1:$REDIS_PORT (appendonly yes, appendfsync always)"
}

start_postgres() {
  PG_BIN="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)"
  if [[ -z "$PG_BIN" || ! -x "$PG_BIN/initdb" ]]; then
    apt_install postgresql
    PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
  fi
  PG_PORT="$(free_port tcp)"
  PG_DATA="$WORK/pg"
  mkdir -p "$PG_DATA" "$WORK/pgrun"
  chown postgres "$PG_DATA" "$WORK/pgrun"
  runuser -u postgres -- "$PG_BIN/initdb" -D "$PG_DATA" --auth=trust -U postgres >"$OUT/postgres-initdb.log" 2>&1
  runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$PG_DATA" -w -t 60 -l "$WORK/pgrun/postgres.log" \
    -o "-p $PG_PORT -k $WORK/pgrun -c listen_addresses=127.0.0.1 -c synchronous_commit=on -c fsync=on -c max_connections=200 -c shared_buffers=512MB" \
    start >/dev/null
  PG_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres"
  PG_PID="$(head -1 "$PG_DATA/postmaster.pid")"
  log "postgres on 127.0.0.1:$PG_PORT (synchronous_commit on, fsync on; $("$PG_BIN/postgres" --version))"
}

# ---- runs --------------------------------------------------------------------------------
# run NAME TARGET-FLAGS... -- SCENARIO-FLAGS...
run() {
  local name="$1"; shift
  log "run $name (load average $(load_average))"
  if timeout -k 15 "$RUN_TIMEOUT" "$LOADGEN" --quiet --label "$name" --json "$OUT/$name.json" \
      --skus "$SKUS" --locations "$LOCATIONS" --seed 42 "$@" >"$OUT/$name.txt" 2>"$OUT/$name.err"; then
    tail -n +1 "$OUT/$name.txt" | grep -E "throughput|find-max:|verification" | sed 's/^/    /' >&2 || true
  else
    log "run $name FAILED (exit $?): see $OUT/$name.err"
    tail -5 "$OUT/$name.err" >&2 || true
  fi
}

scenario_flags() {
  case "$1" in
    single) echo "--batch 1 --find-max --p99-max-ms $P99_MS --step-duration $STEP --find-max-steps $STEPS --concurrency $CONCURRENCY" ;;
    single-closed) echo "--batch 1 --concurrency 1024 --duration $DURATION" ;;
    batch100) echo "--batch 100 --concurrency 64 --duration $DURATION" ;;
    flash) echo "--batch 1 --concurrency $CONCURRENCY --duration $DURATION --hot-skus 10 --stock 200000 --mix commit=70,abandon=15,multi=10,pos=5,return=0,transfer=0,count=0" ;;
  esac
}

find_max_start() { # target scenario
  case "$1" in
    perpetua) echo 40000 ;;
    redis) echo 10000 ;;
    postgres) echo 2000 ;;
  esac
}

for target in $TARGETS; do
  case "$target" in
    perpetua)
      start_stockd
      for sc in $SCENARIOS; do
        extra=""; [[ $sc == single ]] && extra="--rate $(find_max_start perpetua)"
        # shellcheck disable=SC2046
        run "perpetua-$sc" --target perpetua --server "127.0.0.1:$STOCKD_PORT" --data-dir "$STOCKD_DIR" \
          --server-pid "$STOCKD_PID" --alerts "$ALERTS" --connections 4 $(scenario_flags "$sc") $extra
      done
      ;;
    redis)
      start_redis
      for sc in $SCENARIOS; do
        extra=""; [[ $sc == single ]] && extra="--rate $(find_max_start redis)"
        # shellcheck disable=SC2046
        run "redis-$sc" --target "redis://127.0.0.1:$REDIS_PORT" --server-pid "$REDIS_PID" --alerts "$ALERTS" --connections 16 $(scenario_flags "$sc") $extra
        if [[ "$WEAK" == 1 ]]; then
          redis-cli -p "$REDIS_PORT" config set appendfsync everysec >/dev/null
          # shellcheck disable=SC2046
          run "redis-weak-$sc" --target "redis://127.0.0.1:$REDIS_PORT" --server-pid "$REDIS_PID" --alerts "$ALERTS" --connections 16 $(scenario_flags "$sc") $extra
          redis-cli -p "$REDIS_PORT" config set appendfsync always >/dev/null
        fi
      done
      ;;
    postgres)
      start_postgres
      for sc in $SCENARIOS; do
        extra=""; [[ $sc == single ]] && extra="--rate $(find_max_start postgres)"
        # shellcheck disable=SC2046
        run "postgres-$sc" --target "$PG_URL" --server-pid "$PG_PID" --alerts "$ALERTS" --connections 16 $(scenario_flags "$sc") $extra
        if [[ "$WEAK" == 1 ]]; then
          # shellcheck disable=SC2046
          run "postgres-weak-$sc" --target "$PG_URL" --server-pid "$PG_PID" --alerts "$ALERTS" --connections 16 --pg-synchronous-commit off \
            $(scenario_flags "$sc") $extra
        fi
      done
      ;;
    *) log "unknown target $target (perpetua, redis, postgres)"; exit 2 ;;
  esac
done

# ---- table -------------------------------------------------------------------------------
python3 - "$OUT" $SCENARIOS <<'EOF' | tee "$OUT/summary.md"
import json, os, sys
out, scenarios = sys.argv[1], sys.argv[2:]
names = {"single": f"single movements, highest rate with p99 under the bound (open loop)",
         "single-closed": "single movements, closed loop, 1024 clients (the most each takes)",
         "batch100": "batches of 100 movements (closed loop)",
         "flash": "flash sale on 10 hot SKUs (closed loop)"}
rows_of = ["perpetua", "redis", "redis-weak", "postgres", "postgres-weak"]
def load(name):
    p = os.path.join(out, name + ".json")
    return json.load(open(p)) if os.path.exists(p) else None
def figures(r):
    if r.get("find_max"):
        f = r["find_max"]
        if f["highest_rate_held"] is None:
            return 0.0, None
        best = min((p for p in r["phases"] if p["target_movements_per_s"] == f["highest_rate_held"]),
                   key=lambda p: p["latency"]["request"]["p99_us"])
        return f["achieved_movements_per_s"], best
    p = r["phases"][0]
    return p["movements_per_s"], p
print(f"# Perpetua vs Redis vs PostgreSQL ({os.path.basename(out)})\n")
for sc in scenarios:
    print(f"## {names.get(sc, sc)}\n")
    print("| target | durability | movements/s | p50 ms | p99 ms | p99.9 ms | rejected | errors | server CPU µs/mv | verified | Perpetua ÷ target |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|")
    engine = load(f"perpetua-{sc}")
    engine_rate = figures(engine)[0] if engine else None
    for row in rows_of:
        r = load(f"{row}-{sc}")
        if r is None:
            continue
        rate, p = figures(r)
        dur = r["target"]["durability"] + ("" if r["target"]["durable"] else " (weaker)")
        v = r.get("verification")
        ver = "-" if v is None else ("yes" if v["passed"] else "**NO**")
        if p is None:
            print(f"| {row} | {dur} | no rate held | | | | | | | {ver} | |")
            continue
        lat = p["latency"]["request"]
        ratio = f"{engine_rate / rate:.1f}x" if engine_rate and rate and row != "perpetua" else ""
        rej = p["rejected"] / max(p["movements"], 1) * 100
        cpu = p.get("server_cpu_us_per_movement")
        cpu = f"{cpu:.1f}" if cpu is not None else ""
        print(f"| {row} | {dur} | {rate:,.0f} | {lat['p50_us']/1000:.2f} | {lat['p99_us']/1000:.2f} | "
              f"{lat['p999_us']/1000:.2f} | {rej:.1f}% | {p['errors']} | {cpu} | {ver} | {ratio} |")
    print()
la = [load(n) for n in sorted(f[:-5] for f in os.listdir(out) if f.endswith(".json"))]
la = [r["machine"] for r in la if r]
if la:
    print(f"Machine: {la[0]['cores']} cores; load average before the runs: "
          + ", ".join(" ".join(f"{x:.2f}" for x in m["load_average_before"]) for m in la if m.get("load_average_before")))
EOF
log "results in $OUT"
