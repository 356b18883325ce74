"""Checks of ``merge_lora_adapters``: the merged model and the parity checks around it, a diagnosis of broken
set-ups, and the dtype to ship.
"""

from __future__ import annotations

import copy
import dataclasses

from ._common import (
    CheckResult,
    _active,
    _decided,
    _decision,
    _field,
    _fp32_parity_rows,
    _is_peft_model,
    _lora_layers,
    _number,
    _parity_guard,
    _plain,
    _same_number,
    _size_hint,
    _todo,
    _wrong,
)
from .kit import Mistake, Table, check, edited_copy, first_wrong


def _param_dtype(model):
    return next((p.dtype for p in model.parameters() if p.is_floating_point()), None)


def _dtype_name(dtype) -> str:
    return str(dtype).replace("torch.", "")


def _short_name(name: str) -> str:
    """A LoRA layer's name inside a PeftModel -> the same layer's name in the plain model."""
    return name.removeprefix("base_model.model.")


def _merge_errors(merged, reference, name):
    """(missing layer, worst relative error, its layer, every layer still the base weight W) of ``merged`` against
    W + ΔW of each LoRA layer of ``reference``."""
    import torch

    worst, worst_name, base_like = 0.0, None, 0
    for full_name, layer in reference:
        try:
            target = merged.get_submodule(_short_name(full_name))
        except AttributeError:
            return _short_name(full_name), 0.0, None, False
        with torch.no_grad():
            delta = layer.get_delta_weight(name).float().cpu()
            W, got = layer.get_base_layer().weight.float().cpu(), target.weight.float().cpu()
            size = max(delta.abs().max().item(), 1e-12)
            error = (got - (W + delta)).abs().max().item() / size
            base_like += (got - W).abs().max().item() / size < 1e-3
        if error > worst:
            worst, worst_name = error, _short_name(full_name)
    return None, worst, worst_name, base_like == len(reference)


@check
def check_merged_model(merged, adapter_model, adapter_name: str | None = None) -> Table | CheckResult:
    """``merged`` is ``adapter_model`` merged: plain layers whose weights are ``W + (alpha/r)·B·A``, compared layer by
    layer with the (still unmerged) reference ``adapter_model``."""
    import torch

    reference = list(_lora_layers(adapter_model))
    if not reference:  # the reference itself was merged: nothing is left to compare any answer with
        return _wrong("mô hình tham chiếu `mo_hinh_bo_dieu_hop` không còn lớp LoRA nào: có lẽ bạn đã hợp nhất "
                      "tại chỗ chính nó (merge_and_unload sửa mô hình tại chỗ).",
                      "Chạy lại ô chuẩn bị, rồi hợp nhất một mô hình *khác*: nạp mô hình cơ sở mới + bộ điều hợp, "
                      "hoặc `merge_checked(mo_hinh_bo_dieu_hop, copy=True)`.")
    name = adapter_name or _active(adapter_model)[0]
    is_model = isinstance(merged, torch.nn.Module)
    lora = is_model and (_is_peft_model(merged) or any(True for _ in _lora_layers(merged)))
    want_dtype, got_dtype = _param_dtype(adapter_model), _param_dtype(merged) if is_model else None
    comparable = is_model and not lora and got_dtype == want_dtype
    missing, worst, worst_name, base_like = _merge_errors(merged, reference, name) if comparable else (None, 0, None, 0)

    def drop_first_layer(model):
        parent, _, child = _short_name(reference[0][0]).rpartition(".")
        delattr(model.get_submodule(parent), child)

    def merge_again(model):
        for full_name, layer in reference:
            model.get_submodule(_short_name(full_name)).weight += layer.get_delta_weight(name).to(want_dtype)

    return Table(
        guard=[
            Mistake(lambda m: not is_model, f"`mo_hinh_hop_nhat` là {type(merged).__name__}, không phải một mô hình.",
                    "Lưu chính mô hình mà `.merge_and_unload()` trả về.", example=lambda m: str(type(m))),
            Mistake(lambda m: lora, "mô hình vẫn còn các lớp LoRA: nó chưa được hợp nhất.",
                    "Gọi `.merge_and_unload()` trên mô hình có bộ điều hợp; kết quả là một mô hình transformers thường.",
                    example=lambda m: adapter_model),
            Mistake(lambda m: got_dtype != want_dtype,
                    f"mô hình hợp nhất ở {_dtype_name(got_dtype)}, còn tham chiếu ở {_dtype_name(want_dtype)}.",
                    "Hợp nhất ở đúng độ chính xác số (dtype) của mô hình tham chiếu; đổi kiểu (nếu cần) sau khi hợp nhất.",
                    example=lambda m: copy.deepcopy(m).to(torch.bfloat16)),
            Mistake(lambda m: missing is not None, f"mô hình hợp nhất không có lớp `{missing}`.",
                    "Hợp nhất đúng mô hình cơ sở mà bộ điều hợp được nạp lên.",
                    example=lambda m: edited_copy(m, drop_first_layer)),
        ],
        slips=[
            Mistake(lambda m: base_like, "trọng số giống hệt mô hình cơ sở: ΔW chưa được cộng vào (đó là kết quả của "
                    "`unload()`, hoặc mô hình cơ sở chưa gắn bộ điều hợp).",
                    "`unload()` gỡ bộ điều hợp và bỏ ΔW; `merge_and_unload()` mới cộng ΔW vào W.",
                    example=lambda m: copy.deepcopy(adapter_model).unload()),
            Mistake(lambda m: worst > 1e-3,
                    f"trọng số lớp `{worst_name}` khác W + (alpha/r)·B·A (sai lệch {worst:.2g} lần độ lớn của ΔW).",
                    "Hợp nhất đúng bộ điều hợp của mô hình tham chiếu, đúng một lần, với hệ số alpha/r.",
                    example=lambda m: edited_copy(m, merge_again)),
        ],
        ok=f"Mô hình không còn lớp LoRA, và ở cả {len(reference)} lớp trọng số đúng bằng W + (alpha/r)·B·A.",
    )


