#!/usr/bin/env python3
"""Summarise a GPU profile written by `trainer pretrain|ppo --gpu-profile FILE`.

Prints the window (wall time, time the GPU ran a kernel, both per step) and the kernels
with the most time, per step; with --families, the kernels grouped into cuBLAS's products
and the rest by the kernel's name without template arguments; with --parts, the same for
each part the work marked (PPO: generation, scoring by model, each model's update).

    python3 scripts/gpu_profile.py gpu-bf16.jsonl [--top 25] [--families] [--parts]
"""
import argparse
import json
import re
import sys


def family(name):
    if re.search(r"gemm|xmma|cutlass|cublas|nvjet", name, re.I):
        return "cuBLAS products"
    return re.split(r"[<(]", name, maxsplit=1)[0]


def grouped(kernels):
    groups = {}
    for k in kernels:
        g = groups.setdefault(family(k["name"]), {"name": family(k["name"]), "count": 0, "ms_per_step": 0.0, "share_of_busy": 0.0})
        g["count"] += k["count"]
        g["ms_per_step"] += k["ms_per_step"]
        g["share_of_busy"] += k["share_of_busy"]
    return sorted(groups.values(), key=lambda g: -g["ms_per_step"])


def show(title, w, kernels, top, families, indent=""):
    print(f"{indent}{title}{w['steps']} steps: wall {w['wall_ms_per_step']:.2f} ms/step, GPU busy {w['busy_ms_per_step']:.2f} ms/step "
          f"({100 * w['busy_share']:.1f}%), {w['kernels_per_step']:.0f} kernels/step")
    rows = grouped(kernels) if families else kernels
    for k in rows[:top]:
        per_step = k["count"] / max(w["steps"], 1)
        print(f"{indent}{k['ms_per_step']:9.3f} ms/step {100 * k['share_of_busy']:5.1f}%  {per_step:7.1f}/step  {k['name'][:110]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("profile")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--families", action="store_true")
    ap.add_argument("--parts", action="store_true", help="also each marked part's window and kernels")
    args = ap.parse_args()
    try:
        lines = [json.loads(l) for l in open(args.profile) if l.strip()]
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"{args.profile}: not a GPU profile ({e}); write one with trainer pretrain --gpu-profile FILE")
    if not lines or lines[0].get("piece") != "window":
        sys.exit(f"{args.profile}: not a GPU profile (no window line first); write one with trainer pretrain --gpu-profile FILE")
    whole = [l for l in lines[1:] if l.get("piece") == "kernel" and "part" not in l]
    show("", lines[0], whole, args.top, args.families)
    if args.parts:
        parts = [l for l in lines if l.get("piece") == "part"]
        if not parts:
            print("no parts: the work marked none (pretraining does not)")
        for p in parts:
            print()
            kernels = [l for l in lines if l.get("piece") == "kernel" and l.get("part") == p["part"]]
            show(f"{p['part']}: ", p, kernels, args.top, args.families, indent="  ")


if __name__ == "__main__":
    main()
