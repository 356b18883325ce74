"""Checks of lesson 6's exercises: each accepts the reference answer and rejects the typical wrong and gaming ones."""

import copy
import math

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from lora_helpers.checks import check_lora_forward, check_scaling, check_scratch_parity, check_seed_verdict
from lora_helpers.params import trainable_parameters


def ok(result):
    assert result.status == "dung", result.message


def wrong(result, *fragments):
    assert result.status == "sai", result.message
    for fragment in fragments:
        assert fragment in result.message, result.message


def todo(result):
    assert result.status == "chua_lam" and "chưa làm" in result.message, result.message


# --------------------------------------------------------------------------- 🐢 scaling
RANKS, ALPHA = (4, 16, 64), 16


def table(lora, rslora):
    return {"lora": {r: lora(r) for r in RANKS}, "rslora": {r: rslora(r) for r in RANKS}}


RIGHT = table(lambda r: ALPHA / r, lambda r: ALPHA / math.sqrt(r))


def test_scaling_accepts_the_formula_and_string_keys():
    ok(check_scaling(RIGHT, RANKS, ALPHA))
    ok(check_scaling({k: {str(r): round(v, 4) for r, v in row.items()} for k, row in RIGHT.items()}, RANKS, ALPHA))
    todo(check_scaling(None, RANKS, ALPHA))


@pytest.mark.parametrize("answer, fragment", [
    (table(lambda r: ALPHA / math.sqrt(r), lambda r: ALPHA / r), "đổi chỗ"),
    (table(lambda r: ALPHA * r, lambda r: ALPHA / math.sqrt(r)), "nhân alpha với r"),
    (table(lambda r: r / ALPHA, lambda r: ALPHA / math.sqrt(r)), "chia r cho alpha"),
    (table(lambda r: ALPHA / r, lambda r: ALPHA / r**2), "alpha / r²"),
    (table(lambda r: ALPHA / r, lambda r: math.sqrt(ALPHA / r)), "căn bậc hai"),
    (table(lambda r: ALPHA / r, lambda r: 2.0), "r = 4"),
    ({"lora": RIGHT["lora"]}, "thiếu khoá `rslora`"),
    ({"lora": {4: 4.0}, "rslora": RIGHT["rslora"]}, "không có hệ số cho r = 16"),
    ([4.0, 1.0], "phải là một dict"),
])
def test_scaling_rejects_typical_mistakes(answer, fragment):
    wrong(check_scaling(answer, RANKS, ALPHA), fragment)


# --------------------------------------------------------------------------- 🐕 the from-scratch layer
class LoraTuViet(nn.Module):
    """The exercise's layer; its forward is the learner's ``lora_forward``."""

    forward_fn = None

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


def test_forward_accepts_lora():
    ok(check_lora_forward(right_forward, LoraTuViet))
    todo(check_lora_forward(None, LoraTuViet))


@pytest.mark.parametrize("forward, fragment", [
    (lambda layer, x: layer.base(x), "nhánh LoRA bị bỏ quên"),
    (lambda layer, x: layer.lora_B(layer.lora_A(x)) * layer.scaling, "quên cộng đầu ra của lớp gốc"),
    (lambda layer, x: layer.base(x) + layer.lora_B(layer.lora_A(x)), "quên nhân nhánh LoRA"),
    (lambda layer, x: layer.base(x) + layer.lora_B(layer.lora_A(x)) / layer.scaling, "bị đảo"),
    (lambda layer, x: layer.base(x) + layer.lora_B(layer.lora_A(x)) * 32, "alpha · r"),
    (lambda layer, x: layer.base(x) + layer.lora_B(layer.lora_A(x)) * 3.0, "khác lớp LoRA của peft"),
    (lambda layer, x: x, "cần một tensor"),
    ("layer.base(x)", "phải là một hàm"),
])
def test_forward_rejects_typical_mistakes(forward, fragment):
    wrong(check_lora_forward(forward, LoraTuViet), fragment)


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


def test_scratch_parity_accepts_copied_weights(tiny_model_factory):
    scratch, peft_model = scratch_and_peft(tiny_model_factory)
    count = trainable_parameters(peft_model)[0]
    ok(check_scratch_parity({"chênh_lệch": 0.0, "tham_số": count}, scratch, peft_model))
    ok(check_scratch_parity({"chenh_lech": 1e-6, "tham so": float(count)}, scratch, peft_model))
    todo(check_scratch_parity(None, scratch, peft_model))


def test_scratch_parity_rejects_gaming_and_mistakes(tiny_model_factory):
    scratch, peft_model = scratch_and_peft(tiny_model_factory)
    count = trainable_parameters(peft_model)[0]
    answer = {"chênh_lệch": 0.0, "tham_số": count}
    wrong(check_scratch_parity(answer, peft_model, peft_model), "cùng một đối tượng")
    zero_b, zero_peft = scratch_and_peft(tiny_model_factory, nonzero_b=False)
    wrong(check_scratch_parity(answer, zero_b, zero_peft), "B của bạn vẫn bằng 0")
    not_copied, fresh_peft = scratch_and_peft(tiny_model_factory, copy_weights=False)
    wrong(check_scratch_parity(answer, not_copied, fresh_peft), "không khớp")
    wrong(check_scratch_parity({"chênh_lệch": 0.0, "tham_số": count + 1}, scratch, peft_model), "tham số huấn luyện được")
    wrong(check_scratch_parity({"chênh_lệch": -1.0, "tham_số": count}, scratch, peft_model), "chênh_lệch")
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


