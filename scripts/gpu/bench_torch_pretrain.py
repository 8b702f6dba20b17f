"""The PyTorch side of the pretraining benchmark: transformers' LlamaForCausalLM from a
config (random init, SDPA attention), AdamW, the same batch and sequence length as our
run, on random token ids; eager by default, or with --compile the strongest setup a user
picks in a line: torch.compile of the model and the fused AdamW (bf16 autocast with f32
parameters is the `amp-bf16` precision); --checkpointing recomputes each layer in the
backward (`gradient_checkpointing_enable`). Prints one JSON line per precision:
tokens/s (mean over the steps after the warm-up), MFU against --peak-tflops, peak memory.
With --gpu-profile FILE, a few more steps run under torch.profiler and every CUDA kernel
they ran is written to FILE in the format of `trainer pretrain --gpu-profile` (the window,
then each kernel most time first; summarise with scripts/gpu_profile.py), so both sides'
kernels compare line by line. The profiled steps are not part of the timing.

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


def profile_lines(events, wall_ns, steps):
    """The JSON lines of a GPU profile from (name, start_ns, end_ns) kernel runs."""
    spans = sorted((s, max(e, s)) for _, s, e in events)
    busy, reach = 0, 0
    for s, e in spans:
        if e > max(s, reach):
            busy += e - max(s, reach)
        reach = max(reach, e)
    by_name = {}
    for name, s, e in events:
        c, t = by_name.get(name, (0, 0))
        by_name[name] = (c + 1, t + (e - s))
    n = max(steps, 1)
    summed = sum(t for _, t in by_name.values())
    lines = [{"piece": "window", "steps": steps, "wall_ms": wall_ns / 1e6, "busy_ms": busy / 1e6, "kernels_ms": summed / 1e6,
              "kernels": len(events), "busy_share": busy / max(wall_ns, 1), "wall_ms_per_step": wall_ns / 1e6 / n,
              "busy_ms_per_step": busy / 1e6 / n, "kernels_per_step": len(events) / n}]
    for name, (c, t) in sorted(by_name.items(), key=lambda kv: (-kv[1][1], kv[0])):
        lines.append({"piece": "kernel", "name": name, "count": c, "total_ms": t / 1e6, "ms_per_step": t / 1e6 / n,
                      "mean_us": t / c / 1e3, "share_of_busy": t / max(busy, 1)})
    return lines


def step_once(model, opt, ids, precision):
    if precision == "f32":
        loss = model(ids, labels=ids).loss
    else:
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "amp-bf16"):
            loss = model(ids, labels=ids).loss
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss


def gpu_profile(model, opt, ids, precision, steps, path):
    """Runs `steps` more steps under torch.profiler and writes every CUDA kernel to `path`."""
    from torch.profiler import ProfilerActivity, profile
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        t = time.perf_counter_ns()
        for _ in range(steps):
            step_once(model, opt, ids, precision)
        torch.cuda.synchronize()
        wall = time.perf_counter_ns() - t
    events = [(e.name, int(e.time_range.start * 1000), int(e.time_range.end * 1000))
              for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA and not e.name.startswith("Memcpy") and not e.name.startswith("Memset")]
    with open(path, "w") as f:
        for line in profile_lines(events, wall, steps):
            f.write(json.dumps(line) + "\n")


def run(cfg, batch, seq, steps, warmup, precision, peak, profile_path=None, compile=False, checkpointing=False):
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).cuda()
    if precision == "bf16-weights":
        model = model.to(torch.bfloat16)
    if checkpointing:
        model.gradient_checkpointing_enable()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=0.01, fused=compile)
    if compile:
        model = torch.compile(model)
    ids = torch.randint(3, cfg.vocab_size, (batch, seq), device="cuda")
    torch.cuda.reset_peak_memory_stats()
    times = []
    for step in range(steps):
        torch.cuda.synchronize()
        t = time.perf_counter()
        loss = step_once(model, opt, ids, precision)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    measured = times[warmup:]
    tps = batch * seq / (sum(measured) / len(measured))
    out = {"side": "pytorch", "precision": precision, "compiled": compile, "fused_adamw": compile, "checkpointing": checkpointing,
           "attn": cfg._attn_implementation, "batch": batch, "seq": seq,
           "tokens_per_s": tps, "mfu": tps * flops_per_token(cfg, seq) / (peak * 1e12),
           "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30, "loss": loss.item(), "torch": torch.__version__}
    print(json.dumps(out), flush=True)
    if profile_path:
        gpu_profile(model, opt, ids, precision, 5, profile_path.replace("{precision}", precision))
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
    ap.add_argument("--gpu-profile", default=None, help="write the kernels of 5 more steps here ({precision} is replaced)")
    ap.add_argument("--compile", action="store_true", help="torch.compile the model and use the fused AdamW")
    ap.add_argument("--checkpointing", action="store_true", help="recompute each layer in the backward")
    a = ap.parse_args()
    cfg = LlamaConfig(**json.load(open(a.config)))
    cfg._attn_implementation = "sdpa"
    for p in a.precision or ["f32", "amp-bf16"]:
        run(cfg, a.batch, a.seq, a.steps, a.warmup, p, a.peak_tflops, a.gpu_profile, a.compile, a.checkpointing)


if __name__ == "__main__":
    main()
