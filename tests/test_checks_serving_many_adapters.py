"""The checks of the serving lesson's exercises accept the reference answers and reject wrong and gaming ones.

Tiny random Llama models (``tests/conftest.py``) stand in for SmolLM2: ``check_mixed_batch`` is given
tiny-tokenizer prompts; ``check_safe_hotswap`` builds its own tiny models.
"""

import json
from pathlib import Path

import pytest
from check_support import (
    ok,
    todo,
    two_adapter_model,
    wrong,
)
from peft.utils.hotswap import hotswap_adapter

from lora_helpers.checks import (
    check_manual_routes,
    check_mixed_batch,
    check_safe_hotswap,
    manual_routing_requests,
    mixed_batch_requests,
)
from lora_helpers.checks.serving_many_adapters import _routing_rows
from lora_helpers.errors import CourseError
from lora_helpers.serving import BASE, generate_batch, serve_by_switching

# --------------------------------------------------------------------------- 🐢 routing by hand
RIGHT = [task for _, task in _routing_rows()]


def test_manual_routes_shows_only_the_texts():
    texts = manual_routing_requests()
    assert len(texts) == len(RIGHT) == 7 and all(isinstance(t, str) for t in texts)
    assert not any(t.startswith(("Trích", "Viết ngày")) for t in texts), "the instruction line is not shown"
    assert set(RIGHT) == {"don_hang", "ngay_thang", BASE}


def test_manual_routes():
    ok(check_manual_routes(list(RIGHT)))
    ok(check_manual_routes(tuple(RIGHT)))
    todo(check_manual_routes(None))
    wrong(check_manual_routes("ngay_thang"), "danh sách tên")
    wrong(check_manual_routes(RIGHT[:-1]), "có 7 yêu cầu nhưng")
    wrong(check_manual_routes([("base" if t == BASE else t) for t in RIGHT]), "\"__base__\"")
    wrong(check_manual_routes([(None if t == BASE else t) for t in RIGHT]), "không phải tên nào")
    wrong(check_manual_routes(["don_hang"] * 7), "mọi yêu cầu tới `don_hang`")
    swap = {"don_hang": "ngay_thang", "ngay_thang": "don_hang"}
    wrong(check_manual_routes([swap.get(t, t) for t in RIGHT]), "nhầm sang tác vụ kia")
    chat_to_adapter = [("don_hang" if t == BASE else t) for t in RIGHT]
    wrong(check_manual_routes(chat_to_adapter), "sai chỗ", "\"__base__\"")


# --------------------------------------------------------------------------- 🐕 mixed batch
REQUESTS = (["w5 w9 w12", "w20 w3", "w7 w30", "w11 w2 w44"], ["ngay_thang", BASE, "don_hang", "ngay_thang"])
N_NEW = 5


def test_mixed_batch_requests_are_the_task_rows():
    prompts, names = mixed_batch_requests()
    assert names == ["ngay_thang", BASE, "don_hang", "ngay_thang"] and len(prompts) == 4
    assert prompts[0][-1]["content"].startswith("Viết ngày") and prompts[2][-1]["content"].startswith("Trích")


def test_mixed_batch(tiny_model_factory, tiny_tokenizer, adapter_dirs):  # noqa: F811
    model = two_adapter_model(tiny_model_factory, adapter_dirs).eval()
    prompts, names = REQUESTS
    mixed = generate_batch(model, tiny_tokenizer, prompts, N_NEW, adapter_names=names)[0]
    separate = serve_by_switching(model, tiny_tokenizer, prompts, names, N_NEW).answers
    assert mixed == separate
    same = [a == b for a, b in zip(mixed, separate)]

    def check(m, s, g):
        return check_mixed_batch(m, s, g, model, tiny_tokenizer, N_NEW, requests=REQUESTS)

    ok(check(mixed, list(separate), same))
    ok(check_mixed_batch(tuple(mixed), separate, tuple(same), model, tiny_tokenizer, N_NEW, requests=REQUESTS))
    todo(check_mixed_batch(None, None, None, model, tiny_tokenizer, N_NEW))
    wrong(check_mixed_batch(mixed, separate, same, model, tiny_tokenizer, N_NEW + 3, requests=REQUESTS), "max_new_tokens=8")
    todo(check(None, None, None))
    todo(check(mixed, None, same))
    # forgot adapter_names: every row through the active adapter (don_hang) or with the adapters off
    model.set_adapter("don_hang")
    forgot = generate_batch(model, tiny_tokenizer, prompts, N_NEW)[0]
    assert forgot != mixed, "the tiny adapters must change the answers for the test to mean something"
    wrong(check(forgot, separate, [a == b for a, b in zip(forgot, separate)]), "`tra_loi_tron`", "bộ `don_hang`",
          "adapter_names")
    model.set_adapter("ngay_thang")
    one_adapter = serve_by_switching(model, tiny_tokenizer, prompts, ["ngay_thang"] * 4, N_NEW).answers
    wrong(check(mixed, one_adapter, [a == b for a, b in zip(mixed, one_adapter)]), "`tra_loi_rieng`", "bộ `ngay_thang`",
          "set_adapter")
    with model.disable_adapter():
        base = generate_batch(model, tiny_tokenizer, prompts, N_NEW)[0]
    wrong(check(base, separate, [a == b for a, b in zip(base, separate)]), "mô hình cơ sở", "adapter_names=TEN")
    wrong(check(mixed, base, [a == b for a, b in zip(mixed, base)]), "`tra_loi_rieng`", "set_adapter")
    # gaming: the same list twice, a bare True, a hand-written verdict, reference answers, wrong shapes
    wrong(check(mixed, mixed, same), "cùng một danh sách")
    wrong(check(mixed, separate, True), "True/False duy nhất")
    wrong(check(mixed, separate, [True, False, True, True]), "không khớp")
    wrong(check(mixed, separate, [True] * 3), "danh sách 4 giá trị")
    refs = [make_reference(t, k) for t, k in (("ngay_thang", 20), ("don_hang", 20), ("ngay_thang", 21), ("don_hang", 21))]
    wrong(check(refs, separate, [False] * 4), "đáp án mẫu")
    wrong(check(mixed[:3], separate, same), "có 3 phần tử")
    wrong(check("w1 w2", separate, same), "danh sách chuỗi")
    wrong(check([1, 2, 3, 4], separate, same), "không phải chuỗi")