@check
def check_drift_detected(result, merged_low) -> Table | CheckResult:
    """A parity check at the fp32 tolerance that catches a merge done in a low precision.

    ``merged_low`` is the model merged in bf16/fp16, ``result`` what ``check_parity(reference_fp32, merged_low, ...)``
    returned.
    """
    import torch

    from ..parity import default_tolerance

    # The learner's low-precision model comes first: no parity result can show these mistakes.
    if merged_low is None:
        return _todo()
    low = _param_dtype(merged_low)
    if low not in (torch.bfloat16, torch.float16):
        return _wrong(f"`mo_hinh_sai_dtype` ở {_dtype_name(low)}: đó không phải một lần hợp nhất sai dtype.",
                      "Nạp mô hình cơ sở với `dtype=torch.bfloat16` (hoặc float16), gắn bộ điều hợp, rồi hợp nhất.")
    limit = default_tolerance(torch.float32)
    return Table(
        guard=[_parity_guard(result, "kiem_tra_dtype")],
        slips=[
            Mistake(lambda r: r.dtype != "float32",
                    f"mô hình thứ nhất của phép so sánh ở {getattr(result, 'dtype', None)}; nó phải là tham chiếu "
                    "float32 + bộ điều hợp.",
                    "`check_parity(mo_hinh_bo_dieu_hop, mo_hinh_sai_dtype, tokenizer, dataset=TEST)`: tham chiếu đứng trước.",
                    example=lambda r: dataclasses.replace(r, dtype="bfloat16")),
            Mistake(lambda r: r.tolerance > limit,
                    f"bạn nới ngưỡng lên {getattr(result, 'tolerance', 0):g} (ngưỡng của tham chiếu fp32 là {limit:g}): "
                    "như vậy chính độ lệch cần phát hiện bị che đi.",
                    "Giữ ngưỡng mặc định của tham chiếu (bỏ `tolerance=`): câu hỏi là bản hợp nhất có *giống* bản đã "
                    "kiểm tra không.", example=lambda r: dataclasses.replace(r, tolerance=10.0, passed=True)),
            Mistake(lambda r: r.passed, "phép kiểm tra vẫn báo KHỚP, nên nó chưa phát hiện được gì.",
                    "So tham chiếu float32 với *đúng* mô hình đã hợp nhất ở bf16/fp16.",
                    example=lambda r: dataclasses.replace(r, passed=True)),
        ],
        ok=f"Phép kiểm tra khớp đã bắt được lần hợp nhất ở {_dtype_name(low)}; "
           f"kết luận của nó: «{result.verdict() if hasattr(result, 'verdict') else ''}».",
    )


@check
def check_parity_passed(result, min_prompts: int = 4) -> Table:
    """A parity check that passed at the fp32 tolerance, on at least ``min_prompts`` prompts."""
    verdict = result.verdict() if hasattr(result, "verdict") else ""
    return Table(
        guard=[_parity_guard(result, "kiem_tra_tay")],
        slips=[
            *_fp32_parity_rows(result, min_prompts),
            Mistake(lambda r: not r.passed, f"phép kiểm tra không đạt: {verdict}",
                    "So ΔW của bạn với `lop.get_delta_weight(...)` từng lớp: có quên lớp nào, hệ số alpha/r, "
                    "hay cộng hai lần không?", example=lambda r: dataclasses.replace(r, passed=False)),
        ],
        ok=f"Bản hợp nhất khớp mô hình tham chiếu; kết luận của phép kiểm tra: «{verdict}».",
    )


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


