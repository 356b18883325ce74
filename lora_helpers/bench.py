"""Latency and peak-memory measurement for the merge lesson (adapter vs merged model).

Rules the helpers follow so that two numbers can be compared:

* warm-up calls run first and are **not** timed (the first call pays for lazy initialisation,
  memory allocation, kernel selection...);
* the median of several repeats is reported (robust to a hiccup), with the minimum and all
  raw times kept;
* on CUDA the device is synchronised before and after each timed call (kernels run
  asynchronously, so without it the clock stops before the work is done);
* generation is timed for *exactly* ``max_new_tokens`` new tokens (``min_new_tokens`` is set to
  the same value, so an early end-of-sequence token cannot make one model look faster);
* torch's thread settings are left as they are: both models are measured under the same ones.

Peak memory reuses :class:`lora_helpers.params.PeakMemory`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .env import pick_device
from .errors import CourseError
from .params import PeakMemory


@dataclass
class Latency:
    """Timings in seconds of the repeats (warm-up excluded)."""

    median: float
    min: float
    times: list[float]

    def __str__(self) -> str:
        return f"trung vị {self.median * 1000:.1f} ms (nhanh nhất {self.min * 1000:.1f} ms, {len(self.times)} lần đo)"


def _cuda_in_use() -> bool:
    """True when there is a CUDA GPU (``env.pick_device``) and this process has already used it."""
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return pick_device() == "cuda" and torch.cuda.is_initialized()


def _sync(enabled: bool) -> None:
    if enabled:
        import torch

        torch.cuda.synchronize()


def measure_latency(fn: Callable[[], Any], warmup: int = 1, repeats: int = 5, cuda_sync: bool | None = None) -> Latency:
    """Call ``fn()`` ``warmup`` times untimed, then ``repeats`` times timed; return a :class:`Latency`.

    ``cuda_sync``: synchronise CUDA around each timed call (default: when CUDA is in use).
    """
    if not isinstance(warmup, int) or warmup < 0:
        raise CourseError(f"`warmup` phải là số nguyên ≥ 0, bạn đưa {warmup!r}.", "Ví dụ: warmup=1.")
    if not isinstance(repeats, int) or repeats < 1:
        raise CourseError(f"`repeats` phải là số nguyên ≥ 1, bạn đưa {repeats!r}.", "Ví dụ: repeats=5.")
    sync = _cuda_in_use() if cuda_sync is None else cuda_sync
    for _ in range(warmup):
        fn()
    _sync(sync)
    times = []
    for _ in range(repeats):
        _sync(sync)
        start = time.perf_counter()
        fn()
        _sync(sync)
        times.append(time.perf_counter() - start)
    return Latency(median=statistics.median(times), min=min(times), times=times)


def _generation_runner(model, tokenizer, prompts, max_new_tokens: int, batch_size: int | None):
    """Tokenize ``prompts`` once (outside any timed region) and return ``(run, device)``.

    ``run()`` greedily generates exactly ``max_new_tokens`` new tokens for every prompt; its first
    call checks that count (an unfair comparison is an error, not a silent number).
    """
    import torch

    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = [[{"role": "user", "content": p}] if isinstance(p, str) else p for p in prompts]
    if not prompts:
        raise CourseError("Không có câu nào để đo (danh sách rỗng).", "Truyền ít nhất một câu hỏi.")
    if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise CourseError(f"`max_new_tokens` phải là số nguyên ≥ 1, bạn đưa {max_new_tokens!r}.",
                          "Ví dụ: max_new_tokens=32.")
    from .models import encode_chat

    device = next(model.parameters()).device
    size = batch_size or len(prompts)
    batches = [encode_chat(tokenizer, prompts[i : i + size], device) for i in range(0, len(prompts), size)]
    checked = []

    def run():
        with torch.no_grad():
            for batch in batches:
                out = model.generate(**batch, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                                     do_sample=False, pad_token_id=tokenizer.pad_token_id,
                                     eos_token_id=tokenizer.eos_token_id)
                if not checked:
                    new = out.shape[1] - batch["input_ids"].shape[1]
                    if new != max_new_tokens:
                        raise CourseError(
                            f"Mô hình sinh {new} token mới thay vì đúng {max_new_tokens}: phép đo sẽ không công bằng.",
                            "Kiểm tra generation_config của mô hình (stop_strings, max_length...).",
                        )
        checked.append(True)

    return run, device


def generation_latency(model, tokenizer, prompts, max_new_tokens: int = 32, warmup: int = 1, repeats: int = 3,
                       batch_size: int | None = None, return_all: bool = False):
    """Median seconds to greedily generate exactly ``max_new_tokens`` new tokens for ``prompts``.

    ``prompts`` are chat prompts (lists of messages, or plain strings = one user turn), rendered
    with the chat template, left-padded and tokenized once, outside the timed region. All prompts
    go in one batch unless ``batch_size`` is given (then one timed call covers every batch). The
    first (warm-up) call also checks that each row really got ``max_new_tokens`` new tokens.
    With ``return_all=True`` the full :class:`Latency` is returned instead of the median.
    """
    run, device = _generation_runner(model, tokenizer, prompts, max_new_tokens, batch_size)
    was_training = model.training
    model.eval()
    try:
        latency = measure_latency(run, warmup=max(warmup, 0), repeats=repeats,
                                  cuda_sync=getattr(device, "type", str(device)) == "cuda")
    finally:
        model.train(was_training)
    return latency if return_all else latency.median


def compare_latency(fns: dict, warmup: int = 1, rounds: int = 5, cuda_sync: bool | None = None) -> dict:
    """Time several callables **interleaved**: ``{name: Latency}``.

    Each round calls every function once, in order (A, B, C, A, B, C, ...), after ``warmup``
    untimed calls of each. If the machine gets busier or quieter during the measurement, every
    contender is affected alike, which timing them one after the other would not guarantee.
    """
    if not fns:
        raise CourseError("Không có gì để đo (từ điển rỗng).", "Truyền ví dụ {'cơ sở': f1, 'đã hợp nhất': f2}.")
    if not isinstance(rounds, int) or rounds < 1:
        raise CourseError(f"`rounds` phải là số nguyên ≥ 1, bạn đưa {rounds!r}.", "Ví dụ: rounds=5.")
    if not isinstance(warmup, int) or warmup < 0:
        raise CourseError(f"`warmup` phải là số nguyên ≥ 0, bạn đưa {warmup!r}.", "Ví dụ: warmup=1.")
    sync = _cuda_in_use() if cuda_sync is None else cuda_sync
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            _sync(sync)
            start = time.perf_counter()
            fn()
            _sync(sync)
            times[name].append(time.perf_counter() - start)
    return {name: Latency(median=statistics.median(t), min=min(t), times=t) for name, t in times.items()}


def compare_generation_latency(models: dict, tokenizer, prompts, max_new_tokens: int = 32, warmup: int = 1,
                               rounds: int = 5, batch_size: int | None = None) -> dict:
    """Interleaved generation latency of several models on the same prompts: ``{name: Latency}``.

    Every model generates exactly ``max_new_tokens`` new tokens for the same tokenized prompts
    (see :func:`generation_latency`); the calls are interleaved round by round
    (:func:`compare_latency`) so that load changes on the machine do not favour one model.
    """
    runners, devices, modes = {}, set(), {}
    for name, model in models.items():
        runners[name], device = _generation_runner(model, tokenizer, prompts, max_new_tokens, batch_size)
        devices.add(getattr(device, "type", str(device)))
        modes[name] = model.training
        model.eval()
    try:
        return compare_latency(runners, warmup=warmup, rounds=rounds, cuda_sync="cuda" in devices)
    finally:
        for name, model in models.items():
            model.train(modes[name])


@dataclass
class Measured:
    """What :func:`measure_peak_memory` returns: the callable's result, added peak bytes, seconds."""

    result: Any
    peak_bytes: int
    seconds: float


def measure_peak_memory(fn: Callable[[], Any], device: str | None = None, interval: float = 0.01) -> Measured:
    """Run ``fn()`` once inside :class:`lora_helpers.params.PeakMemory`; return result and added peak.

    ``device``: ``"cuda"`` measures ``torch.cuda.max_memory_allocated`` (exact); anything else
    samples the process's resident memory every ``interval`` seconds (a call much shorter than
    ``interval`` may show 0). Default: ``"cuda"`` when CUDA is in use, else ``"cpu"``.
    """
    device = device or ("cuda" if _cuda_in_use() else "cpu")
    device = "cuda" if str(device).startswith("cuda") else "cpu"
    with PeakMemory(device=device, interval=interval) as peak:
        result = fn()
    return Measured(result=result, peak_bytes=int(peak.peak_bytes), seconds=peak.seconds)
