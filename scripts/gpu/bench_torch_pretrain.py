"""The PyTorch side of the pretraining benchmark: transformers' LlamaForCausalLM from a
config (random init), eager mode (no torch.compile), AdamW, the same batch and sequence
length as our run, on random token ids. Prints one JSON line per precision:
tokens/s (mean over the steps after the warm-up), MFU against --peak-tflops, peak memory.

usage: bench_torch_pretrain.py --config configs/models/llama-3.2-1b-shape.json --batch 2 --seq 2048 --steps 12
"""
import argparse
import json
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def flops_per_token(c, seq):
    h, i, L, v = c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.vocab_size
    hd = getattr(c, "head_dim", None) or h // c.num_attention_heads
    q, kv = c.num_attention_heads * hd, c.num_key_value_heads * hd
    per_layer = h * q + 2 * h * kv + q * h + 3 * h * i
    matmul = L * per_layer + v * h
    return 6 * matmul + 12 * L * seq * q


def run(cfg, batch, seq, steps, warmup, precision, peak):
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).cuda()
    if precision == "bf16-weights":
        model = model.to(torch.bfloat16)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=0.01)
    ids = torch.randint(3, cfg.vocab_size, (batch, seq), device="cuda")
    torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(steps):
        torch.cuda.synchronize()
        t = time.perf_counter()
        if precision == "f32":
            loss = model(ids, labels=ids).loss
        else:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "amp-bf16"):
                loss = model(ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    measured = times[warmup:]
    tps = batch * seq / (sum(measured) / len(measured))
    out = {"side": "pytorch", "precision": precision, "attn": cfg._attn_implementation, "batch": batch, "seq": seq,
           "tokens_per_s": tps, "mfu": tps * flops_per_token(cfg, seq) / (peak * 1e12),
           "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30, "loss": loss.item(), "torch": torch.__version__}
    print(json.dumps(out), flush=True)
    del model, opt
    torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--precision", action="append", default=None, help="f32, amp-bf16, bf16-weights (repeatable)")
    a = ap.parse_args()
    cfg = LlamaConfig(**json.load(open(a.config)))
    for p in a.precision or ["f32", "amp-bf16"]:
        run(cfg, a.batch, a.seq, a.steps, a.warmup, p, a.peak_tflops)


if __name__ == "__main__":
    main()