@check
def check_diagnosis(answer, cases, reference) -> Table:
    """The cause of each broken set-up in ``cases`` (letter -> model), named from ``CAUSES``.

    The truth is found by examining each model against ``reference`` (the working adapter model): LoRA layers
    present or not, target layers, base weights, adapters switched off, merged weights W + k·ΔW. A wrong diagnosis
    is answered with how to confirm the cause the learner claimed, never with the right one.
    """
    from ..broken import CAUSES

    known = {_plain(c): c for c in CAUSES}
    is_dict = isinstance(answer, dict)
    missing = [letter for letter in cases if letter not in answer] if is_dict else []
    claimed = {letter: known.get(_plain(answer[letter])) for letter in cases} if is_dict and not missing else {}
    unknown = next((letter for letter, cause in claimed.items() if cause is None), None)
    readable = bool(claimed) and unknown is None
    wrong = [letter for letter in cases if _diagnose(cases[letter], reference) != claimed[letter]] if readable else []
    first = wrong[0] if wrong else None
    a, b = list(cases)[:2]
    return Table(
        guard=[
            Mistake(lambda d: not is_dict, f"`chan_doan` phải là dict {{chữ_cái: nguyên_nhân}}, bạn đưa "
                    f"{type(answer).__name__}.", "Ví dụ `{\"A\": \"sai_lop_dich\", ...}`.", example=lambda d: list(d.values())),
            Mistake(lambda d: bool(missing), f"chưa chẩn đoán ca {missing}.", "Mỗi ca một nguyên nhân.",
                    example=lambda d: {a: d[a]}),
            Mistake(lambda d: unknown is not None,
                    f"ca {unknown}: {answer.get(unknown) if is_dict else None!r} không có trong danh sách nguyên nhân.",
                    f"Chọn một trong: {', '.join(CAUSES)}.", example=lambda d: {**d, b: "hỏng"}),
        ],
        slips=[
            Mistake(lambda d: len(set(claimed.values())) < len(claimed),
                    "hai ca có cùng một nguyên nhân, mà mỗi ca hỏng theo một cách khác nhau.",
                    "Mỗi nguyên nhân trong danh sách xuất hiện đúng một lần.", example=lambda d: {**d, a: d[b]}),
            Mistake(lambda d: bool(wrong), f"{len(wrong)}/{len(cases)} ca chẩn đoán chưa đúng, ví dụ ca {first} "
                    f"(bạn nói: `{claimed.get(first)}`).", _EVIDENCE.get(claimed.get(first), ""),
                    example=lambda d: {**d, a: d[b], b: d[a]}),
        ],
        ok=f"Cả {len(cases)} ca đều chẩn đoán đúng, và ô kiểm tra đã tự tìm ra cùng nguyên nhân từ chính các mô hình.",
    )


