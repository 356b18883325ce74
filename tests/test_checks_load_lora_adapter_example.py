"""Checks of the load_lora_adapter_example exercises: loading, routing, weighted adapters, scores, reload parity, adapter choice.

Tiny random Llama models (``tests/conftest.py``) stand in for SmolLM2: the checks only read shapes, weights
and configs, so what holds here holds for the course model.
"""

import copy
import re

import pytest
from check_support import (
    CONFIG,
    TASKS,
    fake_result,
    measured,
    ok,
    rows_of,
    todo,
    two_adapter_model,
    wrong,
)
from datasets import Dataset
from peft import LoraConfig, PeftModel, get_peft_model

from lora_helpers.checks import (
    answer_format,
    check_adapter_choice,
    check_loaded_adapters,
    check_reload_parity,
    check_routed_answers,
    check_router,
    check_task_scores,
    check_weighted_adapter,
)
from lora_helpers.data import make_task_splits
from lora_helpers.evaluation import evaluate_task, generate
from lora_helpers.parity import check_parity


def test_unreadable_answer_is_reported_not_raised():
    weird = {"don_hang": {"accuracy": object(), "predictions": ["{}"]}}
    test = {"don_hang": make_task_splits("don_hang", n_train=1, n_val=1, n_test=1)["test"]}
    wrong(check_task_scores(weird, test), "không đọc được đáp án")


# ---------------------------------------------------------------------------
def test_loaded_adapters(tiny_model_factory, adapter_dirs):
    ok(check_loaded_adapters(two_adapter_model(tiny_model_factory, adapter_dirs), expected=adapter_dirs))
    todo(check_loaded_adapters(None, expected=adapter_dirs))


def test_loaded_adapters_rejects_base_missing_default_swapped_and_fresh(tiny_model_factory, adapter_dirs):
    wrong(check_loaded_adapters(tiny_model_factory(), expected=adapter_dirs), "chưa có bộ điều hợp")
    one = PeftModel.from_pretrained(tiny_model_factory(), adapter_dirs["don_hang"], adapter_name="don_hang")
    wrong(check_loaded_adapters(one, expected=adapter_dirs), "thiếu ['ngay_thang']")
    unnamed = PeftModel.from_pretrained(tiny_model_factory(), adapter_dirs["don_hang"])
    unnamed.load_adapter(adapter_dirs["ngay_thang"], adapter_name="ngay_thang")
    wrong(check_loaded_adapters(unnamed, expected=adapter_dirs), "`default`")
    swapped = two_adapter_model(tiny_model_factory, adapter_dirs, dirs=[adapter_dirs["ngay_thang"], adapter_dirs["don_hang"]])
    wrong(check_loaded_adapters(swapped, expected=adapter_dirs), "tráo")
    fresh = get_peft_model(tiny_model_factory(), LoraConfig(**CONFIG), adapter_name="don_hang")
    fresh.add_adapter("ngay_thang", LoraConfig(**CONFIG))
    wrong(check_loaded_adapters(fresh, expected=adapter_dirs), "không khớp")


def reference_router(text):
    """Route on the request itself: every date has a four-digit year, no order has one."""
    return "ngay_thang" if re.search(r"\b(19|20)\d\d\b", text) else "don_hang"


def test_router_accepts_reference_and_rejects_typical_mistakes():
    ok(check_router(reference_router))
    # the instruction is gone (users do not type it): a router that reads it always gives the same answer
    wrong(check_router(lambda text: "don_hang" if text.startswith("Trích đơn hàng") else "ngay_thang"), "lời dặn")
    # a keyword that also occurs in the other task ("Ngày giao hàng" is a date event)
    wrong(check_router(lambda text: "don_hang" if "giao" in text or "gửi" in text else "ngay_thang"), "gửi nhầm")
    todo(check_router(None))
    wrong(check_router(lambda text: "don_hang"), "luôn chọn `don_hang`")
    wrong(check_router(lambda text: "ngay_thang" if reference_router(text) == "don_hang" else "don_hang"), "ngược")
    wrong(check_router(lambda text: "JSON"), "không phải tên bộ điều hợp")
    wrong(check_router(lambda text: text["content"]), "báo lỗi")
    wrong(check_router("don_hang"), "phải là một hàm")
    # a router keyed on the date format misses dates written in words
    wrong(check_router(lambda text: "ngay_thang" if "/" in text else "don_hang"), "gửi nhầm")


@pytest.fixture(scope="module")
def mixed_rows():
    tests = {t: make_task_splits(t, n_train=1, n_val=1, n_test=3)["test"] for t in TASKS}
    return [tests[t][i] for i in range(3) for t in TASKS]


