#!/usr/bin/env bash
# Benchmarks of stock-analytics (figures, not timed tests): import throughput from a local log,
# and every report over generated movements, with peak memory (max RSS).
#
#   bash analytics/benches/run.sh [WORK_DIR] [WAL_RECORDS] [PARQUET_MOVEMENTS]
#   defaults: /tmp/perpetua-bench 10000000 100000000
#
# Needs about 3 GB of disk for the defaults. Run from the workspace root.
set -euo pipefail
WORK=${1:-/tmp/perpetua-bench}
WAL_RECORDS=${2:-10000000}
MOVEMENTS=${3:-100000000}
cargo build --release -p perpetua-analytics --bins --examples
BIN=target/release/stock-analytics
EX=target/release/examples
mkdir -p "$WORK"
measure() { # label, command...
  local label=$1; shift
  /usr/bin/time -f "$label: %e s wall, %M KB max RSS" "$@"
}

echo "== import --wal: $WAL_RECORDS records"
if [ ! -d "$WORK/data/wal" ]; then "$EX/gen_wal" "$WORK/data" "$WAL_RECORDS" 28; fi
rm -rf "$WORK/imported"
measure "import" "$BIN" --snapshots "$WORK/imported" import --quiet --wal "$WORK/data"

echo "== reports over $MOVEMENTS movements"
if [ ! -d "$WORK/parquet/movements" ]; then "$EX/gen_parquet" "$WORK/parquet" "$MOVEMENTS" 90 50000; fi
du -sh "$WORK/parquet"
for r in best-sellers slow-movers reorder trends abc; do
  measure "report $r" "$BIN" --snapshots "$WORK/parquet" report "$r" --top 5 > "$WORK/$r.txt"
done
measure "sql count(*)" "$BIN" --snapshots "$WORK/parquet" sql "SELECT count(*) FROM movements"
