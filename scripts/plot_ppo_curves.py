"""Draws the held-out accuracy (greedy, at each evaluation) and the training rollouts'
reward of several PPO runs on one plot: one colour per variant, one line style per seed.
A run is named by its file name, `metrics-<variant>-<seed>.jsonl` (what
scripts/gpu/ppo_learning_check.sh writes), or by the file's name without `.jsonl`.

usage: plot_ppo_curves.py OUT/metrics-*.jsonl docs/ppo-options.png [--title TEXT]
"""
import argparse
import json
import os
import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def run_name(path):
    name = os.path.basename(path).removesuffix(".jsonl")
    m = re.fullmatch(r"metrics-(.+)-([^-]+)", name)
    return (m.group(1), m.group(2)) if m else (name, "")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("metrics", nargs="+")
    ap.add_argument("out")
    ap.add_argument("--title", default="PPO on Countdown: held-out accuracy and rollout reward")
    args = ap.parse_args()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    variants, seeds = [], []
    for path in args.metrics:
        rows = [json.loads(line) for line in open(path) if line.strip()]
        evals = [r for r in rows if r.get("kind") == "eval"]
        train = [r for r in rows if r.get("kind") == "train"]
        if not evals and not train:
            raise SystemExit(f"{path}: no train or eval lines")
        variant, seed = run_name(path)
        variants += [variant] if variant not in variants else []
        seeds += [seed] if seed not in seeds else []
        style = dict(color=f"C{variants.index(variant)}", linestyle=["-", "--", ":", "-."][seeds.index(seed) % 4])
        label = f"{variant}, seed {seed}" if seed else variant
        left.plot([r["step"] for r in evals], [r["score"]["accuracy"] for r in evals], marker="o", label=label, **style)
        right.plot([r["step"] for r in train], [r["reward_mean"] for r in train], alpha=0.8, label=label, **style)
    left.set(xlabel="PPO step", ylabel="held-out accuracy (greedy)")
    right.set(xlabel="PPO step", ylabel="training rollouts' mean reward")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(args.title)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
