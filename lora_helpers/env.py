"""Where are we running? Device, precision, Colab/offline detection, seeds, versions.

Precision is decided in one place, :func:`precision_profile`, for every device:

* CUDA: bf16 where the GPU computes it natively (Ampere and later), else fp16 (a T4 on free Colab),
  never emulated bf16;
* CPU: fp32, or mixed precision (fp32 weights, bf16 compute under autocast) where the CPU computes bf16
  natively (``avx512_bf16``/``amx_bf16`` on x86, ``bf16`` on Arm) *and* a timed matmul confirms it is faster.
  Many laptops lack native bf16: there it is emulated and many times slower, so they stay in fp32.
  ``LORA_COURSE_PRECISION=fp32`` (or ``bf16``) overrides the choice.

Computations that compare numbers (step-0 equality, merge parity, identical logits, the DPO reference
log-probs) run in fp32 whatever the profile: the profile only applies to training and to the
evaluation of task metrics.

A trap on every machine that trains in mixed precision: ``Trainer(bf16=True)`` (or ``fp16=True``; TRL's trainers
too) hands the model to Accelerate, which replaces ``model.forward`` by a version that runs under
``torch.autocast`` and casts the outputs back to float32. The model keeps that forward after ``train()``, so its
logits *look* fp32 but were computed in bf16. :func:`autocast_wrapped` tells whether a model carries it,
:func:`remove_autocast_wrapper` undoes it in place (what
``trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)`` does), and :func:`fp32_forward`
bypasses it for the length of a comparison (``lora_helpers.parity`` uses it).
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import os
import platform
import random
import socket
import sys
import time
from dataclasses import dataclass

HUB_HOST = "huggingface.co"


def in_colab() -> bool:
    """True inside a Google Colab runtime."""
    return "google.colab" in sys.modules or "COLAB_RELEASE_TAG" in os.environ


def hub_disabled() -> bool:
    """True when the learner switched the Hugging Face Hub off (HF_HUB_OFFLINE=1)."""
    value = os.environ.get("HF_HUB_OFFLINE", "").strip().lower()
    return value in {"1", "true", "yes", "on"}


def hub_reachable(timeout: float = 3.0) -> bool:
    """Quick TCP probe of the Hub. Never blocks longer than ``timeout`` seconds.

    Returns False without touching the network when HF_HUB_OFFLINE is set.
    """
    if hub_disabled():
        return False
    try:
        with socket.create_connection((HUB_HOST, 443), timeout=timeout):
            return True
    except OSError:
        return False


def pick_device() -> str:
    """"cuda" when a CUDA GPU is usable, else "mps" on Apple silicon, else "cpu"."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def cuda_bf16_native() -> bool:
    """True when the CUDA GPU computes bf16 in hardware (compute capability 8.0+), emulation not counted."""
    import torch

    try:
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # torch < 2.3 has no `including_emulation`: read the capability
        return torch.cuda.get_device_capability()[0] >= 8


def pick_dtype(device: str | None = None):
    """The dtype to load a model in **for inference only**: bf16 on GPUs that compute it natively, fp16 on older
    GPUs (a T4), fp32 on CPU (where bf16, when native, is used as autocast compute only: see
    :func:`precision_profile`). A model that is trained or compared is loaded in float32 on every device
    (``lesson.start_lesson``): its weights stay fp32 and autocast does the low-precision compute."""
    import torch

    device = device or pick_device()
    if device == "cuda":
        return torch.bfloat16 if cuda_bf16_native() else torch.float16
    return torch.float32


ENV_PRECISION = "LORA_COURSE_PRECISION"
_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 (AVX-512 BF16, AMX) and Arm (FEAT_BF16) names