def test_answer_format():
    assert answer_format("2024-01-05") == "ngay_thang"
    assert answer_format('{"ten": "Lan", "mon": "phở", "so_luong": 2, "dia_chi": "Quận 1"}') == "don_hang"
    assert answer_format('{"YYYY": "2024"}') is None
    assert answer_format("ngày 5 tháng 1") is None


def test_routed_answers(mixed_rows):
    reference = [row["answer"] for row in mixed_rows]
    ok(check_routed_answers(reference, mixed_rows))
    todo(check_routed_answers(None, mixed_rows))
    # a date question answered by the order adapter, and the reverse
    swapped = [mixed_rows[1]["answer"], mixed_rows[0]["answer"], *reference[2:]]
    wrong(check_routed_answers(swapped, mixed_rows), "đi nhầm bộ điều hợp")
    everything_dates = ["2020-01-01"] * len(mixed_rows)
    wrong(check_routed_answers(everything_dates, mixed_rows), "đi nhầm", "set_adapter")
    base_like = ["Xin chào, tôi có thể giúp gì?"] * len(mixed_rows)
    wrong(check_routed_answers(base_like, mixed_rows), "không có dạng của tác vụ nào")
    wrong(check_routed_answers(reference[:-1], mixed_rows), "phần tử")
    wrong(check_routed_answers(reference[0], mixed_rows), "danh sách")


def test_weighted_adapter(tiny_model_factory, adapter_dirs):
    model = two_adapter_model(tiny_model_factory, adapter_dirs)
    todo(check_weighted_adapter(None, "ket_hop", TASKS, [1.0, 1.0]))
    todo(check_weighted_adapter(model, "ket_hop", TASKS, [1.0, 1.0]))
    model.add_weighted_adapter(list(TASKS), [1.0, 1.0], adapter_name="ket_hop", combination_type="cat")
    wrong(check_weighted_adapter(model, "ket_hop", TASKS, [1.0, 1.0]), "set_adapter")
    model.set_adapter("ket_hop")
    ok(check_weighted_adapter(model, "ket_hop", TASKS, [1.0, 1.0]))
    wrong(check_weighted_adapter(model, "ket_hop", TASKS, [1.0, 0.5]), "trọng số")
    wrong(check_weighted_adapter(tiny_model_factory(), "ket_hop", TASKS, [1.0, 1.0]), "không có bộ điều hợp")


@pytest.mark.parametrize("combination", ["svd", "linear"])
def test_weighted_adapter_rejects_approximate_combinations(tiny_model_factory, adapter_dirs, combination):
    model = two_adapter_model(tiny_model_factory, adapter_dirs)
    model.add_weighted_adapter(list(TASKS), [1.0, 1.0], adapter_name="ket_hop", combination_type=combination)
    model.set_adapter("ket_hop")
    wrong(check_weighted_adapter(model, "ket_hop", TASKS, [1.0, 1.0]), "cat")


@pytest.fixture(scope="module")
def test_sets():
    return {t: make_task_splits(t, n_train=1, n_val=1, n_test=4)["test"] for t in TASKS}


def test_task_scores(test_sets):
    half = {t: fake_result(t, [*ds["answer"][:2], "sai", "sai"], ds["answer"]) for t, ds in test_sets.items()}
    ok(check_task_scores(half, test_sets))
    todo(check_task_scores(None, test_sets))
    wrong(check_task_scores({"don_hang": half["don_hang"]}, test_sets), "thiếu kết quả", "ngay_thang")
    percent = copy.deepcopy(half)
    percent["ngay_thang"]["accuracy"] = 50
    wrong(check_task_scores(percent, test_sets), "tỉ lệ 0–1")
    made_up = copy.deepcopy(half)
    made_up["don_hang"]["accuracy"] = 0.9
    wrong(check_task_scores(made_up, test_sets), "Đừng tự sửa")
    subset = copy.deepcopy(half)
    subset["don_hang"]["predictions"] = subset["don_hang"]["predictions"][:2]
    wrong(check_task_scores(subset, test_sets), "tập kiểm tra có 4")
    wrong(check_task_scores([0.5, 0.5], test_sets), "dict")


MIXED = [r for pair in zip(rows_of("don_hang", ["w5 w9 w12", "w20 w3"]), rows_of("ngay_thang", ["w7 w30", "w11 w2 w44"]))
         for r in pair]


N_NEW = 6


