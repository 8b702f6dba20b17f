"""The PyTorch side of the rollout-generation benchmark: transformers' LlamaForCausalLM from
a config (random init), `generate` with sampling at temperature 1 (top-p 1, no top-k) and
every row forced to `--new-tokens` tokens, the same batch and prompt length as
`trainer bench-generate`. One untimed call, then `--repeats` timed calls; one JSON line per
precision (f32 as ours, and bf16 weights).

usage: bench_torch_generate.py --config configs/models/countdown-90m.json --batch 256 --prompt-tokens 96 --new-tokens 128
"""
import argparse
import json
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM


def run(cfg, args, dtype):
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).cuda().to(dtype).eval()
    rows = torch.arange(args.batch, device="cuda").unsqueeze(1)
    cols = torch.arange(args.prompt_tokens, device="cuda").unsqueeze(0)
    ids = (rows * 7919 + cols * 104729 + 3) % cfg.vocab_size
    mask = torch.ones_like(ids)
    kwargs = dict(attention_mask=mask, do_sample=True, temperature=1.0, top_p=1.0, top_k=0,
                  max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, pad_token_id=0)
    times = []
    with torch.no_grad():
        for i in range(args.repeats + 1):
            torch.cuda.synchronize()
            t = time.perf_counter()
            out = model.generate(ids, **kwargs)
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t)
            assert out.shape == (args.batch, args.prompt_tokens + args.new_tokens), out.shape
    mean = sum(times[1:]) / args.repeats
    print(json.dumps({"side": "transformers generate", "dtype": str(dtype).removeprefix("torch."), "batch": args.batch,
                      "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens, "first_call_s": times[0],
                      "seconds": mean, "tokens_per_s": args.batch * args.new_tokens / mean,
                      "torch": torch.__version__}), flush=True)
    del model
    torch.cuda.empty_cache()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", required=True)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--prompt-tokens", type=int, default=96)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cfg = LlamaConfig.from_json_file(args.config)
    cfg._attn_implementation = "sdpa"
    for dtype in (torch.float32, torch.bfloat16):
        run(cfg, args, dtype)


if __name__ == "__main__":
    main()
