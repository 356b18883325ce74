"""The ``trl_peft_preference`` exercise checks (DPO with PEFT): each walks its table of mistakes, plus what the walk
cannot show.

A tiny random Llama and a word-level tokenizer (``tests/conftest.py``) stand in for SmolLM2;
the DPO trainers here run a step or two in well under a second.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from check_support import ok, todo, walk_table, wrong
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM
from trl import DPOConfig, DPOTrainer

from lora_helpers.checks import (
    check_dpo_decision,
    check_dpo_numbers,
    check_dpo_trainer,
    check_preference_pairs,
    check_reference_logps,
)
from lora_helpers.checks.trl_peft_preference import _dpo_numbers
from lora_helpers.data import make_task_splits
from lora_helpers.preferences import completion_logps

BETA, R, TARGETS, STEPS = 0.1, 2, ["q_proj", "v_proj"], 2


# ----------------------------------------------------------------------------- exercise 1: pairs by hand
@pytest.fixture(scope="module")
def rows():
    return make_task_splits("ngay_thang")["train"].select(range(3))


def reference_pairs(rows):
    pairs = []
    for row in rows:
        y, m, d = row["answer"].split("-")
        pairs.append({"prompt": row["messages"][:-1],
                      "chosen": [{"role": "assistant", "content": row["answer"]}],
                      "rejected": [{"role": "assistant", "content": f"{d}-{m}-{y}"}]})
    return pairs


def test_preference_pairs_table(rows):
    walk_table(check_preference_pairs, reference_pairs(rows), rows)
    ok(check_preference_pairs(Dataset.from_list(reference_pairs(rows)), rows))
    y, m, d = rows[1]["answer"].split("-")
    if m != d:  # month and day swapped: another wrong format
        pairs = reference_pairs(rows)
        pairs[1]["rejected"][0]["content"] = f"{m}-{d}-{y}"
        wrong(check_preference_pairs(pairs, rows), "cặp 1", "DD-MM-YYYY")
    pairs = reference_pairs(rows)
    pairs[2]["chosen"] = rows[2]["answer"]                  # the first pair that shows a slip is the one named
    wrong(check_preference_pairs(pairs, rows), "cặp 2", "chuỗi thường")


# ----------------------------------------------------------------------------- exercises 2-3: a tiny DPO run
def tiny_pairs(n, offset=0):
    """Preference pairs of words the tiny tokenizer knows (TRL's standard, non-chat format)."""
    return Dataset.from_list([{"prompt": f"w{(i + offset) % 50} w{(3 * i + 1) % 50}",
                               "chosen": f" w{(i + 5) % 50} <eos>", "rejected": f" w{(7 * i + 11) % 50} <eos>"}
                              for i in range(n)])


def dpo_args(tmp_path, steps=STEPS):
    return DPOConfig(output_dir=str(tmp_path), max_steps=steps, learning_rate=5e-2, beta=BETA, loss_type=["sigmoid"],
                     per_device_train_batch_size=2, per_device_eval_batch_size=4, max_length=32,
                     lr_scheduler_type="constant", logging_steps=1, eval_strategy="no", save_strategy="no",
                     report_to="none", seed=0, bf16=False, activation_checkpointing=False, use_cpu=True,
                     dataloader_num_workers=0, disable_tqdm=True)


def lora(r=R, targets=TARGETS):
    return LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=targets, task_type="CAUSAL_LM")


def make_trainer(tiny_model_factory, tiny_tokenizer, tmp_path, train=True, steps=STEPS, **kwargs):
    tok = copy.deepcopy(tiny_tokenizer)
    tok.padding_side = "left"
    kwargs.setdefault("peft_config", lora())
    model = kwargs.pop("model", None) or tiny_model_factory()
    trainer = DPOTrainer(model=model, args=dpo_args(tmp_path, steps), train_dataset=tiny_pairs(8),
                         eval_dataset=tiny_pairs(6, offset=20), processing_class=tok, **kwargs)
    if train:
        trainer.train()
    return trainer


@pytest.fixture(scope="module")
def trained(tiny_model_factory, tiny_tokenizer, tmp_path_factory):
    return make_trainer(tiny_model_factory, tiny_tokenizer, tmp_path_factory.mktemp("dpo"))


def test_dpo_trainer_table(trained):
    walk_table(check_dpo_trainer, trained, R, TARGETS, STEPS)
    ok(check_dpo_trainer(trained, R, TARGETS, STEPS))        # the walk left the trained trainer as it was


