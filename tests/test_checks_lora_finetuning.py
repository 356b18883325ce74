"""Checks of the lora_finetuning exercises: parameter count, LoraConfig, SFTConfig, training, curves, ΔW, budget."""

import copy
from types import SimpleNamespace

import pytest
import torch
from check_support import ok, randomize_lora, walk_table, wrong
from peft import LoraConfig, get_peft_model
from trl import SFTConfig

from lora_helpers.checks import (
    check_curve_comparison,
    check_delta_weight,
    check_lora_budget,
    check_lora_config_spec,
    check_lora_output,
    check_lora_param_count,
    check_sft_config,
    check_trained_lora,
    sft_brief,
)

# --------------------------------------------------------------------------- lora_finetuning: counts and configs
QV = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])


def test_param_count_table(tiny_model_factory):
    """Every slip of the table, on the tiny model (some slips coincide there: those are skipped by the kit)."""
    real = get_peft_model(tiny_model_factory(), copy.deepcopy(QV))
    truth = sum(p.numel() for p in real.parameters() if p.requires_grad)
    walk_table(check_lora_param_count, truth, tiny_model_factory(), QV)


def test_config_spec_table():
    walk_table(check_lora_config_spec, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                  lora_dropout=0.0, task_type="CAUSAL_LM"),
               4, 8, ["q_proj", "v_proj"], lora_dropout=0.0, task_type="CAUSAL_LM")


def test_param_count_truth_is_peft_count_of_any_integer_type(tiny_model_factory):
    import numpy as np

    real = get_peft_model(tiny_model_factory(), LoraConfig(r=3, target_modules="all-linear"))
    ok(check_lora_param_count(sum(p.numel() for p in real.parameters() if p.requires_grad), tiny_model_factory(),
                              LoraConfig(r=3, target_modules="all-linear")))
    truth = 2 * 4 * ((32 + 32) + (32 + 16))   # tiny model: 2 blocks, q_proj 32->32, v_proj 32->16 (one key/value head)
    for answer in (np.int64(truth), float(truth), torch.tensor(truth)):
        ok(check_lora_param_count(answer, tiny_model_factory(), QV))
    wrong(check_lora_param_count(truth + 1, tiny_model_factory(), QV), "lệch +1")
    for answer in (896.5, True):
        wrong(check_lora_param_count(answer, tiny_model_factory(), QV), "số nguyên")


def test_config_spec():
    spec = dict(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    ok(check_lora_config_spec(LoraConfig(**spec), **spec))
    ok(check_lora_config_spec(LoraConfig(r=4, lora_alpha=8, target_modules=["o_proj", "v_proj", "k_proj", "q_proj"]),
                              **spec))
    wrong(check_lora_config_spec(LoraConfig(**{**spec, "target_modules": ["q_proj", "v_proj"]}), **spec),
          "thiếu ['k_proj', 'o_proj']")
    wrong(check_lora_config_spec(LoraConfig(**{**spec, "target_modules": [*spec["target_modules"], "up_proj"]}), **spec),
          "thừa ['up_proj']")
    wrong(check_lora_config_spec(LoraConfig(**{**spec, "target_modules": "all-linear"}), **spec), "all-linear")


def fake_trainer(model, steps):
    return SimpleNamespace(model=model, state=SimpleNamespace(global_step=steps))


TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def test_trained_lora_table(tiny_model_factory):
    trained = randomize_lora(get_peft_model(tiny_model_factory(), LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS)))
    walk_table(check_trained_lora, fake_trainer(trained, 6), 4, TARGETS, 6)
    ok(check_trained_lora(fake_trainer(trained, 6), 4, TARGETS[::-1], 6))       # target layers compared as a set


def test_trained_lora_rejects_a_fresh_adapter_of_another_rank(tiny_model_factory):
    """A real adapter of another rank (not a config edited afterwards), and one built but never trained."""
    off_by_one = randomize_lora(get_peft_model(tiny_model_factory(), LoraConfig(r=5, target_modules=TARGETS)))
    wrong(check_trained_lora(fake_trainer(off_by_one, 6), 4, TARGETS, 6), "r=5")
    untrained = get_peft_model(tiny_model_factory(), LoraConfig(r=4, target_modules=TARGETS))
    wrong(check_trained_lora(fake_trainer(untrained, 6), 4, TARGETS, 6), "B vẫn bằng 0")


HISTORIES = {"r=4": {"train": [(1, 2.0), (2, 0.9)], "eval": []}, "r=16": {"train": [(1, 2.0), (2, 0.3)], "eval": []},
             "q,v": {"train": [(1, 2.0), (2, 1.2)], "eval": []}}


