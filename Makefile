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

.PHONY: setup dataset test lint bench schema clean generate train eval chaos upload

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

# make train [MODEL=ckpt] [DATA=dir|hub-id] [OUT=dir] [STEPS=n] [LIMIT=n] [GRPO=1] [ARGS=...]
# With no MODEL: a smoke run (tiny random Janus, CPU, minutes) on the default dataset, built first
# if missing. The checkpoint path is printed last; `twig generate --model <it>` loads it.
DATA  ?= data/twig-synthetic
TRAIN_OUT = $(if $(filter command line environment,$(origin OUT)),$(OUT),outputs/train)
SMOKE_SFT  = --limit $(or $(LIMIT),256) --steps $(or $(STEPS),60) --lr 1e-3 --set save_every=20 --set val_every=20
SMOKE_GRPO = --limit 16 --steps $(or $(STEPS),6) --lr 1e-4 --set guide_tokens=16 --set reflect_tokens=16 --set group=4
train: setup
	@test -n "$(MODEL)" || echo "twig: no MODEL given: a SMOKE RUN with a tiny random Janus (checks the plumbing; its images stay noise)"
	@test -f $(DATA)/manifest.json || test "$(DATA)" != data/twig-synthetic || $(MAKE) --no-print-directory dataset
	$(BIN)/twig train sft --data $(DATA) --out $(TRAIN_OUT)/sft $(if $(MODEL),--model $(MODEL) $(if $(STEPS),--steps $(STEPS)) $(if $(LIMIT),--limit $(LIMIT)),$(SMOKE_SFT)) $(ARGS)
	$(if $(GRPO),$(BIN)/twig train grpo --data $(DATA) --model $(TRAIN_OUT)/sft/final --out $(TRAIN_OUT)/grpo $(if $(MODEL),$(if $(STEPS),--steps $(STEPS)),$(SMOKE_GRPO)) $(GRPO_ARGS))

# make eval [MODEL=ckpt] [LIMIT=prompts per category] [OUT=dir] [ARGS="--vqa Salesforce/blip-vqa-base ..."]
eval: setup
	$(BIN)/twig eval $(if $(MODEL),--model $(MODEL)) --limit $(or $(LIMIT),4) \
	  --out $(if $(filter command line environment,$(origin OUT)),$(OUT),outputs/eval) $(ARGS)

# make upload REPO=owner/name [OUT=dataset dir] [PRIVATE=1] [REVISION=branch] [DRY_RUN=1]
# The token comes from HF_TOKEN or `hf auth login`; the dataset is built first if missing.
upload: setup
	@test -n "$(REPO)" || { echo "twig: make upload needs REPO=owner/name (add DRY_RUN=1 to only list)"; exit 2; }
	@test -f $(OUT)/manifest.json || $(MAKE) --no-print-directory dataset OUT=$(OUT)
	$(BIN)/twig upload $(OUT) --repo $(REPO) $(if $(PRIVATE),--private) \
	  $(if $(REVISION),--revision $(REVISION)) $(if $(DRY_RUN),--dry-run) $(ARGS)

# Debian's chromium for the browser test of `twig show`, installed once when missing (as root);
# where apt-get cannot install it, the tests still run and that one test skips, saying why.
.PHONY: test-browser
test-browser:
	@test -x /usr/bin/chromium || { echo "twig: installing chromium (apt-get) for the browser test"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	    --no-install-recommends chromium) >/dev/null 2>&1 \
	  || echo "twig: could not install chromium with apt-get; the browser test will skip"; }

test: setup test-browser
	$(BIN)/python -m pytest -q tests

lint: setup
	$(BIN)/ruff check .

# make chaos: the reliability suite (tests/reliability) with many more trials (TWIG_CHAOS=1; 10-20
# minutes), then its figures (outputs/reliability/figures.json) as docs/reliability.md shows them
chaos: setup
	TWIG_CHAOS=1 $(BIN)/python -m pytest -q tests/reliability; status=$$?; \
	  $(BIN)/python -m tests.reliability.report; exit $$status

bench: setup
	$(BIN)/python bench/pipeline_throughput.py
	$(BIN)/python bench/teacher_throughput.py
	$(BIN)/python bench/engines.py
	$(BIN)/python bench/generate.py
	$(BIN)/python bench/train.py

schema: setup
	$(BIN)/twig schema --out schemas/twig_v1.schema.json

clean:
	rm -rf data/twig-synthetic data/twig-prompt-first data/twig-image-first outputs/generate outputs/train outputs/eval .pytest_cache
