"""The side-by-side table of `trainer bench-ops` and scripts/gpu/bench_torch_ops.py: reads
their JSON lines (one or more files, both sides, any precisions and backends) and prints a
Markdown table of milliseconds and TFLOP/s per piece (and, where a line has it, the
milliseconds the host spent issuing the work: `host` close to the time means the host is
what limits the piece), one column per run (side, backend, precision) and, for each of ours, its time over PyTorch's at the same precision; then each
run's summary (layers, head + loss, the rest, clip + AdamW, step, tokens/s).

    python3 scripts/ops_table.py ops.jsonl [more.jsonl ...]
"""

import json
import sys


def run_of(row):
    """A run's name: side, backend where the line names one, precision."""
    backend = f" {row['backend']}" if row.get("backend") else ""
    return f"{row['side']}{backend} {row['compute_dtype']}"


def main(paths):
    rows = [json.loads(line) for path in paths for line in open(path) if line.startswith("{")]
    pieces = [r for r in rows if r["piece"] != "summary"]
    runs = list(dict.fromkeys(run_of(r) for r in rows))
    keys = list(dict.fromkeys((r["piece"], r["pass"]) for r in pieces))
    index = {(run_of(r), r["piece"], r["pass"]): r for r in pieces}
    reference = {r["compute_dtype"]: run_of(r) for r in rows if r["side"] == "pytorch"}
    ratios = [(run, reference[run.rsplit(" ", 1)[1]]) for run in runs
              if not run.startswith("pytorch") and run.rsplit(" ", 1)[1] in reference]
    head = ["piece", "pass"] + [f"{run} ms (TFLOP/s)" for run in runs] + [f"{a} / {b}" for a, b in ratios]
    print("| " + " | ".join(head) + " |")
    print("| " + " | ".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + " |")
    def show(r):
        if not r:
            return "-"
        host = f" host {r['host_ms']:.2f}" if "host_ms" in r else ""
        return f"{r['ms']:.2f} ({r['tflops']:.3g}){host}"
    for piece, passes in keys:
        cells = [piece, passes] + [show(index.get((run, piece, passes))) for run in runs]
        for a, b in ratios:
            ours, torch = index.get((a, piece, passes)), index.get((b, piece, passes))
            cells.append(f"{ours['ms'] / torch['ms']:.2f}x" if ours and torch else "-")
        print("| " + " | ".join(cells) + " |")
    print()
    fields = ["layers_ms", "head_loss_ms", "rest_of_model_ms", "model_fwd_bwd_ms", "clip_and_adamw_ms", "step_ms", "tokens_per_s", "model_tflops"]
    print("| run | " + " | ".join(fields) + " |")
    print("| --- | " + " | ".join(["---:"] * len(fields)) + " |")
    for r in rows:
        if r["piece"] == "summary":
            print(f"| {run_of(r)} | " + " | ".join(f"{r[f]:.1f}" for f in fields) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python3 scripts/ops_table.py ops.jsonl [more.jsonl ...]")
    main(sys.argv[1:])
