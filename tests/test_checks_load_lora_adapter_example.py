"""Checks of the load_lora_adapter_example exercises: loading, routing, combining, scoring, reloading, choosing.

Each check's table of mistakes is walked (``walk_table``); the other tests are what a walk does not show (anti-gaming, the otherwise message).
"""

import re

import pytest
from check_support import CONFIG, TASKS, fake_result, measured, ok, rows_of, todo, two_adapter_model, walk_table, wrong
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
from lora_helpers.checks.load_lora_adapter_example import _recombined, _saved_and_reloaded
from lora_helpers.data import make_task_splits
from lora_helpers.evaluation import evaluate_task, generate
from lora_helpers.parity import check_parity


def test_unreadable_answer_is_reported_not_raised():
    weird = {"don_hang": {"accuracy": object(), "predictions": ["{}"]}}
    test = {"don_hang": make_task_splits("don_hang", n_train=1, n_val=1, n_test=1)["test"]}
    wrong(check_task_scores(weird, test), "không đọc được đáp án")


def test_loaded_adapters_table(tiny_model_factory, adapter_dirs):
    walk_table(check_loaded_adapters, two_adapter_model(tiny_model_factory, adapter_dirs), expected=adapter_dirs)
    fresh = get_peft_model(tiny_model_factory(), LoraConfig(**CONFIG), adapter_name="don_hang")  # made, not loaded
    fresh.add_adapter("ngay_thang", LoraConfig(**CONFIG))
    wrong(check_loaded_adapters(fresh, expected=adapter_dirs), "không khớp")
    unnamed = PeftModel.from_pretrained(tiny_model_factory(), adapter_dirs["don_hang"])  # peft names it `default`
    unnamed.load_adapter(adapter_dirs["ngay_thang"], adapter_name="ngay_thang")
    wrong(check_loaded_adapters(unnamed, expected=adapter_dirs), "`default`")
    swapped = two_adapter_model(tiny_model_factory, adapter_dirs, dirs=[adapter_dirs[t] for t in reversed(TASKS)])
    wrong(check_loaded_adapters(swapped, expected=adapter_dirs), "tráo")


def reference_router(text):
    """Route on the request itself: every date has a four-digit year, no order has one."""
    return "ngay_thang" if re.search(r"\b(19|20)\d\d\b", text) else "don_hang"


def test_router_table():
    walk_table(check_router, reference_router)
    # the instruction is gone (users do not type it): a router that reads it always gives the same answer
    wrong(check_router(lambda text: "don_hang" if text.startswith("Trích đơn hàng") else "ngay_thang"), "lời dặn")
    # a keyword that also occurs in the other task ("Ngày giao hàng" is a date event), dates written in words
    wrong(check_router(lambda text: "don_hang" if "giao" in text or "gửi" in text else "ngay_thang"), "gửi nhầm")
    wrong(check_router(lambda text: "ngay_thang" if "/" in text else "don_hang"), "gửi nhầm")


def test_answer_format():
    assert answer_format("2024-01-05") == "ngay_thang"
    assert answer_format('{"ten": "Lan", "mon": "phở", "so_luong": 2, "dia_chi": "Quận 1"}') == "don_hang"
    assert answer_format('{"YYYY": "2024"}') is None
    assert answer_format("ngày 5 tháng 1") is None


def test_routed_answers_by_format_table():
    tests = {t: make_task_splits(t, n_train=1, n_val=1, n_test=3)["test"] for t in TASKS}
    rows = [tests[t][i] for i in range(3) for t in TASKS]
    walk_table(check_routed_answers, [row["answer"] for row in rows], rows)
    ok(check_routed_answers(tuple(row["answer"] for row in rows), rows))


MIXED = [r for pair in zip(rows_of("don_hang", ["w5 w9 w12", "w20 w3"]), rows_of("ngay_thang", ["w7 w30", "w11 w2 w44"]))
         for r in pair]
N_NEW = 6


def test_routed_answers_table(tiny_model_factory, tiny_tokenizer, adapter_dirs):
    """The check generates every answer again: the dataset's answers, copies and other adapters' answers fail."""
    model, tok = two_adapter_model(tiny_model_factory, adapter_dirs), tiny_tokenizer
    right = []
    for row in MIXED:
        model.set_adapter(row["task"])
        right += generate(model, tok, [row["messages"][:-1]], max_new_tokens=N_NEW)
    assert len(set(right)) == len(right), "the tiny adapters answer each row differently (the test needs it)"
    model.set_adapter("don_hang")
    walk_table(check_routed_answers, right, MIXED, model, tok, max_new_tokens=N_NEW)
    assert model.active_adapters == ["don_hang"], "the check restores the active adapter"
    wrong(check_routed_answers(["2020-01-01"] * len(MIXED), MIXED, model, tok, max_new_tokens=N_NEW), "không khớp")
    wrong(check_routed_answers([r["answer"] for r in MIXED], MIXED, model, tok, max_new_tokens=N_NEW), "đáp án mẫu")