def cpu_flags() -> set[str] | None:
    """The CPU's feature flags as the OS reports them (Linux /proc/cpuinfo, macOS sysctl); None when unknown."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() in {"flags", "features"}:
                    return set(value.split())
    except OSError:
        pass
    if platform.system() == "Darwin":
        import subprocess

        try:
            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True,
                                 timeout=5, check=False).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
        return {"bf16"} if out == "1" else set()
    return None


def _matmul_seconds(dtype, size: int = 256, repeats: int = 5) -> float:
    import torch

    a, b = torch.randn(size, size).to(dtype), torch.randn(size, size).to(dtype)
    a @ b
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return min(times)


def device_name(device: str = "cpu") -> str:
    """The GPU's name on ``"cuda"``, else the CPU model as the OS reports it (e.g. "AMD EPYC 9R45")."""
    if device == "cuda":
        import torch

        return torch.cuda.get_device_name(0)
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class CpuBf16:
    """Whether this CPU computes bf16 natively, and the evidence (Vietnamese, printed in the lessons)."""

    native: bool
    evidence: str


@functools.lru_cache(maxsize=1)
def cpu_bf16_native(flags=..., timer=None) -> CpuBf16:
    """Ask the OS for the CPU's bf16 flags, and confirm with a tiny timed matmul (bf16 must be ≥1.2× faster).

    Where the OS cannot tell, the timing alone decides. ``flags`` (a frozenset, or None for "the OS cannot tell";
    default: ask the OS) and ``timer`` (``timer(dtype) -> seconds``) are for tests. Cached: a lesson decides once.
    """
    import torch

    flags = cpu_flags() if flags is ... else flags
    timer = timer or _matmul_seconds
    if flags is not None and not (_BF16_FLAGS & set(flags)):
        return CpuBf16(False, "CPU không có lệnh bf16 (avx512_bf16/amx_bf16): bf16 chỉ được giả lập, chậm hơn fp32")
    fp32, bf16 = timer(torch.float32), timer(torch.bfloat16)
    ratio = fp32 / bf16 if bf16 > 0 else 0.0
    source = "CPU có lệnh bf16" if flags is not None else "không đọc được cờ CPU"
    if ratio >= 1.2:
        return CpuBf16(True, f"{source}; đo: nhân ma trận bf16 nhanh gấp {ratio:.1f} lần fp32")
    return CpuBf16(False, f"{source}; nhưng đo: nhân ma trận bf16 chỉ bằng {ratio:.2f} lần tốc độ fp32")


@dataclass(frozen=True)
class Precision:
    """How the course computes on a device: the dtype weights are loaded in for training, the autocast
    compute dtype (None: plain fp32), and why (one Vietnamese line)."""

    device: str
    compute: str  # "fp32", "bf16" or "fp16"
    reason: str

    @property
    def bf16(self) -> bool:
        """For ``SFTConfig``/``DPOConfig(bf16=...)``: mixed precision with bf16 compute."""
        return self.compute == "bf16"

    @property
    def fp16(self) -> bool:
        """For ``SFTConfig``/``DPOConfig(fp16=...)``: mixed precision with fp16 compute (GPUs without bf16)."""
        return self.compute == "fp16"

    @property
    def autocast_dtype(self):
        import torch

        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.compute)

    @property
    def compute_dtype(self):
        """The torch dtype a 4-bit base computes in: ``BitsAndBytesConfig(bnb_4bit_compute_dtype=...)``.

        bf16 where the device computes bf16 natively (a CUDA GPU of capability 8 or more, a CPU that
        :func:`cpu_bf16_native` found fast), fp16 on a GPU without native bf16 (a T4: never emulated bf16),
        float32 otherwise (an AVX2-only CPU, ``LORA_COURSE_PRECISION=fp32``, other devices). It is the profile's
        own decision (:func:`precision_profile`), so 4-bit cells and mixed-precision training agree."""
        import torch

        return self.autocast_dtype or torch.float32

    def autocast(self):
        """``torch.autocast`` for evaluation under this profile (a no-op context in fp32)."""
        import torch

        if self.autocast_dtype is None or self.device not in {"cpu", "cuda"}:
            return contextlib.nullcontext()
        return torch.autocast(self.device, dtype=self.autocast_dtype)

    def describe(self) -> str:
        names = {"fp32": "float32", "bf16": "hỗn hợp bf16 (trọng số fp32, tính bằng bf16)",
                 "fp16": "hỗn hợp fp16 (trọng số fp32, tính bằng fp16)"}
        return f"{names[self.compute]} trên {self.device}: {self.reason}"


