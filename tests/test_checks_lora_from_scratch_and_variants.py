"""Checks of the lora_from_scratch_and_variants exercises: each table is walked (the reference answer passes, every
known mistake is named); the models and records a check reads are tested for what no answer example shows."""

import copy
import math

import pytest
import torch
from check_support import ok, todo, walk_table, wrong
from peft import LoraConfig, get_peft_model
from torch import nn

from lora_helpers.checks import check_lora_forward, check_scaling, check_scratch_parity, check_seed_verdict
from lora_helpers.params import trainable_parameters

# --------------------------------------------------------------------------- 🐢 scaling
RANKS, ALPHA = (4, 16, 64), 16


def table(lora, rslora):
    return {"lora": {r: lora(r) for r in RANKS}, "rslora": {r: rslora(r) for r in RANKS}}


RIGHT = table(lambda r: ALPHA / r, lambda r: ALPHA / math.sqrt(r))


def test_scaling_table():
    walk_table(check_scaling, RIGHT, RANKS, ALPHA)
    ok(check_scaling({k: {str(r): round(v, 4) for r, v in row.items()} for k, row in RIGHT.items()}, RANKS, ALPHA))
    wrong(check_scaling(table(lambda r: ALPHA / r, lambda r: ALPHA / r**2), RANKS, ALPHA), "hàng `rslora`", "alpha / r²")
    wrong(check_scaling({**RIGHT, "lora": {r: str(s) for r, s in RIGHT["lora"].items()}}, RANKS, ALPHA), "r = 4")


# --------------------------------------------------------------------------- 🐕 the from-scratch layer
class LoraTuViet(nn.Module):
    """The exercise's layer; its forward is the learner's ``lora_forward``."""

    def __init__(self, base, r, alpha, dropout=0.0):
        super().__init__()
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.lora_A = nn.Linear(base.in_features, r, bias=False)
        self.lora_B = nn.Linear(r, base.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_A.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_B.weight)
        self.dropout = nn.Dropout(dropout)
        self.scaling = alpha / r

    def forward(self, x):
        return self.base(x) + self.lora_B(self.lora_A(self.dropout(x))) * self.scaling


def right_forward(layer, x):
    return layer.base(x) + layer.lora_B(layer.lora_A(layer.dropout(x))) * layer.scaling


def test_forward_table():
    walk_table(check_lora_forward, right_forward, LoraTuViet)
    ok(check_lora_forward(lambda layer, x: layer.base(x) + layer.lora_B(layer.lora_A(x)) * layer.scaling, LoraTuViet))
    wrong(check_lora_forward(lambda layer, x: layer.base(x) + layer.lora_B(layer.lora_A(x)) * 3.0, LoraTuViet),
          "khác lớp LoRA của peft")


def test_forward_rejects_a_trainable_base():
    class Unfrozen(LoraTuViet):
        def __init__(self, base, r, alpha, dropout=0.0):
            super().__init__(base, r, alpha, dropout)
            self.base.weight.requires_grad_(True)

    wrong(check_lora_forward(right_forward, Unfrozen), "đóng băng W")


def add_lora(model, targets=("q_proj", "v_proj"), r=2, alpha=4):
    for p in model.parameters():
        p.requires_grad_(False)
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if name in targets and isinstance(child, nn.Linear):
                setattr(parent, name, LoraTuViet(child, r, alpha))
    return model


