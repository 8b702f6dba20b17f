"""Greedy generation, habits' engine against transformers, token for token, on the GPU.

For each model shape given (a Hugging Face config.json), a seeded random-init model is
saved by transformers' `save_pretrained` (f32 safetensors); transformers generates greedily
from it in bf16 autocast (`generate`, do_sample=False) and habits' `trainer generate`
reads the same folder and generates with bf16 matmuls on CUDA. Prompts are random token
ids of one length (no padding on either side). Each row is compared step by step: equal
to the end, or parted at a step, with both sides' gaps between their two largest logits
there. Both sides' logits come out of a bf16 product, so they are bf16 values: their step
at the top logit's magnitude (2^-7 of its power of two; 1/64 for logits in [2, 4)) is the
resolution, and random-init logits lie close together (exact ties happen). A parting where
either side's top two are within NEAR_TIE_STEPS of those steps is reported as a near-tie
(rounding); a parting with both gaps above it is a disagreement, and the script exits 1.

Writes one JSON line a shape (rows equal, near-tie partings, disagreements, the mean
share of steps equal) to stdout and the rows' details to OUT_DIR/greedy-parity-<shape>.json.

usage: greedy_parity.py TRAINER OUT_DIR CONFIG.json [CONFIG.json ...]
  [--rows 16] [--prompt 64] [--new 64] [--seed 0]
"""
import argparse
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

NEAR_TIE_STEPS = 4


def top2(scores):
    """Each row's largest logit and its gap to the second."""
    top = torch.topk(scores.float(), 2, dim=-1).values
    return list(zip(top[..., 0].tolist(), (top[..., 0] - top[..., 1]).tolist()))


def bf16_step(x):
    """The spacing of bf16 values around `x` (8 significant bits)."""
    return 2.0 ** (math.floor(math.log2(max(abs(x), 1e-30))) - 7)


def transformers_greedy(model, prompts, new):
    ids = torch.tensor(prompts, device="cuda")
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new, min_new_tokens=new,
                             output_scores=True, return_dict_in_generate=True, pad_token_id=0)
    tokens = out.sequences[:, ids.shape[1]:].tolist()
    tops = [top2(step) for step in out.scores]  # [steps][rows] of (top logit, gap)
    return tokens, [[tops[s][r] for s in range(len(tops))] for r in range(len(prompts))]


def habits_greedy(trainer, folder, prompts, new, work):
    prompt_file = work / "prompts.json"
    prompt_file.write_text(json.dumps(prompts))
    cmd = [trainer, "generate", "--model", str(folder), "--prompts", str(prompt_file), "--new-tokens", str(new), "--compute-dtype", "bf16"]
    lines = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout.splitlines()
    rows = [json.loads(line) for line in lines if line.startswith("{")]
    return [r["tokens"] for r in rows], [r["top2_gaps"] for r in rows]


def compare(ours, ours_gaps, theirs, theirs_tops):
    rows = []
    for r, (a, b) in enumerate(zip(ours, theirs)):
        parting = next((s for s, (x, y) in enumerate(zip(a, b)) if x != y), None)
        row = {"row": r, "steps": len(b), "equal_steps": len(b) if parting is None else parting}
        if parting is not None:
            (top, gap_theirs), gap_ours = theirs_tops[r][parting], ours_gaps[r][parting]
            step = bf16_step(top)
            row.update(parting=parting, ours=a[parting], theirs=b[parting], top_logit=top, bf16_step=step, gap_ours=gap_ours,
                       gap_theirs=gap_theirs, near_tie=min(gap_ours, gap_theirs) <= NEAR_TIE_STEPS * step)
        rows.append(row)
    return rows


def main():
    p = argparse.ArgumentParser()
    p.add_argument("trainer")
    p.add_argument("out", type=Path)
    p.add_argument("configs", nargs="+", type=Path)
    p.add_argument("--rows", type=int, default=16)
    p.add_argument("--prompt", type=int, default=64)
    p.add_argument("--new", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    a.out.mkdir(parents=True, exist_ok=True)
    failed = False
    for shape in a.configs:
        config = LlamaConfig.from_dict(json.loads(shape.read_text()))
        torch.manual_seed(a.seed)
        model = LlamaForCausalLM(config).to("cuda").eval()
        generator = torch.Generator().manual_seed(a.seed + 1)
        prompts = torch.randint(0, config.vocab_size, (a.rows, a.prompt), generator=generator).tolist()
        with tempfile.TemporaryDirectory() as work:
            work = Path(work)
            model.save_pretrained(work / "model", safe_serialization=True)
            theirs, theirs_tops = transformers_greedy(model, prompts, a.new)
            del model
            torch.cuda.empty_cache()
            ours, ours_gaps = habits_greedy(a.trainer, work / "model", prompts, a.new, work)
        rows = compare(ours, ours_gaps, theirs, theirs_tops)
        parted = [r for r in rows if "parting" in r]
        disagreements = [r for r in parted if not r["near_tie"]]
        failed |= bool(disagreements)
        summary = {"shape": shape.name, "rows": len(rows), "prompt": a.prompt, "new": a.new, "rows_equal": len(rows) - len(parted),
                   "near_tie_partings": len(parted) - len(disagreements), "disagreements": len(disagreements),
                   "mean_share_of_steps_equal": sum(r["equal_steps"] / r["steps"] for r in rows) / len(rows)}
        (a.out / f"greedy-parity-{shape.stem}.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
        print(json.dumps(summary), flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