@pytest.fixture()
def combined_model(tiny_model_factory, adapter_dirs):
    model = two_adapter_model(tiny_model_factory, adapter_dirs)
    model.add_weighted_adapter(list(TASKS), [1.0, 1.0], adapter_name="ket_hop", combination_type="cat")
    model.set_adapter("ket_hop")
    return model


def test_weighted_adapter_table(combined_model, tiny_model_factory, adapter_dirs):
    walk_table(check_weighted_adapter, combined_model, "ket_hop", TASKS, [1.0, 1.0])
    todo(check_weighted_adapter(two_adapter_model(tiny_model_factory, adapter_dirs), "ket_hop", TASKS, [1.0, 1.0]))
    wrong(check_weighted_adapter(combined_model, "ket_hop", TASKS, [1.0, 0.5]), "trọng số")
    linear = _recombined(combined_model, "ket_hop", TASKS, [1.0, 1.0], "linear")
    wrong(check_weighted_adapter(linear, "ket_hop", TASKS, [1.0, 1.0]), "cat")


def test_task_scores_table():
    tests = {t: make_task_splits(t, n_train=1, n_val=1, n_test=4)["test"] for t in TASKS}
    half = {t: fake_result(t, [*ds["answer"][:2], "sai", "sai"], ds["answer"]) for t, ds in tests.items()}
    walk_table(check_task_scores, half, tests)


def test_task_scores_table_with_the_adapter(combined_model, tiny_tokenizer):
    """Scores are generated again with the adapter: those of each task's own adapter, or of the base model, fail."""
    tests = {"don_hang": Dataset.from_list(rows_of("don_hang", ["w5 w9", "w20 w3"])),
             "ngay_thang": Dataset.from_list(rows_of("ngay_thang", ["w7 w30", "w11 w2"]))}
    right = {task: evaluate_task(combined_model, tiny_tokenizer, ds) for task, ds in tests.items()}
    walk_table(check_task_scores, right, tests, combined_model, tiny_tokenizer, adapter="ket_hop")
    assert combined_model.active_adapters == ["ket_hop"]
    todo(check_task_scores(right, tests, combined_model, tiny_tokenizer, adapter="khong_co"))
    own = {}  # gaming: each task measured with its own (better) adapter, called the combined adapter's scores
    for task, ds in tests.items():
        combined_model.set_adapter(task)
        own[task] = evaluate_task(combined_model, tiny_tokenizer, ds)
    combined_model.set_adapter("ket_hop")
    wrong(check_task_scores(own, tests, combined_model, tiny_tokenizer, adapter="ket_hop"), "của bộ `don_hang`")


PROMPTS = [[{"role": "user", "content": w}] for w in ("w5 w6", "w7 w8 w9", "w10", "w11 w12 w13 w14")]


def test_reload_parity_tables(tiny_model_factory, tiny_tokenizer, adapter_dirs, tmp_path):
    reference = two_adapter_model(tiny_model_factory, adapter_dirs)
    reference.save_pretrained(tmp_path / "luu", selected_adapters=["ngay_thang"])
    folder = tmp_path / "luu" / "ngay_thang"
    reloaded = PeftModel.from_pretrained(tiny_model_factory(), folder).eval()
    reference.set_adapter("ngay_thang")
    result = check_parity(reference, reloaded, tiny_tokenizer, prompts=PROMPTS, max_new_tokens=4)
    walk_table(_saved_and_reloaded, (folder, reloaded), reference, "ngay_thang")
    walk_table(check_reload_parity, result, folder, reloaded, reference, "ngay_thang")
    todo(check_reload_parity(result, None, reloaded, reference, "ngay_thang"))
    wrong(check_reload_parity(result, tmp_path / "luu", reloaded, reference, "ngay_thang"), "thư mục con")
    reference.set_adapter("don_hang")  # forgot to switch to the saved adapter: a real failed parity check
    failed = check_parity(reference, reloaded, tiny_tokenizer, prompts=PROMPTS, max_new_tokens=4)
    wrong(check_reload_parity(failed, folder, reloaded, reference, "ngay_thang"), "không đạt", "set_adapter")
    assert reference.active_adapters == ["don_hang"]


def test_adapter_choice_table():
    tests = {t: make_task_splits(t, n_train=1, n_val=1, n_test=4)["test"] for t in TASKS}
    alone = measured(tests, {"don_hang": 3, "ngay_thang": 3})
    combined = measured(tests, {"don_hang": 0, "ngay_thang": 4})
    numbers = {"don_hang": {"riêng": 0.75, "trộn": 0.0}, "ngay_thang": {"riêng": 0.75, "trộn": 1.0}}
    walk_table(check_adapter_choice, {"lựa_chọn": "định tuyến", "số_liệu": numbers}, combined, alone, tests)
    ok(check_adapter_choice({"lua_chon": "dinh_tuyen", "so_lieu": numbers}, combined, alone, tests))
    # when the combined adapter keeps both tasks, combining is defensible too
    close = {t: {"riêng": 0.75, "trộn": 0.75} for t in TASKS}
    ok(check_adapter_choice({"lựa_chọn": "trộn", "số_liệu": close}, alone, alone, tests))
    wrong(check_adapter_choice({"lựa_chọn": "trộn", "số_liệu": close}, None, alone, tests), "chưa có kết quả đo")