def make_reference(task, k):
    from lora_helpers.data import make_task_splits

    return make_task_splits(task)["test"][k]["answer"]


# --------------------------------------------------------------------------- 🦁 safe hotswap
def safe(model, thu_muc, ten):
    if ten not in getattr(model, "peft_config", {}):
        raise CourseError(f"Chưa nạp bộ điều hợp `{ten}`.", "Dùng load_adapter.")
    new = json.loads((Path(thu_muc) / "adapter_config.json").read_text(encoding="utf-8"))
    rank = max(m.lora_A[ten].weight.shape[0] for m in model.modules() if hasattr(m, "lora_A") and ten in m.lora_A)
    if new["r"] > rank:
        raise CourseError(f"Hạng {new['r']} lớn hơn chỗ (hạng {rank}).", "prepare_model_for_compiled_hotswap.")
    if set(new["target_modules"]) - set(model.peft_config[ten].target_modules):
        raise CourseError("Bộ mới gắn thêm lớp đích.", "Cần cùng target_modules.")
    hotswap_adapter(model, str(thu_muc), adapter_name=ten)


def test_safe_hotswap_accepts_a_careful_function():
    ok(check_safe_hotswap(safe))
    todo(check_safe_hotswap(None))
    wrong(check_safe_hotswap("hotswap_adapter"), "phải là một hàm")


def test_safe_hotswap_rejects_plain_always_late_and_english():
    def plain(model, d, ten):
        hotswap_adapter(model, d, adapter_name=ten)

    def always(model, d, ten):
        raise CourseError("Không được đổi.")

    def late(model, d, ten):  # changes the slot first, complains afterwards
        for module in model.modules():
            if hasattr(module, "lora_B") and ten in module.lora_B:
                module.lora_B[ten].weight.data.zero_()
        safe(model, d, ten)

    def english(model, d, ten):
        if ten not in model.peft_config:
            raise ValueError("adapter not loaded")
        safe(model, d, ten)

    def no_rank_check(model, d, ten):
        if ten not in model.peft_config:
            raise CourseError("Chưa nạp bộ điều hợp này.")
        hotswap_adapter(model, d, adapter_name=ten)

    def no_message(model, d, ten):
        try:
            safe(model, d, ten)
        except CourseError:
            raise CourseError("error") from None

    wrong(check_safe_hotswap(plain), "hạng lớn hơn chỗ", "đã thay trọng số")
    wrong(check_safe_hotswap(always), "từ chối một bộ điều hợp tương thích")
    wrong(check_safe_hotswap(late), "SAU KHI đã sửa")
    wrong(check_safe_hotswap(english), "ValueError", "thay vì CourseError")
    wrong(check_safe_hotswap(no_rank_check), "hạng lớn hơn chỗ")
    wrong(check_safe_hotswap(no_message), "không phải tiếng Việt")


def test_safe_hotswap_rejects_the_course_helper():
    from lora_helpers import serving

    def uses_helper(model, d, ten):
        serving.hotswap_checked(model, d, ten)

    wrong(check_safe_hotswap(uses_helper), "của khoá học")
    wrong(check_safe_hotswap(serving.hotswap_checked), "của khoá học")


@pytest.mark.parametrize("bad", [lambda m, d: None, lambda *a: 1 / 0])
def test_safe_hotswap_never_raises(bad):
    result = check_safe_hotswap(bad)
    assert result.status == "sai" and result.message.startswith("❌")