def test_curve_comparison_table():
    walk_table(check_curve_comparison, "r=16", HISTORIES)
    wrong(check_curve_comparison("r=16", None), "chưa có đường")


def test_curve_comparison_does_not_reveal_the_answer():
    """Gaming: answer every label in turn and read the hints. A wrong pick must not name the right run."""
    for pick in ("r=4", "q,v"):
        message = wrong(check_curve_comparison(pick, HISTORIES)).message
        assert "r=16" not in message and "0.300" not in message, message
    right = ok(check_curve_comparison("r=16", HISTORIES))
    verdict, measured = right.message.split("\n")
    assert "0.300" not in verdict and "0.300" in measured  # run-dependent numbers only on the masked line


@pytest.fixture()
def lora_layer(tiny_model_factory):
    model = randomize_lora(get_peft_model(tiny_model_factory(), copy.deepcopy(QV)))
    return model.base_model.model.model.layers[0].self_attn


def test_delta_weight_table(lora_layer):
    layer = lora_layer.v_proj                       # 32 -> 16, not square
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    assert layer.scaling["default"] == 2.0
    walk_table(check_delta_weight, 2.0 * B @ A, layer)
    ok(check_delta_weight(layer.get_delta_weight("default"), layer))
    q = lora_layer.q_proj                          # square layer: A @ B is possible there (r x r)
    wrong(check_delta_weight(q.lora_A["default"].weight @ q.lora_B["default"].weight, q), "A @ B")
    wrong(check_delta_weight(q.get_delta_weight("default")[:16], layer), "chưa khớp")   # another layer's ΔW


def test_lora_output_table(lora_layer):
    layer = lora_layer.q_proj
    x = torch.randn(3, 32, generator=torch.Generator().manual_seed(0))
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    with torch.no_grad():
        manual = x @ layer.base_layer.weight.T + layer.scaling["default"] * (x @ A.T @ B.T)
        walk_table(check_lora_output, manual, layer, x)
        wrong(check_lora_output(manual + 1.0, layer, x), "chưa khớp đầu ra")
        ok(check_lora_output(manual.double(), layer, x))                        # any float dtype
        batch = x.reshape(1, 3, 32)                                            # (..., d_in) inputs
        ok(check_lora_output(batch @ layer.base_layer.weight.T + 2.0 * (batch @ A.T @ B.T), layer, batch))


# --------------------------------------------------------------------------- lora_finetuning: SFTConfig from a brief
def test_sft_config_table(tmp_path):
    """On the brief of the notebook itself: the reference config passes, every field's slip is named."""
    expected = sft_brief(tmp_path / "cua_ban", 6, 0, "cpu")
    walk_table(check_sft_config, SFTConfig(**expected, report_to="none"), expected)
    ok(check_sft_config(SFTConfig(**expected, report_to="none", num_train_epochs=9), expected))   # fields not asked
    wrong(check_sft_config(SFTConfig(**{**expected, "max_length": 1024}, report_to="none"), expected), "max_seq_length")
    defaults = SFTConfig(output_dir=expected["output_dir"], max_steps=6, report_to="none", use_cpu=True)
    wrong(check_sft_config(defaults, expected))


# --------------------------------------------------------------------------- lora_finetuning: rank and layers for a budget
MLP = ["gate_proj", "up_proj", "down_proj"]


BUDGET = 40_000          # bytes: 2,500 LoRA parameters at 16 bytes (tiny model: MLP 576·r, all layers 1024·r)


def budget_answer(r, targets, n, mb):
    return {"lựa_chọn": {"r": r, "target_modules": targets}, "số_liệu": {"số_tham_số": n, "bộ_nhớ_MB": mb}}


def test_lora_budget_table(tiny_model_factory):
    walk_table(check_lora_budget, budget_answer(4, MLP, 2304, 2304 * 16 / 1e6), tiny_model_factory(), BUDGET, MLP)


def test_lora_budget_accepts_other_defensible_choices(tiny_model_factory):
    model = tiny_model_factory()
    ok(check_lora_budget(budget_answer(2, "all-linear", 2048, 0.032768), model, BUDGET, MLP))
    wrong(check_lora_budget(budget_answer(2, MLP, 1152, 1152 * 16 / 1e6), model, BUDGET, MLP), "dư ngân sách", "r=4")
    wrong(check_lora_budget({"lựa_chọn": {"r": 4, "target_modules": MLP}}, model, BUDGET, MLP), "thiếu khoá")
    # the same budget without the MLP requirement: attention-only at a larger rank is then the best use of it
    ok(check_lora_budget(budget_answer(8, ["q_proj", "v_proj"], 1792, 1792 * 16 / 1e6), model, BUDGET, []))
