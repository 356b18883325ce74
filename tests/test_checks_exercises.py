"""The checks of the practitioner exercises (issue 16): real-work answers, gaming answers, decide-and-defend items.

Each test shows the check accepts the reference answer and rejects the typical wrong ones, and for the
anti-gaming checks, the answer that used to pass (hard-coded or copied answers, scores of another
adapter). Tiny random Llama models stand in for SmolLM2 (``tests/conftest.py``).
"""

import copy
import dataclasses
import random

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, PeftModel, get_peft_model
from test_checks import (
    CONFIG,
    TASKS,
    adapter_dirs,  # noqa: F401  (the shared module fixture: two saved tiny adapters)
    fake_result,
    ok,
    randomize_lora,
    todo,
    two_adapter_model,
    wrong,
)
from trl import SFTConfig

from lora_helpers.broken import CAUSES, broken_adapter_cases
from lora_helpers.checks import (
    check_adapter_choice,
    check_diagnosis,
    check_lora_budget,
    check_lora_config_spec,
    check_merge_decision,
    check_reload_parity,
    check_routed_answers,
    check_sft_config,
    check_task_scores,
)
from lora_helpers.data import make_task_splits
from lora_helpers.evaluation import evaluate_task, generate
from lora_helpers.parity import check_parity


def rows_of(task, words):
    """Dataset rows of ``task`` whose questions are tiny-tokenizer words (``w5 w6``...)."""
    return [{"messages": [{"role": "user", "content": w}, {"role": "assistant", "content": "w40"}],
             "answer": "w40", "task": task} for w in words]


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


# --------------------------------------------------------------------------- lesson 1: routed answers, by content
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


# --------------------------------------------------------------------------- lesson 1: which adapter was measured
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


# --------------------------------------------------------------------------- lesson 1: save, reload, prove parity
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


# --------------------------------------------------------------------------- lesson 1: decide and defend
@pytest.fixture(scope="module")
def real_tests():
    return {t: make_task_splits(t, n_train=1, n_val=1, n_test=4)["test"] for t in TASKS}


def measured(tests, right_counts):
    return {t: fake_result(t, [*ds["answer"][:right_counts[t]], *["sai"] * (4 - right_counts[t])], ds["answer"])
            for t, ds in tests.items()}


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


# --------------------------------------------------------------------------- lesson 2: SFTConfig from a brief
def brief(tmp_path):
    return {"output_dir": str(tmp_path / "cua_ban"), "max_steps": 6, "per_device_train_batch_size": 2,
            "gradient_accumulation_steps": 2, "learning_rate": 1e-3, "lr_scheduler_type": "constant",
            "logging_steps": 1, "save_strategy": "no", "eval_strategy": "no", "max_length": 160,
            "completion_only_loss": True, "bf16": False, "fp16": False, "seed": 0, "use_cpu": True}


def test_sft_config_field_by_field(tmp_path):
    expected = brief(tmp_path)
    ok(check_sft_config(SFTConfig(**expected, report_to="none"), expected))
    todo(check_sft_config(None, expected))
    for change, fragment in [
        ({"per_device_train_batch_size": 4, "gradient_accumulation_steps": 1}, "chia sai"),
        ({"per_device_train_batch_size": 4}, "chỉ đủ cho 2 câu"),
        ({"learning_rate": 1e-4}, "số mũ"),
        ({"lr_scheduler_type": "linear"}, "\"linear\""),
        ({"save_strategy": "steps"}, "save_strategy"),
        ({"bf16": True}, "TRL bật bf16 mặc định"),
        ({"max_length": 1024}, "max_seq_length"),
        ({"max_steps": 60}, "max_steps=60"),
        ({"output_dir": str(tmp_path / "moc")}, "output_dir"),
    ]:
        wrong(check_sft_config(SFTConfig(**{**expected, **change}, report_to="none"), expected), fragment)
    defaults = SFTConfig(output_dir=expected["output_dir"], max_steps=6, report_to="none", use_cpu=True)
    wrong(check_sft_config(defaults, expected))
    wrong(check_sft_config(dict(expected), expected), "không phải `SFTConfig`")


