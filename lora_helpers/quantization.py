"""What 4-bit NF4 rounding does to a LoRA update, measured with bitsandbytes (on CPU or GPU).

QLoRA stores the frozen base weights in 4-bit NormalFloat (NF4): the weights are cut into blocks of
64 values; each block keeps its absolute maximum (``absmax``) and, for each value, the index of the
nearest of 16 fixed levels in ``[-1, 1]`` (spaced for normally distributed weights) after dividing
by ``absmax`` (Dettmers et al., 2023, arXiv:2305.14314, appendix E). "Double quantization" stores
the ``absmax`` themselves in 8 bits. bitsandbytes does all of it, on CPU too:
``bitsandbytes.functional.quantize_4bit(w, blocksize=64, quant_type="nf4", compress_statistics=True)``
and ``dequantize_4bit`` (the levels are ``bitsandbytes.functional.get_4bit_type("nf4")``); that is
what ``BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True)``
runs on every linear layer, and what peft runs again when it merges into a ``Linear4bit``.

What bitsandbytes does not answer is the merging question, :func:`requantization_loss`: if a LoRA
update is merged into an NF4 base and rounded back to NF4, how much of it survives?
"""

from __future__ import annotations

from .errors import CourseError

BLOCK = 64  # QLoRA's block size (bitsandbytes' default for 4-bit)


def _nf4(tensor, block: int, double_quant: bool):
    """``tensor`` through bitsandbytes' NF4 and back (float32, same shape)."""
    import bitsandbytes.functional as bnb_f

    data = tensor.detach().float().contiguous()
    packed, state = bnb_f.quantize_4bit(data, blocksize=block, quant_type="nf4",
                                        compress_statistics=double_quant)
    return bnb_f.dequantize_4bit(packed, state).float().view(tensor.shape)


def requantization_loss(weight, delta, block: int = BLOCK, double_quant: bool = True) -> dict:
    """What survives of a LoRA update ``delta`` merged into an NF4 base and stored in NF4 again.

    This is a merge into a QLoRA base: the base is ``Wq = Q(weight)`` (the 4-bit weights QLoRA trained
    on), the merge de-quantizes it, adds ``delta`` and rounds back, so the update that reaches the
    stored model is ``applied = Q(Wq + delta) - Wq``. ``Q`` is bitsandbytes' NF4 round trip
    (``quantize_4bit``/``dequantize_4bit``, ``quant_type="nf4"``, blocks of ``block``, double quantization
    of the block scales when ``double_quant``: QLoRA's defaults). Returns

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
    if not weight.is_floating_point() or not delta.is_floating_point():
        raise CourseError("requantization_loss cần tensor số thực (float32/bf16/fp16).",
                          "Truyền trọng số của một lớp, ví dụ `lop.base_layer.weight` (không phải trọng số 4-bit đã "
                          "đóng gói kiểu uint8: giải lượng tử nó trước).")
    if tuple(weight.shape) != tuple(delta.shape):
        raise CourseError(f"W {tuple(weight.shape)} và ΔW {tuple(delta.shape)} phải cùng kích thước.",
                          "Lấy ΔW của đúng lớp đó, ví dụ `lop.get_delta_weight('default')`.")
    if not isinstance(block, int) or block not in {64, 128, 256, 512, 1024, 2048, 4096}:
        raise CourseError(f"Kích thước khối {block!r} không dùng được với bitsandbytes.",
                          "QLoRA dùng khối 64 (mặc định); bitsandbytes nhận 64, 128, …, 4096.")
    d = delta.detach().float().cpu()
    base = _nf4(weight.detach().cpu(), block, double_quant)
    applied = _nf4(base + d, block, double_quant) - base
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
