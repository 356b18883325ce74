"""Checks of lesson 3 (``merge_lora_adapters``): the merged model and the parity checks around it."""

from __future__ import annotations

from ._common import (
    CheckResult,
    _active,
    _is_peft_model,
    _loosened_parity,
    _lora_layers,
    _never_raises,
    _ok,
    _parity_result,
    _todo,
    _wrong,
)


def _param_dtype(model):
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


def _short_name(name: str) -> str:
    """A LoRA layer's name inside a PeftModel -> the same layer's name in the plain model."""
    return name.removeprefix("base_model.model.")


@_never_raises
def check_merged_model(merged, adapter_model, adapter_name: str | None = None) -> CheckResult:
    """``merged`` is ``adapter_model`` merged: plain layers whose weights are ``W + (alpha/r)·B·A``.

    Compared layer by layer with the (still unmerged) reference ``adapter_model``. Rejects: a
    model that still has LoRA layers (``merge_and_unload`` forgotten), the result of ``unload()``
    (the base weights, ΔW dropped), a merge in another precision (dtype), another adapter merged,
    and a reference that was itself merged in place (nothing left to compare with).
    """
    import torch

    if merged is None:
        return _todo()
    if _is_peft_model(merged) or any(True for _ in _lora_layers(merged)):
        return _wrong("mô hình vẫn còn các lớp LoRA: nó chưa được hợp nhất.",
                      "Gọi `.merge_and_unload()` trên mô hình có bộ điều hợp; kết quả là một mô hình transformers thường.")
    reference = list(_lora_layers(adapter_model))
    if not reference:
        return _wrong("mô hình tham chiếu `mo_hinh_bo_dieu_hop` không còn lớp LoRA nào: có lẽ bạn đã hợp nhất "
                      "tại chỗ chính nó (merge_and_unload sửa mô hình tại chỗ).",
                      "Chạy lại ô chuẩn bị, rồi hợp nhất một mô hình *khác*: nạp mô hình cơ sở mới + bộ điều hợp, "
                      "hoặc `merge_checked(mo_hinh_bo_dieu_hop, copy=True)`.")
    name = adapter_name or _active(adapter_model)[0]
    want_dtype, got_dtype = _param_dtype(adapter_model), _param_dtype(merged)
    if got_dtype != want_dtype:
        return _wrong(f"mô hình hợp nhất ở {str(got_dtype).replace('torch.', '')}, còn tham chiếu ở "
                      f"{str(want_dtype).replace('torch.', '')}.",
                      "Hợp nhất ở đúng độ chính xác số (dtype) của mô hình tham chiếu; đổi kiểu (nếu cần) sau khi hợp nhất.")
    worst, worst_name, base_like = 0.0, None, 0
    for full_name, layer in reference:
        try:
            target = merged.get_submodule(_short_name(full_name))
        except AttributeError:
            return _wrong(f"mô hình hợp nhất không có lớp `{_short_name(full_name)}`.",
                          "Hợp nhất đúng mô hình cơ sở mà bộ điều hợp được nạp lên.")
        with torch.no_grad():
            delta = layer.get_delta_weight(name).float().cpu()
            W = layer.get_base_layer().weight.float().cpu()
            got = target.weight.float().cpu()
            size = max(delta.abs().max().item(), 1e-12)
            error = (got - (W + delta)).abs().max().item() / size
            if (got - W).abs().max().item() / size < 1e-3:
                base_like += 1
        if error > worst:
            worst, worst_name = error, _short_name(full_name)
    if base_like == len(reference):
        return _wrong("trọng số giống hệt mô hình cơ sở: ΔW chưa được cộng vào (đó là kết quả của `unload()`, "
                      "hoặc mô hình cơ sở chưa gắn bộ điều hợp).",
                      "`unload()` gỡ bộ điều hợp và bỏ ΔW; `merge_and_unload()` mới cộng ΔW vào W.")
    if worst > 1e-3:
        return _wrong(f"trọng số lớp `{worst_name}` khác W + (alpha/r)·B·A (sai lệch {worst:.2g} lần độ lớn của ΔW).",
                      "Hợp nhất đúng bộ điều hợp của mô hình tham chiếu, đúng một lần, với hệ số alpha/r.")
    return _ok(f"Mô hình không còn lớp LoRA, và ở cả {len(reference)} lớp trọng số đúng bằng W + (alpha/r)·B·A.")


