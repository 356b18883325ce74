"""Checks of lesson 3 (``merge_lora_adapters``): the merged model and the parity checks around it."""

from __future__ import annotations

from ._common import (
    CheckResult,
    _active,
    _decision,
    _field,
    _is_peft_model,
    _loosened_parity,
    _lora_layers,
    _never_raises,
    _number,
    _ok,
    _parity_result,
    _plain,
    _same_number,
    _size_hint,
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


def _diagnose(model, reference, adapter_name: str | None = None) -> str:
    """What is wrong with ``model`` compared with ``reference`` (the working adapter model): a key of ``CAUSES``,
    ``"dung"`` (nothing), or ``"khac"`` (something else)."""
    import torch

    name = adapter_name or _active(reference)[0]
    ref_layers = dict(_lora_layers(reference))
    if not _is_peft_model(model):
        ratios = []
        for full_name, layer in list(ref_layers.items())[:8]:
            with torch.no_grad():
                delta = layer.get_delta_weight(name).float()
                W = layer.get_base_layer().weight.float()
                got = model.get_submodule(_short_name(full_name)).weight.float()
                ratios.append(((got - W) * delta).sum().item() / max((delta * delta).sum().item(), 1e-30))
        k = sum(ratios) / len(ratios)
        return "hop_nhat_hai_lan" if abs(k - 2) < 0.05 else "dung" if abs(k - 1) < 0.05 else "khac"
    layers = dict(_lora_layers(model))
    if set(layers) < set(ref_layers):
        return "sai_lop_dich"
    for full_name, layer in layers.items():
        if full_name in ref_layers and not torch.equal(layer.get_base_layer().weight.cpu(),
                                                      ref_layers[full_name].get_base_layer().weight.cpu()):
            return "sai_mo_hinh_co_so"
    if any(getattr(layer, "disable_adapters", False) for layer in layers.values()) or not _active(model):
        return "bo_dieu_hop_bi_tat"
    return "dung"


_EVIDENCE = {  # how to confirm a claimed cause, without naming the case's real one
    "sai_mo_hinh_co_so": "Sai mô hình cơ sở thì các lớp LoRA vẫn đủ và đang bật, nhưng `base_layer.weight` khác trọng số "
                         "của mô hình cơ sở thật: so `lop.base_layer.weight` với lớp cùng tên của tham chiếu.",
    "bo_dieu_hop_bi_tat": "Bộ bị tắt thì đủ lớp LoRA, trọng số cơ sở đúng, nhưng đầu ra trùng mô hình cơ sở: xem "
                          "`lop.disable_adapters` của các lớp LoRA, hoặc so logits với mô hình cơ sở.",
    "sai_lop_dich": "Sai lớp đích thì số lớp LoRA ít hơn của tham chiếu: đếm các module có `lora_A`, và đọc "
                    "`peft_config[...].target_modules`.",
    "hop_nhat_hai_lan": "Hợp nhất hai lần thì không còn lớp LoRA nào, và trọng số là W + 2·ΔW: so (W_ca − W) với ΔW "
                        "của tham chiếu ở một lớp.",
}


@_never_raises
def check_diagnosis(answer, cases, reference) -> CheckResult:
    """The cause of each broken set-up in ``cases`` (letter -> model), named from ``CAUSES``.

    The truth is found by examining each model against ``reference`` (the working adapter model):
    LoRA layers present or not, target layers, base weights, adapters switched off, merged weights
    W + k·ΔW. A wrong diagnosis is answered with how to confirm the cause the learner claimed, never with
    the right one. Rejects: a missing case, a cause outside the list, one cause given to two cases,
    and a wrong cause.
    """
    from ..broken import CAUSES

    if answer is None:
        return _todo()
    if not isinstance(answer, dict):
        return _wrong(f"`chan_doan` phải là dict {{chữ_cái: nguyên_nhân}}, bạn đưa {type(answer).__name__}.",
                      "Ví dụ `{\"A\": \"sai_lop_dich\", ...}`.")
    known = {_plain(c): c for c in CAUSES}
    missing = [letter for letter in cases if letter not in answer]
    if missing:
        return _wrong(f"chưa chẩn đoán ca {missing}.", "Mỗi ca một nguyên nhân.")
    claimed = {}
    for letter in cases:
        cause = known.get(_plain(answer[letter]))
        if cause is None:
            return _wrong(f"ca {letter}: {answer[letter]!r} không có trong danh sách nguyên nhân.",
                          f"Chọn một trong: {', '.join(CAUSES)}.")
        claimed[letter] = cause
    if len(set(claimed.values())) < len(claimed):
        return _wrong("hai ca có cùng một nguyên nhân, mà mỗi ca hỏng theo một cách khác nhau.",
                      "Mỗi nguyên nhân trong danh sách xuất hiện đúng một lần.")
    wrong_letters = [letter for letter in cases if _diagnose(cases[letter], reference) != claimed[letter]]
    if wrong_letters:
        letter = wrong_letters[0]
        return _wrong(f"{len(wrong_letters)}/{len(cases)} ca chẩn đoán chưa đúng, ví dụ ca {letter} "
                      f"(bạn nói: `{claimed[letter]}`).",
                      _EVIDENCE[claimed[letter]])
    return _ok(f"Cả {len(cases)} ca đều chẩn đoán đúng, và ô kiểm tra đã tự tìm ra cùng nguyên nhân từ chính các mô hình.")


@_never_raises
def check_merge_decision(answer, reference, merged_low, result_low, tokenizer, dataset) -> CheckResult:
    """Decide and defend: ship the merged model in float32 or bfloat16? The numbers are checked against the run.

    ``answer`` = ``{"lựa_chọn": "float32" | "bfloat16", "số_liệu": {"chênh_lệch_logits": float,
    "câu_sinh_giống": int, "dung_lượng_MB": {"float32": float, "bfloat16": float}}}``. The logit
    difference and generation count must be those of ``result_low`` (the learner's parity result of
    ``reference`` against ``merged_low`` on ``dataset``); sizes are the parameter count × 4 or × 2 bytes (1 MB = 10⁶ bytes). "bfloat16" is
    defensible only when every greedy generation and the task accuracy are unchanged. The parity result is
    tied to the two models by one prompt measured again. Rejects: made-up
    or swapped numbers, sizes in the wrong unit or swapped, a parity result of another pair of models,
    and a choice its own numbers contradict.
    """
    parsed = _decision(answer)
    if isinstance(parsed, CheckResult):
        return parsed
    choice, numbers = parsed
    bad = _parity_result(result_low, "kiem_tra_dtype")
    if bad is not None:
        return bad
    plain = _plain(choice).replace(" ", "")
    if plain not in ("float32", "bfloat16"):
        return _wrong(f"`lựa_chọn` = {choice!r}; chọn \"float32\" hoặc \"bfloat16\".", "Viết đúng tên một dtype.")
    # Tie the parity result to these two models without paying for a second full low-precision run (bf16 is
    # emulated, so slow, on many CPUs): it must report a drift beyond the fp32 tolerance, and one prompt
    # measured again here cannot drift more than the whole set did.
    from ..data import prompts_of
    from ..parity import default_tolerance, max_logit_diff

    limit = default_tolerance("float32")
    diff = result_low.max_abs_logit_diff
    not_this_pair = _wrong("`kiem_tra_dtype` không phải phép so giữa `mo_hinh_bo_dieu_hop` và `mo_hinh_sai_dtype` trên TEST.",
                           "Dùng đúng kết quả của câu 2.")
    if result_low.dtype != "float32" or not diff > limit or result_low.n_prompts != len(dataset):
        return not_this_pair
    text = tokenizer.apply_chat_template(prompts_of(dataset)[0], tokenize=False, add_generation_prompt=True)
    ids = tokenizer([text], return_tensors="pt", add_special_tokens=False)["input_ids"]
    one = max_logit_diff(reference, merged_low, ids.to(next(reference.parameters()).device))
    if not limit < one <= 1.1 * diff + 1e-6:
        return not_this_pair
    cited = _number(_field(numbers, "chênh_lệch_logits"))
    if cited is None or not _same_number(cited, diff, rel=1e-2):
        return _wrong(f"`chênh_lệch_logits` = {_field(numbers, 'chênh_lệch_logits')!r} không phải con số của lần chạy này.",
                      "Chép `kiem_tra_dtype.max_abs_logit_diff` (có thể làm tròn tới 3 chữ số có nghĩa).")
    same = _number(_field(numbers, "câu_sinh_giống"))
    if same is None or int(same) != result_low.n_identical_generations:
        return _wrong(f"`câu_sinh_giống` = {_field(numbers, 'câu_sinh_giống')!r} không khớp phép kiểm tra.",
                      "Chép `kiem_tra_dtype.n_identical_generations` (số câu, không phải tỉ lệ).")
    sizes = _field(numbers, "dung_lượng_MB")
    n_params = sum(p.numel() for p in merged_low.parameters())
    want = {"float32": n_params * 4 / 1e6, "bfloat16": n_params * 2 / 1e6}
    if not isinstance(sizes, dict):
        return _wrong("`dung_lượng_MB` phải là dict {\"float32\": ..., \"bfloat16\": ...}.",
                      "Dung lượng = số tham số × số byte mỗi số (4 hoặc 2) / 10⁶.")
    def near(value, target) -> bool:  # rounded to whole MB is fine; tiny models need a relative bound
        return value is not None and abs(value - target) <= min(0.5, 0.01 * abs(target))

    for dtype, value in want.items():
        got = _number(_field(sizes, dtype))
        if near(got, value):
            continue
        other = "bfloat16" if dtype == "float32" else "float32"
        hint = _size_hint(got, value, want[other], near,
                          "Hai dung lượng bị đổi chỗ: float32 dùng 4 byte mỗi số, bfloat16 dùng 2.",
                          "Đếm tham số: `sum(p.numel() for p in mo_hinh_sai_dtype.parameters())`, nhân số byte mỗi số, "
                          "chia 10⁶.")
        return _wrong(f"`dung_lượng_MB['{dtype}']` = {_field(sizes, dtype)!r} chưa đúng.", hint)
    unchanged = result_low.generations_ok and result_low.metrics_ok
    if plain == "bfloat16" and not unchanged:
        return _wrong("chính số liệu của bạn phản bác lựa chọn này: ở bfloat16 câu sinh hoặc độ chính xác đã đổi.",
                      "Chỉ giao bản nhỏ hơn khi nó cho cùng câu trả lời; nếu không, giao float32 (hoặc hợp nhất ở "
                      "float32 rồi mới đổi dtype, và kiểm tra lại).")
    return _ok("Lựa chọn của bạn đứng vững với số liệu của bạn, đã đo lại trên chính hai mô hình.",
               f"bạn chọn «{choice}»: chênh lệch logits {diff:.3g}, {result_low.n_identical_generations}/{result_low.n_prompts} câu sinh "
               f"giống, {want['float32']:.0f} MB (float32) so với {want['bfloat16']:.0f} MB (bfloat16).")
