"""Checks of the lora_finetuning exercises: parameter count, LoraConfig, SFTConfig, training, curves, ΔW, budget.

Tiny random Llama models (``tests/conftest.py``) stand in for SmolLM2: the checks only read shapes, weights
and configs, so what holds here holds for the course model.
"""

import copy
from types import SimpleNamespace

import pytest
import torch
from check_support import (
    ok,
    randomize_lora,
    todo,
    walk_table,
    wrong,
)
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
)

# --------------------------------------------------------------------------- lesson 2
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


def test_param_count_truth_is_peft_count(tiny_model_factory):
    for config in (QV, LoraConfig(r=3, target_modules="all-linear")):
        real = get_peft_model(tiny_model_factory(), copy.deepcopy(config))
        n = sum(p.numel() for p in real.parameters() if p.requires_grad)
        ok(check_lora_param_count(n, tiny_model_factory(), config))


def test_param_count_accepts_any_integer_type(tiny_model_factory):
    import numpy as np

    # tiny model: 2 blocks, q_proj 32->32, v_proj 32->16 (one key/value head)
    truth = 2 * 4 * ((32 + 32) + (32 + 16))
    model = tiny_model_factory()
    ok(check_lora_param_count(truth, model, QV))
    ok(check_lora_param_count(np.int64(truth), model, QV))
    ok(check_lora_param_count(float(truth), model, QV))
    ok(check_lora_param_count(torch.tensor(truth), model, QV))


@pytest.mark.parametrize("answer, fragment", [
    (2 * 5 * ((32 + 32) + (32 + 16)), "r=5"),                 # rank off by one (up)
    (2 * 3 * ((32 + 32) + (32 + 16)), "r=3"),                 # rank off by one (down)
    (2 * 4 * (32 + 32), "chỉ đếm ma trận A"),
    (2 * 4 * (32 + 16), "chỉ đếm ma trận B"),
    (2 * (32 * 32 + 32 * 16), "tinh chỉnh toàn bộ"),
    (2 * 4 * ((32 + 32) + (32 + 32)), "k_proj và v_proj"),   # grouped-query attention forgotten
    (1 * 4 * ((32 + 32) + (32 + 16)), "một khối"),
    (3 * 4 * ((32 + 32) + (32 + 16)), "3 khối"),
    (2 * 8 * ((32 + 32) + (32 + 16)), "lora_alpha"),
    (2 * 4 * ((32 + 32) + (32 + 16)) + 1, "lệch +1"),
    ("896", "số nguyên"),
    (896.5, "số nguyên"),
    (True, "số nguyên"),
])
def test_param_count_rejects_and_names_the_slip(tiny_model_factory, answer, fragment):
    wrong(check_lora_param_count(answer, tiny_model_factory(), QV), fragment)


def test_param_count_todo_and_base_added(tiny_model_factory):
    model = tiny_model_factory()
    todo(check_lora_param_count(None, model, QV))
    n_base = sum(p.numel() for p in model.parameters())
    wrong(check_lora_param_count(n_base + 896, model, QV), "mô hình cơ sở")


