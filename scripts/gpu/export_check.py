"""`trainer export` at the study's shape, judged by transformers on the GPU machine.

A seeded random Llama-3.2-3B-shaped model (hidden 3072, 28 layers, 24 query / 8 key-value
heads of 128, vocabulary 128,256, tied embeddings, Llama-3 RoPE scaling) is saved by
transformers' `save_pretrained` in bf16 shards with an index; `trainer export` reads that
folder and writes its own; transformers loads the export and must find every tensor equal
to the original's and give the same logits. Writes `export_check.json` under the output
folder.

usage: export_check.py TRAINER OUT_DIR WORK_DIR
"""
import json
import subprocess
import sys
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig


def main():
    trainer, out, work = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    out.mkdir(parents=True, exist_ok=True)
    report = {}
    config = LlamaConfig(
        vocab_size=128256, hidden_size=3072, intermediate_size=8192, num_hidden_layers=28,
        num_attention_heads=24, num_key_value_heads=8, head_dim=128, max_position_embeddings=131072,
        rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=True, bos_token_id=128000, eos_token_id=128001,
        rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                      "original_max_position_embeddings": 8192},
    )
    torch.manual_seed(0)
    original = AutoModelForCausalLM.from_config(config, torch_dtype=torch.bfloat16).cuda().eval()
    source, exported = work / "hf", work / "exported"
    started = time.time()
    original.save_pretrained(source, max_shard_size="2GB")
    report["save_pretrained_s"] = time.time() - started
    report["source_files"] = sorted(p.name for p in source.iterdir())

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
    ids = torch.randint(0, config.vocab_size, (2, 256), generator=torch.Generator().manual_seed(1)).cuda()
    with torch.no_grad():
        a, b = original(ids).logits.float(), loaded(ids).logits.float()
    report["logits_max_abs_diff"] = (a - b).abs().max().item()
    report["logits_equal"] = bool(torch.equal(a, b))
    report["ok"] = not (report["missing"] or report["unexpected"] or report["differing"]) and report["logits_equal"]
    (out / "export_check.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "export_stderr"}, indent=2))
    sys.exit(0 if report["ok"] else 1)


if __name__ == "__main__":
    main()
