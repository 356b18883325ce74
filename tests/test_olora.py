import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from lora_helpers import CourseError
from lora_helpers.olora import base_weight_changes, effective_update_norm, moving_average, olora_factors


def _olora(model, r=4, alpha=8, targets=("q_proj", "v_proj")):
    return get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, target_modules=list(targets),
                                            init_lora_weights="olora"))


def test_factors_match_peft_bit_for_bit(tiny_model_factory):
    original = tiny_model_factory(seed=3)
    weight = original.model.layers[0].self_attn.q_proj.weight.detach().clone()
    f = olora_factors(weight, r=4, scaling=8 / 4)
    layer = _olora(tiny_model_factory(seed=3)).base_model.model.model.layers[0].self_attn.q_proj
    assert torch.equal(f.A, layer.lora_A["default"].weight)
    assert torch.equal(f.B, layer.lora_B["default"].weight)
    assert torch.equal(f.shifted, layer.base_layer.weight)
    assert torch.equal(weight, original.model.layers[0].self_attn.q_proj.weight)  # input left alone


def test_factors_shapes_and_structure():
    torch.manual_seed(0)
    w = torch.randn(12, 20)  # d_out < d_in, like k_proj/v_proj under grouped-query attention
    f = olora_factors(w, r=3, scaling=2.0)
    assert f.Q.shape == (12, 12) and f.R.shape == (12, 20)
    assert f.B.shape == (12, 3) and f.A.shape == (3, 20)
    assert torch.allclose(f.B.T @ f.B, torch.eye(3), atol=1e-6)  # orthonormal columns
    assert torch.allclose(f.Q @ f.R, w, atol=1e-5)
    assert torch.equal(torch.triu(f.A[:, :3]), f.A[:, :3])  # rows of an upper-triangular R
    x = torch.randn(5, 20)
    before = x @ w.T
    after = x @ f.shifted.T + f.scaling * (x @ f.A.T) @ f.B.T
    assert (after - before).abs().max() < 1e-4
    assert (f.shifted - w).abs().max() > 0.1  # the base weight really moved


def test_factors_keep_half_precision_dtype():
    w = torch.randn(8, 8, dtype=torch.bfloat16)
    f = olora_factors(w, r=2, scaling=1.0)
    assert f.shifted.dtype == torch.bfloat16 and f.A.dtype == torch.float32


@pytest.mark.parametrize("weight, r, match", [
    (torch.randn(8), 2, "hai chiều"),
    (torch.ones(4, 4, dtype=torch.int64), 2, "float32"),
    (torch.randn(4, 6), 5, "1..4"),
    (torch.randn(4, 6), 0, "1..4"),
])
def test_factors_reject_bad_input(weight, r, match):
    with pytest.raises(CourseError, match=match):
        olora_factors(weight, r=r, scaling=1.0)


def test_base_weight_changes_lora_vs_olora(tiny_model_factory):
    original = tiny_model_factory(seed=1)
    plain = get_peft_model(tiny_model_factory(seed=1), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    assert base_weight_changes(original, plain) == {"n_layers": 4, "n_changed": 0, "max_abs_change": 0.0}
    changed = base_weight_changes(original, _olora(tiny_model_factory(seed=1)))
    assert changed["n_layers"] == 4 and changed["n_changed"] == 4 and changed["max_abs_change"] > 0


def test_base_weight_changes_needs_a_separate_original(tiny_model_factory):
    model = tiny_model_factory()
    peft_model = _olora(model)
    with pytest.raises(CourseError, match="MỚI"):
        base_weight_changes(model, peft_model)
    with pytest.raises(CourseError, match="Không có lớp nào"):
        base_weight_changes(tiny_model_factory(), peft_model, adapter_name="khac")


def test_moving_average():
    curve = [(1, 3.0), (2, 1.0), (3, 2.0), (4, 0.0)]
    assert moving_average(curve, 1) == curve
    assert moving_average(curve, 2) == [(2, 2.0), (3, 1.5), (4, 1.0)]
    assert moving_average(curve, 5) == []
    with pytest.raises(CourseError, match="window"):
        moving_average(curve, 0)


def test_conversion_recipe_used_in_lesson_4(tiny_model_factory, tmp_path):
    """peft's recipe (test_olora_conversion_same_output_after_loading), as the notebook calls it."""
    ids = torch.randint(0, 64, (2, 7))
    original = tiny_model_factory(seed=2)
    with torch.no_grad():
        base_logits = original(ids).logits
    peft_model = _olora(tiny_model_factory(seed=2), r=4, alpha=8)
    peft_model.save_pretrained(tmp_path / "init")  # before any training
    with torch.no_grad():
        for module in peft_model.modules():  # stand-in for training
            if hasattr(module, "lora_B") and "default" in module.lora_B:
                module.lora_B["default"].weight.mul_(1.5)
        trained_logits = peft_model(ids).logits
    assert (trained_logits - base_logits).abs().max() > 1e-3
    peft_model.save_pretrained(tmp_path / "converted", path_initial_model_for_weight_conversion=str(tmp_path / "init"))
    config = json.loads((tmp_path / "converted" / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["lora_alpha"] == 16 and config["init_lora_weights"] is True
    fresh = tiny_model_factory(seed=2)
    loaded = PeftModel.from_pretrained(fresh, tmp_path / "converted")
    with torch.no_grad():
        assert (loaded(ids).logits - trained_logits).abs().max() < 1e-4
        with loaded.disable_adapter():  # the base under a converted adapter is the original one
            assert torch.equal(loaded(ids).logits, base_logits)
    assert base_weight_changes(original, loaded)["n_changed"] == 0


def test_effective_update_norm_is_zero_at_init_and_grows(tiny_model_factory):
    original = tiny_model_factory(seed=4)
    for init in (True, "olora"):
        peft_model = get_peft_model(tiny_model_factory(seed=4), LoraConfig(
            r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=init))
        start = effective_update_norm(original, peft_model)
        assert start["delta_norm"] < 1e-5 and start["weight_norm"] > 0
        with torch.no_grad():
            layer = peft_model.base_model.model.model.layers[0].self_attn.q_proj
            layer.lora_B["default"].weight.add_(0.1)
        expected = (layer.scaling["default"] * 0.1 * torch.ones_like(layer.lora_B["default"].weight)
                    @ layer.lora_A["default"].weight).norm().item()
        moved = effective_update_norm(original, peft_model)
        assert moved["delta_norm"] == pytest.approx(expected, rel=1e-3)
        assert moved["relative"] == pytest.approx(moved["delta_norm"] / moved["weight_norm"])
    with pytest.raises(CourseError, match="MỚI"):
        effective_update_norm(peft_model.get_base_model(), peft_model)


def test_initial_adapter_dir_name_must_not_contain_a_dot(tiny_model_factory, tmp_path):
    """peft uses the folder name as a temporary adapter name; lesson 4 warns about dots in it."""
    peft_model = _olora(tiny_model_factory())
    peft_model.save_pretrained(tmp_path / "init_lr0.001")
    with pytest.raises(ValueError, match="does not exist"):
        peft_model.save_pretrained(tmp_path / "out",
                                   path_initial_model_for_weight_conversion=str(tmp_path / "init_lr0.001"))
    peft_model.save_pretrained(tmp_path / "init_1e-03")
    peft_model.save_pretrained(tmp_path / "out", path_initial_model_for_weight_conversion=str(tmp_path / "init_1e-03"))
    assert json.loads((tmp_path / "out" / "adapter_config.json").read_text())["r"] == 8
