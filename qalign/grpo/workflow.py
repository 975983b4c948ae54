"""The `grpo` stage: LLaMA-Factory's tokenizer, template, dataset and model, trained by TRL's GRPOTrainer.

Shaped like `llamafactory/train/dpo/workflow.py`. The prompts are encoded by LLaMA-Factory exactly as for predict
(its `ppo` dataset path: template-rendered prompt ids, cut to cutoff_len), decoded back to text for TRL, and the
gold aliases (`answers`, dropped by LLaMA-Factory's `align_dataset`) are re-attached from the same file rows.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qalign.evaluators.metrics import strip_think
from qalign.grpo.args import GRPOArguments, build_grpo_config, parse_grpo_args, split_grpo_args
from qalign.grpo.rewards import get_reward_funcs
from qalign.lf.datasets import registered_rows

if TYPE_CHECKING:
    from datasets import Dataset
    from llamafactory.data import Template
    from llamafactory.hparams import DataArguments, FinetuningArguments, GeneratingArguments, ModelArguments
    from transformers import Seq2SeqTrainingArguments, TrainerCallback

ANSWERS_COLUMN = "answers"


def _logger():  # under LLaMA-Factory's root logger: its stdout handler and LLaMA-Board's running log see it
    from llamafactory.extras import logging

    return logging.get_logger("llamafactory.qalign.grpo")


def train_grpo(config: dict[str, Any]) -> None:
    """The `stage: grpo` branch of LLaMA-Factory's `tuner._training_function`: parse, add its callbacks, train."""
    import torch.distributed as dist
    from llamafactory.hparams import get_train_args

    from qalign.grpo.trainer import check_supported, stage_callbacks

    lf_args, grpo_raw = split_grpo_args(config.get("args"))
    grpo_args = parse_grpo_args(grpo_raw)  # cheap, so argument errors come before any loading
    model_args, data_args, training_args, finetuning_args, generating_args = get_train_args(lf_args)
    check_supported(finetuning_args)
    _logger().info(f"qalign GRPO stage: rank {training_args.process_index} of {training_args.world_size}")
    callbacks = stage_callbacks(model_args, data_args, training_args, finetuning_args, generating_args,
                                config.get("callbacks"))
    run_grpo(model_args, data_args, training_args, finetuning_args, generating_args, callbacks, grpo_args)
    if dist.is_initialized():
        dist.destroy_process_group()


