"""Counting LoRA parameters in closed form, and measuring / modelling training memory."""

from __future__ import annotations

import os
import resource
import sys
import threading
import time

from .layers import linear_layers


def lora_layer_params(r: int, d_in: int, d_out: int) -> int:
    """LoRA parameters of one adapted ``d_out x d_in`` layer: ``A`` (``r x d_in``) + ``B`` (``d_out x r``)."""
    return r * (d_in + d_out)


def lora_param_count(model, r: int, target_modules="all-linear") -> int:
    """Closed-form number of LoRA parameters: sum of ``r * (d_in + d_out)`` over adapted layers.

    Each adapted ``W`` of shape ``d_out x d_in`` gets ``A`` (``r x d_in``) and ``B`` (``d_out x r``).
    ``d_in``/``d_out`` are read from each layer, so grouped-query attention (``k_proj``/``v_proj``
    smaller than ``q_proj``) and the MLP's wider layers are counted correctly.
    """
    return sum(lora_layer_params(r, m.in_features, m.out_features) for _, m in linear_layers(model, target_modules))


def lora_param_table(model, ranks=(4, 8, 16), targets=None) -> list[dict]:
    """Rows ``{"r", "targets", "n_lora", "percent"}`` for each rank x target choice."""
    targets = targets or {"q,v": ["q_proj", "v_proj"], "all-linear": "all-linear"}
    n_base = sum(p.numel() for p in model.parameters())
    rows = []
    for label, target in targets.items():
        for r in ranks:
            n = lora_param_count(model, r, target)
            rows.append({"r": r, "targets": label, "n_lora": n, "percent": 100 * n / n_base})
    return rows


def trainable_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts of ``model``."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total


def current_rss() -> int:
    """Resident memory of this process in bytes (Linux /proc; elsewhere the peak from getrusage)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak if sys.platform == "darwin" else peak * 1024


def release_freed_memory() -> None:
    """Collect garbage and hand freed heap pages back to the OS (glibc ``malloc_trim``; no-op elsewhere).

    On CPU we measure memory as resident set size (RSS). glibc keeps freed memory in the process,
    so after one training run the RSS stays high and a second run's growth would look smaller than
    it is. Trimming first makes the baseline of each measurement honest.
    """
    import ctypes
    import gc

    gc.collect()
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass


def training_state_bytes(model, optimizer=None) -> dict:
    """Bytes held by the training state, counted from the real tensors (not a formula).

    * ``weights``: every parameter of ``model``;
    * ``gradients``: one gradient per trainable parameter (same dtype), the tensors that exist
      during each step (they may already be freed when you call this after training);
    * ``optimizer``: every tensor in ``optimizer.state`` (Adam: two moments per trainable parameter);
    * ``total``: the sum. Activations are not included: they depend on batch and sequence length.
    """
    import torch

    params = list(model.parameters())
    parts = {
        "weights": sum(p.numel() * p.element_size() for p in params),
        "gradients": sum(p.numel() * p.element_size() for p in params if p.requires_grad),
        "optimizer": 0,
    }
    if optimizer is not None:
        for state in optimizer.state.values():
            parts["optimizer"] += sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v))
    parts["total"] = parts["weights"] + parts["gradients"] + parts["optimizer"]
    return parts


class PeakMemory:
    """Context manager measuring the peak memory *added* while its block runs.

    * CUDA: ``torch.cuda.max_memory_allocated`` (after ``reset_peak_memory_stats``), in bytes;
    * CPU: resident memory (RSS) sampled every ``interval`` seconds by a background thread,
      minus the RSS at entry (``getrusage``'s peak cannot be reset, so we sample instead).

    After the block: ``.peak_bytes`` (added peak) and ``.seconds`` (wall-clock time).
    """

    def __init__(self, device: str = "cpu", interval: float = 0.05):
        self.device, self.interval = device, interval
        self.peak_bytes = 0
        self.seconds = 0.0

    def _sample(self):
        while not self._stop.is_set():
            self._peak = max(self._peak, current_rss())
            self._stop.wait(self.interval)

    def __enter__(self):
        import torch

        self._start = time.perf_counter()
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            release_freed_memory()      # so memory freed by an earlier run does not hide this one's growth
            self._base = self._peak = current_rss()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        import torch

        if self.device == "cuda":
            torch.cuda.synchronize()
            self.peak_bytes = torch.cuda.max_memory_allocated() - self._base
        else:
            self._stop.set()
            self._thread.join()
            self._peak = max(self._peak, current_rss())
            self.peak_bytes = self._peak - self._base
        self.seconds = time.perf_counter() - self._start
        return False


def training_memory_estimate(n_total: int, n_trainable: int, weight_bytes: int = 4, grad_bytes: int = 4,
                             optimizer_bytes: int = 8, activation_bytes: int = 0) -> dict:
    """Simple memory model of one training step, in bytes.

    * weights: every parameter, ``weight_bytes`` each (4 for fp32, 2 for fp16/bf16);
    * gradients: only trainable parameters, ``grad_bytes`` each;
    * optimizer states: Adam keeps two moments per trainable parameter (``optimizer_bytes``
      = 8 for two fp32 moments);
    * activations: passed in (they depend on batch size and sequence length, not on LoRA).
    """
    parts = {
        "weights": n_total * weight_bytes,
        "gradients": n_trainable * grad_bytes,
        "adam": n_trainable * optimizer_bytes,
        "activations": activation_bytes,
    }
    parts["total"] = sum(parts.values())
    return parts
