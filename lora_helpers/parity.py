"""Does the merged model behave like the adapter model? Logits, greedy generations, task metric.

``merge_and_unload`` replaces ``W x + B (A x) * s`` by ``(W + s * B @ A) x``. The two are the
same function in exact arithmetic, but not in floating point: the merged weight is rounded once
more when ``s * B @ A`` is added to ``W``, and the matrix product then sums its terms in a
different order. So the logits of a correct merge differ from the adapter's by a few units of
rounding error, amplified a little by every layer. Exact equality is therefore *not* the test;
the test is:

1. the largest absolute logit difference over every (non-padding) prompt token is at most a
   tolerance that fits the precision (dtype) of the models (:func:`default_tolerance`; in fp32
   a correct merge of the course model differs by ~2e-4, the default tolerance is 1e-3);
2. the greedy generations are token-for-token identical (when two candidate tokens are nearly
   tied, a rounding-size difference may flip one; that is rare in fp32 and is reported with the
   prompt and token index where it happens);
3. optionally, the task metric of both models is the same.

:func:`check_parity` works on chat prompts with a tokenizer; :func:`check_parity_ids` on token
ids (what the former calls after tokenizing). Both return a :class:`ParityResult` whose
:meth:`~ParityResult.verdict` is one fixed Vietnamese line: it names counts and the tolerance,
never timings or the measured difference (which changes from one machine to another), so a
notebook cell printing it can be checked by nbval.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from .errors import CourseError

# Default tolerances on the max |logit difference| between an adapter model and its merge,
# sized from measurements on SmolLM2-135M-Instruct (30 layers, logits up to ~40) with the course
# adapter `don_hang` (r=8, all linear layers), 8-20 test prompts, on CPU:
#   fp32: correct merge 1.1e-4..2.0e-4 (rounding only); delta off by 1 % -> 0.56; delta added
#         twice -> 32; adapter forgotten -> 35.  Default 1e-3: 5x above the noise, 500x below a
#         1 % mistake.
#   fp16: correct merge 0.38 (the fp16 adapter model itself differs from fp32 by 0.24). Default 1.
#   bf16: correct merge 3.8 (the bf16 adapter model itself differs from fp32 by 3.3: bf16 keeps
#         8 significant bits, and rounding W + delta to bf16 loses part of a small delta).
#         Default 8: still catches a forgotten adapter or a doubled delta, but not a small error.
#         Merge and compare in fp32 when you can.
_TOLERANCES = {"float32": 1e-3, "float16": 1.0, "bfloat16": 8.0}
_DTYPE_LABELS = {"float32": "fp32", "float16": "fp16", "bfloat16": "bf16"}


def _dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def default_tolerance(dtype) -> float:
    """Default tolerance on the max |logit difference| for models computing in ``dtype``.

    fp32 ``1e-3``, fp16 ``1.0``, bf16 ``8.0``: a few times above the rounding noise a *correct*
    merge of the course model showed in each precision (fp32 2e-4, fp16 0.38, bf16 3.8; see the
    table above ``_TOLERANCES``), below what a wrong merge does (fp32: a delta off by 1 % moves
    logits by 0.56). See the module docstring for why a correct merge is not bit-identical.
    In bf16 the logit test is coarse (the precision noise is itself ~3), so compare in fp32.
    ``dtype`` is a ``torch.dtype`` or its name (``"float32"``).
    """
    name = _dtype_name(dtype)
    if name not in _TOLERANCES:
        raise CourseError(
            f"Không có ngưỡng mặc định cho kiểu số `{name}`.",
            "Dùng float32, float16 hoặc bfloat16 (so sánh ở float32 là chặt nhất), hoặc tự đặt `tolerance=`.",
        )
    return _TOLERANCES[name]


def _format_tolerance(tol: float) -> str:
    if tol >= 0.01 or tol == 0:
        return f"{tol:g}"
    short = f"{tol:.0e}"
    return short if float(short) == tol else f"{tol:.2e}"


@dataclass
class ParityResult:
    """Outcome of a parity check between model A (e.g. adapter) and model B (e.g. merged).

    ``first_divergence`` is ``None`` when every generation is identical, else
    ``(prompt_index, token_index)`` of the first prompt whose generations differ and the index
    (0 = first new token) of the first differing token. ``metric_a``/``metric_b`` are the task
    accuracies (``None`` when no dataset was given). ``passed`` is True when the logit
    difference is within ``tolerance``, every generation is identical (if ``require_identical``)
    and the metrics are equal.
    """

    max_abs_logit_diff: float
    tolerance: float
    n_prompts: int
    n_identical_generations: int
    first_divergence: tuple[int, int] | None
    metric_a: float | None
    metric_b: float | None
    passed: bool
    dtype: str = "float32"
    require_identical: bool = True
    tokens_a: list = field(default_factory=list, repr=False)
    tokens_b: list = field(default_factory=list, repr=False)
    texts_a: list = field(default_factory=list, repr=False)
    texts_b: list = field(default_factory=list, repr=False)

    @property
    def logits_ok(self) -> bool:
        return math.isfinite(self.max_abs_logit_diff) and self.max_abs_logit_diff <= self.tolerance

    @property
    def generations_ok(self) -> bool:
        return self.n_identical_generations == self.n_prompts

    @property
    def metrics_ok(self) -> bool:
        return self.metric_a is None or self.metric_b is None or self.metric_a == self.metric_b

    def _tolerance_text(self) -> str:
        label = _DTYPE_LABELS.get(self.dtype, self.dtype)
        is_default = self.dtype in _TOLERANCES and _TOLERANCES[self.dtype] == self.tolerance
        origin = f"ngưỡng mặc định cho {label}" if is_default else f"ngưỡng bạn đặt, mô hình {label}"
        return f"{_format_tolerance(self.tolerance)} ({origin})"

    def verdict(self) -> str:
        """One fixed Vietnamese line: ✅ KHỚP or ❌ KHÔNG KHỚP, naming what failed.

        It contains only counts, indices and the tolerance (no timing, no measured difference),
        so it is the same on every run that reaches the same conclusion.
        """
        n, same = self.n_prompts, self.n_identical_generations
        if self.passed:
            parts = [f"{same}/{n} câu sinh giống hệt"]
            if self.metric_a is not None:
                parts.append("độ chính xác tác vụ bằng nhau")
            parts.append(f"chênh lệch logits lớn nhất ≤ {self._tolerance_text()}")
            return "✅ KHỚP: " + ", ".join(parts)
        problems = []
        if not math.isfinite(self.max_abs_logit_diff):
            problems.append("logits có NaN/Inf")
        elif not self.logits_ok:
            problems.append(f"chênh lệch logits lớn nhất vượt ngưỡng {self._tolerance_text()}")
        if not self.generations_ok:
            text = f"chỉ {same}/{n} câu sinh giống hệt"
            if self.first_divergence is not None:
                p, t = self.first_divergence
                text += f" (câu đầu tiên khác: câu #{p}, từ token mới thứ {t})"
            problems.append(text)
        if not self.metrics_ok:
            problems.append("độ chính xác tác vụ khác nhau")
        if not problems:  # only possible if `passed` was set by hand
            problems.append("kết quả không đạt")
        return "❌ KHÔNG KHỚP: " + "; ".join(problems)

    def details(self) -> str:
        """Multi-line Vietnamese report with the measured numbers (these vary between machines)."""
        lines = [
            f"Chênh lệch logits lớn nhất: {self.max_abs_logit_diff:.3e} (ngưỡng {_format_tolerance(self.tolerance)})",
            f"Câu sinh giống hệt: {self.n_identical_generations}/{self.n_prompts}",
        ]
        if self.first_divergence is not None:
            p, t = self.first_divergence
            lines.append(f"Khác nhau đầu tiên: câu #{p}, token mới thứ {t}")
        if self.metric_a is not None:
            lines.append(f"Độ chính xác: A = {self.metric_a:.1%}, B = {self.metric_b:.1%}")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.verdict()


# --------------------------------------------------------------------------- low-level pieces
def _device_of(model):
    try:
        return next(model.parameters()).device
    except StopIteration:  # pragma: no cover - a model without parameters
        raise CourseError("Mô hình không có tham số nào.", "Truyền vào một mô hình đã nạp trọng số.") from None


def _dtype_of(model):
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


def _check_pair(model_a, model_b):
    if model_a is model_b:
        raise CourseError(
            "Hai mô hình cần so sánh là cùng một đối tượng.",
            "Hợp nhất một bản sao: `merged = merge_checked(model, copy=True)`, rồi so sánh `model` với `merged`.",
        )
    dev_a, dev_b = _device_of(model_a), _device_of(model_b)
    if dev_a != dev_b:
        raise CourseError(
            f"Hai mô hình nằm trên hai thiết bị khác nhau ({dev_a} và {dev_b}); so sánh như vậy trộn "
            "sai số của thiết bị vào phép kiểm tra hợp nhất.",
            f"Đưa cả hai về cùng một thiết bị trước, ví dụ `model_b = model_b.to('{dev_a}')`.",
        )
    return dev_a


def first_divergence(seqs_a, seqs_b) -> tuple[int, int] | None:
    """``(prompt_index, token_index)`` of the first pair of sequences that differ, else ``None``.

    ``token_index`` is the length of their common prefix (if one sequence is a strict prefix of
    the other, it is the index just past the shorter one).
    """
    for i, (a, b) in enumerate(zip(seqs_a, seqs_b)):
        a, b = list(a), list(b)
        if a != b:
            j = 0
            while j < min(len(a), len(b)) and a[j] == b[j]:
                j += 1
            return i, j
    return None


def max_logit_diff(model_a, model_b, input_ids, attention_mask=None, batch_size: int = 8) -> float:
    """Largest ``|logits_a - logits_b|`` over every non-padding position.

    One forward pass per model and batch, under ``torch.no_grad``; positions where
    ``attention_mask`` is 0 (padding) are ignored. Returns ``nan`` if any compared logit is NaN.
    Each model computes in its own dtype (fp32 weights: fp32), even right after a mixed-precision
    ``Trainer`` left its forward wrapped in autocast (``env.fp32_forward``).
    """
    import torch

    from .env import fp32_forward

    device = _check_pair(model_a, model_b)
    input_ids = torch.as_tensor(input_ids)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    attention_mask = torch.as_tensor(attention_mask)
    worst = 0.0
    with torch.no_grad(), fp32_forward(model_a, model_b):
        for start in range(0, input_ids.shape[0], batch_size):
            ids = input_ids[start : start + batch_size].to(device)
            mask = attention_mask[start : start + batch_size].to(device)
            logits_a = model_a(input_ids=ids, attention_mask=mask).logits
            logits_b = model_b(input_ids=ids, attention_mask=mask).logits
            if logits_a.shape != logits_b.shape:
                raise CourseError(
                    f"Hai mô hình cho logits khác kích thước ({tuple(logits_a.shape)} và {tuple(logits_b.shape)}).",
                    "Hai mô hình phải cùng mô hình cơ sở và cùng bộ từ vựng (tokenizer).",
                )
            diff = (logits_a.float() - logits_b.float()).abs()[mask.bool()]
            if diff.numel() == 0:
                continue
            if torch.isnan(diff).any():
                return float("nan")
            worst = max(worst, diff.max().item())
    return worst


def greedy_tokens(model, input_ids, attention_mask=None, max_new_tokens: int = 32, eos_token_id=None,
                  pad_token_id=None, batch_size: int = 16) -> list[list[int]]:
    """Greedy new tokens per row (left-padded input), each cut just after its first EOS.

    The model computes in its own dtype, without a Trainer's autocast wrapper (``env.fp32_forward``)."""
    import torch

    from .env import fp32_forward

    device = _device_of(model)
    input_ids = torch.as_tensor(input_ids)
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    attention_mask = torch.as_tensor(attention_mask)
    eos = eos_token_id if eos_token_id is not None else model.generation_config.eos_token_id
    eos_set = set(eos) if isinstance(eos, (list, tuple)) else ({eos} if eos is not None else set())
    pad = pad_token_id if pad_token_id is not None else (min(eos_set) if eos_set else 0)
    result = []
    with torch.no_grad(), fp32_forward(model):
        for start in range(0, input_ids.shape[0], batch_size):
            ids = input_ids[start : start + batch_size].to(device)
            mask = attention_mask[start : start + batch_size].to(device)
            out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, eos_token_id=eos, pad_token_id=pad)
            for row in out[:, ids.shape[1]:].tolist():
                cut = next((k + 1 for k, t in enumerate(row) if t in eos_set), len(row))
                result.append(row[:cut])
    return result


