# twig-forge: the user's doors. `make dataset` and `make test` set everything up on first use.
PY     ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
RECIPE ?= scene
CONFIG ?= configs/$(RECIPE).yaml
OUT    ?= $(if $(filter scene,$(RECIPE)),data/twig-synthetic,data/twig-$(RECIPE))
LIMIT  ?=
ENGINE ?=
MODEL  ?=
IMAGE_MODEL ?=
SOURCE ?=
ARGS   ?=

.PHONY: setup dataset test lint bench schema clean generate

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
	$(BIN)/twig dataset --config $(CONFIG) --out $(OUT) $(if $(LIMIT),--limit $(LIMIT)) \
	  $(if $(ENGINE),--engine $(ENGINE)) $(if $(MODEL),--model $(MODEL)) \
	  $(if $(IMAGE_MODEL),--set teacher.image.model=$(IMAGE_MODEL)) \
	  $(if $(SOURCE),--set source.path=$(SOURCE)) $(ARGS)
	$(BIN)/twig validate $(OUT)

# make generate [MODEL=deepseek-community/Janus-Pro-7B] [PROMPTS=file|dir|text] [OUT=dir] [LIMIT=n]
# With no MODEL, a tiny random Janus draws noise (offline); real checkpoints want a GPU.
generate: setup
	$(BIN)/twig generate $(if $(MODEL),--model $(MODEL)) \
	  --prompts "$(or $(PROMPTS),assets/t2i-compbench/color_val.txt)" \
	  --out $(if $(filter command line environment,$(origin OUT)),$(OUT),outputs/generate) \
	  --limit $(or $(LIMIT),8) $(ARGS)

test: setup
	$(BIN)/python -m pytest -q tests

lint: setup
	$(BIN)/ruff check .

bench: setup
	$(BIN)/python bench/pipeline_throughput.py
	$(BIN)/python bench/teacher_throughput.py
	$(BIN)/python bench/engines.py
	$(BIN)/python bench/generate.py

schema: setup
	$(BIN)/twig schema --out schemas/twig_v1.schema.json

clean:
	rm -rf data/twig-synthetic data/twig-prompt-first data/twig-image-first outputs/generate .pytest_cache