def precision_profile(device: str | None = None) -> Precision:
    """The one decision of precision for training and task evaluation on ``device`` (default: this machine's)."""
    device = device or pick_device()
    forced = os.environ.get(ENV_PRECISION, "auto").strip().lower()
    if forced not in {"auto", "fp32", "bf16"}:
        from .errors import CourseError

        raise CourseError(f"{ENV_PRECISION}={forced!r} không hợp lệ.", f"Dùng một trong: auto, fp32, bf16 "
                          f"(ví dụ `export {ENV_PRECISION}=fp32`).")
    if forced == "fp32":
        return Precision(device, "fp32", f"do bạn đặt {ENV_PRECISION}=fp32")
    if device == "cuda":
        if cuda_bf16_native():
            return Precision(device, "bf16", "GPU tính bf16 bằng phần cứng")
        return Precision(device, "fp16", "GPU không tính bf16 bằng phần cứng (ví dụ T4): dùng fp16, không giả lập bf16")
    if device == "cpu":
        if forced == "bf16":
            return Precision(device, "bf16", f"do bạn đặt {ENV_PRECISION}=bf16")
        check = cpu_bf16_native()
        return Precision(device, "bf16" if check.native else "fp32", check.evidence)
    return Precision(device, "fp32", f"{device}: giữ float32 (an toàn nhất)")


# --------------------------------------------------------------------------- the Trainer's autocast wrapper
def _wrapped_modules(model) -> list:
    """The modules of ``model`` (itself included) whose ``forward`` Accelerate wrapped in autocast.

    Accelerate keeps the original forward as the instance attribute ``_original_forward`` while the wrapper is on
    (``Accelerator.prepare_model``) and removes it when it unwraps (``extract_model_from_parallel``)."""
    modules = model.modules() if hasattr(model, "modules") else [model]
    return [m for m in modules if "_original_forward" in vars(m)]


def autocast_wrapped(model) -> bool:
    """True when ``model`` (or a module in it) still runs its forward under a mixed-precision Trainer's autocast.

    That is the case after ``Trainer``/``SFTTrainer``/``DPOTrainer(..., args=...(bf16=True or fp16=True)).train()``
    until the wrapper is removed; with ``bf16=False, fp16=False`` no wrapper is ever added."""
    return bool(_wrapped_modules(model))


def remove_autocast_wrapper(model):
    """Remove the Trainer's autocast wrapper from ``model`` in place and return ``model``.

    The library call, for a model a trainer holds: ``trainer.accelerator.unwrap_model(trainer.model,
    keep_fp32_wrapper=False)``; this does the same (Accelerate's ``extract_model_from_parallel``) for every wrapped
    module of any model. A model without the wrapper is returned unchanged."""
    from accelerate.utils import extract_model_from_parallel

    for module in _wrapped_modules(model):
        extract_model_from_parallel(module, keep_fp32_wrapper=False)
    return model


