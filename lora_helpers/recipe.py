"""The course's LoRA training recipe, in one place.

Every setting of a course training run lives in :data:`RECIPE` (a frozen :class:`Recipe`): the LoRA
shape (rank, alpha, dropout, target layers), the optimisation (learning rate, steps, batch size,
scheduler and warm-up), the data (split sizes, sequence length) and the seed.
``lora_helpers.training.sft_config``, ``lora_helpers.training.train_lora_adapter``,
``lora_helpers.data.make_task_splits``, ``scripts/build_adapters.py`` (the demo adapters in adapters/
were built with these values) and ``scripts/train_lora.py`` (its command-line defaults) all read it.

A variant is a copy: ``RECIPE.replace(max_steps=120)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class Recipe:
    """One LoRA training run of the course: LoRA shape, optimisation, data sizes, seed."""

    # LoRA
    r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.0
    target_modules: str | tuple[str, ...] = "all-linear"  # "all-linear" or short layer names ("q_proj", ...)
    # optimisation
    learning_rate: float = 1e-3
    max_steps: int = 60              # ≈ 1.2 epochs of n_train rows at batch 8 (the demo adapters: ≥ 90% on the test split)
    batch_size: int = 8              # per device / process
    grad_accum: int = 1
    lr_scheduler_type: str = "constant_with_warmup"
    warmup_steps_max: int = 5        # warm-up: one step per `warmup_every` steps, at most `warmup_steps_max`
    warmup_every: int = 10
    eval_steps: int | None = 10      # validation loss every N steps (None or 0: no evaluation during training)
    eval_batch_size: int = 16
    max_length: int = 192            # tokens per training example: every row of both tasks fits (longest 187)
    seed: int = 0                    # data, LoRA initialisation and batch order
    # data (lora_helpers.data.make_task_splits): the size of each split (each drawn on its own); every test row is scored
    n_train: int = 400
    n_val: int = 40
    n_test: int = 50

    def __post_init__(self):
        if isinstance(self.target_modules, list):  # keep the recipe hashable
            object.__setattr__(self, "target_modules", tuple(self.target_modules))

    def warmup_steps(self, max_steps: int | None = None) -> int:
        """Warm-up steps for a run of ``max_steps`` steps (default: the recipe's): 10 %, at most 5."""
        steps = self.max_steps if max_steps is None else max_steps
        return min(self.warmup_steps_max, max(steps // self.warmup_every, 0))

    def lora_config(self, **overrides):
        """peft's ``LoraConfig`` of this recipe for a causal LM; ``overrides`` go straight to ``LoraConfig``."""
        from peft import LoraConfig

        targets = self.target_modules if isinstance(self.target_modules, str) else list(self.target_modules)
        settings = {"r": self.r, "lora_alpha": self.lora_alpha, "lora_dropout": self.lora_dropout,
                        "target_modules": targets, "task_type": "CAUSAL_LM"}
        settings.update(overrides)
        return LoraConfig(**settings)

    def replace(self, **changes) -> Recipe:
        """A copy with some settings changed: ``RECIPE.replace(max_steps=120)``."""
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict:
        """Every setting, JSON-ready (target modules as a string or a list)."""
        values = dataclasses.asdict(self)
        if not isinstance(self.target_modules, str):
            values["target_modules"] = list(self.target_modules)
        return values


RECIPE = Recipe()

# What each setting means, in the learner's language: the help of scripts/train_lora.py's flags, which are made
# from the recipe's fields (one flag per field, ``--max-steps`` for ``max_steps``); a test checks every field has one.
FIELD_HELP = {
    "r": "hạng (rank) r của LoRA",
    "lora_alpha": "lora_alpha (hệ số tỉ lệ alpha/r)",
    "lora_dropout": "lora_dropout, trong [0, 1)",
    "target_modules": '"all-linear" hoặc danh sách tên lớp cách nhau bằng dấu phẩy, ví dụ q_proj,v_proj',
    "learning_rate": "tốc độ học (learning rate)",
    "max_steps": "số bước tối ưu",
    "batch_size": "lô (batch) trên MỖI thiết bị/tiến trình",
    "grad_accum": "số bước tích luỹ gradient",
    "lr_scheduler_type": "lịch tốc độ học của transformers (constant_with_warmup, cosine, linear, ...)",
    "warmup_steps_max": "số bước khởi động (warm-up) tối đa",
    "warmup_every": "một bước khởi động cho mỗi chừng này bước huấn luyện",
    "eval_steps": "đánh giá loss trên tập kiểm định mỗi N bước (0: chỉ đánh giá ở cuối)",
    "eval_batch_size": "lô khi đánh giá",
    "max_length": "số token tối đa của một ví dụ huấn luyện",
    "seed": "hạt giống cho dữ liệu, khởi tạo LoRA và thứ tự lô",
    "n_train": "số ví dụ huấn luyện",
    "n_val": "số ví dụ kiểm định (validation)",
    "n_test": "số câu của tập kiểm tra (mọi câu đều được chấm)",
}
