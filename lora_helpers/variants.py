"""LoRA variants side by side: peft's config for each named variant, one short training run, merge parity.

* :data:`VARIANTS`: the variants the course compares, each one switch of peft's ``LoraConfig``:
  ``"lora"`` (plain), ``"rslora"`` (``use_rslora=True``: scaling alpha/sqrt(r) instead of alpha/r),
  ``"dora"`` (``use_dora=True``: a trainable magnitude vector per output), ``"pissa"``
  (``init_lora_weights="pissa_niter_4"``: A, B from a fast SVD of W, base weight shifted) and
  ``"olora"`` (``init_lora_weights="olora"``: A, B from a QR of W, base weight shifted);
* :func:`variant_config`: that ``LoraConfig``, with the rank and the name checked first (Vietnamese
  :class:`~lora_helpers.errors.CourseError` that says what to do);
* :func:`lora_scaling`: the factor the adapter's output is multiplied by (alpha/r, or alpha/sqrt(r));
* :func:`tokenize_rows` / :func:`make_batches`: course rows as padded causal-LM batches whose labels
  cover the answer only (the prompt is masked with -100), in a seeded order;
* :func:`train_steps`: a plain PyTorch loop (AdamW) over those batches, returning the loss per step;
* :func:`variant_data`: the data every run of lora_from_scratch_and_variants (and its recorded sweep) trains and is measured on;
* :func:`train_variant`: one run of a variant on a course task (fresh base model, same data, seed,
  steps and rank for every variant); it returns a :class:`VariantRun` with the loss curve,
  validation loss, test verdicts (teacher forced, in fp32), seconds per step, peak memory and trainable parameters;
* :func:`merge_parity`: does ``merge_and_unload`` of a copy give the same model (``lora_helpers.parity``)?

Comparisons between runs go through ``lora_helpers.stats`` (at least 3 seeds per variant: ``records/variant_seeds``).
"""

from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import dataclass, field

from .errors import CourseError

VARIANTS = ("lora", "rslora", "dora", "pissa", "olora")
PISSA_INIT = "pissa_niter_4"  # fast (randomised) SVD with 4 subspace iterations: what PEFT's docs suggest for speed
VARIANT_LABELS = {"lora": "LoRA", "rslora": "rsLoRA", "dora": "DoRA", "pissa": "PiSSA", "olora": "OLoRA"}
# The variants whose initialisation rewrites the base weights in memory (W' = W - s·B·A).
SHIFTS_BASE = frozenset({"pissa", "olora"})


def check_rank(r) -> int:
    """``r`` as a positive int; a Vietnamese :class:`CourseError` otherwise (bool, float, 0, negative)."""
    if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
        raise CourseError(
            f"Hạng r phải là số nguyên dương, bạn đưa r={r!r}.",
            "Dùng một số nguyên như r=8 (hạng nhỏ: 4, 8, 16 là đủ cho mô hình của khoá học).",
        )
    return r


def check_variant(variant) -> str:
    """``variant`` normalised (lower case, no surrounding space); a Vietnamese :class:`CourseError` if unknown."""
    name = variant.strip().lower() if isinstance(variant, str) else variant
    if name not in VARIANTS:
        raise CourseError(
            f"Không có biến thể LoRA tên {variant!r}.",
            f"Chọn một trong {list(VARIANTS)}, ví dụ variant_config(\"dora\").",
        )
    return name


def variant_config(variant: str, r: int = 8, lora_alpha: float = 16, target_modules=("q_proj", "v_proj"),
                   lora_dropout: float = 0.0, **overrides):
    """peft's ``LoraConfig`` of a named variant (:data:`VARIANTS`) for a causal LM.

    The rank and the name are checked before anything is built. Every variant shares ``r``,
    ``lora_alpha``, ``target_modules`` and ``lora_dropout``; only its one switch differs.
    ``overrides`` go straight to ``LoraConfig``.
    """
    from peft import LoraConfig

    name = check_variant(variant)
    check_rank(r)
    if not isinstance(lora_alpha, (int, float)) or isinstance(lora_alpha, bool) or lora_alpha <= 0:
        raise CourseError(f"lora_alpha phải là số dương, bạn đưa {lora_alpha!r}.", "Thường chọn lora_alpha = r hoặc 2*r.")
    switches = {
        "lora": {},
        "rslora": {"use_rslora": True},
        "dora": {"use_dora": True},
        "pissa": {"init_lora_weights": PISSA_INIT},
        "olora": {"init_lora_weights": "olora"},
    }[name]
    targets = target_modules if isinstance(target_modules, str) else list(target_modules)
    settings = {"r": r, "lora_alpha": lora_alpha, "lora_dropout": lora_dropout, "target_modules": targets,
                "task_type": "CAUSAL_LM", **switches}
    settings.update(overrides)
    return LoraConfig(**settings)


