"""Training a LoRA adapter the course's way: the SFT settings, the one training function, the metrics file.

* :func:`sft_config`: TRL's ``SFTConfig`` for the course tasks, fitted to the device;
* :func:`check_lora_config`: a ``LoraConfig`` checked against the model, Vietnamese error with the fix;
* :func:`train_lora_adapter`: the whole recipe (``lora_helpers.recipe.RECIPE``) on a course task, on one
  process or several (``accelerate launch`` / ``torchrun``): what ``scripts/train_lora.py`` and
  ``scripts/build_adapters.py`` both run; it returns a :class:`LoraRun`;
* :func:`write_metrics` / :func:`read_metrics`: the one metrics file a run writes beside its adapter;
* :func:`loss_history`, :func:`steps_to_reach`: reading the loss curves of a trainer;
* :func:`estimate_callback`: a Trainer callback that prints the run's expected duration after its second step.
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path

from .env import pick_device, precision_profile, remove_autocast_wrapper
from .errors import CourseError
from .layers import linear_module_names
from .numbers import duration
from .recipe import RECIPE, Recipe


def sft_config(output_dir: str, max_steps: int | None = None, learning_rate: float | None = None,
               batch_size: int | None = None, eval_steps: int | None = ..., seed: int | None = None,
               max_length: int | None = None, *, recipe: Recipe = RECIPE, device: str | None = None, **overrides):
    """A TRL ``SFTConfig`` for the course tasks, fitted to the device it runs on.

    Every training setting comes from ``recipe`` (default: the course recipe ``lora_helpers.recipe.RECIPE``):
    steps, learning rate, batch size, gradient accumulation, scheduler and warm-up, evaluation steps and batch,
    sequence length, seed. An argument given here replaces the recipe's value for this call (``eval_steps=None``
    switches evaluation off; left out, it is the recipe's); so ``sft_config(d, recipe=RECIPE.replace(
    learning_rate=5e-4))`` trains at 5e-4, and a new recipe field either reaches ``SFTConfig`` or is a LoRA
    or data setting (``tests/test_recipe_training.py`` checks every field).

    * precision from ``env.precision_profile(device)``, the one decision for every device: on CPU fp32
      (``bf16=False``; TRL defaults to bf16), or bf16 mixed precision where the CPU computes bf16 natively and
      measurably faster; on CUDA bf16 where the GPU computes it natively, else fp16, never emulated bf16;
    * no activation (gradient) checkpointing (it only trades speed for memory we do not lack on a 135M model);
    * ``device``: where to train (default ``env.pick_device()``); ``"cpu"`` trains on the CPU even
      when there is a GPU;
    * loss on the completion only (prompt/completion data, see ``data.to_prompt_completion``);
    * logging every step so loss curves have a point per step; evaluation on the validation
      split every ``eval_steps`` steps (``None`` switches evaluation off);
    * nothing saved during training (the lesson saves the adapter explicitly).

    Any ``SFTConfig`` argument can be overridden through ``overrides``.
    """
    from trl import SFTConfig

    device = device or pick_device()
    precision = precision_profile(device)
    max_steps = recipe.max_steps if max_steps is None else max_steps
    learning_rate = recipe.learning_rate if learning_rate is None else learning_rate
    batch_size = recipe.batch_size if batch_size is None else batch_size
    eval_steps = recipe.eval_steps if eval_steps is ... else eval_steps
    seed = recipe.seed if seed is None else seed
    max_length = recipe.max_length if max_length is None else max_length
    settings = {
        "output_dir": output_dir,
        "max_steps": max_steps,
        "learning_rate": learning_rate,
        "per_device_train_batch_size": batch_size,
        "per_device_eval_batch_size": recipe.eval_batch_size,
        "gradient_accumulation_steps": recipe.grad_accum,
        "lr_scheduler_type": recipe.lr_scheduler_type,
        "warmup_steps": recipe.warmup_steps(max_steps),
        "logging_steps": 1,
        "eval_strategy": "steps" if eval_steps else "no",
        "eval_steps": eval_steps,
        "save_strategy": "no",
        "report_to": "none",
        "seed": seed,
        "data_seed": seed,
        "max_length": max_length,
        "completion_only_loss": True,
        "bf16": precision.bf16,
        "fp16": precision.fp16,
        # TRL turns checkpointing on by default; transformers 5 calls it `activation_checkpointing`
        # (`gradient_checkpointing` is a deprecated alias that warns).
        "activation_checkpointing": False,
        "use_cpu": device == "cpu",
        "dataloader_num_workers": 0,
        "disable_tqdm": True,
    }
    settings.update(overrides)
    return SFTConfig(**settings)


def check_lora_config(model, config) -> None:
    """Check a ``LoraConfig`` against ``model`` before training; Vietnamese error with the fix.

    Catches the mistakes learners make most: ``r`` not a positive integer, a
    ``target_modules`` name that no layer of the model has, and a non-positive ``lora_alpha``.
    """
    r = getattr(config, "r", None)
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        raise CourseError(
            f"Hạng r phải là số nguyên dương, bạn đặt r={r!r}.",
            "Bắt đầu với hạng nhỏ: LoraConfig(r=4) hoặc r=8.",
        )
    alpha = getattr(config, "lora_alpha", None)
    if alpha is None or alpha <= 0:
        raise CourseError(f"lora_alpha phải dương, bạn đặt {alpha!r}.", "Thường chọn lora_alpha = r hoặc 2*r.")
    targets = config.target_modules
    if targets is None or isinstance(targets, str):
        return  # "all-linear" or a regex: peft resolves it
    available = linear_module_names(model)
    unknown = sorted(set(targets) - set(available))
    if unknown:
        raise CourseError(
            f"Mô hình không có lớp nào tên {unknown} để gắn LoRA.",
            f"Các lớp tuyến tính của mô hình này: {available}. Hoặc dùng target_modules=\"all-linear\".",
        )


def estimate_callback(label: str = ""):
    """A Trainer callback that prints, once the second step is done, how long the whole run should take here.

    ``trainer.add_callback(estimate_callback())`` before ``trainer.train()``: after step 2 it prints
    "Bước đầu 7.3 s, bước thứ hai 3.6 s: cả 12 bước khoảng 47 s trên máy này (chưa kể các lần đánh giá)". The
    first step is slower than the others (memory is allocated, kernels picked), so the estimate is the first step
    plus the second step's time for every later step (a one-step run prints after its only step).
    """
    import time as _time

    from transformers import TrainerCallback

    class _EarlyStepsEstimate(TrainerCallback):
        def __init__(self):
            self.marks = []

        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 0:
                self.marks = [_time.perf_counter()]

        def on_step_end(self, args, state, control, **kwargs):
            if not self.marks or len(self.marks) > 2 or not state.is_world_process_zero:
                return
            self.marks.append(_time.perf_counter())
            if len(self.marks) < 3 and state.max_steps > 1:
                return
            first = self.marks[1] - self.marks[0]
            steps = f"bước đầu {first:.1f} s"
            total = first
            if len(self.marks) == 3:
                second = self.marks[2] - self.marks[1]
                steps += f", bước thứ hai {second:.1f} s"
                total += second * (state.max_steps - 1)
            print(f"{label + ': ' if label else ''}{steps[0].upper() + steps[1:]}: cả {state.max_steps} bước khoảng "
                  f"{duration(total)} trên máy này"
                  + (" (chưa kể các lần đánh giá)" if args.eval_strategy != "no" else ""), flush=True)
            self.marks.append(None)  # printed: nothing more

    return _EarlyStepsEstimate()


def loss_history(trainer_or_log) -> dict:
    """Train and validation loss per step from a trainer (or its ``state.log_history``).

    Returns ``{"train": [(step, loss), ...], "eval": [(step, loss), ...]}``.
    """
    log = getattr(getattr(trainer_or_log, "state", None), "log_history", trainer_or_log)
    train = [(e["step"], e["loss"]) for e in log if "loss" in e and "step" in e]
    evals = [(e["step"], e["eval_loss"]) for e in log if "eval_loss" in e]
    return {"train": train, "eval": evals}


def steps_to_reach(curve, threshold: float):
    """First step at which a loss curve [(step, loss), ...] is at or below ``threshold`` (None if never)."""
    for step, loss in curve:
        if loss <= threshold:
            return step
    return None


# --------------------------------------------------------------------------- one training run
@dataclass
class LoraRun:
    """What :func:`train_lora_adapter` set up and did. ``trainer`` holds the trained adapter model.

    ``data`` has the splits at the recipe's sizes; ``test_rows`` is the test split (every row is scored). ``base_test`` is the test metric of the base model before training (when asked for),
    ``test`` the one of the trained model (after :meth:`evaluate_test`).
    """

    task: str
    recipe: Recipe
    model_path: str
    device: str
    dtype: object
    tokenizer: object
    data: object
    trainer: object = None
    base_test: dict | None = None
    train_output: object = None
    train_seconds: float = 0.0
    test: dict | None = None
    test_seconds: float = 0.0

    @property
    def test_rows(self):
        return self.data["test"]

    @property
    def model(self):
        """The trained adapter model, unwrapped from DDP."""
        return self.trainer.accelerator.unwrap_model(self.trainer.model)

    @property
    def is_main_process(self) -> bool:
        return self.trainer.accelerator.is_main_process

    def save(self, path, overwrite: bool = False, base_model_name: str | None = None) -> Path:
        """Save the adapter to ``path`` (main process only; every process must call it).

        Under FSDP the weights are sharded: every process takes part in gathering the full state
        dict first (accelerate hands it to the main process). ``base_model_name`` is written as the
        adapter's base model; by default the course model converted from the bundled GGUF is
        recorded by its public name, not by this machine's cache path. The fingerprint of the base
        weights is written beside the adapter (``lora_helpers.fingerprint``, ``base_fingerprint.json``;
        not under FSDP), so ``adapters.check_adapter_base`` can tell when it is loaded on another base.
        """
        from .adapters import record_base_model, save_adapter
        from .fingerprint import record_base_fingerprint
        from .models import CACHE_NAME, HUB_ID, cache_dir, describe_base

        trainer, path = self.trainer, Path(path)
        save_kwargs = {}
        if trainer.is_fsdp_enabled:  # not run by this repository's tests (they have no GPU); see docs/multi_gpu.md
            trainer.accelerator.state.fsdp_plugin.set_state_dict_type("FULL_STATE_DICT")
            save_kwargs["state_dict"] = trainer.accelerator.get_state_dict(trainer.model)
        if self.is_main_process:
            save_adapter(self.model, path, overwrite=overwrite, **save_kwargs)
            if base_model_name is None and Path(self.model_path) == cache_dir() / CACHE_NAME:
                base_model_name = HUB_ID
            if base_model_name is not None:
                record_base_model(path, base_model_name)
            if not trainer.is_fsdp_enabled:  # FSDP shards the base weights: no process holds them all
                # The LoRA weights are separate parameters: the base weights in the trained model are
                # still those it was loaded with.
                record_base_fingerprint(path, self.model, base_model=describe_base(self.model_path))
        trainer.accelerator.wait_for_everyone()  # the adapter is saved before any process reads or writes beside it
        return path

    def evaluate_test(self, model=None) -> dict:
        """Score ``model`` (default: the trained adapter model) on the test rows; kept in ``self.test``."""
        from .evaluation import evaluate_task

        start = time.perf_counter()
        self.test = evaluate_task(self.model if model is None else model, self.tokenizer, self.test_rows,
                                  task=self.task)
        self.test_seconds = time.perf_counter() - start
        return self.test

    def metrics(self, base_model: str | None = None) -> dict:
        """The run as the course's metrics record (:func:`write_metrics` writes it; see ``METRICS_FILE``)."""
        from .data import get_task

        trainer, recipe = self.trainer, self.recipe
        log = trainer.state.log_history
        train_losses = [e["loss"] for e in log if "loss" in e]
        evals = [e for e in log if "eval_loss" in e]
        world_size = trainer.args.world_size
        metrics = {
            "task": self.task,
            "train_loss_last_step": train_losses[-1] if train_losses else math.nan,
            "train_loss_mean": self.train_output.training_loss if self.train_output is not None else math.nan,
            "eval_loss": evals[-1]["eval_loss"] if evals else None,
            "steps": trainer.state.global_step,
            "train_seconds": round(self.train_seconds, 2),
            "world_size": world_size,
            "device": str(trainer.args.device),
            "precision": precision_profile(self.device).compute,
            "distributed_type": str(trainer.accelerator.distributed_type).split(".")[-1],
            "effective_batch_size": recipe.batch_size * world_size * recipe.grad_accum,
            "test_metric": get_task(self.task).metric,
        }
        if self.base_test is not None:
            metrics["base_test_accuracy"] = self.base_test["accuracy"]
        if self.test is not None:
            metrics.update(test_accuracy=self.test["accuracy"], n_test=self.test["n"],
                           test_seconds=round(self.test_seconds, 2))
            if "valid_json" in self.test:
                metrics["test_valid_json"] = self.test["valid_json"]
        metrics["settings"] = dict(recipe.as_dict(), base_model=base_model)
        return metrics


