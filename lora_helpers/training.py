"""SFT settings that fit the device, LoRA config validation, and reading the loss history."""

from __future__ import annotations

from .env import pick_device, pick_dtype
from .errors import CourseError


def sft_config(output_dir: str, max_steps: int = 40, learning_rate: float = 1e-3, batch_size: int = 8,
               eval_steps: int | None = 10, seed: int = 0, max_length: int = 160, **overrides):
    """A TRL ``SFTConfig`` for the course tasks, fitted to the device it runs on.

    * CPU: fp32 (``bf16=False``, TRL defaults to bf16), no activation (gradient) checkpointing
      (it only trades speed for memory we do not lack on a 135M model);
    * CUDA: bf16 where the GPU supports it, else fp16;
    * loss on the completion only (prompt/completion data, see ``data.to_prompt_completion``);
    * logging every step so loss curves have a point per step; evaluation on the validation
      split every ``eval_steps`` steps (``None`` switches evaluation off);
    * nothing saved during training (the lesson saves the adapter explicitly).

    Any ``SFTConfig`` argument can be overridden through ``overrides``.
    """
    import torch
    from trl import SFTConfig

    device = pick_device()
    dtype = pick_dtype(device)
    settings = dict(
        output_dir=output_dir,
        max_steps=max_steps,
        learning_rate=learning_rate,
        per_device_train_batch_size=batch_size,
        per_device_eval_batch_size=16,
        gradient_accumulation_steps=1,
        lr_scheduler_type="constant_with_warmup",
        warmup_steps=min(5, max(max_steps // 10, 0)),
        logging_steps=1,
        eval_strategy="steps" if eval_steps else "no",
        eval_steps=eval_steps,
        save_strategy="no",
        report_to="none",
        seed=seed,
        data_seed=seed,
        max_length=max_length,
        completion_only_loss=True,
        bf16=device == "cuda" and dtype == torch.bfloat16,
        fp16=device == "cuda" and dtype == torch.float16,
        # TRL turns checkpointing on by default; transformers 5 calls it `activation_checkpointing`
        # (`gradient_checkpointing` is a deprecated alias that warns).
        activation_checkpointing=False,
        use_cpu=device == "cpu",
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    settings.update(overrides)
    return SFTConfig(**settings)


def linear_module_names(model) -> list[str]:
    """Short names of the nn.Linear layers of ``model`` (what ``target_modules`` can name), lm_head excluded."""
    import torch

    names = set()
    for full_name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and not full_name.endswith("lm_head"):
            names.add(full_name.split(".")[-1])
    return sorted(names)


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
