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

BENCH=complex
DEFAULT_SCENARIOS="single batch100"
DEFAULT_VARIANTS="std lots4"
BASE_VARIANTS="base std lots4"
variant_flags() { [[ "$1" == lots4 ]] && echo "--lots 4" || true; }
# shellcheck source=benches/variants.sh
source "$(dirname "${BASH_SOURCE[0]}")/variants.sh"
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