def check_parity_ids(model_a, model_b, input_ids, attention_mask=None, tolerance: float | None = None,
                     max_new_tokens: int = 32, eos_token_id=None, pad_token_id=None, batch_size: int = 8,
                     require_identical: bool = True) -> ParityResult:
    """Parity check on token ids: max logit difference plus greedy generations (no metric).

    ``tolerance`` defaults to :func:`default_tolerance` of model A's dtype. Both models are put in
    eval mode for the check (and back in training mode afterwards if they were).
    """
    import torch

    input_ids = torch.as_tensor(input_ids)
    if input_ids.ndim != 2 or input_ids.shape[0] == 0 or input_ids.shape[1] == 0:
        raise CourseError(
            "Không có câu nào để so sánh (danh sách rỗng).",
            "Truyền ít nhất một câu hỏi, ví dụ `prompts_of(test)[:8]`.",
        )
    _check_pair(model_a, model_b)
    dtype = _dtype_name(_dtype_of(model_a))
    tolerance = default_tolerance(dtype) if tolerance is None else float(tolerance)
    if not tolerance >= 0:
        raise CourseError(f"Ngưỡng `tolerance` phải ≥ 0, bạn đưa {tolerance!r}.", "Ví dụ: tolerance=1e-3.")
    modes = (model_a.training, model_b.training)
    model_a.eval()
    model_b.eval()
    try:
        diff = max_logit_diff(model_a, model_b, input_ids, attention_mask, batch_size=batch_size)
        kwargs = {"max_new_tokens": max_new_tokens, "eos_token_id": eos_token_id, "pad_token_id": pad_token_id,
                  "batch_size": batch_size}
        tokens_a = greedy_tokens(model_a, input_ids, attention_mask, **kwargs)
        tokens_b = greedy_tokens(model_b, input_ids, attention_mask, **kwargs)
    finally:
        model_a.train(modes[0])
        model_b.train(modes[1])
    n_same = sum(a == b for a, b in zip(tokens_a, tokens_b))
    result = ParityResult(
        max_abs_logit_diff=diff, tolerance=tolerance, n_prompts=len(tokens_a), n_identical_generations=n_same,
        first_divergence=first_divergence(tokens_a, tokens_b), metric_a=None, metric_b=None, passed=False,
        dtype=dtype, require_identical=require_identical, tokens_a=tokens_a, tokens_b=tokens_b,
    )
    result.passed = _passed(result)
    return result


