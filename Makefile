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

# bench: our methods only (popularity, SASRec, HyMiRec; one seed). bench-quality: the full comparison
# (ablations, the six peer libraries in their own venvs, seeds 0,1,2; hours on a CPU; resumable).
bench: setup
	$(PY) -m hymirec.cli bench quality --peers none --no-ablations --seeds 0

bench-quality: setup
	tools/peers/setup.sh all
	$(PY) -m hymirec.cli bench quality --peers all --seeds 0,1,2 --seeded-ablations hymirec-k3

clean:
	rm -rf runs .pytest_cache .hypothesis
