"""Walking a model's layers: the nn.Linear layers a ``target_modules`` spec selects, and the LoRA layers.

Every helper that looks for layers (parameter counts, LoRA config checks, merging, OLoRA
measurements) goes through these functions, so "which layers does LoRA adapt" is decided once.
"""

from __future__ import annotations


def linear_layers(model, target_modules="all-linear") -> list:
    """``(full_name, module)`` of the nn.Linear layers LoRA would adapt for ``target_modules``.

    ``target_modules`` is a list of short layer names (``["q_proj", "v_proj"]``) or
    ``"all-linear"`` (every nn.Linear except the output layer ``lm_head``, as peft does).
    """
    import torch

    wanted = None if target_modules == "all-linear" else set(target_modules)
    return [(full_name, module) for full_name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and not full_name.endswith("lm_head")
            and (wanted is None or full_name.split(".")[-1] in wanted)]


def linear_module_names(model) -> list[str]:
    """Short names of the nn.Linear layers of ``model`` (what ``target_modules`` can name), lm_head excluded."""
    return sorted({full_name.split(".")[-1] for full_name, _ in linear_layers(model)})


def lora_layers(model, adapter_name: str | None = None) -> list:
    """``(name, module)`` of the LoRA layers (peft tuner layers) inside ``model``.

    With ``adapter_name``, only the layers that hold a LoRA adapter of that name.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [(name, module) for name, module in model.named_modules()
            if isinstance(module, BaseTunerLayer)
            and (adapter_name is None or adapter_name in (getattr(module, "lora_A", None) or {}))]