def lora_scaling(r: int, lora_alpha: float, rslora: bool = False) -> float:
    """The factor s of ΔW = s·B·A: ``alpha / r`` (LoRA) or ``alpha / sqrt(r)`` (rsLoRA)."""
    check_rank(r)
    return lora_alpha / math.sqrt(r) if rslora else lora_alpha / r


# --------------------------------------------------------------------------- data for a plain loop
def tokenize_rows(tokenizer, rows, max_length: int = 96) -> list[dict]:
    """Each course row (``messages``) as ``{"input_ids", "labels"}`` lists; labels are -100 on the prompt.

    The prompt is rendered with the chat template and the generation prompt; the answer is the rest of
    the full conversation rendered the same way (so it ends with the template's end-of-turn token).
    """
    out = []
    for messages in rows["messages"] if hasattr(rows, "column_names") else [r["messages"] for r in rows]:
        prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        if not full.startswith(prompt):  # pragma: no cover - every chat template the course uses renders a prefix
            raise CourseError("Mẫu hội thoại (chat template) không cho câu hỏi là phần đầu của cả hội thoại.",
                              "Dùng tokenizer của mô hình khoá học.")
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        answer_ids = tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
        ids = (prompt_ids + answer_ids)[:max_length]
        labels = ([-100] * len(prompt_ids) + answer_ids)[:max_length]
        out.append({"input_ids": ids, "labels": labels})
    return out


def collate(examples: list[dict], pad_token_id: int) -> dict:
    """Right-padded tensors ``input_ids``, ``attention_mask``, ``labels`` (-100 on padding)."""
    import torch

    width = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), width), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    labels = torch.full((len(examples), width), -100, dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n] = torch.tensor(e["input_ids"])
        mask[i, :n] = 1
        labels[i, :n] = torch.tensor(e["labels"])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def make_batches(examples: list[dict], batch_size: int, steps: int, seed: int, pad_token_id: int) -> list[dict]:
    """``steps`` batches of ``batch_size`` examples in a seeded shuffled order (reshuffled after each pass)."""
    if not isinstance(batch_size, int) or batch_size < 1 or batch_size > len(examples):
        raise CourseError(f"batch_size phải trong 1..{len(examples)} (số ví dụ), bạn đưa {batch_size!r}.",
                          "Ví dụ: batch_size=4.")
    rng = random.Random(seed)
    order: list[int] = []
    batches = []
    for _ in range(steps):
        if len(order) < batch_size:
            fresh = list(range(len(examples)))
            rng.shuffle(fresh)
            order += fresh
        picked, order = order[:batch_size], order[batch_size:]
        batches.append(collate([examples[i] for i in picked], pad_token_id))
    return batches


def _to(batch: dict, device) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def train_steps(model, batches, learning_rate: float = 1e-3, log=None) -> list[float]:
    """A plain PyTorch loop: AdamW on the trainable parameters, one step per batch; the loss of each step.

    ``log(step, loss)`` is called after every step when given (e.g. to print the loss falling).
    """
    import torch

    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise CourseError("Mô hình không có tham số nào huấn luyện được.",
                          "Gắn bộ điều hợp trước (get_peft_model), hoặc đặt requires_grad=True cho A và B.")
    optimizer = torch.optim.AdamW(params, lr=learning_rate)
    device = next(model.parameters()).device
    model.train()
    losses = []
    for step, batch in enumerate(batches, start=1):
        loss = model(**_to(batch, device)).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        if log is not None:
            log(step, losses[-1])
    return losses


def mean_loss(model, batches) -> float:
    """Mean loss of ``model`` over ``batches`` (no gradients, eval mode; weighted by answer tokens)."""
    import torch

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for batch in batches:
            n = int((batch["labels"][:, 1:] != -100).sum())
            total += model(**_to(batch, device)).loss.item() * n
            tokens += n
    model.train(was_training)
    return total / max(tokens, 1)


# --------------------------------------------------------------------------- one run of one variant
@dataclass
class VariantRun:
    """One training run of one variant: what :func:`train_variant` measured. ``model`` is the trained PeftModel."""

    variant: str
    seed: int
    losses: list
    val_loss: float
    test_accuracy: float | None
    n_test: int
    seconds_per_step: float
    init_seconds: float
    peak_bytes: int
    trainable: int
    total: int
    model: object = field(default=None, repr=False)
    test_correct: list = field(default_factory=list)    # per test row: would greedy decoding write the gold answer?
    test_gold_logprob_per_token: float | None = None    # mean log-probability of a gold answer token (nats)

    @property
    def label(self) -> str:
        return VARIANT_LABELS[self.variant] + ("" if self.seed == 0 else f" (seed {self.seed})")

    def history(self) -> dict:
        """The run as ``training.loss_history`` gives it: ``{"train": [(step, loss)], "eval": [(last, val)]}``."""
        return {"train": list(enumerate(self.losses, start=1)), "eval": [(len(self.losses), self.val_loss)]}


