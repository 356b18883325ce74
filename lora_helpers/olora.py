"""OLoRA on one weight, by hand, and the small measurements olora_finetuning needs.

OLoRA (``LoraConfig(init_lora_weights="olora")``) starts the adapter from the QR decomposition
of each adapted weight ``W`` (``d_out x d_in``): with ``W = Q R``,

* ``B = Q[:, :r]`` (orthonormal columns) and ``A = R[:r, :]`` (the first ``r`` rows of ``R``);
* the base weight is *shifted*: ``W' = W - s * B @ A`` with ``s = lora_alpha / r``,

so that ``W' x + s * B A x = W x`` and the model's output at step 0 is unchanged (up to rounding).
The shift is written into the base layer's weight in memory: after ``get_peft_model`` the base
weights are no longer the original ones. :func:`olora_factors` reproduces peft's
``LoraLayer.olora_init`` on one tensor (QR in fp32, shift in fp32, cast back to the weight's
dtype) so a lesson can show each piece; :func:`base_weight_changes` measures the shift on a whole
model; :func:`effective_update_norm` measures how far training moved the weights the model really
uses (``W' + s*B@A`` against the original ``W``), so LoRA and OLoRA runs can be compared;
:func:`moving_average` smooths a per-step loss curve before counting steps to a threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import CourseError
from .layers import lora_layers

_FLOAT_DTYPES = ("float32", "float16", "bfloat16")
_SAME_MODEL_PROBLEM = (
    "Mô hình gốc và mô hình có bộ điều hợp là cùng một đối tượng: "
    "get_peft_model sửa mô hình tại chỗ."
)
_SAME_MODEL_FIX = (
    "Nạp một bản mô hình cơ sở MỚI để so sánh: `AutoModelForCausalLM.from_pretrained(...)`."
)


@dataclass
class OloraFactors:
    """The pieces of OLoRA's initialisation of one weight ``W`` (all but ``shifted`` in fp32).

    ``Q`` (``d_out x k``) and ``R`` (``k x d_in``), ``k = min(d_out, d_in)``, are the reduced QR of
    ``W``; ``B = Q[:, :r]``, ``A = R[:r]``; ``shifted = W - scaling * B @ A`` in ``W``'s dtype.
    """

    Q: object
    R: object
    A: object
    B: object
    shifted: object
    scaling: float


def olora_factors(weight, r: int, scaling: float) -> OloraFactors:
    """Reproduce peft's OLoRA initialisation on one weight matrix ``weight`` (``d_out x d_in``).

    Same steps as ``peft.tuners.lora.layer.LoraLayer.olora_init`` (non-quantized case): upcast to
    fp32, ``torch.linalg.qr`` (reduced), keep the first ``r`` columns of Q as ``B`` and the first
    ``r`` rows of R as ``A``, subtract ``scaling * B @ A`` from the fp32 weight, cast back to the
    original dtype. ``weight`` is not modified.
    """
    import torch

    if not isinstance(weight, torch.Tensor) or weight.ndim != 2:
        raise CourseError(
            "OLoRA cần một ma trận trọng số hai chiều (d_out × d_in).",
            "Truyền `lop.weight` của một lớp nn.Linear, "
            "ví dụ `model.model.layers[0].self_attn.q_proj.weight`.",
        )
    dtype_name = str(weight.dtype).replace("torch.", "")
    if dtype_name not in _FLOAT_DTYPES:
        raise CourseError(
            f"peft chỉ khởi tạo OLoRA cho trọng số float32/float16/bfloat16 (không lượng tử hoá), "
            f"nhận {dtype_name}.",
            "Nạp mô hình ở float32 (hoặc bf16/fp16) trước khi khởi tạo OLoRA.",
        )
    if not isinstance(r, int) or isinstance(r, bool) or not 0 < r <= min(weight.shape):
        raise CourseError(
            f"Hạng r phải là số nguyên trong khoảng 1..{min(weight.shape)} "
            f"cho ma trận {tuple(weight.shape)}, nhận {r!r}.",
            "Chọn r nhỏ, ví dụ r=8.",
        )
    W = weight.detach().to(torch.float32).clone()
    Q, R = torch.linalg.qr(W)
    B = Q[:, :r].contiguous()
    A = R[:r].contiguous()
    W -= scaling * B @ A  # in place, as peft does, so the result is bit-identical to peft's
    return OloraFactors(Q=Q, R=R, A=A, B=B, shifted=W.to(weight.dtype), scaling=float(scaling))


def base_weight_changes(original_model, peft_model, adapter_name: str = "default") -> dict:
    """How far the base weights of ``peft_model``'s LoRA layers are from ``original_model``'s.

    For every layer that holds a LoRA adapter named ``adapter_name``, compares its
    ``base_layer.weight`` with the weight of the layer of the same name in ``original_model``
    (a separately loaded, untouched copy of the base model). Returns
    ``{"n_layers", "n_changed", "max_abs_change"}``: with ordinary LoRA nothing changes; after
    OLoRA (or PiSSA) every adapted weight has been shifted in memory.
    """
    import torch

    base = peft_model.get_base_model() if hasattr(peft_model, "get_base_model") else peft_model
    originals = dict(original_model.named_modules())
    if base is original_model:
        raise CourseError(_SAME_MODEL_PROBLEM, _SAME_MODEL_FIX)
    n_layers = n_changed = 0
    worst = 0.0
    with torch.no_grad():
        for name, module in lora_layers(base, adapter_name):
            if name not in originals:
                raise CourseError(
                    f"Mô hình gốc không có lớp `{name}`.",
                    "Hai mô hình phải cùng kiến trúc (cùng mô hình cơ sở).",
                )
            new = module.get_base_layer().weight
            old = originals[name].weight
            diff = (new.float() - old.float().to(new.device)).abs().max().item()
            n_layers += 1
            n_changed += diff > 0
            worst = max(worst, diff)
    if n_layers == 0:
        raise CourseError(
            f"Không có lớp nào mang bộ điều hợp `{adapter_name}`.",
            "Truyền mô hình đã bọc bằng get_peft_model (hoặc PeftModel.from_pretrained).",
        )
    return {"n_layers": n_layers, "n_changed": int(n_changed), "max_abs_change": worst}


def moving_average(curve, window: int = 3):
    """Trailing mean of a loss curve ``[(step, loss), ...]`` over ``window`` consecutive points.

    The first point is at the ``window``-th entry (only full windows), so a single lucky batch
    cannot make a run look converged. ``window=1`` returns the curve unchanged.
    """
    if not isinstance(window, int) or window < 1:
        raise CourseError(f"`window` phải là số nguyên ≥ 1, nhận {window!r}.", "Ví dụ: window=3.")
    curve = list(curve)
    out = []
    for i in range(window - 1, len(curve)):
        losses = [loss for _, loss in curve[i - window + 1 : i + 1]]
        out.append((curve[i][0], sum(losses) / window))
    return out


def effective_update_norm(original_model, peft_model, adapter_name: str = "default") -> dict:
    """How far training moved the weights the model actually uses, whatever the initialisation.

    For every layer with adapter ``adapter_name``, the effective weight is
    ``base_layer.weight + scaling * B @ A``; its change from the original weight is ``s*B@A`` for
    ordinary LoRA and ``s*(B@A - B0@A0)`` for OLoRA (the shifted base holds ``-s*B0@A0``).
    Returns ``{"delta_norm", "weight_norm", "relative"}``: the Frobenius norm of that change over
    all adapted layers, the norm of the original weights, and their ratio.
    """
    import math

    import torch

    base = peft_model.get_base_model() if hasattr(peft_model, "get_base_model") else peft_model
    if base is original_model:
        raise CourseError(_SAME_MODEL_PROBLEM, _SAME_MODEL_FIX)
    originals = dict(original_model.named_modules())
    delta_sq = weight_sq = 0.0
    found = False
    with torch.no_grad():
        for name, module in lora_layers(base, adapter_name):
            found = True
            a = module.lora_A[adapter_name].weight.float()
            b = module.lora_B[adapter_name].weight.float()
            effective = module.get_base_layer().weight.float() + module.scaling[adapter_name] * (b @ a)
            original = originals[name].weight.float().to(effective.device)
            delta_sq += (effective - original).pow(2).sum().item()
            weight_sq += original.pow(2).sum().item()
    if not found:
        raise CourseError(
            f"Không có lớp nào mang bộ điều hợp `{adapter_name}`.",
            "Truyền mô hình đã bọc bằng get_peft_model (hoặc PeftModel.from_pretrained).",
        )
    delta, weight = math.sqrt(delta_sq), math.sqrt(weight_sq)
    return {"delta_norm": delta, "weight_norm": weight, "relative": delta / weight if weight else float("nan")}
