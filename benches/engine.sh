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
# stopped growing) and, with BASE_BIN, `base` and `base-warm` (that build, cold and warm). Every
# run gets a fresh stockd (fsync always) and data directory and must pass the load generator's
# verification. Prints a Markdown table (movements per second per round and the mean, p99, the
# server's and the load generator's CPU time per movement) and keeps every JSON report in OUT.
#
# Environment: OUT (default benches/results/engine-DATE), ROUNDS (2), DURATION (20s), WARMUP
# (40s), SKUS (100000), LOCATIONS (4), SCENARIOS ("single batch100 open100k"), VARIANTS
# (default: all available); CARGO_TARGET_DIR is honoured.
set -euo pipefail

BENCH=engine
DEFAULT_SCENARIOS="single batch100 open100k"
DEFAULT_VARIANTS="cold warm"
BASE_VARIANTS="base base-warm cold warm"
WARMUP="${WARMUP:-40s}"
variant_flags() { [[ "$1" == warm || "$1" == base-warm ]] && echo "--warmup $WARMUP" || true; }
# shellcheck source=benches/variants.sh
source "$(dirname "${BASH_SOURCE[0]}")/variants.sh"
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
