"""What 4-bit NF4 rounding does to a LoRA update, measured on CPU without bitsandbytes.

QLoRA stores the frozen base weights in 4-bit NormalFloat (NF4): the weights are cut into blocks of
64 values; each block keeps its absolute maximum (``absmax``) and, for each value, the index of the
nearest of 16 fixed levels in ``[-1, 1]`` (spaced for normally distributed weights) after dividing
by ``absmax``. :data:`NF4_LEVELS` are those 16 levels as bitsandbytes defines them
(``bitsandbytes.functional``; Dettmers et al., 2023, arXiv:2305.14314, appendix E).

:func:`nf4_roundtrip` quantizes and de-quantizes a tensor that way (the second-level quantization
of ``absmax`` that QLoRA adds, "double quantization", is left out: it changes each block's scale by
a tiny amount, not which level a value lands on in any way that matters here). :func:`requantization_loss`
asks the merging question: if a LoRA update is merged into an NF4 base and rounded back to NF4, how much of it survives?
"""

from __future__ import annotations

from .errors import CourseError

BLOCK = 64
NF4_LEVELS = (
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
)


def nf4_roundtrip(tensor, block: int = BLOCK):
    """``tensor`` quantized to NF4 (blocks of ``block`` values, absmax scale) and back, float32, same shape."""
    import torch

    if not isinstance(tensor, torch.Tensor) or not tensor.is_floating_point():
        raise CourseError("nf4_roundtrip cần một tensor số thực (float32/bf16/fp16).",
                          "Truyền trọng số của một lớp, ví dụ `lop.weight.detach()`.")
    if not isinstance(block, int) or block < 1:
        raise CourseError(f"Kích thước khối phải là số nguyên dương, nhận {block!r}.", "QLoRA dùng khối 64.")
    flat = tensor.detach().float().reshape(-1)
    pad = (-flat.numel()) % block
    blocks = torch.cat([flat, flat.new_zeros(pad)]).view(-1, block)
    absmax = blocks.abs().amax(dim=1, keepdim=True)
    scale = torch.where(absmax > 0, absmax, torch.ones_like(absmax))
    levels = torch.tensor(NF4_LEVELS, dtype=torch.float32, device=flat.device)
    index = ((blocks / scale).unsqueeze(-1) - levels).abs().argmin(dim=-1)   # nearest level
    out = levels[index] * scale
    return out.reshape(-1)[: flat.numel()].view(tensor.shape)


def requantization_loss(weight, delta, block: int = BLOCK) -> dict:
    """What survives of a LoRA update ``delta`` merged into an NF4 base and stored in NF4 again.

    This is a merge into a QLoRA base: the base is ``Wq = Q(weight)`` (the 4-bit weights QLoRA trained
    on), the merge de-quantizes it, adds ``delta`` and rounds back, so the update that reaches the
    stored model is ``applied = Q(Wq + delta) - Wq`` (``Q`` = :func:`nf4_roundtrip`). Returns

    * ``erased``: fraction of the elements with ``delta != 0`` where less than half of the update
      survives (``|applied| < |delta| / 2``);
    * ``relative_error``: ``‖applied - delta‖ / ‖delta‖`` (0 = kept exactly; about 1 = as if dropped);
    * ``delta_to_step``: median of ``|delta|`` divided by the block's mean NF4 step (``absmax / 8``:
      16 levels over ``[-absmax, absmax]``): far below 1 means the update is much finer than the grid;
    * ``n``: number of elements.
    """
    import torch

    if not isinstance(weight, torch.Tensor) or not isinstance(delta, torch.Tensor):
        raise CourseError("requantization_loss cần hai tensor: W và ΔW.",
                          "Ví dụ: `lop.base_layer.weight` và `lop.get_delta_weight('default')`.")
    if tuple(weight.shape) != tuple(delta.shape):
        raise CourseError(f"W {tuple(weight.shape)} và ΔW {tuple(delta.shape)} phải cùng kích thước.",
                          "Lấy ΔW của đúng lớp đó, ví dụ `lop.get_delta_weight('default')`.")
    d = delta.detach().float()
    base = nf4_roundtrip(weight, block)
    applied = nf4_roundtrip(base + d, block) - base
    nonzero = d != 0
    flat = base.reshape(-1)
    pad = (-flat.numel()) % block
    absmax = torch.cat([flat, flat.new_zeros(pad)]).view(-1, block).abs().amax(dim=1)
    step = (absmax / 8).repeat_interleave(block)[: flat.numel()].view(base.shape)
    ratio = (d.abs() / step.clamp_min(1e-30))[nonzero]
    lost = (applied.abs() < d.abs() / 2) & nonzero
    return {
        "erased": lost.sum().item() / max(nonzero.sum().item(), 1),
        "relative_error": ((applied - d).norm() / d.norm().clamp_min(1e-30)).item(),
        "delta_to_step": ratio.median().item() if ratio.numel() else 0.0,
        "n": d.numel(),
    }
