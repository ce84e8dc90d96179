# The two README commands: `make demo` and `make test`. Both set up what they need first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup demo test bench bench-quality clean

setup:
	@tools/setup.sh

demo: setup
	$(PY) -m hymirec.demo

test: setup
	$(PY) -m pytest

bench: setup
	$(PY) -m hymirec.cli bench quality

bench-quality: bench

clean:
	rm -rf runs .pytest_cache .hypothesis