def test_lora_config_spec_checks_dropout_and_task_type():
    spec = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0, task_type="CAUSAL_LM")
    ok(check_lora_config_spec(LoraConfig(**spec), **spec))
    wrong(check_lora_config_spec(LoraConfig(**{**spec, "lora_dropout": 0.1}), **spec), "lora_dropout=0.1")
    no_task = {k: v for k, v in spec.items() if k != "task_type"}
    wrong(check_lora_config_spec(LoraConfig(**no_task), **spec), "task_type")


# --------------------------------------------------------------------------- lesson 2: rank and layers for a budget
MLP = ["gate_proj", "up_proj", "down_proj"]
BUDGET = 40_000          # bytes: 2,500 LoRA parameters at 16 bytes (tiny model: MLP 576·r, all layers 1024·r)


def budget_answer(r, targets, n, mb):
    return {"lựa_chọn": {"r": r, "target_modules": targets}, "số_liệu": {"số_tham_số": n, "bộ_nhớ_MB": mb}}


def test_lora_budget(tiny_model_factory):
    model = tiny_model_factory()
    check = lambda answer: check_lora_budget(answer, model, BUDGET, MLP)  # noqa: E731
    ok(check(budget_answer(4, MLP, 2304, 2304 * 16 / 1e6)))
    ok(check(budget_answer(2, "all-linear", 2048, 0.032768)))       # another defensible choice
    todo(check(None))
    wrong(check(budget_answer(2, MLP, 1152, 1152 * 16 / 1e6)), "dư ngân sách", "r=4")
    wrong(check(budget_answer(4, "all-linear", 4096, 4096 * 16 / 1e6)), "vượt ngân sách")
    wrong(check(budget_answer(4, ["q_proj", "v_proj"], 896, 896 * 16 / 1e6)), "không gắn vào")
    wrong(check(budget_answer(4, MLP, 4 * (32 + 32 + 64) * 2, 0.0)), "chỉ đếm ma trận A")
    wrong(check(budget_answer(4, MLP, 2304, 2304 * 4 / 1e6)), "chỉ tính trọng số", "AdamW")
    wrong(check(budget_answer(4, MLP, 2304, 2304 * 16 / 2**20)), "MiB")
    wrong(check(budget_answer(3, MLP, 1728, 1728 * 16 / 1e6)), "chọn r trong")
    wrong(check(budget_answer(4, ["gate"], 0, 0.0)), "không khớp lớp nào")
    wrong(check({"lựa_chọn": {"r": 4, "target_modules": MLP}}), "thiếu khoá")
    wrong(check([4, MLP]), "dict")
    # the same budget without the MLP requirement: attention-only at a larger rank is then the best use of it
    ok(check_lora_budget(budget_answer(8, ["q_proj", "v_proj"], 1792, 1792 * 16 / 1e6), model, BUDGET, []))
    wrong(check_lora_budget(budget_answer(4, MLP, 2304, 2304 * 16 / 1e6), model, 30_000, MLP), "vượt")
    todo(check_lora_budget(None, model, BUDGET, []))


# --------------------------------------------------------------------------- lesson 3: diagnose broken adapters
def expected_diagnosis(seed):
    causes = list(CAUSES)
    random.Random(seed).shuffle(causes)
    return dict(zip("ABCD", causes))


def test_diagnosis(tiny_model_factory, adapter_dirs):
    cases = broken_adapter_cases(tiny_model_factory, adapter_dirs["ngay_thang"], adapter_dirs["don_hang"], seed=0)
    reference = PeftModel.from_pretrained(tiny_model_factory(), adapter_dirs["ngay_thang"]).eval()
    right = expected_diagnosis(0)
    ok(check_diagnosis(right, cases, reference))
    ok(check_diagnosis({k: v.replace("_", " ") for k, v in right.items()}, cases, reference))
    todo(check_diagnosis(None, cases, reference))
    a, b = "A", "B"
    swapped = {**right, a: right[b], b: right[a]}
    message = wrong(check_diagnosis(swapped, cases, reference), "chưa đúng", f"ca {a}").message
    assert right[a] not in message, "a wrong diagnosis must not name the right cause"
    wrong(check_diagnosis({**right, "C": "hỏng"}, cases, reference), "không có trong danh sách")
    wrong(check_diagnosis({**right, a: right[b]}, cases, reference), "cùng một nguyên nhân")
    wrong(check_diagnosis({a: right[a]}, cases, reference), "chưa chẩn đoán")
    wrong(check_diagnosis(list(right.values()), cases, reference), "dict")