def train_lora_adapter(task: str, recipe: Recipe = RECIPE, *, base_model: str | None = None, device: str | None = None,
                       trainer_dir=None, validate: bool = True, measure_base: bool = False, before_training=None,
                       verbose: bool = True, **sft_overrides) -> LoraRun:
    """Train a LoRA adapter on a course task with ``recipe``: the course's one training function.

    Runs on one process, or on several started by ``accelerate launch`` / ``torchrun`` (data parallel:
    every process trains on its own share of each batch; on a CPU-only machine with the gloo backend).
    Every process must call it. Steps:

    1. seed everything (``recipe.seed``); the ``SFTConfig`` of :func:`sft_config` for ``device``
       (default ``env.pick_device()``; creating it sets up ``torch.distributed`` under a launcher);
    2. the base model (``base_model``: a path or Hub id, default ``find_base_model()``; the main
       process finds it first) in float32 (fp32 master weights; the compute is autocast's), its tokenizer, the splits of
       ``make_task_splits(task, recipe.n_train, recipe.n_val, recipe.n_test, seed=recipe.seed)`` (every
       test row is scored);
    3. with ``measure_base``, the base model's test metric (``LoraRun.base_test``);
    4. ``recipe.lora_config()`` checked against the model, ``SFTTrainer(..., peft_config=...)``, with
       the validation split as eval set when ``validate`` (loss every ``recipe.eval_steps`` steps and
       at the end); on CPU, TRL's LM head projects only the answer positions (``env.compact_lm_head_on_cpu``,
       same losses, half the step time);
    5. ``before_training(run)`` if given (e.g. to wrap the data collator or print a header), then
       ``trainer.train()``, timed; afterwards the mixed-precision autocast wrapper the Trainer put on the
       model's forward is removed (``env.remove_autocast_wrapper``), so the trained model computes in fp32.

    ``trainer_dir`` is the Trainer's scratch folder (nothing is saved there; default: a temporary
    folder removed at exit). ``sft_overrides`` go to :func:`sft_config`. Saving and the test metric
    are left to the caller: :meth:`LoraRun.save`, :meth:`LoraRun.evaluate_test`, :meth:`LoraRun.metrics`.
    """
    import torch
    from transformers import AutoModelForCausalLM
    from transformers.training_args import ParallelMode
    from trl import SFTTrainer

    from .data import get_task, make_task_splits, to_prompt_completion
    from .env import compact_lm_head_on_cpu, seed_everything
    from .evaluation import evaluate_task
    from .models import find_base_model, load_tokenizer

    get_task(task)  # unknown name: Vietnamese error listing the valid ones
    device = device or pick_device()
    dtype = torch.float32  # what is trained keeps fp32 master weights on every device (autocast computes)
    world_size_env = int(os.environ.get("WORLD_SIZE", "1"))
    seed_everything(recipe.seed)
    if trainer_dir is None:
        import atexit
        import shutil
        import tempfile

        trainer_dir = tempfile.mkdtemp(prefix="train_lora-")  # Trainer's scratch folder; nothing is saved there
        atexit.register(shutil.rmtree, trainer_dir, ignore_errors=True)

    # 1. The SFTConfig fitted to the device. Creating it also sets up torch.distributed when a launcher
    #    (accelerate launch / torchrun) started several processes.
    overrides = {"ddp_find_unused_parameters": False}  # every LoRA matrix gets a gradient at every step
    if device == "cpu" and world_size_env > 1:
        # use_cpu=True (sft_config sets it for "cpu") makes accelerate choose DistributedType.MULTI_CPU (gloo);
        # without it each process of a CPU-only machine would silently train on its own.
        overrides["ddp_backend"] = "gloo"
    overrides.update(sft_overrides)
    config = sft_config(str(trainer_dir), eval_steps=(recipe.eval_steps or None) if validate else None, recipe=recipe,
                        device=device, **overrides)
    if world_size_env > 1 and (config.world_size != world_size_env or config.parallel_mode != ParallelMode.DISTRIBUTED):
        # e.g. several processes on a CPU-only machine without use_cpu: the process group exists but the model
        # would not be wrapped in DDP, so each process would train alone (verified with transformers 5.23).
        raise CourseError(
            f"Trình khởi chạy mở {world_size_env} tiến trình nhưng Trainer không chạy song song dữ liệu (DDP) "
            f"({config.parallel_mode.value}, {config.world_size} tiến trình): mỗi tiến trình sẽ huấn luyện riêng.",
            "Trên máy chỉ có CPU, TrainingArguments cần use_cpu=True (tự đặt khi không thấy GPU hoặc khi chọn "
            "thiết bị cpu); trên máy có GPU, kiểm tra rằng mọi tiến trình đều thấy GPU (CUDA_VISIBLE_DEVICES).",
        )

    # 2. Model, tokenizer and data. The main process finds the model first (it may convert the bundled
    #    GGUF into the cache once); the others then read the cached copy.
    with config.main_process_first(desc="find the base model"):
        model_path = find_base_model(base_model, verbose=verbose)
    tokenizer = load_tokenizer(model_path)
    data = make_task_splits(task, n_train=recipe.n_train, n_val=recipe.n_val, n_test=recipe.n_test, seed=recipe.seed)
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
    run = LoraRun(task=task, recipe=recipe, model_path=model_path, device=device, dtype=dtype, tokenizer=tokenizer,
                  data=data)

    # 3. The base model's test metric, before LoRA touches it.
    if measure_base:
        run.base_test = evaluate_task(base, tokenizer, run.test_rows, task=task)

    # 4. LoRA, checked against the model before any time is spent training.
    lora_config = recipe.lora_config()
    check_lora_config(base, lora_config)
    compact_lm_head_on_cpu()
    run.trainer = SFTTrainer(
        model=base, args=config, train_dataset=to_prompt_completion(data["train"]),
        eval_dataset=to_prompt_completion(data["validation"]) if validate else None,
        processing_class=tokenizer, peft_config=lora_config,
    )

    # 5. Train.
    if before_training is not None:
        before_training(run)
    start = time.perf_counter()
    run.train_output = run.trainer.train()
    run.train_seconds = time.perf_counter() - start
    if validate:
        evals = [e for e in run.trainer.state.log_history if "eval_loss" in e]
        if not evals or evals[-1]["step"] != run.trainer.state.global_step:
            run.trainer.evaluate()  # collective: every process joins; the loss is averaged over all of them
    # Under bf16/fp16 the Trainer left the model's forward wrapped in autocast: remove it, so that what the caller
    # compares afterwards computes in fp32 (evaluate_task applies the precision profile by itself).
    remove_autocast_wrapper(run.trainer.model)
    return run


# --------------------------------------------------------------------------- the metrics file
METRICS_FILE = "metrics.json"


def write_metrics(directory, metrics: dict) -> Path:
    """Write a run's metrics (:meth:`LoraRun.metrics`) as ``directory/metrics.json`` (UTF-8, indented)."""
    path = Path(directory) / METRICS_FILE
    path.write_text(json.dumps(metrics, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def metrics_path(directory) -> Path | None:
    """The metrics file (``metrics.json``) in ``directory``, else None."""
    path = Path(directory) / METRICS_FILE
    return path if path.is_file() else None


def read_metrics(directory) -> dict:
    """The metrics a run wrote in ``directory``, in the format :meth:`LoraRun.metrics` gives."""
    path = metrics_path(directory)
    if path is None:
        raise CourseError(f"`{directory}` không có tệp {METRICS_FILE}.",
                          "Huấn luyện bằng `python scripts/train_lora.py` (hoặc scripts/build_adapters.py), "
                          "script ghi tệp này cạnh bộ điều hợp.")
    return json.loads(path.read_text(encoding="utf-8"))
