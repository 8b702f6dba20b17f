"""The side-by-side table of `trainer bench-ops` and scripts/gpu/bench_torch_ops.py: reads
their JSON lines (one file, both sides, any precisions) and prints a Markdown table of
milliseconds and TFLOP/s per piece, ours against PyTorch at each precision, then each
side's summary (layers, head + loss, the rest, clip + AdamW, step, tokens/s).

    python3 scripts/ops_table.py ops.jsonl
"""

import json
import sys


def main(path):
    rows = [json.loads(line) for line in open(path) if line.startswith("{")]
    pieces = [r for r in rows if r["piece"] != "summary"]
    precisions = sorted({r["compute_dtype"] for r in rows}, key=lambda p: p != "bf16")
    keys = list(dict.fromkeys((r["piece"], r["pass"]) for r in pieces))
    index = {(r["side"], r["compute_dtype"], r["piece"], r["pass"]): r for r in pieces}
    head = ["piece", "pass"]
    for p in precisions:
        head += [f"ours {p} ms (TFLOP/s)", f"pytorch {p} ms (TFLOP/s)", f"ours / pytorch time {p}"]
    print("| " + " | ".join(head) + " |")
    print("| " + " | ".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + " |")
    for piece, passes in keys:
        cells = [piece, passes]
        for p in precisions:
            ours, torch = index.get(("ours", p, piece, passes)), index.get(("pytorch", p, piece, passes))
            show = lambda r: f"{r['ms']:.2f} ({r['tflops']:.3g})" if r else "-"
            cells += [show(ours), show(torch), f"{ours['ms'] / torch['ms']:.2f}x" if ours and torch else "-"]
        print("| " + " | ".join(cells) + " |")
    print()
    fields = ["layers_ms", "head_loss_ms", "rest_of_model_ms", "model_fwd_bwd_ms", "clip_and_adamw_ms", "step_ms", "tokens_per_s", "model_tflops"]
    print("| side | precision | " + " | ".join(fields) + " |")
    print("| --- | --- | " + " | ".join(["---:"] * len(fields)) + " |")
    for r in rows:
        if r["piece"] == "summary":
            print(f"| {r['side']} | {r['compute_dtype']} | " + " | ".join(f"{r[f]:.1f}" for f in fields) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
