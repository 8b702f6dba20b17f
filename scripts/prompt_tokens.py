#!/usr/bin/env python3
"""Prompt tokens per document of the two classification modes: the four per-behavior
prompts together vs. the one joint prompt, over a docs table, with the cut the classify
stage applies (max_doc_tokens, then back to the last newline).

Usage: prompt_tokens.py --docs runs/demo/docs --tokenizer ~/.cache/habits/tokenizers/qwen3/tokenizer.json
Needs pyarrow and tokenizers (pip).
"""

import argparse
import os

import pyarrow.parquet as pq
from tokenizers import Tokenizer

BEHAVIORS = ["backtracking", "verification", "subgoal_setting", "backward_chaining"]


def cut(tok, text, max_tokens):
    enc = tok.encode(text, add_special_tokens=False)
    if len(enc.ids) <= max_tokens:
        return text
    head = text[: enc.offsets[max_tokens - 1][1]]
    i = head.rfind("\n")
    return head[:i] if i > 0 else head


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", required=True)
    ap.add_argument("--tokenizer", required=True)
    ap.add_argument("--prompts", default=os.path.join(os.path.dirname(__file__), "..", "configs", "prompts", "classify"))
    ap.add_argument("--max-doc-tokens", type=int, default=3072)
    args = ap.parse_args()
    tok = Tokenizer.from_file(os.path.expanduser(args.tokenizer))
    templates = {name: open(os.path.join(args.prompts, f"{name}.md"), encoding="utf-8").read() for name in BEHAVIORS + ["joint"]}
    texts = pq.read_table(args.docs, columns=["text"]).column("text").to_pylist()
    per, joint, doc_tokens = 0, 0, 0
    for text in texts:
        doc = cut(tok, text, args.max_doc_tokens)
        doc_tokens += len(tok.encode(doc, add_special_tokens=False).ids)
        count = lambda name: len(tok.encode(templates[name].replace("{{document}}", doc), add_special_tokens=False).ids)
        per += sum(count(b) for b in BEHAVIORS)
        joint += count("joint")
    n = len(texts)
    print(f"{n} documents, {doc_tokens / n:.0f} document tokens each after the cut at {args.max_doc_tokens}")
    print(f"per-behavior (4 requests): {per / n:.0f} prompt tokens per document")
    print(f"joint (1 request):         {joint / n:.0f} prompt tokens per document ({per / joint:.2f}x fewer)")


if __name__ == "__main__":
    main()
