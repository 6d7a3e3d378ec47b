# twig-forge: the user's doors. `make dataset` and `make test` set everything up on first use.
PY     ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= configs/default.yaml
OUT    ?= data/twig-synthetic
LIMIT  ?=
ENGINE ?=
ARGS   ?=

.PHONY: setup dataset test lint bench schema clean

# torch first from the local CPU wheel, then everything else with torch held at that version
# (without the constraint pip would fetch gigabytes of CUDA wheels).
$(BIN)/twig: pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	@touch $@

setup: $(BIN)/twig

dataset: setup
	$(BIN)/twig dataset --config $(CONFIG) --out $(OUT) $(if $(LIMIT),--limit $(LIMIT)) $(if $(ENGINE),--engine $(ENGINE)) $(ARGS)
	$(BIN)/twig validate $(OUT)

test: setup
	$(BIN)/python -m pytest -q tests

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python bench/pipeline_throughput.py

schema: setup
	$(BIN)/twig schema --out schemas/twig_v1.schema.json

clean:
	rm -rf data/twig-synthetic .pytest_cache