def test_dpo_trainer_rejects_trainers_built_the_wrong_way(tiny_model_factory, tiny_tokenizer, tmp_path):
    untrained = make_trainer(tiny_model_factory, tiny_tokenizer, tmp_path / "a", train=False)
    wrong(check_dpo_trainer(untrained, R, TARGETS, STEPS), "chưa huấn luyện")
    tiny_model_factory().save_pretrained(tmp_path / "tiny")  # without PEFT, TRL reloads the reference from this path
    full = make_trainer(tiny_model_factory, tiny_tokenizer, tmp_path / "b", train=False, peft_config=None,
                        model=AutoModelForCausalLM.from_pretrained(tmp_path / "tiny"))
    assert full.ref_model is not None
    wrong(check_dpo_trainer(full, R, TARGETS, STEPS), "huấn luyện toàn bộ")
    second = make_trainer(tiny_model_factory, tiny_tokenizer, tmp_path / "c", train=False,
                          ref_model=tiny_model_factory())
    wrong(check_dpo_trainer(second, R, TARGETS, STEPS), "ref_model")
    wrapped = make_trainer(tiny_model_factory, tiny_tokenizer, tmp_path / "d", train=False, peft_config=None,
                           model=get_peft_model(tiny_model_factory(), lora()))
    wrong(check_dpo_trainer(wrapped, R, TARGETS, STEPS), "`ref`")


@pytest.fixture(scope="module")
def logps(trained):
    loader = trained.get_eval_dataloader()
    with trained.model.disable_adapter():
        reference = completion_logps(trained.model, loader)
    policy = completion_logps(trained.model, loader)
    return policy, reference


def test_reference_logps_table(trained, logps):
    policy, reference = logps
    assert not torch.allclose(policy[0], reference[0]), "the tiny run must move the policy for these tests to mean anything"
    walk_table(check_reference_logps, reference, trained)
    ok(check_reference_logps([t.tolist() for t in reference], trained))
    wrong(check_reference_logps((reference[0] + 1, reference[1]), trained), "không khớp")
    wrong(check_reference_logps(reference, None), "câu 2")


def test_dpo_numbers_table(trained, logps):
    (pc, pr), (rc, rr) = logps
    margins = BETA * ((pc - rc) - (pr - rr))
    acc, loss = (margins > 0).float().mean().item(), -F.logsigmoid(margins).mean().item()
    assert 0 < acc < 1, "the tiny run must give margins of each sign for every row to be reachable"
    walk_table(_dpo_numbers, (margins, acc, loss), trained, BETA)
    ok(check_dpo_numbers(margins, acc, loss, trained, BETA))
    todo(check_dpo_numbers(None, None, None, trained, BETA))
    assert "loss_dpo" in todo(check_dpo_numbers(margins, acc, None, trained, BETA)).message
    wrong(check_dpo_numbers(margins, acc, (1 - torch.sigmoid(margins)).mean().item(), trained, BETA), "không khớp")
    wrong(check_dpo_numbers(margins, acc, loss, None, BETA), "câu 2")


def test_dpo_decision_table(trained, logps):
    (pc, pr), (rc, rr) = logps
    margins = BETA * ((pc - rc) - (pr - rr))
    numbers = {"độ_chính_xác_ưu_tiên": (margins > 0).float().mean().item(),
               "loss_dpo": -F.logsigmoid(margins).mean().item(), "biên_trung_bình": margins.mean().item()}
    never = 1.01                                           # a rule no run meets: the answer must be "train more"
    walk_table(check_dpo_decision, {"lựa_chọn": "huấn luyện thêm", "số_liệu": numbers}, trained, BETA, min_accuracy=never)
    assert numbers["loss_dpo"] < 0.6931, "the tiny run must lower the loss for the rule below to be met"
    easy = -1.0                                            # a rule every run with loss < log 2 meets
    walk_table(check_dpo_decision, {"lựa_chọn": "giao", "số_liệu": numbers}, trained, BETA, min_accuracy=easy)
    ok(check_dpo_decision({"lua_chon": "huan_luyen_them", "so_lieu": numbers}, trained, BETA, min_accuracy=never))
    wrong(check_dpo_decision({"lựa_chọn": "giao", "số_liệu": numbers}, None, BETA), "câu 2")
    wrong(check_dpo_decision(["giao"], trained, BETA), "dict")