def _passed(result: ParityResult) -> bool:
    return result.logits_ok and result.metrics_ok and (result.generations_ok or not result.require_identical)


# --------------------------------------------------------------------------- prompt level
def _normalise_prompts(prompts) -> list:
    if isinstance(prompts, str):
        prompts = [prompts]
    return [[{"role": "user", "content": p}] if isinstance(p, str) else list(p) for p in prompts]


def check_parity(model_a, model_b, tokenizer, prompts=None, dataset=None, tolerance: float | None = None,
                 max_new_tokens: int | None = None, batch_size: int = 8,
                 require_identical: bool = True) -> ParityResult:
    """Compare two causal LMs (adapter vs merged, or any pair) on chat prompts.

    * ``prompts``: a list of chat prompts (each a list of ``{"role", "content"}`` messages, as
      returned by ``lora_helpers.data.prompts_of``; plain strings are taken as one user turn);
    * ``dataset``: optional rows with ``messages``, ``answer`` and ``task`` (a course split). When
      given, ``prompts`` defaults to ``prompts_of(dataset)`` and both models are also scored with
      the task metric (``metric_a``/``metric_b`` = accuracy);
    * ``tolerance``: max allowed |logit difference|; default :func:`default_tolerance` of model
      A's dtype (1e-3 in fp32);
    * ``max_new_tokens``: greedy generation length (default: the task's, else 32).

    Prompts are rendered with the chat template (generation prompt added), tokenized once with
    left padding, and the same ids go to both models. Generations are decoded like
    ``lora_helpers.evaluation.generate`` (special tokens skipped, whitespace stripped).
    """
    from .data import prompts_of
    from .evaluation import MAX_NEW_TOKENS, task_metrics

    if prompts is None and dataset is not None:
        prompts = prompts_of(dataset)
    if prompts is None or len(prompts) == 0:
        raise CourseError(
            "Không có câu nào để so sánh (danh sách câu hỏi rỗng).",
            "Truyền ít nhất một câu hỏi, ví dụ `prompts=prompts_of(test)[:8]` hoặc `dataset=test.select(range(8))`.",
        )
    prompts = _normalise_prompts(prompts)
    task = None
    if dataset is not None:
        columns = getattr(dataset, "column_names", None) or []
        if not {"answer", "task"} <= set(columns):
            raise CourseError(
                f"`dataset` cần các cột `answer` và `task` để tính độ chính xác (đang có: {columns}).",
                "Dùng một tập của khoá học (`make_task_splits(...)['test']`), hoặc bỏ `dataset=`.",
            )
        if len(dataset) != len(prompts):
            raise CourseError(
                f"Số câu hỏi ({len(prompts)}) khác số dòng của `dataset` ({len(dataset)}).",
                "Truyền `dataset=` một mình (câu hỏi lấy từ nó), hoặc chọn cùng các dòng cho cả hai.",
            )
        task = dataset[0]["task"]
    if max_new_tokens is None:
        max_new_tokens = MAX_NEW_TOKENS.get(task, 32) if task else 32

    from .models import encode_chat

    batch = encode_chat(tokenizer, prompts)
    result = check_parity_ids(
        model_a, model_b, batch["input_ids"], batch["attention_mask"], tolerance=tolerance,
        max_new_tokens=max_new_tokens, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        batch_size=batch_size, require_identical=require_identical,
    )
    result.texts_a = [t.strip() for t in tokenizer.batch_decode(result.tokens_a, skip_special_tokens=True)]
    result.texts_b = [t.strip() for t in tokenizer.batch_decode(result.tokens_b, skip_special_tokens=True)]
    if task is not None:
        result.metric_a = task_metrics(task, result.texts_a, dataset["answer"])["accuracy"]
        result.metric_b = task_metrics(task, result.texts_b, dataset["answer"])["accuracy"]
        result.passed = _passed(result)
    return result
