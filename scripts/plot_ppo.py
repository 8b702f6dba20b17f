"""Plots a PPO run's metrics (`metrics.jsonl` of `trainer ppo`): the training rollouts'
reward and accuracy per step, the held-out evaluations (greedy) over steps, and the
response length; one PNG.

usage: plot_ppo.py runs/ppo-gpu/metrics.jsonl docs/ppo-gpu.png [--title TEXT]
"""
import argparse
import json

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("metrics")
    ap.add_argument("out")
    ap.add_argument("--title", default="PPO on Countdown")
    args = ap.parse_args()
    rows = [json.loads(line) for line in open(args.metrics) if line.strip()]
    train = [r for r in rows if r.get("kind") == "train"]
    evals = [r for r in rows if r.get("kind") == "eval"]
    if not train and not evals:
        raise SystemExit(f"{args.metrics}: no train or eval lines")

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    steps = [r["step"] for r in train]
    left.plot(steps, [r["reward_mean"] for r in train], color="tab:blue", alpha=0.35, label="rollout reward (mean)")
    left.plot(steps, [r["accuracy"] for r in train], color="tab:orange", alpha=0.35, label="rollout accuracy")
    es = [r["step"] for r in evals]
    left.plot(es, [r["score"]["reward_mean"] for r in evals], "o-", color="tab:blue", label="held-out reward (greedy)")
    left.plot(es, [r["score"]["accuracy"] for r in evals], "o-", color="tab:orange", label="held-out accuracy (greedy)")
    left.set_xlabel("PPO step")
    # Room above the highest point (a small model's rewards sit far below 1).
    highest = max([r["reward_mean"] for r in train] + [r["score"]["reward_mean"] for r in evals] + [0.05])
    left.set_ylim(0, min(1.0, highest * 1.3))
    left.grid(alpha=0.3)
    left.legend(loc="lower right", fontsize=8)
    left.set_title(args.title, fontsize=10)

    right.plot(steps, [r["response_tokens_mean"] for r in train], color="tab:green", label="rollout response tokens")
    right.plot(es, [r["score"]["response_tokens_mean"] for r in evals], "o-", color="tab:green", alpha=0.6, label="held-out response tokens")
    right.set_xlabel("PPO step")
    right.set_ylabel("tokens")
    right.grid(alpha=0.3)
    twin = right.twinx()
    twin.plot(steps, [r["kl"] for r in train], color="tab:red", alpha=0.6, label="KL to the reference")
    twin.set_ylabel("KL (per token)")
    lines = right.get_legend_handles_labels()[0] + twin.get_legend_handles_labels()[0]
    labels = right.get_legend_handles_labels()[1] + twin.get_legend_handles_labels()[1]
    right.legend(lines, labels, loc="upper right", fontsize=8)
    right.set_title("Response length and KL")
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
