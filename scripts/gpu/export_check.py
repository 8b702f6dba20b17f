"""Weights in and out at the study's shape, judged by transformers on the GPU machine.

A seeded random Llama-3.2-3B-shaped model (hidden 3072, 28 layers, 24 query / 8 key-value
heads of 128, vocabulary 128,256, tied embeddings, Llama-3 RoPE scaling) is saved by
transformers' `save_pretrained` in bf16 shards with an index.

Out (unless --skip-export): `trainer export` reads that folder and writes its own;
transformers loads the export and must find every tensor equal to the original's and give
the same logits.

In: habits' loader reads the bf16 shards, and an f32 save in 5 GB shards, and `trainer
logits` runs the model on CUDA; its logits are judged against transformers' own, computed
in f32 from the same weights (gaps relative to the largest logit): within 1e-3 with f32
matmuls (`compare-backends`' f32 tolerance); with bf16 matmuls within 2e-2 (its bf16
tolerance, set for single ops) or, over 28 layers, no further from f32 than 1.5 times
transformers' own bf16 logits are.

Writes `export_check.json` under the output folder.

usage: export_check.py TRAINER OUT_DIR WORK_DIR [--skip-export]
"""
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, LlamaConfig


def main():
    trainer, out, work = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    skip_export = "--skip-export" in sys.argv[4:]
    out.mkdir(parents=True, exist_ok=True)
    report = {}
    shape = Path(__file__).resolve().parents[2] / "configs/models/llama-3.2-3b-shape.json"
    config = LlamaConfig.from_dict(json.loads(shape.read_text()))
    torch.manual_seed(0)
    original = AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16).cuda().eval()
    source, exported = work / "hf", work / "exported"
    started = time.time()
    original.save_pretrained(source, max_shard_size="2GB")
    report["save_pretrained_s"] = time.time() - started
    report["source_files"] = sorted(p.name for p in source.iterdir())

    ids = torch.randint(0, config.vocab_size, (2, 256), generator=torch.Generator().manual_seed(1)).cuda()
    if skip_export:
        report["export"] = "skipped"
    else:
        check_export(trainer, config, original, source, work / "exported", ids, report, out)
    check_loader(trainer, original, source, work, ids, report)
    report["ok"] = report.get("export_ok", True) and report["loader_ok"]
    (out / "export_check.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "export_stderr"}, indent=2))
    sys.exit(0 if report["ok"] else 1)


def check_export(trainer, config, original, source, exported, ids, report, out):
    started = time.time()
    run = subprocess.run([trainer, "export", "--checkpoint", str(source), "--model-config", str(source), "--out", str(exported),
                          "--dtype", "bf16", "--max-shard-gb", "2"], capture_output=True, text=True)
    report["export_s"] = time.time() - started
    report["export_stderr"] = run.stderr[-4000:]
    if run.returncode != 0:
        report["error"] = f"trainer export exited {run.returncode}"
        (out / "export_check.json").write_text(json.dumps(report, indent=2))
        sys.exit(1)
    report["exported_files"] = sorted(p.name for p in exported.iterdir())

    loaded = AutoModelForCausalLM.from_pretrained(exported, torch_dtype=torch.bfloat16).cuda().eval()
    theirs, ours = original.state_dict(), loaded.state_dict()
    report["tensors"] = len(theirs)
    report["missing"] = sorted(set(theirs) - set(ours))
    report["unexpected"] = sorted(set(ours) - set(theirs))
    report["differing"] = sorted(k for k in theirs if k in ours and not torch.equal(theirs[k], ours[k]))
    report["dtypes"] = sorted({str(v.dtype) for v in ours.values()})
    with torch.no_grad():
        a, b = original(ids).logits.float(), loaded(ids).logits.float()
    del loaded
    report["logits_max_abs_diff"] = (a - b).abs().max().item()
    report["logits_equal"] = bool(torch.equal(a, b))
    report["export_ok"] = not (report["missing"] or report["unexpected"] or report["differing"]) and report["logits_equal"]


def check_loader(trainer, original, source_bf16, work, ids, report):
    """habits' loader on the bf16 shards and on an f32 save, against transformers in f32."""
    with torch.no_grad():
        theirs_bf16 = original(ids).logits.float().cpu().numpy()
    reference = original.float()
    with torch.no_grad():
        theirs = reference(ids).logits.float().cpu().numpy()
    transformers_bf16_gap = float(np.abs(theirs_bf16 - theirs).max() / np.abs(theirs).max())
    report["transformers_bf16_gap"] = transformers_bf16_gap
    source_f32 = work / "hf-f32"
    started = time.time()
    reference.save_pretrained(source_f32, max_shard_size="5GB")
    report["save_f32_s"] = time.time() - started
    report["f32_files"] = sorted(p.name for p in source_f32.iterdir())
    del reference
    torch.cuda.empty_cache()
    ids_file = work / "ids.json"
    ids_file.write_text(json.dumps(ids.cpu().tolist()))
    runs = []
    bf16_tolerance = max(2e-2, 1.5 * transformers_bf16_gap)
    for source, compute, tolerance in [(source_bf16, "bf16", bf16_tolerance), (source_bf16, "f32", 1e-3), (source_f32, "f32", 1e-3)]:
        npy = work / f"ours-{source.name}-{compute}.npy"
        started = time.time()
        run = subprocess.run([trainer, "logits", "--model", str(source), "--ids", str(ids_file), "--out", str(npy),
                              "--backend", "cuda", "--compute-dtype", compute], capture_output=True, text=True)
        entry = {"weights": source.name, "compute": compute, "tolerance": tolerance, "seconds": time.time() - started}
        if run.returncode != 0:
            entry["error"] = run.stderr[-3000:]
        else:
            ours = np.load(npy)
            entry["relative_gap"] = float(np.abs(ours - theirs).max() / np.abs(theirs).max())
            entry["ok"] = entry["relative_gap"] <= tolerance
            npy.unlink()
        runs.append(entry)
        print(json.dumps(entry), flush=True)
    report["loader"] = runs
    report["loader_ok"] = all(r.get("ok") for r in runs)


if __name__ == "__main__":
    main()
