"""Where are we running? Device, dtype, Colab/offline detection, seeds, versions."""

from __future__ import annotations

import importlib.metadata
import os
import random
import socket
import sys

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


def pick_dtype(device: str | None = None):
    """The dtype to load and train in: bf16 on GPUs that support it, fp16 on older GPUs, fp32 on CPU."""
    import torch

    device = device or pick_device()
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


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
    """Print library versions, device and dtype: the first thing to paste into a bug report."""
    for name, version in library_versions().items():
        print(f"{name:<13}{version}")
    device = pick_device()
    print(f"{'thiết bị':<13}{device}  (dtype {str(pick_dtype(device)).replace('torch.', '')})")
    print(f"{'Colab':<13}{'có' if in_colab() else 'không'}")
