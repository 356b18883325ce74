"""A lesson's opening call: :func:`start_lesson` does what every notebook's second cell used to spell out.

One call, the same in every lesson, solution and exercise notebook:

* quiet the libraries (transformers' and datasets' progress bars and info logs) and silence only the **named**
  messages of :data:`NOISY_WARNINGS`, each with the reason it adds nothing for a learner; every other warning
  still shows (never all ``UserWarning``: a learner must see what is new);
* seed Python, NumPy and torch (``env.seed_everything``);
* pick the device, the dtype to load weights in, and the precision profile of training
  (``env.pick_device``, ``env.precision_profile``). Weights are loaded in **float32 on every device**: what is
  trained keeps fp32 master weights (a T4's fp16 weights under ``fp16=True`` crash the GradScaler with
  "Attempting to unscale FP16 gradients"; bf16 weights round most AdamW updates away), and comparisons (parity,
  log-probabilities, fingerprints) compute in fp32. The faster compute comes from autocast
  (``SFTConfig(bf16=/fp16=)``, ``precision.autocast()``). ``inference_dtype`` (``env.pick_dtype``) is for a
  model that only generates;
* on CPU, let TRL project only the answer positions through the LM head (``env.compact_lm_head_on_cpu``);
* print the environment (``env.print_environment``), the first thing to paste into a bug report.

It returns a :class:`Lesson` with what the lesson uses: ``device``, ``dtype``, ``inference_dtype``, ``precision`` and
the start time.
"""

from __future__ import annotations

import logging
import re
import time
import warnings
from dataclasses import dataclass

# (category, start of the message as a regular expression, why a learner does not need it). Found by running the
# course's library calls with every warning shown (peft 0.21.2, TRL 1.16.0, transformers 5.23.0).
NOISY_WARNINGS = (
    (Warning, "IProgress not found", "tqdm in a Jupyter kernel without ipywidgets: only the progress bar's look"),
    (UserWarning, "Could not find a config file in",
     "peft, saving an adapter offline: it cannot ask the Hub whether the vocabulary changed (it did not)"),
    (UserWarning, "(OLoRA|PiSSA) changes the base weights of the model and should thus not be used with other adapters",
     "peft raises it on its own conversion save (`path_initial_model_for_weight_conversion` loads the initial adapter "
     "beside the trained one), where nothing is wrong; olora_finetuning shows the case it is meant for, warnings recorded"),
    (FutureWarning, r"`(is_)?gradient_checkpointing(_enable|_disable)?` is deprecated",
     "peft 0.21 and TRL 1.16 still use transformers' old names for activation checkpointing (which the course "
     "keeps off): nothing a learner can change"),
)


# (logger, start of the message as a regular expression, why). Log records, not warnings: filtered on their logger.
NOISY_LOGS = (
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community",
     "bitsandbytes 0.50 on a CPU with avx512_bf16 tries to download an optional faster 4-bit kernel from the Hub "
     "(package `kernels`) when it is imported (peft imports it); offline it falls back to its own kernel, which the "
     "course measures"),
)


class _DropMessages(logging.Filter):
    def __init__(self, pattern: str):
        super().__init__()
        self.pattern = re.compile(pattern)

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.pattern.match(record.getMessage())


@dataclass(frozen=True)
class Lesson:
    """What :func:`start_lesson` set up."""

    device: str
    dtype: object  # what models are loaded (and trained) in: float32 unless the lesson asks otherwise
    precision: object  # env.Precision: the autocast compute of training and task evaluation
    started: float  # time.perf_counter() at the start of the lesson
    inference_dtype: object = None  # env.pick_dtype(device): for a model that only generates (bf16/fp16 on GPUs)

    def elapsed(self) -> float:
        """Seconds since :func:`start_lesson`."""
        return time.perf_counter() - self.started

    def load_base(self, dtype=None):
        """A fresh copy of the course's base model on the lesson's device: exactly
        ``AutoModelForCausalLM.from_pretrained(find_base_model(), dtype=dtype or lesson.dtype).to(lesson.device)``
        (in eval mode, as ``from_pretrained`` leaves it; a Trainer switches to train mode itself).

        The one way every lesson loads the base after its first, written-out ``from_pretrained``: a trainer wraps
        the model it is given, so each run needs its own copy. ``dtype``: a ``torch.dtype`` or its name, e.g.
        ``"bfloat16"`` for a copy in low precision (default: the lesson's ``dtype``, float32)."""
        import torch
        from transformers import AutoModelForCausalLM

        from .models import find_base_model

        if isinstance(dtype, str):
            dtype = _dtype_named(dtype)
        if dtype is not None and not isinstance(dtype, torch.dtype):
            from .errors import CourseError

            raise CourseError(f"`dtype` phải là một torch.dtype hay tên của nó, nhận {dtype!r}.",
                              "Ví dụ: `LESSON.load_base(torch.bfloat16)` hoặc `LESSON.load_base(\"bfloat16\")`.")
        model = AutoModelForCausalLM.from_pretrained(find_base_model(verbose=False), dtype=self.dtype if dtype is None else dtype)
        return model.to(self.device)

    def load_tokenizer(self):
        """The base model's tokenizer, ready for batched generation (a pad token, left padding):
        ``models.load_tokenizer(find_base_model())``."""
        from .models import find_base_model, load_tokenizer

        return load_tokenizer(find_base_model(verbose=False))


def _dtype_named(name: str):
    import torch

    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        from .errors import CourseError

        raise CourseError(f"Không có kiểu số `torch.{name}`.", "Dùng một trong: \"float32\", \"bfloat16\", \"float16\".")
    return dtype


def quiet_libraries() -> None:
    """Progress bars and info logs of transformers and datasets off; the :data:`NOISY_WARNINGS` and
    :data:`NOISY_LOGS` silenced (before the libraries are imported: tqdm and bitsandbytes speak at import time)."""
    for category, message, _why in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
    for name, message, _why in NOISY_LOGS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) and f.pattern.pattern == message for f in logger.filters):
            logger.addFilter(_DropMessages(message))
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()


def start_lesson(seed: int = 0, dtype=None, show: bool = True) -> Lesson:
    """Open a lesson: quiet the libraries, seed, pick device and dtype, switch TRL's CPU LM head, print the
    environment. ``dtype``: the dtype to load weights in (a ``torch.dtype`` or its name); default float32 on every
    device (see the module docstring). ``show=False`` prints nothing (solutions, exercises)."""
    import torch

    from .env import (
        compact_lm_head_on_cpu,
        pick_device,
        pick_dtype,
        precision_profile,
        print_environment,
        seed_everything,
    )

    started = time.perf_counter()
    quiet_libraries()
    seed_everything(seed)
    device = pick_device()
    if isinstance(dtype, str):
        dtype = _dtype_named(dtype)
    dtype = torch.float32 if dtype is None else dtype
    if device == "cpu":
        compact_lm_head_on_cpu()
    if show:
        print_environment()
    return Lesson(device=device, dtype=dtype, precision=precision_profile(device), started=started,
                  inference_dtype=pick_dtype(device))
