"""A fingerprint of a base model's weights, so an adapter knows which base it was trained on.

An adapter is a correction ΔW learned for one set of base weights W. Loaded on other weights (the original
SmolLM2 weights from the Hub instead of the course's de-quantized copy, say) it still runs, but it corrects the
wrong W and every number changes. Names in ``adapter_config.json`` cannot tell the two apart; the weights can.

Definition (``FINGERPRINT_METHOD``):

* the base model's parameters in name order, with peft's wrapping removed (``base_model.model.`` prefix,
  ``.base_layer``/``.original_module``; LoRA and ``modules_to_save`` copies left out), so a plain model and the
  same model inside a ``PeftModel`` give the same names; tied weights count once;
* from each parameter, ``SAMPLE_PER_PARAM`` values at fixed positions ``i * (n - 1) // (k - 1)`` of its flattened
  values (integer arithmetic: the same positions on every machine), converted to float32;
* sha256 over, per parameter: its name, its shape, and the float32 bytes (little-endian) of its sample;
  the first 16 hex digits are the fingerprint.

Computing it reads a few thousand numbers (milliseconds, on any device). It is exact: the same weights in the
same precision give the same fingerprint on every load and every machine. A model loaded in bfloat16/float16
has rounded weights and so another fingerprint; for that case :func:`record_base_fingerprint` also stores a
small *probe* (``PROBE_PER_PARAM`` of the sampled values of each parameter), and :func:`compare_with_record`
accepts the rounded copy of the recorded weights (every probe value within half-precision rounding), while the
Hub weights, a re-quantized copy or another model differ far beyond it.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

FINGERPRINT_FILE = "base_fingerprint.json"
FINGERPRINT_METHOD = "sha256(name, shape, float32 sample of 16 fixed positions per parameter; name order)[:16]"
SAMPLE_PER_PARAM = 16
PROBE_PER_PARAM = 2
# Same weights in another precision: bfloat16 keeps 8 significant bits (relative rounding <= 2**-9, up to one
# ulp 2**-8 after a float16 -> bfloat16 double rounding); 1 % leaves room and is far below what another set of
# weights differs by (4-bit re-quantization moves most weights by several percent).
PROBE_RTOL, PROBE_ATOL, PROBE_MIN_AGREEMENT = 1e-2, 1e-6, 0.95

_PEFT_PREFIX = re.compile(r"^(base_model\.model\.)+")
_PEFT_WRAPPERS = (".base_layer", ".original_module")


def base_parameter_name(name: str) -> str | None:
    """The name a parameter has in the plain base model, or None for an adapter's own parameter."""
    if ".lora_" in name or "lora_magnitude_vector" in name or ".modules_to_save." in name:
        return None
    name = _PEFT_PREFIX.sub("", name)
    for wrapper in _PEFT_WRAPPERS:
        name = name.replace(wrapper, "")
    return name