@contextlib.contextmanager
def fp32_forward(*models):
    """Inside the block, each model computes in its own dtype: no Trainer autocast wrapper, no ``torch.autocast``.

    The wrappers are put back on leaving, so a trainer that goes on training keeps its mixed precision. This is
    what the course's comparisons (``lora_helpers.parity``) run under: on fp32 weights they compute in fp32 on
    every device and profile."""
    import torch

    swapped = []
    for model in models:
        for module in _wrapped_modules(model):
            swapped.append((module, vars(module).get("forward")))
            module.forward = module._original_forward
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(torch.autocast("cpu", enabled=False))
            if torch.cuda.is_available():
                stack.enter_context(torch.autocast("cuda", enabled=False))
            yield
    finally:
        for module, wrapped in swapped:
            if wrapped is None:
                vars(module).pop("forward", None)
            else:
                module.forward = wrapped


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (all devices) so a run can be repeated."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


COURSE_PACKAGES = ("torch", "transformers", "peft", "trl", "accelerate", "datasets")


def compact_lm_head_on_cpu() -> bool:
    """Make TRL's SFT and DPO losses project only the labelled positions through the LM head on CPU, as TRL
    already does on CUDA; returns True when that is the case after the call.

    TRL 1.16 computes its losses with a chunked, fused LM head (``trl.trainer.utils.add_fused_lm_head``): the
    hidden states go through ``lm_head`` tile by tile, without materialising the logits. On a device with Triton
    (CUDA, XPU) it projects only the positions whose label is not -100, i.e. the answer tokens; on any other
    device it projects every position, prompt and padding included, so that a device that compiles one program
    per tensor shape (AWS Neuron) always sees the same tile shapes. A CPU compiles nothing, and there the extra
    work is most of the LM head's cost: the course's rows are ~100 tokens of which ~10 are answer tokens, and a
    49,152-word vocabulary makes the head the largest matrix product of the model. Measured on a 2-core
    AMD EPYC (``avx512_bf16``), batch 8, 2 torch threads, medians of six steps: LoRA 7.1 → 3.5 s per step in
    fp32 and 4.1 → 2.3 s under bf16 autocast, full finetuning 8.5 → 4.5 s in fp32; the fp32 training and
    validation losses of those steps were equal to five decimals.

    The switch changes one decision, TRL's ``compact`` flag, for CPU tensors only; every other device keeps
    TRL's own choice and the kernels are TRL's (``tests/test_compact_lm_head.py`` checks that log-probabilities,
    entropies, top-1 flags and gradients are the same both ways). It is idempotent, and it changes nothing where
    the installed TRL has no such decision (another version): it returns False then, and training is only slower.
    """
    try:
        import trl.trainer.utils as trl_utils
    except ImportError:
        return False
    choose = getattr(trl_utils, "_use_triton", None)
    if choose is None or not callable(choose):
        return False
    if getattr(choose, "compact_on_cpu", False):
        return True

    def compact_on_cpu_or_triton(device) -> bool:
        return getattr(device, "type", str(device)) == "cpu" or choose(device)

    compact_on_cpu_or_triton.compact_on_cpu = True
    trl_utils._use_triton = compact_on_cpu_or_triton
    return True


def library_versions(packages=COURSE_PACKAGES) -> dict[str, str]:
    """Installed versions of the libraries the course depends on ("chưa cài" when missing)."""
    versions = {"python": sys.version.split()[0]}
    for name in packages:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "chưa cài"
    return versions


def print_environment() -> None:
    """Print library versions, device, dtype and the precision profile (one line saying which and why):
    the first thing to paste into a bug report."""
    for name, version in library_versions().items():
        print(f"{name:<13}{version}")
    device = pick_device()
    inference = str(pick_dtype(device)).replace("torch.", "")
    loads = "float32" if inference == "float32" else f"float32 để huấn luyện và so sánh, {inference} khi chỉ sinh câu"
    print(f"{'thiết bị':<13}{device}  (nạp trọng số: {loads})")
    print(f"{'độ chính xác':<13}{precision_profile(device).describe()}")
    if device == "cpu":
        import torch

        print(f"{'luồng CPU':<13}{torch.get_num_threads()} luồng torch trên {os.cpu_count()} nhân")
    print(f"{'Colab':<13}{'có' if in_colab() else 'không'}")