def test_config_spec():
    spec = dict(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    ok(check_lora_config_spec(LoraConfig(**spec), **spec))
    ok(check_lora_config_spec(LoraConfig(r=4, lora_alpha=8, target_modules=["o_proj", "v_proj", "k_proj", "q_proj"]),
                              **spec))
    todo(check_lora_config_spec(None, **spec))
    wrong(check_lora_config_spec(LoraConfig(**{**spec, "r": 5}), **spec), "r=5")
    wrong(check_lora_config_spec(LoraConfig(**{**spec, "r": 3}), **spec), "r=3")
    wrong(check_lora_config_spec(LoraConfig(**{**spec, "lora_alpha": 16}), **spec), "lora_alpha=16")
    wrong(check_lora_config_spec(LoraConfig(**{**spec, "target_modules": ["q_proj", "v_proj"]}), **spec),
          "thiếu ['k_proj', 'o_proj']")
    wrong(check_lora_config_spec(LoraConfig(**{**spec, "target_modules": [*spec["target_modules"], "up_proj"]}), **spec),
          "thừa ['up_proj']")
    wrong(check_lora_config_spec(LoraConfig(**{**spec, "target_modules": "all-linear"}), **spec), "all-linear")
    wrong(check_lora_config_spec({"r": 4}, **spec), "không phải LoraConfig")


def fake_trainer(model, steps):
    return SimpleNamespace(model=model, state=SimpleNamespace(global_step=steps))


def test_trained_lora(tiny_model_factory):
    targets = ["q_proj", "k_proj", "v_proj", "o_proj"]
    config = LoraConfig(r=4, lora_alpha=8, target_modules=targets)
    trained = randomize_lora(get_peft_model(tiny_model_factory(), copy.deepcopy(config)))
    ok(check_trained_lora(fake_trainer(trained, 6), 4, targets, 6))
    todo(check_trained_lora(None, 4, targets, 6))
    untrained = get_peft_model(tiny_model_factory(), copy.deepcopy(config))
    wrong(check_trained_lora(fake_trainer(untrained, 6), 4, targets, 6), "B vẫn bằng 0")
    wrong(check_trained_lora(fake_trainer(trained, 5), 4, targets, 6), "5 bước")
    wrong(check_trained_lora(fake_trainer(tiny_model_factory(), 6), 4, targets, 6), "tinh chỉnh toàn bộ")
    off_by_one = randomize_lora(get_peft_model(tiny_model_factory(), LoraConfig(r=5, target_modules=targets)))
    wrong(check_trained_lora(fake_trainer(off_by_one, 6), 4, targets, 6), "r=5")
    other_targets = randomize_lora(get_peft_model(tiny_model_factory(), LoraConfig(r=4, target_modules=["q_proj"])))
    wrong(check_trained_lora(fake_trainer(other_targets, 6), 4, targets, 6), "gắn vào")
    wrong(check_trained_lora("trainer", 4, targets, 6), "không phải một SFTTrainer")


def test_curve_comparison():
    histories = {"a": {"train": [(1, 2.0), (2, 0.4)], "eval": []}, "b": {"train": [(1, 2.0), (2, 1.1)], "eval": []}}
    ok(check_curve_comparison("a", histories))
    todo(check_curve_comparison(None, histories))
    wrong(check_curve_comparison("b", histories), "không phải lần chạy kết thúc với loss huấn luyện thấp nhất")
    wrong(check_curve_comparison("r=4", histories), "không phải tên một lần chạy")
    wrong(check_curve_comparison("a", None), "chưa có đường")


def test_curve_comparison_does_not_reveal_the_answer():
    """Gaming: answer every label in turn and read the hints. A wrong pick must not name the right run."""
    histories = {"r=4": {"train": [(1, 2.0), (2, 0.9)], "eval": []}, "r=16": {"train": [(1, 2.0), (2, 0.3)], "eval": []},
                 "q,v": {"train": [(1, 2.0), (2, 1.2)], "eval": []}}
    for pick in ("r=4", "q,v"):
        message = wrong(check_curve_comparison(pick, histories)).message
        assert "r=16" not in message and "0.300" not in message, message
    right = ok(check_curve_comparison("r=16", histories))
    verdict, measured = right.message.split("\n")
    assert "0.300" not in verdict and "0.300" in measured  # run-dependent numbers only on the masked line


@pytest.fixture()
def lora_layer(tiny_model_factory):
    model = randomize_lora(get_peft_model(tiny_model_factory(), copy.deepcopy(QV)))
    return model.base_model.model.model.layers[0].self_attn


def test_delta_weight(lora_layer):
    layer = lora_layer.v_proj                       # 32 -> 16, not square
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    s = layer.scaling["default"]
    assert s == 2.0
    ok(check_delta_weight(s * B @ A, layer))
    ok(check_delta_weight(layer.get_delta_weight("default"), layer))
    todo(check_delta_weight(None, layer))
    wrong(check_delta_weight(B @ A, layer), "quên hệ số")
    wrong(check_delta_weight(B @ A / s, layer), "chia")
    wrong(check_delta_weight((s * B @ A).T, layer), "chuyển vị")
    wrong(check_delta_weight(layer.base_layer.weight + s * B @ A, layer), "không phải riêng ΔW")
    q = lora_layer.q_proj                          # square layer: A @ B is possible there (r x r)
    wrong(check_delta_weight(q.lora_A["default"].weight @ q.lora_B["default"].weight, q), "A @ B")
    wrong(check_delta_weight(q.get_delta_weight("default")[:16], layer), "chưa khớp")   # another layer's ΔW
    wrong(check_delta_weight([[0.0]], layer), "tensor")


def test_lora_output(lora_layer):
    layer = lora_layer.q_proj
    x = torch.randn(3, 32, generator=torch.Generator().manual_seed(0))
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    s = layer.scaling["default"]
    with torch.no_grad():
        manual = x @ layer.base_layer.weight.T + s * (x @ A.T @ B.T)
        ok(check_lora_output(manual, layer, x))
        todo(check_lora_output(None, layer, x))
        wrong(check_lora_output(layer.base_layer(x), layer, x), "thiếu phần LoRA")
        wrong(check_lora_output(layer.base_layer(x) + x @ A.T @ B.T, layer, x), "quên hệ số")
        wrong(check_lora_output(s * (x @ A.T @ B.T), layer, x), "thiếu W·x")
        wrong(check_lora_output(manual[:, :16], layer, x), "kích thước")


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


def test_sft_brief_is_a_valid_config(tmp_path):
    """The brief of lesson 2 can be written as an SFTConfig, and that config passes the check."""
    from lora_helpers.checks import sft_brief

    expected = sft_brief(tmp_path / "cua_ban", 6, 0, "cpu")
    ok(check_sft_config(SFTConfig(**expected, report_to="none"), expected))
    wrong(check_sft_config(SFTConfig(**{**expected, "activation_checkpointing": True}, report_to="none"), expected),
          "activation_checkpointing")