def sample_positions(numel: int, k: int = SAMPLE_PER_PARAM) -> list[int]:
    """``k`` fixed positions spread over ``numel`` values (all of them when there are fewer)."""
    if numel <= k:
        return list(range(numel))
    return [i * (numel - 1) // (k - 1) for i in range(k)]


def base_samples(model) -> dict:
    """``{name: (shape, float32 sample tensor on CPU)}`` for the base parameters of ``model``, in name order.

    Raises ``ValueError`` when a parameter is not floating point (a 4-bit/8-bit quantized model).
    """
    import torch

    samples = {}
    for raw_name, param in model.named_parameters():
        name = base_parameter_name(raw_name)
        if name is None:
            continue
        if not param.is_floating_point():
            raise ValueError(f"{raw_name} is {param.dtype}: a quantized model has no comparable weights")
        flat = param.detach().reshape(-1)
        index = torch.tensor(sample_positions(flat.numel()), dtype=torch.long, device=flat.device)
        samples[name] = (tuple(param.shape), flat[index].to(torch.float32).cpu())
    return dict(sorted(samples.items()))


def fingerprint_of_samples(samples: dict) -> str:
    digest = hashlib.sha256()
    for name, (shape, values) in samples.items():
        digest.update(name.encode("utf-8") + b"\0" + repr(shape).encode("ascii") + b"\0")
        digest.update(values.numpy().astype("<f4").tobytes())
    return digest.hexdigest()[:16]


def base_fingerprint(model) -> str:
    """The fingerprint (16 hex digits) of the base weights of ``model`` (a plain model or a ``PeftModel``)."""
    return fingerprint_of_samples(base_samples(model))


def _probe(samples: dict) -> list[float]:
    values = []
    for _, sample in samples.values():
        step = max(len(sample) // (PROBE_PER_PARAM + 1), 1)
        values += [float(v) for v in sample[step::step][:PROBE_PER_PARAM]]
    return values


def _layout(samples: dict) -> str:
    text = "\n".join(f"{name} {shape}" for name, (shape, _) in samples.items())
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def fingerprint_record(model, base_model: str | None = None, note: str | None = None) -> dict:
    """What :func:`record_base_fingerprint` writes: the fingerprint, how it was computed, and the probe."""
    samples = base_samples(model)
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for n, p in model.named_parameters()
                     if base_parameter_name(n) is not None})
    record = {
        "fingerprint": fingerprint_of_samples(samples),
        "method": FINGERPRINT_METHOD,
        "base_model": base_model,
        "dtype": ",".join(dtypes),
        "n_parameters": len(samples),
        "layout": _layout(samples),
        "probe": [float(f"{v:.9g}") for v in _probe(samples)],
    }
    if note:
        record["note"] = note
    return {k: v for k, v in record.items() if v is not None}


def record_base_fingerprint(adapter_dir, model, base_model: str | None = None, note: str | None = None) -> Path:
    """Write ``adapter_dir/base_fingerprint.json`` for the base weights of ``model`` (the base the adapter
    was trained on; a ``PeftModel`` holding the trained adapter works too)."""
    path = Path(adapter_dir) / FINGERPRINT_FILE
    record = fingerprint_record(model, base_model=base_model, note=note)
    lines = [f" {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in record.items()]  # probe: one line
    path.write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")
    return path


def read_fingerprint_record(adapter_dir) -> dict | None:
    """The adapter's recorded base fingerprint, or None when it has none."""
    path = Path(adapter_dir) / FINGERPRINT_FILE
    if not path.is_file():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


@dataclass(frozen=True)
class BaseComparison:
    """The outcome of :func:`compare_with_record`: ``same`` is True, False, or None (cannot tell, ``reason`` says why)."""

    same: bool | None
    model_fingerprint: str | None
    recorded_fingerprint: str | None
    reason: str = ""


def compare_with_record(model, record: dict | None) -> BaseComparison:
    """Compare the base weights of ``model`` with an adapter's record (:func:`read_fingerprint_record`)."""
    import torch

    recorded = (record or {}).get("fingerprint")
    if not recorded:
        return BaseComparison(None, None, None, "no record")
    try:
        samples = base_samples(model)
    except ValueError:
        return BaseComparison(None, None, recorded, "quantized")
    current = fingerprint_of_samples(samples)
    if current == recorded:
        return BaseComparison(True, current, recorded, "identical")
    probe = record.get("probe") or []
    if record.get("layout") != _layout(samples) or len(probe) != len(_probe(samples)):
        return BaseComparison(False, current, recorded, "other layout")
    # Not bit-identical: the same weights rounded to another precision, or other weights?
    a = torch.tensor(_probe(samples), dtype=torch.float64)
    b = torch.tensor(probe, dtype=torch.float64)
    agreement = ((a - b).abs() <= PROBE_ATOL + PROBE_RTOL * b.abs()).double().mean().item() if len(a) else 0.0
    if agreement >= PROBE_MIN_AGREEMENT:
        return BaseComparison(True, current, recorded, "same weights, other precision")
    return BaseComparison(False, current, recorded, f"{agreement:.0%} of probe values agree")