def scratch_and_peft(tiny_model_factory, copy_weights=True, nonzero_b=True):
    scratch = add_lora(tiny_model_factory())
    torch.manual_seed(1)
    if nonzero_b:
        with torch.no_grad():
            for m in scratch.modules():
                if isinstance(m, LoraTuViet):
                    m.lora_B.weight.copy_(torch.randn_like(m.lora_B.weight) * 0.5)
    peft_model = get_peft_model(tiny_model_factory(), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    if copy_weights:
        ours = dict(scratch.named_modules())
        with torch.no_grad():
            for name, module in peft_model.named_modules():
                if hasattr(module, "lora_A") and isinstance(module.lora_A, nn.ModuleDict):
                    mine = ours[name.removeprefix("base_model.model.")]
                    module.lora_A["default"].weight.copy_(mine.lora_A.weight)
                    module.lora_B["default"].weight.copy_(mine.lora_B.weight)
    return scratch, peft_model


def test_scratch_parity_table(tiny_model_factory):
    scratch, peft_model = scratch_and_peft(tiny_model_factory)
    count = trainable_parameters(peft_model)[0]
    walk_table(check_scratch_parity, {"chênh_lệch": 0.0, "tham_số": count}, scratch, peft_model)
    ok(check_scratch_parity({"chenh_lech": 1e-6, "tham so": float(count)}, scratch, peft_model))


def test_scratch_parity_rejects_models_that_prove_nothing(tiny_model_factory):
    scratch, peft_model = scratch_and_peft(tiny_model_factory)
    count = trainable_parameters(peft_model)[0]
    answer = {"chênh_lệch": 0.0, "tham_số": count}
    wrong(check_scratch_parity(answer, peft_model, peft_model), "cùng một đối tượng")
    zero_b, zero_peft = scratch_and_peft(tiny_model_factory, nonzero_b=False)
    wrong(check_scratch_parity(answer, zero_b, zero_peft), "B của bạn vẫn bằng 0")
    not_copied, fresh_peft = scratch_and_peft(tiny_model_factory, copy_weights=False)
    wrong(check_scratch_parity(answer, not_copied, fresh_peft), "không khớp")
    wrong(check_scratch_parity(answer, tiny_model_factory(), peft_model), "không có lớp LoRA tự viết")
    wrong(check_scratch_parity(answer, scratch, copy.deepcopy(scratch)), "không phải PeftModel")
    unfrozen = copy.deepcopy(scratch)
    unfrozen.lm_head.weight.requires_grad_(True)
    wrong(check_scratch_parity(answer, unfrozen, peft_model), "khác nhau")


# --------------------------------------------------------------------------- 🦁 three seeds each, from records
LORA_LOSS, DORA_LOSS, PISSA_LOSS = (0.338, 0.361, 0.348), (0.323, 0.347, 0.333), (0.113, 0.135, 0.110)


@pytest.fixture
def records_root(tmp_path):
    """records/variant_seeds/ with three seeds of LoRA, DoRA and PiSSA (the values of the committed sweep)."""
    import json

    folder = tmp_path / "variant_seeds"
    folder.mkdir()
    for variant, losses in (("lora", LORA_LOSS), ("dora", DORA_LOSS), ("pissa", PISSA_LOSS)):
        for seed, loss in enumerate(losses):
            record = {"config": {"task": "ngay_thang", "variant_run": {"variant": variant, "seed": seed}},
                      "results": {"eval_loss": loss}}
            (folder / f"{variant}_seed{seed}.json").write_text(json.dumps(record), encoding="utf-8")
    return tmp_path


def honest(losses, lora=LORA_LOSS):
    """The honest answer for a variant's ``losses`` against LoRA's (scipy directly, as the solution does)."""
    import statistics

    from scipy.stats import ttest_ind

    ci = ttest_ind(losses, lora, equal_var=False).confidence_interval(0.95)
    choice = "tốt hơn" if ci.high < 0 else "kém hơn" if ci.low > 0 else "không phân biệt được"
    return {"lựa_chọn": choice, "số_liệu": {"hiệu": statistics.fmean(losses) - statistics.fmean(lora),
                                            "ktc": (ci.low, ci.high)}}


@pytest.mark.parametrize("variant, losses, choice", [("dora", DORA_LOSS, "không phân biệt được"),
                                                     ("pissa", PISSA_LOSS, "tốt hơn")])
def test_seed_verdict_table(records_root, variant, losses, choice):
    """DoRA's interval holds 0, PiSSA's is below it: both honest answers pass, every slip is named."""
    assert honest(losses)["lựa_chọn"] == choice
    walk_table(check_seed_verdict, honest(losses), variant, root=records_root)


def test_seed_verdict_reads_keys_loosely_and_needs_records(records_root):
    numbers = honest(DORA_LOSS)["số_liệu"]
    ok(check_seed_verdict({"lua_chon": "Không phân biệt được", "so_lieu": numbers}, "dora", root=records_root))
    todo(check_seed_verdict(honest(DORA_LOSS), "olora", root=records_root))     # no records of that variant
    wrong(check_seed_verdict("tốt hơn", "dora", root=records_root), "phải là một dict")


def test_seed_verdict_reads_the_committed_sweep():
    """On the committed records, the reference answer is accepted (what the solution notebook does)."""
    from lora_helpers.records import read_records

    losses = {"lora": [], "dora": []}
    for record in read_records("variant_seeds").values():
        if record["config"]["variant_run"]["variant"] in losses:
            losses[record["config"]["variant_run"]["variant"]].append(record["results"]["eval_loss"])
    ok(check_seed_verdict(honest(losses["dora"], losses["lora"]), "dora"))