def answers_with(model, tokenizer, rows, adapter):
    """Answers of one adapter (None: base model), one row at a time."""
    if adapter is None:
        with model.disable_adapter():
            return [generate(model, tokenizer, [r["messages"][:-1]], max_new_tokens=N_NEW)[0] for r in rows]
    model.set_adapter(adapter)
    return [generate(model, tokenizer, [r["messages"][:-1]], max_new_tokens=N_NEW)[0] for r in rows]


# ---------- routed answers, by content
def test_routed_answers_compares_with_what_the_right_adapter_generates(tiny_model_factory, tiny_tokenizer, adapter_dirs):
    model = two_adapter_model(tiny_model_factory, adapter_dirs)
    right = [answers_with(model, tiny_tokenizer, [r], r["task"])[0] for r in MIXED]
    model.set_adapter("don_hang")
    check = lambda answers: check_routed_answers(answers, MIXED, model, tiny_tokenizer, max_new_tokens=N_NEW)  # noqa: E731
    ok(check(right))
    assert model.active_adapters == ["don_hang"], "the check restores the active adapter"
    todo(check(None))
    assert len(set(right)) == len(right), "the tiny adapters answer each row differently (the test needs it)"
    # gaming: the reference answers of the dataset, hard-coded strings, an answer copied from another row
    wrong(check([r["answer"] for r in MIXED]), "đáp án mẫu")
    wrong(check(["2020-01-01"] * len(MIXED)), "không khớp")
    wrong(check([right[0], right[0], *right[2:]]), "câu hỏi khác")
    # every row sent to one adapter, and the base model
    wrong(check(answers_with(model, tiny_tokenizer, MIXED, "ngay_thang")), "đi nhầm", "`ngay_thang`")
    wrong(check(answers_with(model, tiny_tokenizer, MIXED, None)), "mô hình cơ sở")
    wrong(check(right[:-1]), "phần tử")


# ---------- which adapter was measured
@pytest.fixture()
def combined_model(tiny_model_factory, adapter_dirs):
    model = two_adapter_model(tiny_model_factory, adapter_dirs)
    model.add_weighted_adapter(list(TASKS), [1.0, 1.0], adapter_name="ket_hop", combination_type="cat")
    model.set_adapter("ket_hop")
    return model


@pytest.fixture(scope="module")
def tiny_tests():
    return {"don_hang": Dataset.from_list(rows_of("don_hang", ["w5 w9", "w20 w3"])),
            "ngay_thang": Dataset.from_list(rows_of("ngay_thang", ["w7 w30", "w11 w2"]))}


def scores_with(model, tokenizer, tests, adapter_of):
    out = {}
    for task, ds in tests.items():
        model.set_adapter(adapter_of(task))
        out[task] = evaluate_task(model, tokenizer, ds)
    model.set_adapter("ket_hop")
    return out


def test_task_scores_verifies_the_adapter_that_was_active(combined_model, tiny_tokenizer, tiny_tests):
    model, tok = combined_model, tiny_tokenizer
    right = scores_with(model, tok, tiny_tests, lambda task: "ket_hop")
    ok(check_task_scores(right, tiny_tests, model, tok, adapter="ket_hop"))
    assert model.active_adapters == ["ket_hop"]
    # gaming: each task measured with its own (better) adapter, and called the combined adapter's scores
    own = scores_with(model, tok, tiny_tests, lambda task: task)
    wrong(check_task_scores(own, tiny_tests, model, tok, adapter="ket_hop"), "không được đo với bộ `ket_hop`",
          "của bộ `don_hang`")
    with model.disable_adapter():
        base = {t: evaluate_task(model, tok, ds) for t, ds in tiny_tests.items()}
    wrong(check_task_scores(base, tiny_tests, model, tok, adapter="ket_hop"), "mô hình cơ sở")
    edited = copy.deepcopy(right)
    edited["ngay_thang"]["predictions"] = list(tiny_tests["ngay_thang"]["answer"])
    edited["ngay_thang"]["accuracy"] = 1.0
    wrong(check_task_scores(edited, tiny_tests, model, tok, adapter="ket_hop"), "không phải câu trả lời của bộ này")
    todo(check_task_scores(right, tiny_tests, model, tok, adapter="khong_co"))


# ---------- save, reload, prove parity
PROMPTS = [[{"role": "user", "content": w}] for w in ("w5 w6", "w7 w8 w9", "w10", "w11 w12 w13 w14")]