def run_grpo(
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: Seq2SeqTrainingArguments,
    finetuning_args: FinetuningArguments,
    generating_args: GeneratingArguments,
    callbacks: list[TrainerCallback] | None = None,
    grpo_args: GRPOArguments | None = None,
) -> None:
    """Train with GRPO: load tokenizer -> template -> prompts + answers -> model -> GRPOTrainer -> save/log/plot."""
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.extras.ploting import plot_loss
    from llamafactory.model import load_model, load_tokenizer
    from llamafactory.train.trainer_utils import create_modelcard_and_push

    from qalign.grpo.trainer import QalignGRPOTrainer, check_supported

    grpo_args = grpo_args or GRPOArguments()
    check_supported(finetuning_args)
    _check_supported(data_args, training_args)
    config = build_grpo_config(training_args, data_args, finetuning_args, grpo_args)  # validates the batch shape
    config.include_num_input_tokens_seen = False  # TRL counts prompt + completion tokens itself

    tokenizer_module = load_tokenizer(model_args)
    tokenizer = tokenizer_module["tokenizer"]
    template = get_template_and_fix_tokenizer(tokenizer, data_args)
    train_dataset = build_prompt_dataset(template, model_args, data_args, training_args, tokenizer_module)
    model = load_model(tokenizer, model_args, finetuning_args, is_trainable=training_args.do_train)

    trainer = QalignGRPOTrainer(
        finetuning_args=finetuning_args,
        model=model,  # a PeftModel for LoRA: TRL then uses the adapter-disabled model as reference when beta > 0
        reward_funcs=get_reward_funcs(grpo_args.reward_funcs),
        args=config,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    train_result = trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model()
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()
    if trainer.is_world_process_zero() and finetuning_args.plot_loss:
        plot_loss(training_args.output_dir, keys=["loss", "reward"])
    if trainer.is_world_process_zero():  # the verdict `qalign train` prints for every stage
        from qalign.health import judge

        print(judge(trainer.state.log_history, "grpo").line(), flush=True)

    create_modelcard_and_push(trainer, model_args, data_args, training_args, finetuning_args)


def _check_supported(data_args: DataArguments, training_args: Seq2SeqTrainingArguments) -> None:
    """Options the prompt/answer pairing cannot honour, as LLaMA-Factory-style errors."""
    if not training_args.do_train:
        raise ValueError("The GRPO stage only trains: set `do_train: true` (predict with stage sft, then qalign eval).")
    if training_args.do_eval or data_args.eval_dataset is not None or data_args.val_size > 1e-6:
        raise ValueError("The GRPO stage does not evaluate: remove `eval_dataset`/`val_size`/`do_eval` and score "
                         "the adapter with `qalign train predict.yaml` + `qalign eval`.")
    if data_args.streaming or data_args.tokenized_path is not None:
        raise ValueError("The GRPO stage needs the dataset rows (gold answers): turn off `streaming`/`tokenized_path`.")
    if len(data_args.dataset or []) > 1 and data_args.mix_strategy != "concat":
        raise ValueError("The GRPO stage keeps prompts next to their answers: use `mix_strategy: concat`.")


def build_prompt_dataset(
    template: Template,
    model_args: ModelArguments,
    data_args: DataArguments,
    training_args: Seq2SeqTrainingArguments,
    tokenizer_module: dict[str, Any],
) -> Dataset:
    """A `{"prompt", "answers"}` dataset: prompts as LLaMA-Factory renders them for predict, plus the gold aliases."""
    from datasets import Dataset
    from llamafactory.data import get_dataset

    logger = _logger()
    tokenizer = tokenizer_module["tokenizer"]
    encoded = get_dataset(template, model_args, data_args, training_args, stage="ppo", **tokenizer_module)
    encoded = encoded["train_dataset"]
    rows = load_answer_rows(data_args)
    if len(rows) != len(encoded):
        raise ValueError(f"LLaMA-Factory kept {len(encoded)} of {len(rows)} rows of {data_args.dataset}; the GRPO "
                         "stage pairs prompts with answers by row, so every row needs one user turn and an output.")

    prompts, answers = [], []
    for index, (example, (location, response, golds)) in enumerate(zip(encoded, rows, strict=True)):
        # Order check: the response LLaMA-Factory encoded for row i must be row i's `output`.
        got = " ".join(strip_think(tokenizer.decode(example["labels"], skip_special_tokens=True)).split())
        want = " ".join(response.split())
        if got and want and not (got.startswith(want) or want.startswith(got)):
            raise ValueError(f"{location}: row {index} of the encoded dataset answers {got!r}, not {want!r}; "
                             "prompts and answers are out of order (report this with your dataset_info entry).")
        prompts.append(tokenizer.decode(example["input_ids"], skip_special_tokens=False,
                                        clean_up_tokenization_spaces=False))
        answers.append(golds)

    # TRL re-tokenizes the prompt text; count prompts whose ids would differ from LLaMA-Factory's.
    retokenized = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    drift = sum(ids != list(example["input_ids"]) for ids, example in zip(retokenized, encoded, strict=True))
    if drift:
        logger.warning_rank0(f"{drift}/{len(prompts)} GRPO prompts re-tokenize differently from the template ids.")
    logger.info_rank0(f"GRPO prompts: {len(prompts)}; first one:\n{prompts[0] if prompts else ''}")
    return Dataset.from_dict({"prompt": prompts, ANSWERS_COLUMN: answers})


def load_answer_rows(data_args: DataArguments) -> list[tuple[str, str, list[str]]]:
    """(file:row, output text, gold aliases) per row, in the order LLaMA-Factory loads `data_args.dataset`."""
    rows: list[tuple[str, str, list[str]]] = []
    fallback = 0
    for location, record, attr in registered_rows(data_args.dataset, data_args.dataset_dir, data_args.max_samples,
                                                  "the GRPO stage (gold answers)"):
        if attr.formatting != "alpaca":
            raise ValueError(f"Dataset `{attr}`: the GRPO stage expects alpaca columns (instruction/input/output).")
        response = record.get(attr.response or "output") or ""
        golds = record.get(ANSWERS_COLUMN)
        if not isinstance(golds, list) or not golds:
            golds, fallback = [response], fallback + 1
        rows.append((location, str(response), [str(g) for g in golds]))
    if fallback:
        _logger().warning_rank0(
            f"{fallback} GRPO row(s) have no `{ANSWERS_COLUMN}` list; their `output` is the only gold alias."
        )
    return rows