def verdict(variant, choice=None, **change):
    """The honest answer for ``variant`` (scipy directly, as the solution does), with ``change`` applied."""
    import statistics

    from scipy.stats import ttest_ind

    losses = {"dora": DORA_LOSS, "pissa": PISSA_LOSS}[variant]
    ci = ttest_ind(losses, LORA_LOSS, equal_var=False).confidence_interval(0.95)
    honest = "tốt hơn" if ci.high < 0 else "kém hơn" if ci.low > 0 else "không phân biệt được"
    numbers = {"hiệu": statistics.fmean(losses) - statistics.fmean(LORA_LOSS), "ktc": (ci.low, ci.high)}
    numbers.update(change)
    return {"lựa_chọn": choice or honest, "số_liệu": numbers}


def test_seed_verdict_accepts_the_honest_answers(records_root):
    ok(check_seed_verdict(verdict("pissa"), "pissa", root=records_root))      # better: the interval is below 0
    ok(check_seed_verdict(verdict("dora"), "dora", root=records_root))        # the interval holds 0
    assert verdict("dora")["lựa_chọn"] == "không phân biệt được" and verdict("pissa")["lựa_chọn"] == "tốt hơn"
    ok(check_seed_verdict({"lua_chon": "Không phân biệt được", "so_lieu": verdict("dora")["số_liệu"]}, "dora",
                          root=records_root))
    todo(check_seed_verdict(None, "dora", root=records_root))
    todo(check_seed_verdict(verdict("dora"), "olora", root=records_root))     # no records of that variant


def _two_seeds():
    from scipy.stats import ttest_ind

    ci = ttest_ind(DORA_LOSS[:2], LORA_LOSS[:2], equal_var=False).confidence_interval()
    return (ci.low, ci.high)


def _ninety():
    from scipy.stats import ttest_ind

    ci = ttest_ind(DORA_LOSS, LORA_LOSS, equal_var=False).confidence_interval(0.90)
    return (ci.low, ci.high)


@pytest.mark.parametrize("variant, answer, fragment", [
    ("dora", lambda: verdict("dora", "tốt hơn"), "phản bác"),                 # an interval holding 0 called better
    ("pissa", lambda: verdict("pissa", "không phân biệt được"), "phản bác"),
    ("pissa", lambda: verdict("pissa", "kém hơn"), "phản bác"),
    ("dora", lambda: verdict("dora", hiệu=-verdict("dora")["số_liệu"]["hiệu"]), "Dấu bị đảo"),
    ("dora", lambda: verdict("dora", hiệu=DORA_LOSS[0] - LORA_LOSS[0]), "một hạt giống"),
    ("dora", lambda: verdict("dora", hiệu=0.5), "không phải hiệu đo được"),
    ("dora", lambda: verdict("dora", ktc=_two_seeds()), "hai hạt giống"),
    ("dora", lambda: verdict("dora", ktc=_ninety()), "khoảng 90%"),
    ("dora", lambda: verdict("dora", ktc=tuple(-x for x in verdict("dora")["số_liệu"]["ktc"])), "LoRA − biến thể"),
    ("dora", lambda: verdict("dora", ktc=0.1), "hai số"),
    ("dora", lambda: verdict("dora", "vượt"), "chọn một trong"),
    ("dora", lambda: "tốt hơn", "phải là một dict"),
])
def test_seed_verdict_rejects_wrong_numbers_and_choices(records_root, variant, answer, fragment):
    wrong(check_seed_verdict(answer(), variant, root=records_root), fragment)


def test_seed_verdict_reads_the_committed_sweep():
    """On the committed records, the reference answer is accepted (what the solution notebook does)."""
    import statistics

    from scipy.stats import ttest_ind

    from lora_helpers.records import read_records

    losses = {"lora": [], "dora": []}
    for record in read_records("variant_seeds").values():
        if record["config"]["variant_run"]["variant"] in losses:
            losses[record["config"]["variant_run"]["variant"]].append(record["results"]["eval_loss"])
    ci = ttest_ind(losses["dora"], losses["lora"], equal_var=False).confidence_interval(0.95)
    choice = "tốt hơn" if ci.high < 0 else "kém hơn" if ci.low > 0 else "không phân biệt được"
    ok(check_seed_verdict({"lựa_chọn": choice, "số_liệu": {"hiệu": statistics.fmean(losses["dora"])
                                                             - statistics.fmean(losses["lora"]),
                                                             "ktc": (ci.low, ci.high)}}, "dora"))
