#!/usr/bin/env bash
# The complex-inventory throughput targets: the engine's throughput on the standard workload
# (no lots, serials, kits or channels) against a build from before complex inventory, and with
# 4 lots on every SKU, on this machine, same runs interleaved so that other load hits all alike.
#
#   BASE_BIN=/dir/with/old/stockd-and-stock-loadgen benches/complex.sh
#   benches/complex.sh                       # without BASE_BIN: this build, standard vs 4 lots
#
# Variants: `base` (BASE_BIN's stockd and stock-loadgen, standard workload), `std` (this build,
# standard workload), `lots4` (this build, `--lots 4`). Scenarios: `single` (one movement per
# request, closed loop, 1024 clients) and `batch100` (100 per request, 64 clients). Every run
# gets a fresh stockd (fsync always) and data directory, and must pass the load generator's
# verification. Prints a Markdown table (movements per second, each round and the mean, the
# ratio to `std`, and the server's CPU time per movement with its ratio: the figure that holds
# when other work shares the machine); keeps every JSON report in OUT.
#
# Environment: OUT (default benches/results/complex-DATE), ROUNDS (2), DURATION (20s),
# SKUS (100000), LOCATIONS (4), SCENARIOS ("single batch100"), VARIANTS (default: all available);
# CARGO_TARGET_DIR is honoured.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/benches/results/complex-$(date +%Y%m%d-%H%M%S)}"
ROUNDS="${ROUNDS:-2}"
DURATION="${DURATION:-20s}"
SKUS="${SKUS:-100000}"
LOCATIONS="${LOCATIONS:-4}"
SCENARIOS="${SCENARIOS:-single batch100}"
BASE_BIN="${BASE_BIN:-}"
VARIANTS="${VARIANTS:-$([[ -n "$BASE_BIN" ]] && echo "base std lots4" || echo "std lots4")}"
mkdir -p "$OUT"
WORK="$(mktemp -d /tmp/perpetua-complex.XXXXXX)"
STOCKD_PID=""
log() { printf '[complex] %s\n' "$*" >&2; }
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
    *) log "unknown scenario $1"; exit 2 ;;
  esac
}

# run VARIANT SCENARIO ROUND
run() {
  local variant="$1" scenario="$2" round="$3" bin="${CARGO_TARGET_DIR:-$ROOT/target}/release" extra=""
  [[ "$variant" == base ]] && bin="$BASE_BIN"
  [[ "$variant" == lots4 ]] && extra="--lots 4"
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
print("| scenario | variant | movements/s per round | mean | vs std | server CPU us/movement | vs std | verification |")
print("|---|---|---|---:|---:|---:|---:|---|")
for sc in scenarios:
    means = {}
    rows = []
    for v in variants:
        rates, cpus, ok = [], [], True
        for r in range(1, rounds + 1):
            path = os.path.join(out, f"{sc}-{v}-{r}.json")
            if not os.path.exists(path):
                ok = False
                continue
            d = json.load(open(path))
            rates.append(sum(p["movements_per_s"] for p in d["phases"]) / len(d["phases"]))
            cpus.append(sum(p["server_cpu_us_per_movement"] for p in d["phases"]) / len(d["phases"]))
            ok = ok and d["verification"]["passed"]
        means[v] = (sum(rates) / len(rates), sum(cpus) / len(cpus)) if rates else (0, 0)
        rows.append((v, rates, ok))
    for v, rates, ok in rows:
        rate, cpu = means[v]
        std_rate, std_cpu = means.get("std", (0, 0))
        ratio = f"{rate / std_rate * 100:.0f}%" if std_rate else "-"
        # CPU per movement holds even when other work shares the machine: its inverse is the
        # throughput ratio the server would reach alone.
        cpu_ratio = f"{std_cpu / cpu * 100:.0f}%" if cpu and std_cpu else "-"
        per = ", ".join(f"{x:,.0f}" for x in rates)
        print(f"| {sc} | {v} | {per} | {rate:,.0f} | {ratio} | {cpu:.2f} | {cpu_ratio} | {'passed' if ok else 'FAILED'} |")
EOF
log "reports in $OUT"