# --------------------------------------------------------------------------- lesson 3: ship in which dtype
@pytest.fixture(scope="module")
def merge_setup(tiny_model_factory, tiny_tokenizer):
    reference = randomize_lora(get_peft_model(tiny_model_factory(), LoraConfig(**CONFIG)), scale=0.05).eval()
    low = copy.deepcopy(reference).to(torch.bfloat16).merge_and_unload().eval()
    dataset = Dataset.from_list(rows_of("ngay_thang", ["w5 w6", "w7 w8 w9", "w10", "w11 w12"]))
    result = check_parity(reference, low, tiny_tokenizer, dataset=dataset, max_new_tokens=4)
    return reference, low, result, dataset


def test_merge_decision(merge_setup, tiny_tokenizer):
    reference, low, result, dataset = merge_setup
    n = sum(p.numel() for p in low.parameters())
    numbers = {"chênh_lệch_logits": result.max_abs_logit_diff, "câu_sinh_giống": result.n_identical_generations,
               "dung_lượng_MB": {"float32": n * 4 / 1e6, "bfloat16": n * 2 / 1e6}}

    def check(answer, parity=result):
        return check_merge_decision(answer, reference, low, parity, tiny_tokenizer, dataset)

    ok(check({"lựa_chọn": "float32", "số_liệu": numbers}))
    todo(check(None))
    changed = dataclasses.replace(result, n_identical_generations=result.n_prompts - 1)
    wrong(check({"lựa_chọn": "bfloat16", "số_liệu": {**numbers, "câu_sinh_giống": result.n_prompts - 1}}, changed),
          "phản bác")
    unchanged = dataclasses.replace(result, n_identical_generations=result.n_prompts, metric_b=result.metric_a)
    ok(check({"lựa_chọn": "bfloat16", "số_liệu": {**numbers, "câu_sinh_giống": result.n_prompts}}, unchanged))
    wrong(check({"lựa_chọn": "float32", "số_liệu": {**numbers, "chênh_lệch_logits": 0.001}}), "không phải con số")
    wrong(check({"lựa_chọn": "float32", "số_liệu": {**numbers, "câu_sinh_giống": 99}}), "không khớp")
    swapped = {**numbers, "dung_lượng_MB": {"float32": n * 2 / 1e6, "bfloat16": n * 4 / 1e6}}
    wrong(check({"lựa_chọn": "float32", "số_liệu": swapped}), "đổi chỗ")
    mib = {**numbers, "dung_lượng_MB": {"float32": n * 4 / 2**20, "bfloat16": n * 2 / 2**20}}
    wrong(check({"lựa_chọn": "float32", "số_liệu": mib}), "MiB")
    fp32 = copy.deepcopy(reference).merge_and_unload()
    other_pair = check_parity(reference, fp32, tiny_tokenizer, dataset=dataset, max_new_tokens=4)
    wrong(check({"lựa_chọn": "float32", "số_liệu": numbers}, other_pair), "không phải phép so")
    wrong(check({"lựa_chọn": "float32", "số_liệu": numbers}, result.verdict()), "không phải kết quả")
    wrong(check({"lựa_chọn": "int8", "số_liệu": numbers}), "float32")
    ok(check_merge_decision({"lựa_chọn": "float32", "số_liệu": numbers}, reference, low, result, tiny_tokenizer, dataset))
    wrong(check_merge_decision({"số_liệu": numbers}, reference, low, result, tiny_tokenizer, dataset), "thiếu khoá")
    todo(check_merge_decision(None, reference, low, result, tiny_tokenizer, dataset))


def test_sft_brief_is_a_valid_config(tmp_path):
    """The brief of lesson 2 can be written as an SFTConfig, and that config passes the check."""
    from lora_helpers.checks import sft_brief

    expected = sft_brief(tmp_path / "cua_ban", 6, 0, "cpu")
    ok(check_sft_config(SFTConfig(**expected, report_to="none"), expected))
    wrong(check_sft_config(SFTConfig(**{**expected, "activation_checkpointing": True}, report_to="none"), expected),
          "activation_checkpointing")
