"""The PyTorch side of the rollout-generation benchmark, the same batch, prompt length and
new tokens as `trainer bench-generate` (random init, sampling at temperature 1, top-p 1,
every row forced to `--new-tokens` tokens). Two sides:

- `generate`: transformers' LlamaForCausalLM.generate (top_k 0);
- `plain`: a plain PyTorch decoder written here over the same transformers modules: a
  static key/value cache of prompt + new tokens per layer, the new keys written in place,
  SDPA with grouped heads (`enable_gqa`) over the filled positions, the Gumbel-max draw on
  the device, no CUDA graphs (what a user writes in an afternoon instead of `generate`);
- `compiled` (`compiled-sdpa`: attention by SDPA with `enable_gqa` under the mask
  instead of two grouped products): the same decoder's step compiled whole by `torch.compile(mode="reduce-overhead",
  fullgraph=True)`, which fuses its elementwise work and replays it as one CUDA graph: the
  step has one shape (each key/value head's queries over the whole cache under a mask of
  the filled positions, the position a device tensor, the Gumbel-max draw inside the
  graph), as gpt-fast-style decoders do; the prefill runs uncompiled. Its first call includes the
  compilation and the graph's capture.

One untimed call, then `--repeats` timed calls; one JSON line per side and dtype, with the
peak memory PyTorch allocated and, for `plain` and `compiled`, the prefill's time and the
mean decoding step's. A side that fails prints a line with its error and the others run.

usage: bench_torch_generate.py --config configs/models/llama-3.2-1b-shape.json --batch 256 \
    --prompt-tokens 256 --new-tokens 256 [--sides generate,plain,compiled,compiled-sdpa] [--dtypes f32,bf16]
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

DTYPES = {"f32": torch.float32, "bf16": torch.bfloat16}


def prompts(cfg, args):
    rows = torch.arange(args.batch, device="cuda").unsqueeze(1)
    cols = torch.arange(args.prompt_tokens, device="cuda").unsqueeze(0)
    return (rows * 7919 + cols * 104729 + 3) % cfg.vocab_size


def timed(args, call):
    """Runs `call` once untimed, then `args.repeats` times; returns (first, mean) seconds."""
    times = []
    for _ in range(args.repeats + 1):
        torch.cuda.synchronize()
        start = time.perf_counter()
        call()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times[0], sum(times[1:]) / args.repeats


def report(side, dtype, args, first, mean, **extra):
    print(json.dumps({"side": side, "dtype": dtype, "batch": args.batch, "prompt_tokens": args.prompt_tokens,
                      "new_tokens": args.new_tokens, "first_call_s": first, "seconds": mean,
                      "tokens_per_s": args.batch * args.new_tokens / mean,
                      "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
                      "torch": torch.__version__, **extra}), flush=True)


def run_generate(model, cfg, args, dtype):
    ids = prompts(cfg, args)
    kwargs = dict(attention_mask=torch.ones_like(ids), do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                  max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, pad_token_id=0)

    def call():
        out = model.generate(ids, **kwargs)
        assert out.shape == (args.batch, args.prompt_tokens + args.new_tokens), out.shape

    first, mean = timed(args, call)
    report("transformers generate", dtype, args, first, mean)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class PlainDecoder:
    """A static-cache decoder over the modules of a transformers Llama model."""

    def __init__(self, model, cfg, batch, capacity):
        self.model, self.inner = model, model.model
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        # One tensor a layer: a compiled step writes each in place (a write into a view of one
        # tensor of every layer would be compiled as a copy of the whole tensor).
        shape = (batch, self.kv_heads, capacity, self.head_dim)
        dtype = next(model.parameters()).dtype
        self.k = [torch.zeros(shape, dtype=dtype, device="cuda") for _ in range(cfg.num_hidden_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device="cuda") for _ in range(cfg.num_hidden_layers)]

    def forward(self, ids, start):
        """Logits of the last position of `ids` ([batch, t]) at positions start..start+t."""
        b, t = ids.shape
        x = self.inner.embed_tokens(ids)
        positions = torch.arange(start, start + t, device="cuda").expand(b, t)
        cos, sin = self.inner.rotary_emb(x, positions)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        end = start + t
        for i, layer in enumerate(self.inner.layers):
            attn, h = layer.self_attn, layer.input_layernorm(x)
            q = attn.q_proj(h).view(b, t, self.heads, self.head_dim).transpose(1, 2)
            k = attn.k_proj(h).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
            v = attn.v_proj(h).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
            self.k[i][:, :, start:end] = k
            self.v[i][:, :, start:end] = v
            o = F.scaled_dot_product_attention(q, self.k[i][:, :, :end], self.v[i][:, :, :end], is_causal=t > 1, enable_gqa=True)
            x = x + attn.o_proj(o.transpose(1, 2).reshape(b, t, -1))
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return self.model.lm_head(self.inner.norm(x[:, -1]))


class CompiledStep(torch.nn.Module):
    """One decoding step of one shape over a static cache (the plain decoder's buffers,
    registered here so that CUDA graphs treat them, like the weights, as static): the new
    keys written at `pos` (a device tensor), each key/value head's group of queries
    attending to every position under a mask of those filled (two batched products that
    read the cache once, not SDPA's repeated heads), the next token drawn; compiled whole
    and replayed as a CUDA graph."""

    def __init__(self, model, decoder, sdpa):
        super().__init__()
        self.model, self.sdpa = model, sdpa
        self.heads, self.kv_heads, self.head_dim = decoder.heads, decoder.kv_heads, decoder.head_dim
        for i, (k, v) in enumerate(zip(decoder.k, decoder.v)):
            self.register_buffer(f"k{i}", k, persistent=False)
            self.register_buffer(f"v{i}", v, persistent=False)
        self.register_buffer("positions", torch.arange(decoder.k[0].shape[2], device="cuda"), persistent=False)

    def forward(self, token, pos):
        inner, b = self.model.model, token.shape[0]
        group, scale = self.heads // self.kv_heads, self.head_dim ** -0.5
        x = inner.embed_tokens(token)
        cos, sin = inner.rotary_emb(x, pos.view(1, 1).expand(b, 1))
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        hidden = (self.positions > pos).view(1, 1, 1, -1)
        for i, layer in enumerate(inner.layers):
            attn, h = layer.self_attn, layer.input_layernorm(x)
            q = attn.q_proj(h).view(b, 1, self.heads, self.head_dim).transpose(1, 2)
            k = attn.k_proj(h).view(b, 1, self.kv_heads, self.head_dim).transpose(1, 2)
            v = attn.v_proj(h).view(b, 1, self.kv_heads, self.head_dim).transpose(1, 2)
            q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
            keys, values = getattr(self, f"k{i}"), getattr(self, f"v{i}")
            keys.index_copy_(2, pos.view(1), k)
            values.index_copy_(2, pos.view(1), v)
            if self.sdpa:
                o = F.scaled_dot_product_attention(q, keys, values, attn_mask=~hidden, enable_gqa=True).transpose(1, 2).reshape(b, 1, -1)
            else:
                scores = torch.matmul(q.reshape(b, self.kv_heads, group, self.head_dim), keys.transpose(2, 3)) * scale
                p = scores.float().masked_fill(hidden, float("-inf")).softmax(-1).to(q.dtype)
                o = torch.matmul(p, values).reshape(b, 1, self.heads * self.head_dim)
            x = x + attn.o_proj(o)
            x = x + layer.mlp(layer.post_attention_layernorm(x))
        return gumbel_pick(self.model.lm_head(inner.norm(x[:, -1])))


def gumbel_pick(logits):
    u = torch.rand_like(logits, dtype=torch.float32).clamp_(1e-20, 1.0 - 2**-24)
    return (logits.float() - torch.log(-torch.log(u))).argmax(-1, keepdim=True)


def run_decoder(side, args, dtype, decoder, ids, step):
    """Times the prefill (uncompiled) and `new_tokens - 1` calls of `step(token, i)` (the
    token after the `i`-th new one), reporting the prefill's time and the mean step's."""
    phases = {}

    def call():
        torch.cuda.synchronize()
        start = time.perf_counter()
        token = gumbel_pick(decoder.forward(ids, 0))
        torch.cuda.synchronize()
        prefill = time.perf_counter() - start
        out = [token]
        for i in range(args.new_tokens - 1):
            token = step(token, i)
            out.append(token)
        torch.cuda.synchronize()
        phases.update(prefill_s=prefill, step_ms=(time.perf_counter() - start - prefill) * 1e3 / max(1, args.new_tokens - 1))
        assert torch.cat(out, 1).shape == (args.batch, args.new_tokens)

    first, mean = timed(args, call)
    report(side, dtype, args, first, mean, **phases)


def run_plain(model, cfg, args, dtype):
    decoder = PlainDecoder(model, cfg, args.batch, args.prompt_tokens + args.new_tokens)
    step = lambda token, i: gumbel_pick(decoder.forward(token, args.prompt_tokens + i))
    run_decoder("plain PyTorch decoder (static cache, SDPA, no CUDA graphs)", args, dtype, decoder, prompts(cfg, args), step)


def run_compiled(model, cfg, args, dtype, sdpa=False):
    from torch._dynamo.utils import counters
    counters.clear()
    decoder = PlainDecoder(model, cfg, args.batch, args.prompt_tokens + args.new_tokens)
    compiled = torch.compile(CompiledStep(model, decoder, sdpa), mode="reduce-overhead", fullgraph=True)
    positions = [torch.tensor(args.prompt_tokens + i, device="cuda") for i in range(args.new_tokens)]
    # A graph's outputs are overwritten by its next replay: keep a copy.
    step = lambda token, i: compiled(token, positions[i]).clone()
    attention = "SDPA with enable_gqa" if sdpa else "grouped products"
    side = f"compiled PyTorch decoder (torch.compile reduce-overhead: fused, CUDA graphs, static cache; {attention})"
    run_decoder(side, args, dtype, decoder, prompts(cfg, args), step)
    # Whether the step compiled once and replayed as a graph (recompiles, graphs skipped).
    print(json.dumps({"side": f"compiled ({attention}): torch.compile counters", **{k: dict(v) for k, v in counters.items() if k in ("stats", "inductor", "graph_break")}}, default=str)[:3000], flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--prompt-tokens", type=int, default=96)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sides", default="generate", help="comma-separated: generate, plain, compiled, compiled-sdpa")
    ap.add_argument("--dtypes", default="f32,bf16", help="comma-separated: f32, bf16")
    args = ap.parse_args()
    cfg = LlamaConfig.from_json_file(args.config)
    cfg._attn_implementation = "sdpa"
    sides = {"generate": run_generate, "plain": run_plain, "compiled": run_compiled,
             "compiled-sdpa": lambda *a: run_compiled(*a, sdpa=True)}
    for name in args.dtypes.split(","):
        torch.manual_seed(0)
        model = LlamaForCausalLM(cfg).cuda().to(DTYPES[name]).eval()
        for side in args.sides.split(","):
            torch.cuda.reset_peak_memory_stats()
            try:
                with torch.no_grad():
                    sides[side](model, cfg, args, name)
            except Exception as error:  # one side failing leaves the others' numbers
                print(json.dumps({"side": side, "dtype": name, "batch": args.batch, "error": f"{type(error).__name__}: {error}"[:2000]}), flush=True)
            torch.cuda.empty_cache()
        del model
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