def test_reload_parity(tiny_model_factory, tiny_tokenizer, adapter_dirs, tmp_path):
    reference = two_adapter_model(tiny_model_factory, adapter_dirs)
    reference.save_pretrained(tmp_path / "luu", selected_adapters=["ngay_thang"])
    folder = tmp_path / "luu" / "ngay_thang"
    reloaded = PeftModel.from_pretrained(tiny_model_factory(), folder).eval()
    reference.set_adapter("ngay_thang")
    result = check_parity(reference, reloaded, tiny_tokenizer, prompts=PROMPTS, max_new_tokens=4)
    ok(check_reload_parity(result, folder, reloaded, reference, "ngay_thang"))
    todo(check_reload_parity(None, None, None, reference, "ngay_thang"))
    todo(check_reload_parity(None, folder, reloaded, reference, "ngay_thang"))
    wrong(check_reload_parity(result, tmp_path / "luu", reloaded, reference, "ngay_thang"), "thư mục con")
    reference.save_pretrained(tmp_path / "khac", selected_adapters=["don_hang"])
    wrong(check_reload_parity(result, tmp_path / "khac" / "don_hang", reloaded, reference, "ngay_thang"), "bộ `don_hang`")
    wrong(check_reload_parity(result, folder, tiny_model_factory(), reference, "ngay_thang"), "chưa mang")
    wrong(check_reload_parity(result, folder, reference, reference, "ngay_thang"), "dùng chung trọng số")
    wrong(check_reload_parity(result.verdict(), folder, reloaded, reference, "ngay_thang"), "không phải kết quả")
    loose = check_parity(reference, reloaded, tiny_tokenizer, prompts=PROMPTS, max_new_tokens=4, tolerance=5.0)
    wrong(check_reload_parity(loose, folder, reloaded, reference, "ngay_thang"), "nới ngưỡng")
    reference.set_adapter("don_hang")                         # forgot to switch to the saved adapter
    failed = check_parity(reference, reloaded, tiny_tokenizer, prompts=PROMPTS, max_new_tokens=4)
    wrong(check_reload_parity(failed, folder, reloaded, reference, "ngay_thang"), "không đạt", "set_adapter")
    assert reference.active_adapters == ["don_hang"]


# ---------- decide and defend
@pytest.fixture(scope="module")
def real_tests():
    return {t: make_task_splits(t, n_train=1, n_val=1, n_test=4)["test"] for t in TASKS}


def test_adapter_choice(real_tests):
    alone = measured(real_tests, {"don_hang": 3, "ngay_thang": 3})
    combined = measured(real_tests, {"don_hang": 0, "ngay_thang": 4})
    numbers = {"don_hang": {"riêng": 0.75, "trộn": 0.0}, "ngay_thang": {"riêng": 0.75, "trộn": 1.0}}
    ok(check_adapter_choice({"lựa_chọn": "định tuyến", "số_liệu": numbers}, combined, alone, real_tests))
    ok(check_adapter_choice({"lua_chon": "dinh_tuyen", "so_lieu": numbers}, combined, alone, real_tests))
    todo(check_adapter_choice(None, combined, alone, real_tests))
    wrong(check_adapter_choice({"lựa_chọn": "trộn", "số_liệu": numbers}, combined, alone, real_tests), "phản bác")
    percent = copy.deepcopy(numbers)
    percent["ngay_thang"]["riêng"] = 75
    wrong(check_adapter_choice({"lựa_chọn": "định tuyến", "số_liệu": percent}, combined, alone, real_tests), "phần trăm")
    swapped = {t: {"riêng": v["trộn"], "trộn": v["riêng"]} for t, v in numbers.items()}
    wrong(check_adapter_choice({"lựa_chọn": "định tuyến", "số_liệu": swapped}, combined, alone, real_tests), "đổi chỗ")
    made_up = copy.deepcopy(numbers)
    made_up["don_hang"]["riêng"] = 0.9
    wrong(check_adapter_choice({"lựa_chọn": "định tuyến", "số_liệu": made_up}, combined, alone, real_tests),
          "không phải con số")
    wrong(check_adapter_choice({"lựa_chọn": "định tuyến", "số_liệu": {"don_hang": numbers["don_hang"]}}, combined, alone,
                               real_tests), "thiếu tác vụ `ngay_thang`")
    wrong(check_adapter_choice({"lựa_chọn": "cả hai", "số_liệu": numbers}, combined, alone, real_tests), "chọn một trong")
    wrong(check_adapter_choice({"lựa_chọn": "định tuyến"}, combined, alone, real_tests), "thiếu khoá")
    wrong(check_adapter_choice("định tuyến", combined, alone, real_tests), "dict")
    # when the combined adapter keeps both tasks, combining is defensible too
    close = {t: {"riêng": 0.75, "trộn": 0.75} for t in TASKS}
    ok(check_adapter_choice({"lựa_chọn": "trộn", "số_liệu": close}, alone, alone, real_tests))
