"""PyTorch's side of `trainer bench-ops`: the pieces of one pretraining step timed alone at a
model's shapes (each projection's matmul, attention, one decoder layer, the LM head with
the loss, the whole model, the whole step with clipping and AdamW), eager transformers,
f32 parameters, with f32 compute or bf16 autocast. Prints the same JSON lines as ours
(`side`: `pytorch`), so the two can be read side by side.

    python3 scripts/gpu/bench_torch_ops.py --config configs/models/llama-3.2-1b-shape.json \
        --batch 1 --seq 2048 --repeats 5 [--precision f32 --precision bf16]
"""

import argparse
import contextlib
import json
import time

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, LlamaRotaryEmbedding


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(repeats, f):
    """Seconds per call of f (mean of `repeats` after one untimed call), and the first call's."""
    sync()
    t = time.perf_counter()
    f()
    sync()
    first = time.perf_counter() - t
    t = time.perf_counter()
    for _ in range(repeats):
        f()
    sync()
    return (time.perf_counter() - t) / repeats, first


def flops_per_token(c, seq):
    h, i, L, v = c.hidden_size, c.intermediate_size, c.num_hidden_layers, c.vocab_size
    q = c.num_attention_heads * (h // c.num_attention_heads)
    kv = c.num_key_value_heads * (h // c.num_attention_heads)
    matmul = L * (h * q + 2 * h * kv + q * h + 3 * h * i) + v * h
    return 6 * matmul + 12 * L * seq * q


def bench(cfg, a, precision):
    dev = a.device
    b, s, r = a.batch, a.seq, a.repeats
    tokens = b * s
    amp = precision == "bf16"
    autocast = (lambda: torch.autocast(dev, dtype=torch.bfloat16)) if amp else contextlib.nullcontext
    lines = []

    def emit(piece, passes, flops, t):
        sec, first = t
        line = {"side": "pytorch", "piece": piece, "pass": passes, "batch": b, "seq": s, "compute_dtype": precision,
                "ms": sec * 1e3, "tflops": flops / sec / 1e12, "first_ms": first * 1e3}
        print(json.dumps(line), flush=True)
        lines.append(line)
        return sec

    head_dim = cfg.hidden_size // cfg.num_attention_heads
    h, i = cfg.hidden_size, cfg.intermediate_size
    q, kv = cfg.num_attention_heads * head_dim, cfg.num_key_value_heads * head_dim
    for name, d_in, d_out in [("q_proj", h, q), ("k_proj/v_proj", h, kv), ("o_proj", q, h), ("gate_proj/up_proj", h, i),
                              ("down_proj", i, h), ("lm_head", h, cfg.vocab_size)]:
        x = torch.randn(b, s, d_in, device=dev)
        w = (torch.randn(d_out, d_in, device=dev) * 0.02).requires_grad_()
        flops = 2 * tokens * d_in * d_out

        def fwd():
            with torch.no_grad(), autocast():
                return F.linear(x, w).sum()

        xg = x.clone().requires_grad_()

        def both():
            with autocast():
                y = F.linear(xg, w).sum()
            y.backward()

        emit(name, "forward", flops, timed(r, fwd))
        emit(name, "forward+backward", 3 * flops, timed(r, both))
        del x, w, xg

    rep = cfg.num_attention_heads // cfg.num_key_value_heads
    qs = torch.randn(b, cfg.num_attention_heads, s, head_dim, device=dev, requires_grad=True)
    ks = torch.randn(b, cfg.num_key_value_heads, s, head_dim, device=dev, requires_grad=True)
    vs = torch.randn(b, cfg.num_key_value_heads, s, head_dim, device=dev, requires_grad=True)

    def attend():
        with autocast():
            k, v = ks.repeat_interleave(rep, dim=1), vs.repeat_interleave(rep, dim=1)
            return F.scaled_dot_product_attention(qs, k, v, is_causal=True)

    att_flops = 4 * b * cfg.num_attention_heads * s * s * head_dim

    def att_fwd():
        with torch.no_grad():
            return attend().sum()

    emit("attention", "forward", att_flops, timed(r, att_fwd))
    emit("attention", "forward+backward", 3 * att_flops, timed(r, lambda: attend().sum().backward()))

    layer = LlamaDecoderLayer(cfg, layer_idx=0).to(dev)
    rotary = LlamaRotaryEmbedding(config=cfg).to(dev)
    x = torch.randn(b, s, h, device=dev)
    pos = torch.arange(s, device=dev).unsqueeze(0).expand(b, s)
    cos_sin = rotary(x, pos)
    layer_flops = 2 * tokens * (h * q + 2 * h * kv + q * h + 3 * h * i) + att_flops

    def run_layer(inp):
        with autocast():
            out = layer(inp, attention_mask=None, position_ids=pos, position_embeddings=cos_sin)
        return out[0] if isinstance(out, tuple) else out

    def layer_fwd():
        with torch.no_grad():
            return run_layer(x).sum()

    xg = x.clone().requires_grad_()
    emit("decoder_layer", "forward", layer_flops, timed(r, layer_fwd))
    layer_s = emit("decoder_layer", "forward+backward", 3 * layer_flops, timed(r, lambda: run_layer(xg).sum().backward()))
    del layer

    model = LlamaForCausalLM(cfg).to(dev)
    ids = torch.randint(3, cfg.vocab_size, (b, s), device=dev)
    hidden = torch.randn(b, s, h, device=dev, requires_grad=True)
    embed = model.get_output_embeddings().weight

    def head_loss():
        with autocast():
            logits = F.linear(hidden, embed)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, cfg.vocab_size).float(), ids[:, 1:].reshape(-1))
        loss.backward()

    head_s = emit("lm_head+loss", "forward+backward", 3 * 2 * tokens * h * cfg.vocab_size, timed(r, head_loss))
    model_flops = tokens * flops_per_token(cfg, s)

    def model_both():
        with autocast():
            loss = model(ids, labels=ids).loss
        loss.backward()

    model_s = emit("model", "forward+backward", model_flops, timed(r, model_both))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, betas=(0.9, 0.95), weight_decay=0.01)

    def step():
        model_both()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step_s = emit("step (with clip + AdamW)", "forward+backward+update", model_flops, timed(r, step))
    L = cfg.num_hidden_layers
    print(json.dumps({"side": "pytorch", "piece": "summary", "batch": b, "seq": s, "compute_dtype": precision,
                      "layers_ms": L * layer_s * 1e3, "head_loss_ms": head_s * 1e3, "model_fwd_bwd_ms": model_s * 1e3,
                      "rest_of_model_ms": (model_s - L * layer_s - head_s) * 1e3, "clip_and_adamw_ms": (step_s - model_s) * 1e3,
                      "step_ms": step_s * 1e3, "tokens_per_s": tokens / step_s, "model_tflops": model_flops / step_s / 1e12,
                      "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if dev == "cuda" else None, "torch": torch.__version__}), flush=True)
    del model, opt
    if dev == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--precision", action="append", default=None, help="f32 or bf16 (autocast); repeatable")
    ap.add_argument("--device", default="cuda", help="cuda, or cpu for a smoke test of the script")
    a = ap.parse_args()
    cfg = LlamaConfig(**json.load(open(a.config)))
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    for p in a.precision or ["f32", "bf16"]:
        bench(cfg, a, p)


if __name__ == "__main__":
    main()
