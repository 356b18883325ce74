"""Closed-form LoRA parameter counts against peft's real count, and the memory helpers."""

import pytest
import torch
from peft import LoraConfig, get_peft_model

from lora_helpers.params import (
    PeakMemory,
    lora_param_count,
    lora_param_table,
    trainable_parameters,
    training_memory_estimate,
)


def peft_count(model, r, targets):
    peft_model = get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets))
    return trainable_parameters(peft_model)[0]


@pytest.mark.parametrize("r", [1, 4, 8])
@pytest.mark.parametrize("targets", [["q_proj", "v_proj"], ["k_proj"], ["gate_proj", "down_proj"], "all-linear"])
def test_closed_form_matches_peft(tiny_model_factory, r, targets):
    expected = lora_param_count(tiny_model_factory(), r, targets)
    assert expected == peft_count(tiny_model_factory(), r, targets)


def test_gqa_k_proj_is_smaller_than_hidden(tiny_model_factory):
    """With grouped-query attention k_proj maps hidden -> kv_heads*head_dim; a formula using
    d_out = hidden_size would overcount, and must disagree with peft."""
    model = tiny_model_factory()
    cfg = model.config
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    kv_out = cfg.num_key_value_heads * head_dim
    assert kv_out < cfg.hidden_size
    r = 4
    wrong = cfg.num_hidden_layers * r * (cfg.hidden_size + cfg.hidden_size)
    right = cfg.num_hidden_layers * r * (cfg.hidden_size + kv_out)
    real = peft_count(tiny_model_factory(), r, ["k_proj"])
    assert lora_param_count(model, r, ["k_proj"]) == right == real
    assert wrong != real


def test_all_linear_excludes_lm_head(tiny_model_factory):
    model = tiny_model_factory()
    with_head = lora_param_count(model, 4, "all-linear") + 4 * (model.lm_head.in_features + model.lm_head.out_features)
    assert lora_param_count(model, 4, "all-linear") == peft_count(tiny_model_factory(), 4, "all-linear")
    assert with_head != peft_count(tiny_model_factory(), 4, "all-linear")


def test_table_rows(tiny_model_factory):
    rows = lora_param_table(tiny_model_factory(), ranks=(4, 8))
    assert [(row["targets"], row["r"]) for row in rows] == [("q,v", 4), ("q,v", 8), ("all-linear", 4), ("all-linear", 8)]
    assert rows[1]["n_lora"] == 2 * rows[0]["n_lora"]  # linear in r


def test_memory_estimate_and_peak():
    est = training_memory_estimate(n_total=1000, n_trainable=10)
    assert est == {"weights": 4000, "gradients": 40, "adam": 80, "activations": 0, "total": 4120}
    with PeakMemory("cpu") as peak:
        block = torch.ones(8 * 2**20)  # 32 MB
        block += 1
    assert peak.peak_bytes >= 16 * 2**20
    assert peak.seconds >= 0


def test_training_state_bytes_counts_real_adam_state(tiny_model_factory):
    from lora_helpers.params import training_state_bytes

    model = get_peft_model(tiny_model_factory(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    n_trainable, n_total = trainable_parameters(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    before = training_state_bytes(model, optimizer)
    assert before["optimizer"] == 0                       # Adam allocates its moments at the first step
    model(input_ids=torch.tensor([[1, 2, 3]]), labels=torch.tensor([[1, 2, 3]])).loss.backward()
    optimizer.step()
    after = training_state_bytes(model, optimizer)
    assert after["weights"] == 4 * n_total
    assert after["gradients"] == 4 * n_trainable
    # two fp32 moments per trainable parameter (+ a scalar step counter per tensor)
    assert 8 * n_trainable <= after["optimizer"] <= 8 * n_trainable + 64 * len(optimizer.state)
    assert after["total"] == after["weights"] + after["gradients"] + after["optimizer"]


def test_release_freed_memory_runs():
    from lora_helpers.params import release_freed_memory

    release_freed_memory()   # must never raise, on any platform
