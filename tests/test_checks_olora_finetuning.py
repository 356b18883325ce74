"""The ``olora_finetuning`` exercise checks: each walks its table of mistakes, plus what the walk cannot show.

Tiny random Llama models (``tiny_model_factory``, hidden size 32: ``q_proj`` 32×32, ``v_proj`` 16×32)
stand in for SmolLM2; r = 4 fits both layers, so OLoRA (a QR of every adapted weight) works on them.
"""

import copy
import json

import pytest
import torch
from check_support import ok, todo, walk_table, wrong
from peft import LoraConfig, PeftModel, get_peft_model

from lora_helpers.checks import (
    check_olora_conversion,
    check_olora_init,
    check_olora_parity,
    check_olora_share_decision,
    check_shifted_layer_count,
)
from lora_helpers.checks.olora_finetuning import _olora_init
from lora_helpers.olora import olora_factors
from lora_helpers.parity import check_parity_ids

R, ALPHA = 4, 8
S = ALPHA / R
TARGETS = ["q_proj", "v_proj"]


def olora_config(**changes):
    settings = dict(r=R, lora_alpha=ALPHA, init_lora_weights="olora", target_modules=TARGETS, lora_dropout=0.0)
    settings.update(changes)
    return LoraConfig(**settings)


def pretend_training(model, seed=0, scale=0.5):
    """Move every lora_A and lora_B away from its OLoRA initialisation, as training would."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_A" in name or "lora_B" in name:
                p.add_(torch.randn(p.shape, generator=gen) * scale)
    return model


IDS = torch.randint(0, 64, (4, 10), generator=torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------- exercise 1: OLoRA by hand
@pytest.fixture(params=["q_proj", "v_proj"])
def weight(request, tiny_model_factory):
    """The original weight of one layer: square (q_proj 32×32) or not (v_proj 16×32)."""
    return getattr(tiny_model_factory().model.layers[1].self_attn, request.param).weight


def by_hand(weight):
    """The reference answer of the exercise."""
    W = weight.detach().clone()
    Q, Rm = torch.linalg.qr(W.float())
    B, A = Q[:, :R], Rm[:R]
    return A, B, W - S * B @ A, Q, Rm


def test_olora_init_table(weight):
    A, B, shifted, _, _ = by_hand(weight)
    walk_table(_olora_init, (A, B, shifted), weight, R, ALPHA)
    f = olora_factors(weight, R, S)
    ok(check_olora_init(f.A, f.B, f.shifted, weight, R, ALPHA))
    todo(check_olora_init(None, None, None, weight, R, ALPHA))
    assert "`W_dich` vẫn là `None`" in todo(check_olora_init(A, B, None, weight, R, ALPHA)).message
    wrong(check_olora_init(A, B, shifted + 0.5, weight, R, ALPHA), "sai giá trị")


def test_olora_init_rejects_the_layer_weight_shifted_in_place(tiny_model_factory):
    layer = tiny_model_factory().model.layers[0].self_attn.q_proj
    A, B, _, _, _ = by_hand(layer.weight)
    with torch.no_grad():
        in_place = layer.weight
        in_place -= S * B @ A
    wrong(check_olora_init(A, B, in_place, layer.weight, R, ALPHA), "tại chỗ")


# --------------------------------------------------------------------------- exercise 2: count the shifted layers
def test_shifted_layer_count_table(tiny_model_factory):
    original = tiny_model_factory()
    olora = get_peft_model(tiny_model_factory(), olora_config())
    kwargs = dict(r=R, target_modules=TARGETS)
    walk_table(check_shifted_layer_count, 4, olora, original, **kwargs)    # 2 blocks × (q_proj, v_proj)
    for answer in (torch.tensor(4), 4.0):
        ok(check_shifted_layer_count(answer, olora, original, **kwargs))
    todo(check_shifted_layer_count(4, None, original, **kwargs))
    wrong(check_shifted_layer_count(3, olora, original, **kwargs), "chưa đúng")
    for answer in (4.5, True):
        wrong(check_shifted_layer_count(answer, olora, original, **kwargs), "số nguyên")


def test_shifted_layer_count_rejects_in_place_and_wrong_models(tiny_model_factory):
    kwargs = dict(r=R, target_modules=TARGETS)
    # the classic pitfall: the "original" is the very model handed to get_peft_model
    base = tiny_model_factory()
    olora = get_peft_model(base, olora_config())
    wrong(check_shifted_layer_count(0, olora, base, **kwargs), "tại chỗ", "load_base()")
    # ... or a model wrapped earlier, then replaced by a fresh OLoRA model
    wrapped = tiny_model_factory()
    get_peft_model(wrapped, olora_config())
    wrong(check_shifted_layer_count(0, get_peft_model(tiny_model_factory(), olora_config()), wrapped, **kwargs),
          "tại chỗ")
    original = tiny_model_factory()
    plain = get_peft_model(tiny_model_factory(), olora_config(init_lora_weights=True))
    wrong(check_shifted_layer_count(0, plain, original, **kwargs), "LoRA thường", "init_lora_weights=\"olora\"")
    every = get_peft_model(tiny_model_factory(), olora_config(target_modules="all-linear"))
    wrong(check_shifted_layer_count(14, every, original, **kwargs), "đề bài yêu cầu ['q_proj', 'v_proj']")
    wrong(check_shifted_layer_count(4, get_peft_model(tiny_model_factory(), olora_config(r=2)), original, **kwargs),
          "r=2")
    wrong(check_shifted_layer_count(4, original, tiny_model_factory(), **kwargs), "chưa có bộ điều hợp")


# --------------------------------------------------------------------------- exercise 3: conversion and parity
@pytest.fixture(scope="module")
def olora_runs(tmp_path_factory, tiny_model_factory):
    """Adapters saved the right way and the usual wrong ways, with the trained models they come from."""
    root = tmp_path_factory.mktemp("olora")
    runs = {}
    # right: initialisation saved before training, conversion at save time
    good = get_peft_model(tiny_model_factory(), olora_config())
    good.save_pretrained(str(root / "init_good"))
    pretend_training(good).eval()
    good.save_pretrained(str(root / "raw"))                        # saved without conversion
    good.save_pretrained(str(root / "converted"), path_initial_model_for_weight_conversion=str(root / "init_good"))
    runs["good"] = good
    # wrong: initialisation saved after training
    late = pretend_training(get_peft_model(tiny_model_factory(), olora_config()), seed=1).eval()
    late.save_pretrained(str(root / "init_late"))
    late.save_pretrained(str(root / "converted_late"), path_initial_model_for_weight_conversion=str(root / "init_late"))
    runs["late"] = late
    # wrong: never trained
    idle = get_peft_model(tiny_model_factory(), olora_config()).eval()
    idle.save_pretrained(str(root / "init_idle"))
    idle.save_pretrained(str(root / "converted_idle"), path_initial_model_for_weight_conversion=str(root / "init_idle"))
    # wrong: ordinary LoRA, saved as it is
    plain = pretend_training(get_peft_model(tiny_model_factory(), olora_config(init_lora_weights=True)))
    plain.save_pretrained(str(root / "plain"))
    runs["plain"] = plain.eval()
    return root, runs


def test_converted_adapter_config_is_what_peft_writes(olora_runs):
    """What the check relies on: peft doubles r and alpha and writes init_lora_weights true."""
    root, _ = olora_runs
    cfg = json.loads((root / "converted" / "adapter_config.json").read_text())
    assert (cfg["r"], cfg["lora_alpha"], cfg["init_lora_weights"]) == (2 * R, 2 * ALPHA, True)
    raw = json.loads((root / "raw" / "adapter_config.json").read_text())
    assert (raw["r"], raw["lora_alpha"], raw["init_lora_weights"]) == (R, ALPHA, "olora")


def test_olora_conversion_table(olora_runs, tmp_path):
    root, _ = olora_runs
    walk_table(check_olora_conversion, root / "converted", R, ALPHA, target_modules=TARGETS)
    ok(check_olora_conversion(str(root / "converted"), R, ALPHA))
    todo(check_olora_conversion(tmp_path / "not_saved_yet", R, ALPHA))


def test_olora_conversion_rejects_what_peft_writes_when_done_wrong(olora_runs):
    root, _ = olora_runs
    wrong(check_olora_conversion(root / "raw", R, ALPHA), "chưa chuyển đổi", "path_initial_model_for_weight_conversion")
    wrong(check_olora_conversion(root / "converted_late", R, ALPHA), "bằng 0", "sau khi huấn")
    wrong(check_olora_conversion(root / "converted_idle", R, ALPHA), "bằng 0", "chưa huấn luyện")
    wrong(check_olora_conversion(root / "plain", R, ALPHA), "chưa được nhân đôi")


def test_olora_parity_table(olora_runs, tiny_model_factory):
    root, runs = olora_runs
    trained = runs["good"]
    converted = PeftModel.from_pretrained(tiny_model_factory(), str(root / "converted")).eval()
    result = check_parity_ids(trained, converted, IDS, max_new_tokens=4)
    assert result.passed and result.max_abs_logit_diff > 0
    walk_table(check_olora_parity, result, trained, converted, r=R)
    # results really computed on another pair: the base model, or the trained model and its copy (difference 0)
    base_vs_converted = check_parity_ids(tiny_model_factory(), converted, IDS, max_new_tokens=4)
    assert not base_vs_converted.passed
    wrong(check_olora_parity(base_vs_converted, trained, converted, r=R), "cặp khác")
    itself = check_parity_ids(trained, copy.deepcopy(trained), IDS, max_new_tokens=4)
    wrong(check_olora_parity(itself, trained, converted, r=R), "đúng bằng 0")


def test_olora_parity_rejects_wrong_models(olora_runs, tiny_model_factory):
    root, runs = olora_runs
    trained = runs["good"]
    # the adapter saved without conversion, reloaded: it matches, but only by shifting the base again
    raw = PeftModel.from_pretrained(tiny_model_factory(), str(root / "raw")).eval()
    raw_result = check_parity_ids(trained, raw, IDS, max_new_tokens=4)
    wrong(check_olora_parity(raw_result, trained, raw, r=R), "chưa chuyển đổi")
    wrong(check_olora_parity(raw_result, trained, trained, r=R), "chưa chuyển đổi")
    # the initialisation saved after training: the converted adapter holds ΔW = 0
    late = runs["late"]
    converted_late = PeftModel.from_pretrained(tiny_model_factory(), str(root / "converted_late")).eval()
    late_result = check_parity_ids(late, converted_late, IDS, max_new_tokens=4)
    assert not late_result.passed
    wrong(check_olora_parity(late_result, late, converted_late, r=R), "ΔW của bản chuyển đổi bằng 0")
    # the converted adapter loaded onto the shifted base weights W'
    shifted_base = tiny_model_factory()
    with torch.no_grad():
        for name, module in trained.base_model.model.named_modules():
            if hasattr(module, "lora_A"):
                shifted_base.get_submodule(name).weight.copy_(module.base_layer.weight)
    on_shifted = PeftModel.from_pretrained(shifted_base, str(root / "converted")).eval()
    wrong(check_olora_parity(check_parity_ids(trained, on_shifted, IDS, max_new_tokens=4), trained, on_shifted, r=R),
          "W'")
    # an ordinary LoRA model in place of the trained OLoRA model
    converted = PeftModel.from_pretrained(tiny_model_factory(), str(root / "converted")).eval()
    plain = runs["plain"]
    wrong(check_olora_parity(check_parity_ids(plain, converted, IDS, max_new_tokens=4), plain, converted, r=R),
          "không phải mô hình OLoRA")
    wrong(check_olora_parity(raw_result, tiny_model_factory(), converted, r=R), "không có bộ điều hợp")


# --------------------------------------------------------------------------- exercise 4: decide how to share it
def test_olora_share_decision_table(olora_runs, tiny_model_factory):
    root, _ = olora_runs
    original = tiny_model_factory()
    size = lambda name: (root / name / "adapter_model.safetensors").stat().st_size / 1e6  # noqa: E731
    numbers = {"MB_chuyển_đổi": size("converted"), "MB_thường": size("raw"), "lớp_bị_sửa": 4}  # all shifted on load
    dirs = (root / "converted", root / "raw", tiny_model_factory, original)
    walk_table(check_olora_share_decision, {"lựa_chọn": "chuyển đổi", "số_liệu": numbers}, *dirs)
    ok(check_olora_share_decision({"lua_chon": "chuyen_doi", "so_lieu": numbers}, *dirs))
    wrong(check_olora_share_decision({"lựa_chọn": "chuyển đổi"}, *dirs), "thiếu khoá")
    wrong(check_olora_share_decision({"lựa_chọn": "chuyển đổi", "số_liệu": numbers}, root / "converted", root / "converted",
                                     tiny_model_factory, original), "không phải bản OLoRA lưu thường")
