"""Runs the given SQL queries through DuckDB over a run's files, registered under the
names corpus-tools documents, and prints {name: [row objects]} as JSON.

argv: run folder, JSON file with [{"name": ..., "sql": ...}], and optionally `--time=N`:
then each query runs N times after a warm-up and the best wall time (seconds, fetching
all rows) is printed per name instead of the rows (the corpus-tools benchmark)."""
import datetime
import decimal
import json
import os
import sys
import time

import duckdb

run, queries = sys.argv[1], json.load(open(sys.argv[2]))
con = duckdb.connect()


def parquet(name, pattern):
    if any(True for _ in __import__("glob").glob(os.path.join(run, pattern))):
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_parquet('{os.path.join(run, pattern)}')")


parquet("docs", "docs/*.parquet")
parquet("labels", "labels/*.parquet")
parquet("selection", "select/*.parquet")
parquet("rewrites", "rewrites/*.parquet")
parquet("sets", "sets/*/data/*.parquet")

columns = {
    "key": "VARCHAR", "doc_id": "VARCHAR", "task": "VARCHAR", "prompt_hash": "VARCHAR", "model": "VARCHAR",
    "status": "VARCHAR", "content": "VARCHAR", "finish_reason": "VARCHAR", "failure": "VARCHAR", "reason": "VARCHAR",
    "retry_on_rerun": "BOOLEAN", "prompt_tokens": "BIGINT", "completion_tokens": "BIGINT", "latency_ms": "BIGINT",
    "endpoint": "VARCHAR", "attempts": "BIGINT", "finished_at": "BIGINT",
}
spec = "{" + ", ".join(f"'{k}': '{v}'" for k, v in columns.items()) + "}"
parts = []
for name, stage in [("classify_requests", "classify"), ("rewrite_requests", "rewrite")]:
    path = os.path.join(run, "journal", f"{stage}.jsonl")
    if os.path.exists(path):
        con.execute(f"CREATE VIEW {name} AS SELECT * FROM read_json('{path}', format='newline_delimited', columns={spec})")
        parts.append(f"SELECT '{stage}' AS stage, * FROM {name}")
if parts:
    con.execute("CREATE VIEW requests AS " + " UNION ALL ".join(parts))


def plain(v):
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, (datetime.date, datetime.datetime)):
        return v.isoformat()
    return v


repeats = next((int(a.split("=", 1)[1]) for a in sys.argv[3:] if a.startswith("--time=")), 0)
if repeats:
    times = {}
    for q in queries:
        con.execute(q["sql"]).fetchall()
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            con.execute(q["sql"]).fetchall()
            best = min(best, time.perf_counter() - start)
        times[q["name"]] = best
    print(json.dumps(times))
    sys.exit(0)

out = {}
for q in queries:
    cur = con.execute(q["sql"])
    names = [d[0] for d in cur.description]
    out[q["name"]] = [{n: plain(v) for n, v in zip(names, row)} for row in cur.fetchall()]
print(json.dumps(out))
