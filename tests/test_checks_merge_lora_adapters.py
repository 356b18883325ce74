"""Checks of the merge_lora_adapters exercises: the merged model, drift, parity, diagnosis, merge decision.

Tiny random Llama models (``tests/conftest.py``) stand in for SmolLM2: the checks only read shapes, weights
and configs, so what holds here holds for the course model.
"""

import copy
import dataclasses
import random

import pytest
import torch
from check_support import (
    CONFIG,
    ok,
    parity_result,
    randomize_lora,
    rows_of,
    todo,
    wrong,
)
from datasets import Dataset
from peft import LoraConfig, PeftModel, get_peft_model

from lora_helpers.broken import CAUSES, broken_adapter_cases
from lora_helpers.checks import (
    check_diagnosis,
    check_drift_detected,
    check_merge_decision,
    check_merged_model,
    check_parity_passed,
)
from lora_helpers.parity import check_parity, check_parity_ids


# --------------------------------------------------------------------------- lesson 3
@pytest.fixture()
def adapter_model(tiny_model_factory):
    return randomize_lora(get_peft_model(tiny_model_factory(), LoraConfig(**CONFIG)), scale=0.05).eval()


def test_merged_model(adapter_model, tiny_model_factory):
    ok(check_merged_model(copy.deepcopy(adapter_model).merge_and_unload(), adapter_model))
    todo(check_merged_model(None, adapter_model))
    wrong(check_merged_model(copy.deepcopy(adapter_model), adapter_model), "chưa được hợp nhất")
    wrong(check_merged_model(copy.deepcopy(adapter_model).unload(), adapter_model), "unload()")
    wrong(check_merged_model(tiny_model_factory(), adapter_model), "ΔW chưa được cộng")
    low = copy.deepcopy(adapter_model).to(torch.bfloat16).merge_and_unload()
    wrong(check_merged_model(low, adapter_model), "bfloat16")
    other = randomize_lora(get_peft_model(tiny_model_factory(), LoraConfig(**CONFIG)), seed=7, scale=0.05)
    wrong(check_merged_model(other.merge_and_unload(), adapter_model), "khác W + (alpha/r)·B·A")
    in_place = adapter_model.merge_and_unload()
    wrong(check_merged_model(in_place, adapter_model), "tại chỗ")


def test_drift_detected_on_a_real_bf16_merge(adapter_model):
    ids = torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(0))
    low = copy.deepcopy(adapter_model).to(torch.bfloat16).merge_and_unload()
    real = check_parity_ids(adapter_model, low, ids, max_new_tokens=4)
    assert not real.passed
    ok(check_drift_detected(real, low))
    loosened = check_parity_ids(adapter_model, low, ids, max_new_tokens=4, tolerance=10.0, require_identical=False)
    wrong(check_drift_detected(loosened, low), "nới ngưỡng")
    fp32 = copy.deepcopy(adapter_model).merge_and_unload()
    wrong(check_drift_detected(check_parity_ids(adapter_model, fp32, ids, max_new_tokens=4), fp32), "float32")


def test_drift_detected_rejects_other_mistakes(adapter_model):
    low = copy.deepcopy(adapter_model).to(torch.bfloat16).merge_and_unload()
    todo(check_drift_detected(None, low))
    wrong(check_drift_detected(parity_result().verdict(), low), "không phải kết quả của `check_parity`")
    wrong(check_drift_detected(parity_result(passed=True), low), "vẫn báo KHỚP")
    wrong(check_drift_detected(parity_result(dtype="bfloat16", tolerance=1e-4), low), "tham chiếu float32")


def test_parity_passed():
    ok(check_parity_passed(parity_result(passed=True)))
    todo(check_parity_passed(None))
    wrong(check_parity_passed(parity_result(passed=False)), "không đạt")
    wrong(check_parity_passed(parity_result(passed=True, tolerance=0.25)), "ngưỡng")
    wrong(check_parity_passed(parity_result(passed=True, n=2)), "2 câu")
    wrong(check_parity_passed(True), "không phải kết quả")


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
