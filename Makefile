# Two commands on a fresh machine with only Python: `make demo` and `make test`.
# torch==2.13.0 is installed first and on its own: it is the CPU wheel on this machine's disk, and installing it
# before anything that depends on torch keeps pip from resolving a multi-GB CUDA build.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH ?= torch==2.13.0
export HF_HUB_OFFLINE ?= 1

.PHONY: install demo test test-slow bench lint clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

demo: install  ## train, evaluate and report the CPU default into runs/demo
	$(BIN)/iclab demo --out runs/demo

test: install  ## the test suite (minutes; slow scientific checks excluded)
	$(BIN)/python -m pytest -q

test-slow: install  ## the slow scientific checks (train models for minutes)
	$(BIN)/python -m pytest -q -m slow

bench: install  ## speed benchmarks -> benchmarks/results/*.json
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/baselines.py
	$(BIN)/python benchmarks/demo.py
	$(BIN)/python benchmarks/ddp.py

lint: install
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
