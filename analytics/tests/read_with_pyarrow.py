#!/usr/bin/env python3
"""Reads a snapshot folder with pyarrow (no stock-analytics code) and checks it against the
program's own SQL: same row count, same units sold per SKU, no duplicate (seq, line).

    python3 analytics/tests/read_with_pyarrow.py SNAPSHOTS STOCK_ANALYTICS_BINARY

Exits 0 with 'N passed, 0 failed' when pyarrow agrees; skips (exit 0) when pyarrow is missing.
"""
import json
import subprocess
import sys

try:
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
except ImportError:
    print("pyarrow is not installed: skipped")
    print("0 passed, 0 failed, 1 skipped")
    sys.exit(0)

snapshots, binary = sys.argv[1], sys.argv[2]
table = ds.dataset(f"{snapshots}/movements", format="parquet", partitioning="hive").to_table()
failed = 0


def check(name, ok, detail=""):
    global failed
    print(f"{'ok' if ok else 'FAILED'}: {name} {detail}")
    failed += 0 if ok else 1


keys = set(zip(table["seq"].to_pylist(), table["line"].to_pylist()))
check("no duplicate (seq, line)", len(keys) == table.num_rows, f"{len(keys)} keys, {table.num_rows} rows")


def sql(q):
    out = subprocess.run([binary, "--snapshots", snapshots, "--format", "json", "sql", q], check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out)


n = sql("SELECT count(*) AS n FROM movements")[0]["n"]
check("row count matches", n == table.num_rows, f"pyarrow {table.num_rows}, stock-analytics {n}")
sale_kinds = __import__("pyarrow").array(["sell", "commit", "complete_commit"])
sales = table.filter(pc.and_(pc.is_in(table["kind"], value_set=sale_kinds), table["accepted"]))
py = {r["sku"]: r["qty_sum"] for r in sales.group_by("sku").aggregate([("qty", "sum")]).to_pylist()}
ours = {r["sku"]: r["units"] for r in sql(
    "SELECT sku, sum(qty) AS units FROM movements WHERE kind IN ('sell','commit','complete_commit') AND accepted "
    "GROUP BY sku")}
check("units sold per SKU match", py == ours, f"{len(py)} SKUs")
print(f"{3 - failed} passed, {failed} failed")
sys.exit(1 if failed else 0)
