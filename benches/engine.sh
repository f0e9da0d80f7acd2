#!/usr/bin/env bash
# The engine alone on the throughput and latency targets of stock-loadgen's issue (section 5):
# single-movement requests (closed loop, 1024 clients), batches of 100 (closed loop, 64 clients)
# and the open loop at 100,000 movements per second, `stockd` and `stock-loadgen` on this machine.
#
#   benches/engine.sh                                   # this build, cold and warm
#   BASE_BIN=/dir/with/old/stockd-and-stock-loadgen benches/engine.sh   # and an older build, cold
#
# Variants: `cold` (a fresh stockd, measured from its first movement), `warm` (the same after
# WARMUP of unmeasured load: an engine that has run a while, whose idempotency-key tables have
# stopped growing) and, with BASE_BIN, `base` (that build, cold). Every run gets a fresh stockd
# (fsync always) and data directory and must pass the load generator's verification. Prints a
# Markdown table (movements per second per round and the mean, p99, the server's and the load
# generator's CPU time per movement) and keeps every JSON report in OUT.
#
# Environment: OUT (default benches/results/engine-DATE), ROUNDS (2), DURATION (20s), WARMUP
# (40s), SKUS (100000), LOCATIONS (4), SCENARIOS ("single batch100 open100k"), VARIANTS
# (default: all available); CARGO_TARGET_DIR is honoured.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/benches/results/engine-$(date +%Y%m%d-%H%M%S)}"
ROUNDS="${ROUNDS:-2}"
DURATION="${DURATION:-20s}"
WARMUP="${WARMUP:-40s}"
SKUS="${SKUS:-100000}"
LOCATIONS="${LOCATIONS:-4}"
SCENARIOS="${SCENARIOS:-single batch100 open100k}"
BASE_BIN="${BASE_BIN:-}"
VARIANTS="${VARIANTS:-$([[ -n "$BASE_BIN" ]] && echo "base cold warm" || echo "cold warm")}"
mkdir -p "$OUT"
WORK="$(mktemp -d /tmp/perpetua-engine.XXXXXX)"
STOCKD_PID=""
log() { printf '[engine] %s\n' "$*" >&2; }
cleanup() {
  [[ -n "$STOCKD_PID" ]] && kill "$STOCKD_PID" 2>/dev/null && wait "$STOCKD_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

log "building release binaries (stockd, stock-loadgen)"
timeout 3600 cargo build --release -q -p perpetua-engine --bin stockd -p perpetua-loadgen --bin stock-loadgen

free_port() {
  python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

scenario_flags() {
  case "$1" in
    single) echo "--batch 1 --concurrency 1024" ;;
    batch100) echo "--batch 100 --concurrency 64" ;;
    open100k) echo "--batch 1 --rate 100000 --concurrency 4096" ;;
    *) log "unknown scenario $1"; exit 2 ;;
  esac
}

# run VARIANT SCENARIO ROUND
run() {
  local variant="$1" scenario="$2" round="$3" bin="${CARGO_TARGET_DIR:-$ROOT/target}/release" extra=""
  [[ "$variant" == base ]] && bin="$BASE_BIN"
  [[ "$variant" == warm ]] && extra="--warmup $WARMUP"
  local name="$scenario-$variant-$round" port dir
  port="$(free_port)"
  dir="$WORK/$name"
  "$bin/stockd" --listen "127.0.0.1:$port" --data-dir "$dir" --metrics-listen off --fsync always >"$OUT/$name.stockd.log" 2>&1 &
  STOCKD_PID=$!
  for _ in $(seq 150); do grep -qs "listening on" "$OUT/$name.stockd.log" && break; sleep 0.2; done
  log "run $name (load average $(cut -d' ' -f1-3 /proc/loadavg))"
  # shellcheck disable=SC2046
  if ! timeout -k 15 900 "$bin/stock-loadgen" --quiet --label "$name" --json "$OUT/$name.json" --server "127.0.0.1:$port" \
      --data-dir "$dir" --server-pid "$STOCKD_PID" --connections 4 --skus "$SKUS" --locations "$LOCATIONS" --seed 42 \
      --duration "$DURATION" $(scenario_flags "$scenario") $extra >"$OUT/$name.txt" 2>"$OUT/$name.err"; then
    log "run $name FAILED: see $OUT/$name.err"
  fi
  kill "$STOCKD_PID" 2>/dev/null; wait "$STOCKD_PID" 2>/dev/null || true
  STOCKD_PID=""
  rm -rf "$dir"
}

for round in $(seq "$ROUNDS"); do
  for scenario in $SCENARIOS; do
    for variant in $VARIANTS; do
      run "$variant" "$scenario" "$round"
    done
  done
done

python3 - "$OUT" "$ROUNDS" "$SCENARIOS" "$VARIANTS" <<'EOF'
import json, os, sys
out, rounds, scenarios, variants = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split()
targets = {"single": "250,000/s", "batch100": "1,000,000/s", "open100k": "p99 < 2 ms"}
print("| scenario | variant | movements/s per round | mean | p99 ms per round | server CPU us/mv | load generator CPU us/mv | target | verification |")
print("|---|---|---|---:|---|---:|---:|---|---|")
for sc in scenarios:
    for v in variants:
        rates, p99s, cpus, lcpus, ok = [], [], [], [], True
        for r in range(1, rounds + 1):
            path = os.path.join(out, f"{sc}-{v}-{r}.json")
            if not os.path.exists(path):
                ok = False
                continue
            d = json.load(open(path))
            p = d["phases"][0]
            rates.append(p["movements_per_s"])
            p99s.append(p["latency"]["request"]["p99_us"] / 1000)
            cpus.append(p["server_cpu_us_per_movement"])
            lcpus.append(p["loadgen_cpu_us_per_movement"])
            ok = ok and d["verification"]["passed"]
        mean = lambda xs: sum(xs) / len(xs) if xs else 0
        per = ", ".join(f"{x:,.0f}" for x in rates)
        p99 = ", ".join(f"{x:.2f}" for x in p99s)
        print(f"| {sc} | {v} | {per} | {mean(rates):,.0f} | {p99} | {mean(cpus):.2f} | {mean(lcpus):.2f} | "
              f"{targets.get(sc, '')} | {'passed' if ok else 'FAILED'} |")
EOF
log "reports in $OUT"