@_never_raises
def check_drift_detected(result, merged_low) -> CheckResult:
    """A parity check at the fp32 tolerance that catches a merge done in a low precision.

    ``merged_low`` is the model merged in bf16/fp16, ``result`` what ``check_parity(reference_fp32,
    merged_low, ...)`` returned. Rejects: a merge done in fp32 after all (nothing to detect), a
    tolerance loosened to the low precision's (the drift is then hidden), a reference that is not
    fp32, a check that passed, and a verdict string instead of the result.
    """
    import torch

    from ..parity import default_tolerance

    if result is None:
        return _todo()
    bad = _parity_result(result, "kiem_tra_dtype")
    if bad is not None:
        return bad
    if merged_low is None:
        return _todo()
    low = _param_dtype(merged_low)
    if low not in (torch.bfloat16, torch.float16):
        return _wrong(f"`mo_hinh_sai_dtype` ở {str(low).replace('torch.', '')}: đó không phải một lần hợp nhất sai dtype.",
                      "Nạp mô hình cơ sở với `dtype=torch.bfloat16` (hoặc float16), gắn bộ điều hợp, rồi hợp nhất.")
    if result.dtype != "float32":
        return _wrong(f"mô hình thứ nhất của phép so sánh ở {result.dtype}; nó phải là tham chiếu float32 + bộ điều hợp.",
                      "`check_parity(mo_hinh_bo_dieu_hop, mo_hinh_sai_dtype, tokenizer, dataset=TEST)`: tham chiếu đứng trước.")
    reference_tolerance = default_tolerance(torch.float32)
    if result.tolerance > reference_tolerance:
        return _wrong(f"bạn nới ngưỡng lên {result.tolerance:g} (ngưỡng của tham chiếu fp32 là {reference_tolerance:g}): "
                      "như vậy chính độ lệch cần phát hiện bị che đi.",
                      "Giữ ngưỡng mặc định của tham chiếu (bỏ `tolerance=`): câu hỏi là bản hợp nhất có *giống* bản đã kiểm tra không.")
    if result.passed:
        return _wrong("phép kiểm tra vẫn báo KHỚP, nên nó chưa phát hiện được gì.",
                      "So tham chiếu float32 với *đúng* mô hình đã hợp nhất ở bf16/fp16.")
    return _ok(f"Phép kiểm tra khớp đã bắt được lần hợp nhất ở {str(low).replace('torch.', '')}; "
               f"kết luận của nó: «{result.verdict()}».")


@_never_raises
def check_parity_passed(result, min_prompts: int = 4) -> CheckResult:
    """A parity check that passed at the fp32 tolerance, on at least ``min_prompts`` prompts.

    Rejects: a failed check, a loosened tolerance, too few prompts, and a verdict string instead of the result.
    """
    if result is None:
        return _todo()
    bad = _parity_result(result, "kiem_tra_tay")
    if bad is not None:
        return bad
    bad = _loosened_parity(result, min_prompts)
    if bad is not None:
        return bad
    if not result.passed:
        return _wrong(f"phép kiểm tra không đạt: {result.verdict()}",
                      "So ΔW của bạn với `lop.get_delta_weight(...)` từng lớp: có quên lớp nào, hệ số alpha/r, "
                      "hay cộng hai lần không?")
    return _ok(f"Bản hợp nhất khớp mô hình tham chiếu; kết luận của phép kiểm tra: «{result.verdict()}».")
