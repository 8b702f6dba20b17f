#!/usr/bin/env python3
"""Summarise a GPU profile written by `trainer pretrain --gpu-profile FILE`.

Prints the window (wall time, time the GPU ran a kernel, both per step) and the kernels
with the most time, per step; with --families, the kernels grouped into cuBLAS's products
and the rest by the kernel's name without template arguments.

    python3 scripts/gpu_profile.py gpu-bf16.jsonl [--top 25] [--families]
"""
import argparse
import json
import re
import sys


def family(name):
    if re.search(r"gemm|xmma|cutlass|cublas|nvjet", name, re.I):
        return "cuBLAS products"
    return re.split(r"[<(]", name, maxsplit=1)[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profile")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--families", action="store_true")
    args = ap.parse_args()
    try:
        lines = [json.loads(l) for l in open(args.profile) if l.strip()]
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"{args.profile}: not a GPU profile ({e}); write one with trainer pretrain --gpu-profile FILE")
    if not lines or lines[0].get("piece") != "window":
        sys.exit(f"{args.profile}: not a GPU profile (no window line first); write one with trainer pretrain --gpu-profile FILE")
    w, kernels = lines[0], [l for l in lines[1:] if l.get("piece") == "kernel"]
    print(f"{w['steps']} steps: wall {w['wall_ms_per_step']:.2f} ms/step, GPU busy {w['busy_ms_per_step']:.2f} ms/step "
          f"({100 * w['busy_share']:.1f}%), {w['kernels_per_step']:.0f} kernels/step")
    rows = kernels
    if args.families:
        groups = {}
        for k in kernels:
            g = groups.setdefault(family(k["name"]), {"name": family(k["name"]), "count": 0, "ms_per_step": 0.0, "share_of_busy": 0.0})
            g["count"] += k["count"]
            g["ms_per_step"] += k["ms_per_step"]
            g["share_of_busy"] += k["share_of_busy"]
        rows = sorted(groups.values(), key=lambda g: -g["ms_per_step"])
    for k in rows[: args.top]:
        per_step = k["count"] / max(w["steps"], 1)
        print(f"{k['ms_per_step']:9.3f} ms/step {100 * k['share_of_busy']:5.1f}%  {per_step:7.1f}/step  {k['name'][:110]}")


if __name__ == "__main__":
    main()
