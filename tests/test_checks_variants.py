"""Checks of lesson 6's exercises: each accepts the reference answer and rejects the typical wrong and gaming ones."""

import copy
import math
from types import SimpleNamespace

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn

from lora_helpers.checks import check_lora_forward, check_noise_decision, check_scaling, check_scratch_parity
from lora_helpers.params import trainable_parameters
from lora_helpers.variants import VariantRun


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


# --------------------------------------------------------------------------- 🦁 beyond the noise?
class FixedLoss(nn.Module):
    """A stand-in model whose loss is a fixed number (mean_loss reads it)."""

    def __init__(self, loss):
        super().__init__()
        self.value = loss
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, **batch):
        return SimpleNamespace(loss=torch.tensor(self.value))


BATCHES = [{"input_ids": torch.zeros(1, 4, dtype=torch.long), "attention_mask": torch.ones(1, 4, dtype=torch.long),
            "labels": torch.tensor([[-100, 5, 6, 7]])}]


def fake_run(variant, seed, loss):
    return VariantRun(variant=variant, seed=seed, losses=[1.0, loss], val_loss=loss, test_accuracy=None, n_test=0,
                      seconds_per_step=1.0, init_seconds=0.0, peak_bytes=0, trainable=10, total=100,
                      model=FixedLoss(loss))


LORA = [fake_run("lora", 0, 0.50), fake_run("lora", 1, 0.56)]      # spread 0.06


def decide(choice, spread, diff):
    return {"lựa_chọn": choice, "số_liệu": {"dao_động": spread, "chênh_lệch": diff}}


def test_noise_decision_accepts_both_honest_answers():
    ok(check_noise_decision(decide("vượt", 0.06, -0.30), LORA, fake_run("pissa", 0, 0.20), BATCHES))
    ok(check_noise_decision(decide("không vượt", 0.06, 0.03), LORA, fake_run("dora", 0, 0.53), BATCHES))
    ok(check_noise_decision({"lua_chon": "Không vượt", "so_lieu": {"dao_dong": 0.0601, "chenh_lech": 0.0299}},
                            LORA, fake_run("dora", 0, 0.53), BATCHES))
    todo(check_noise_decision(None, LORA, fake_run("dora", 0, 0.53), BATCHES))
    todo(check_noise_decision(decide("vượt", 0.06, -0.3), LORA, None, BATCHES))


@pytest.mark.parametrize("answer, variant_loss, fragment", [
    (decide("vượt", 0.06, 0.03), 0.53, "phản bác"),                         # within the noise, called beyond
    (decide("không vượt", 0.06, -0.30), 0.20, "phản bác"),                  # beyond, called within
    (decide("vượt", 0.03, -0.30), 0.20, "nửa khoảng"),                      # half the range
    (decide("vượt", 0.06 / math.sqrt(2), -0.30), 0.20, "độ lệch chuẩn"),    # a standard deviation
    (decide("vượt", 0.50, -0.30), 0.20, "loss của một lần chạy"),
    (decide("vượt", 0.06, 0.30), 0.20, "Dấu bị đảo"),
    (decide("vượt", 0.06, -0.36), 0.20, "khác hạt giống"),
    (decide("vượt", 0.06, 0.20), 0.20, "loss của biến thể"),
    (decide("vượt", 0.06, -0.9), 0.20, "không phải chênh lệch đo được"),
    (decide("tốt hơn", 0.06, -0.30), 0.20, "chọn \"vượt\" hoặc \"không vượt\""),
    ("vượt", 0.20, "phải là một dict"),
])
def test_noise_decision_rejects_wrong_numbers_and_choices(answer, variant_loss, fragment):
    wrong(check_noise_decision(answer, LORA, fake_run("pissa", 0, variant_loss), BATCHES), fragment)


def test_noise_decision_rejects_runs_that_measure_no_noise_or_were_edited():
    answer = decide("vượt", 0.06, -0.30)
    variant = fake_run("pissa", 0, 0.20)
    wrong(check_noise_decision(answer, [fake_run("lora", 0, 0.5), fake_run("lora", 0, 0.5)], variant, BATCHES),
          "cùng hạt giống")
    wrong(check_noise_decision(answer, LORA, fake_run("lora", 0, 0.2), BATCHES), "LoRA thường, không phải một biến thể")
    wrong(check_noise_decision(answer, LORA, fake_run("pissa", 7, 0.2), BATCHES), "không có lần chạy LoRA nào cùng hạt giống")
    wrong(check_noise_decision(answer, [LORA[0], fake_run("dora", 1, 0.56)], variant, BATCHES), "chỉ gồm các lần chạy LoRA")
    edited = fake_run("pissa", 0, 0.20)
    edited.val_loss = 0.9                                                     # a hand-edited result
    wrong(check_noise_decision(decide("vượt", 0.06, 0.40), LORA, edited, BATCHES), "đo lại từ chính các mô hình")
