"""Makes the trainer's reference fixtures with `transformers` (CPU torch is enough):
a tiny random Llama (GQA, Llama-3 RoPE scaling, untied embeddings) and a tiny Qwen2
(q/k/v biases, tied embeddings), each with

  config.json, model.safetensors (f32), model.bf16.safetensors,
  sharded/model-0000{1,2}-of-00002.safetensors + model.safetensors.index.json,
  reference.safetensors: input_ids, labels (SFT: prompt positions are -100), logits,
  reference.json: lm loss, sft loss, grad norm of the lm loss, the lm loss after one
  AdamW step (lr 1e-3, betas 0.9/0.95, eps 1e-8, weight decay 0.01), the settings used,
  and greedy `generate` output (8 new tokens) for left-padded prompts of three lengths.

usage: python3 scripts/make_tiny_llama.py [--out trainer/tests/fixtures]
"""
import argparse
import json
import os

import torch
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

ADAMW = dict(lr=1e-3, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01)


def configs():
    llama = LlamaConfig(
        vocab_size=128, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=131072,
        rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False,
        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
        bos_token_id=1, eos_token_id=2, attention_bias=False, mlp_bias=False,
    )
    qwen2 = Qwen2Config(
        vocab_size=128, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
        rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True,
        use_sliding_window=False, bos_token_id=1, eos_token_id=2,
    )
    return {"llama": (llama, LlamaForCausalLM), "qwen2": (qwen2, Qwen2ForCausalLM)}


def make(name, config, cls, out):
    torch.manual_seed({"llama": 1, "qwen2": 2}[name])
    config._attn_implementation = "eager"
    model = cls(config).float().eval()
    # Random init is small; scale norms so every part of the network matters.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif "bias" in n:
                p.copy_(0.05 * torch.randn_like(p))
    d = os.path.join(out, name)
    os.makedirs(os.path.join(d, "sharded"), exist_ok=True)
    config.save_pretrained(d)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    if config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    save_file(state, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    save_file({k: v.to(torch.bfloat16) for k, v in state.items()}, os.path.join(d, "model.bf16.safetensors"), metadata={"format": "pt"})
    names = sorted(state)
    half = len(names) // 2
    weight_map = {}
    for i, part in enumerate([names[:half], names[half:]]):
        file = f"model-0000{i + 1}-of-00002.safetensors"
        save_file({k: state[k] for k in part}, os.path.join(d, "sharded", file), metadata={"format": "pt"})
        weight_map.update({k: file for k in part})
    json.dump({"metadata": {"total_size": sum(v.numel() * 4 for v in state.values())}, "weight_map": weight_map},
              open(os.path.join(d, "sharded", "model.safetensors.index.json"), "w"), indent=2)

    g = torch.Generator().manual_seed(7)
    input_ids = torch.randint(3, config.vocab_size, (2, 12), generator=g)
    labels = input_ids.clone()
    labels[:, :4] = -100  # the prompt: no loss
    with torch.no_grad():
        logits = model(input_ids).logits
        sft = model(input_ids, labels=labels).loss
    prompts = [[5, 17, 99, 3, 42], [7, 8, 9, 10, 11, 12, 13, 14, 15], [100, 1, 64]]
    longest = max(len(p) for p in prompts)
    padded = torch.tensor([[0] * (longest - len(p)) + p for p in prompts])
    attention = torch.tensor([[0] * (longest - len(p)) + [1] * len(p) for p in prompts])
    with torch.no_grad():
        gen = model.generate(input_ids=padded, attention_mask=attention, max_new_tokens=8, do_sample=False, pad_token_id=0, eos_token_id=None)
    greedy = {"prompts": prompts, "new_tokens": gen[:, longest:].tolist()}
    model.train()
    opt = torch.optim.AdamW(model.parameters(), **ADAMW)
    loss = model(input_ids, labels=input_ids).loss
    loss.backward()
    grad_norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in model.parameters() if p.grad is not None))
    opt.step()
    with torch.no_grad():
        after = model(input_ids, labels=input_ids).loss
    save_file({"input_ids": input_ids.contiguous(), "labels": labels.contiguous(), "logits": logits.contiguous()},
              os.path.join(d, "reference.safetensors"))
    ref = {"lm_loss": loss.item(), "sft_loss": sft.item(), "grad_norm": grad_norm.item(), "lm_loss_after_step": after.item(),
           "greedy": greedy, "adamw": {**ADAMW, "betas": list(ADAMW["betas"])}, "torch": torch.__version__,
           "transformers": __import__("transformers").__version__}
    json.dump(ref, open(os.path.join(d, "reference.json"), "w"), indent=2)
    print(name, ref)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="trainer/tests/fixtures")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for name, (config, cls) in configs().items():
        make(name, config, cls, args.out)


if __name__ == "__main__":
    main()