def variant_data(task: str, tokenizer, n_train: int, n_val: int, n_test: int, max_length: int, seed: int = 0):
    """``(splits, train_examples, val_batches, test_rows)`` for :func:`train_variant`: the course splits of ``task``
    drawn with ``seed``, the training rows tokenized (labels on the answer only), the validation rows as one batch,
    the first ``n_test`` test rows."""
    from .data import make_task_splits

    splits = make_task_splits(task, n_train=n_train, n_val=n_val, seed=seed)
    train_examples = tokenize_rows(tokenizer, splits["train"], max_length=max_length)
    val_batches = make_batches(tokenize_rows(tokenizer, splits["validation"], max_length), n_val, 1, seed,
                               tokenizer.pad_token_id)
    return splits, train_examples, val_batches, splits["test"].select(range(n_test))


def train_variant(variant: str, load_base, tokenizer, train_examples: list[dict], val_batches: list[dict],
                  test_rows=None, *, r: int = 8, lora_alpha: float = 16, target_modules=("q_proj", "v_proj"),
                  steps: int = 10, batch_size: int = 4, learning_rate: float = 1e-3, seed: int = 0,
                  device: str | None = None) -> VariantRun:
    """Train ``variant`` for ``steps`` steps on a fresh base model (``load_base()``) with a plain AdamW loop.

    Every variant gets the same batches (``make_batches(train_examples, batch_size, steps, seed)``), the
    same seed for its LoRA initialisation, rank, alpha, targets and learning rate. Measured: the loss of
    each step, the validation loss after training (:func:`mean_loss` on ``val_batches``), the verdict on
    each of ``test_rows`` (``evaluation.teacher_forced_scores`` in fp32, exactly as loaded: would greedy decoding
    write the gold answer?) with the mean log-probability of a gold token; skipped when None), seconds per
    training step, the peak memory added by training (``bench.measure_peak_memory``), and the trainable
    and total parameter counts (DoRA's magnitude vectors included).
    """
    from peft import get_peft_model

    from .bench import measure_peak_memory
    from .env import seed_everything
    from .evaluation import teacher_forced_scores
    from .params import trainable_parameters

    config = variant_config(variant, r=r, lora_alpha=lora_alpha, target_modules=target_modules)
    name = check_variant(variant)
    batches = make_batches(train_examples, batch_size, steps, seed, tokenizer.pad_token_id)
    seed_everything(seed)
    base = load_base()
    start = time.perf_counter()
    model = get_peft_model(base, config)
    init_seconds = time.perf_counter() - start
    trainable, total = trainable_parameters(model)
    if device is not None:
        model.to(device)
    measured = measure_peak_memory(lambda: train_steps(model, batches, learning_rate))
    losses = measured.result
    val_loss = mean_loss(model, val_batches)
    accuracy, n_test, correct, per_token = None, 0, [], None
    if test_rows is not None:
        scores = teacher_forced_scores(model, tokenizer, test_rows, precision=False)
        accuracy, n_test, correct = scores["accuracy"], scores["n"], scores["correct"]
        per_token = sum(scores["gold_logprob"]) / sum(scores["gold_tokens"])
    model.eval()
    return VariantRun(variant=name, seed=seed, losses=losses, val_loss=val_loss, test_accuracy=accuracy, n_test=n_test,
                      seconds_per_step=measured.seconds / steps, init_seconds=init_seconds,
                      peak_bytes=measured.peak_bytes, trainable=trainable, total=total, model=model,
                      test_correct=correct, test_gold_logprob_per_token=per_token)


def step_seconds(models: dict, batch: dict, repeats: int = 5) -> dict:
    """Seconds of one training step (forward, backward; no optimizer) of each model on the same ``batch``,
    measured ``repeats`` times *interleaved* (A, B, A, B, ...) so that a change in the machine's load hits every
    model alike. The gradients are cleared after each step; the models are left in train mode."""
    times = {name: [] for name in models}
    for model in models.values():
        model.train()
    for _ in range(repeats + 1):  # the first round warms up (allocations, kernels) and is not kept
        for name, model in models.items():
            device = next(model.parameters()).device
            start = time.perf_counter()
            model(**_to(batch, device)).loss.backward()
            seconds = time.perf_counter() - start
            model.zero_grad(set_to_none=True)
            times[name].append(seconds)
    return {name: values[1:] for name, values in times.items()}


def merge_parity(peft_model, tokenizer, dataset, max_new_tokens: int | None = None):
    """``merge_and_unload`` a deep copy of ``peft_model`` and compare it with the adapter model (``parity.check_parity``).

    The adapter model itself is left as it is. Returns the :class:`~lora_helpers.parity.ParityResult`
    (fp32 default tolerance, identical greedy generations, equal task metric on ``dataset``).
    """
    from .parity import check_parity

    merged = copy.deepcopy(peft_model).merge_and_unload()
    merged.eval()
    peft_model.eval()
    result = check_parity(peft_model, merged, tokenizer, dataset=dataset, max_new_tokens=max_new_tokens)
    del merged
    return result