@check
def check_merge_decision(answer, reference, merged_low, result_low, tokenizer, dataset) -> Table | CheckResult:
    """Decide and defend: ship the merged model in float32 or bfloat16? The numbers are checked against the run.

    ``answer`` = ``{"lựa_chọn": "float32" | "bfloat16", "số_liệu": {"chênh_lệch_logits": float,
    "câu_sinh_giống": int, "dung_lượng_MB": {"float32": float, "bfloat16": float}}}``. The logit difference and
    generation count must be those of ``result_low`` (the learner's parity result of ``reference`` against
    ``merged_low`` on ``dataset``); sizes are the parameter count × 4 or × 2 bytes (1 MB = 10⁶ bytes). "bfloat16" is
    defensible only when every greedy generation and the task accuracy are unchanged. The parity result is tied to
    the two models by one prompt measured again.
    """
    from ..data import prompts_of
    from ..parity import default_tolerance, max_logit_diff

    choice, numbers = _decision(answer)
    # The parity result is an earlier answer, not this one: no decision can show these mistakes, so they come first.
    if (bad := first_wrong([_parity_guard(result_low, "kiem_tra_dtype")], result_low)) is not None:
        return bad
    # Tie the parity result to these two models without paying for a second full low-precision run (bf16 is
    # emulated, so slow, on many CPUs): it must report a drift beyond the fp32 tolerance, and one prompt
    # measured again here cannot drift more than the whole set did.
    limit, diff = default_tolerance("float32"), result_low.max_abs_logit_diff
    not_this_pair = _wrong("`kiem_tra_dtype` không phải phép so giữa `mo_hinh_bo_dieu_hop` và `mo_hinh_sai_dtype` trên "
                           "TEST.", "Dùng đúng kết quả của câu 2.")
    if result_low.dtype != "float32" or not diff > limit or result_low.n_prompts != len(dataset):
        return not_this_pair
    text = tokenizer.apply_chat_template(prompts_of(dataset)[0], tokenize=False, add_generation_prompt=True)
    ids = tokenizer([text], return_tensors="pt", add_special_tokens=False)["input_ids"]
    if not limit < max_logit_diff(reference, merged_low, ids.to(next(reference.parameters()).device)) <= 1.1 * diff + 1e-6:
        return not_this_pair

    plain = _plain(choice).replace(" ", "")
    cited, same = _field(numbers, "chênh_lệch_logits"), _number(_field(numbers, "câu_sinh_giống"))
    sizes = _field(numbers, "dung_lượng_MB")
    n_params = sum(p.numel() for p in merged_low.parameters())
    want = {"float32": n_params * 4 / 1e6, "bfloat16": n_params * 2 / 1e6}
    unchanged = result_low.generations_ok and result_low.metrics_ok

    def near(value, target) -> bool:  # rounded to whole MB is fine; tiny models need a relative bound
        return value is not None and abs(value - target) <= min(0.5, 0.01 * abs(target))

    def size_row(dtype, other):
        got = _number(_field(sizes, dtype))
        hint = _size_hint(got, want[dtype], want[other], near,
                          "Hai dung lượng bị đổi chỗ: float32 dùng 4 byte mỗi số, bfloat16 dùng 2.",
                          "Đếm tham số: `sum(p.numel() for p in mo_hinh_sai_dtype.parameters())`, nhân số byte mỗi số, "
                          "chia 10⁶.")
        return Mistake(lambda a: not near(got, want[dtype]), f"`dung_lượng_MB['{dtype}']` = {_field(sizes, dtype)!r} "
                       "chưa đúng.", hint, example=lambda a: _decided(
                           a, dung_lượng_MB={**a["số_liệu"]["dung_lượng_MB"], dtype: 3 * want[dtype]}))

    return Table(
        guard=[
            Mistake(lambda a: plain not in ("float32", "bfloat16"), f"`lựa_chọn` = {choice!r}; chọn \"float32\" hoặc "
                    "\"bfloat16\".", "Viết đúng tên một dtype.", example=lambda a: _decided(a, "int8")),
            Mistake(lambda a: not isinstance(sizes, dict), "`dung_lượng_MB` phải là dict {\"float32\": ..., "
                    "\"bfloat16\": ...}.", "Dung lượng = số tham số × số byte mỗi số (4 hoặc 2) / 10⁶.",
                    example=lambda a: _decided(a, dung_lượng_MB=list(a["số_liệu"]["dung_lượng_MB"].values()))),
        ],
        slips=[
            Mistake(lambda a: not _same_number(cited, diff, rel=1e-2),
                    f"`chênh_lệch_logits` = {cited!r} không phải con số của lần chạy này.",
                    "Chép `kiem_tra_dtype.max_abs_logit_diff` (có thể làm tròn tới 3 chữ số có nghĩa).",
                    example=lambda a: _decided(a, chênh_lệch_logits=2 * diff)),
            Mistake(lambda a: same is None or int(same) != result_low.n_identical_generations,
                    f"`câu_sinh_giống` = {_field(numbers, 'câu_sinh_giống')!r} không khớp phép kiểm tra.",
                    "Chép `kiem_tra_dtype.n_identical_generations` (số câu, không phải tỉ lệ).",
                    example=lambda a: _decided(a, câu_sinh_giống=result_low.n_identical_generations + 1)),
            size_row("float32", "bfloat16"),
            size_row("bfloat16", "float32"),
            *([] if unchanged else [Mistake(
                lambda a: plain == "bfloat16",
                "chính số liệu của bạn phản bác lựa chọn này: ở bfloat16 câu sinh hoặc độ chính xác đã đổi.",
                "Chỉ giao bản nhỏ hơn khi nó cho cùng câu trả lời; nếu không, giao float32 (hoặc hợp nhất ở float32 rồi "
                "mới đổi dtype, và kiểm tra lại).", example=lambda a: _decided(a, "bfloat16"))]),
        ],
        ok="Lựa chọn của bạn đứng vững với số liệu của bạn, đã đo lại trên chính hai mô hình.",
        measured=f"bạn chọn «{choice}»: chênh lệch logits {diff:.3g}, {result_low.n_identical_generations}/"
                 f"{result_low.n_prompts} câu sinh giống, {want['float32']:.0f} MB (float32) so với "
                 f"{want['bfloat16']:.0f} MB (bfloat16).",
    )
