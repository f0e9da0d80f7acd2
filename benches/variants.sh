# Shared by benches/engine.sh and benches/complex.sh (sourced, not run): every scenario of every
# variant, ROUNDS times, each on a fresh stockd (fsync always) and data directory, its JSON
# report in OUT. The sourcing script sets BENCH (its name), DEFAULT_SCENARIOS, DEFAULT_VARIANTS
# and BASE_VARIANTS (the variants with BASE_BIN), and defines `variant_flags VARIANT` (the load
# generator's flags for it); the variants named `base...` run BASE_BIN's binaries. The scenarios
# are those of the load generator's issue (`scenario_flags` below).
#
# Environment: OUT (default benches/results/BENCH-DATE), ROUNDS (2), DURATION (20s), SKUS
# (100000), LOCATIONS (4), SCENARIOS, VARIANTS, BASE_BIN; CARGO_TARGET_DIR is honoured.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${OUT:-$ROOT/benches/results/$BENCH-$(date +%Y%m%d-%H%M%S)}"
ROUNDS="${ROUNDS:-2}"
DURATION="${DURATION:-20s}"
SKUS="${SKUS:-100000}"
LOCATIONS="${LOCATIONS:-4}"
SCENARIOS="${SCENARIOS:-$DEFAULT_SCENARIOS}"
BASE_BIN="${BASE_BIN:-}"
VARIANTS="${VARIANTS:-$([[ -n "$BASE_BIN" ]] && echo "$BASE_VARIANTS" || echo "$DEFAULT_VARIANTS")}"
mkdir -p "$OUT"
WORK="$(mktemp -d "/tmp/perpetua-$BENCH.XXXXXX")"
STOCKD_PID=""
log() { printf '[%s] %s\n' "$BENCH" "$*" >&2; }
cleanup() {
  [[ -n "$STOCKD_PID" ]] && kill "$STOCKD_PID" 2>/dev/null && wait "$STOCKD_PID" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

log "building release binaries (stockd, stock-loadgen)"
timeout 3600 cargo build --release -q -p perpetua-engine --bin stockd -p perpetua-loadgen --bin stock-loadgen

# The load generator's flags for a scenario: single movements (closed loop, 1024 clients),
# batches of 100 (closed loop, 64 clients), the open loop at 100,000 movements per second.
scenario_flags() {
  case "$1" in
    single) echo "--batch 1 --concurrency 1024" ;;
    batch100) echo "--batch 100 --concurrency 64" ;;
    open100k) echo "--batch 1 --rate 100000 --concurrency 4096" ;;
    *) echo "unknown scenario $1" >&2; exit 2 ;;
  esac
}

free_port() {
  python3 -c 'import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# run VARIANT SCENARIO ROUND
run() {
  local variant="$1" scenario="$2" round="$3" bin="${CARGO_TARGET_DIR:-$ROOT/target}/release"
  [[ "$variant" == base* ]] && bin="$BASE_BIN"
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
      --duration "$DURATION" $(scenario_flags "$scenario") $(variant_flags "$variant") >"$OUT/$name.txt" 2>"$OUT/$name.err"; then
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
