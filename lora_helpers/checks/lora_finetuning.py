"""Checks of ``lora_finetuning``: LoRA parameter count, LoraConfig, SFTConfig, training, curves, ΔW, a layer's output
and a rank for a memory budget.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings

from ..numbers import count as fmt_count
from ..numbers import signed_count as fmt_signed
from ..params import lora_layer_params
from ._common import (
    CheckResult,
    _as_int,
    _close,
    _decision,
    _field,
    _is_peft_model,
    _lora_layers,
    _number,
    _target_set,
    _wrong,
)
from .kit import Mistake, Table, check, edited_copy, table_of


def _lora_shapes(model, config) -> list[tuple[str, int, int]]:
    """(module name, d_in, d_out) of every layer peft would adapt with ``config``, found on a meta-device copy."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(model.config)
        peft_model = get_peft_model(skeleton, copy.deepcopy(config))
    return [(name, layer.in_features, layer.out_features) for name, layer in _lora_layers(peft_model)]


@check
def check_lora_param_count(answer, model, config) -> Table:
    """The number of trainable LoRA parameters that ``config`` adds to ``model``.

    The truth is counted by peft itself (on a weightless copy of the model); a wrong number is compared with the
    usual slips to say which one it is.
    """
    shapes = _lora_shapes(model, config)
    r, alpha = config.r, config.lora_alpha
    truth = sum(lora_layer_params(r, d_in, d_out) for _, d_in, d_out in shapes)
    n_blocks = getattr(model.config, "num_hidden_layers", 0) or 1
    per_block = truth // n_blocks
    n_base = sum(p.numel() for p in model.parameters())
    value = _as_int(answer)
    said = fmt_count(value) if value is not None else repr(answer)

    def total(rank=r, d_out_of=lambda name, d_in, d_out: d_out, a=True, b=True):
        return sum(rank * ((d_in if a else 0) + (d_out_of(n, d_in, d_out) if b else 0)) for n, d_in, d_out in shapes)

    def square_kv(name, d_in, d_out):
        return d_in if name.split(".")[-1] in {"k_proj", "v_proj"} else d_out

    def slip(wrong_value, problem, hint):
        return Mistake.value(wrong_value, f"{said}: {problem}", hint, truth=truth, same=lambda a, b: _as_int(a) == b)

    layers = sorted({n.split(".")[-1] for n, _, _ in shapes})
    same_r = "Dùng đúng `r` của LoraConfig."
    two_matrices = "Mỗi lớp có hai ma trận: A (r × d_in) và B (d_out × r): r·(d_in + d_out)."
    blocks = f"Mô hình có đúng {n_blocks} khối."
    return Table(
        guard=[Mistake(lambda a: _as_int(a) is None,
                       f"đáp án phải là một số nguyên, bạn đưa {answer!r} ({type(answer).__name__}).",
                       "Số tham số là số nguyên, ví dụ `so_tham_so = 30 * 4 * (576 + 576)`.",
                       example=lambda reference: str(reference))],
        right=lambda a: _as_int(a) == truth,
        ok=f"{fmt_count(truth)} tham số huấn luyện được: r·(d_in + d_out) cộng trên {len(shapes)} lớp.",
        slips=[
            slip(total(rank=r + 1), f"lệch hạng một đơn vị: bạn tính với r={r + 1}, cấu hình có r={r}.", same_r),
            slip(total(rank=r - 1), f"lệch hạng một đơn vị: bạn tính với r={r - 1}, cấu hình có r={r}.", same_r),
            slip(total(b=False), "bạn chỉ đếm ma trận A (r × d_in).", two_matrices),
            slip(total(a=False), "bạn chỉ đếm ma trận B (d_out × r).", two_matrices),
            slip(sum(d_in * d_out for _, d_in, d_out in shapes),
                 "đó là số tham số của chính các ma trận W (tinh chỉnh toàn bộ), không phải LoRA.",
                 "LoRA thay d_in·d_out bằng r·(d_in + d_out)."),
            slip(total(d_out_of=square_kv), "bạn coi k_proj và v_proj là ma trận vuông như q_proj.",
                 "SmolLM2 dùng grouped-query attention: k_proj, v_proj có d_out nhỏ hơn (xem kích thước đã in ở trên)."),
            slip(per_block, "đó là số của một khối (block) thôi.", f"Mô hình có {n_blocks} khối giống nhau: nhân lên."),
            slip(per_block * (n_blocks + 1), f"bạn nhân với {n_blocks + 1} khối.", blocks),
            slip(per_block * (n_blocks - 1), f"bạn nhân với {n_blocks - 1} khối.", blocks),
            slip(total(rank=alpha), f"bạn dùng lora_alpha={alpha} thay cho r={r}.",
                 "lora_alpha chỉ là hệ số tỉ lệ (alpha/r); kích thước A, B do r quyết định."),
            slip(truth + n_base, "bạn cộng cả tham số của mô hình cơ sở.",
                 "Mô hình cơ sở bị đóng băng (freeze): chỉ A và B là tham số huấn luyện được."),
        ],
        otherwise=(f"{said} chưa khớp (lệch {fmt_signed(value - truth) if value is not None else '?'}).",
                   f"Cộng r·(d_in + d_out) trên mọi lớp được gắn LoRA ({', '.join(layers)}), trong cả {n_blocks} khối; "
                   "đọc d_in, d_out của từng lớp ở ô in kích thước."),
    )


@check
def check_lora_config_spec(config, r: int, lora_alpha, target_modules, lora_dropout=None, task_type=None) -> Table:
    """A ``LoraConfig`` with the asked rank, alpha and target modules (and dropout and task type when given)."""
    from peft import LoraConfig

    want = _target_set(target_modules)
    got = _target_set(getattr(config, "target_modules", None))
    if isinstance(want, set) and isinstance(got, set):
        missing, extra = sorted(want - got), sorted(got - want)
        parts = ([f"thiếu {missing}"] if missing else []) + ([f"thừa {extra}"] if extra else [])
        targets_problem, targets_hint = f"target_modules {', '.join(parts)}.", f"Đề bài yêu cầu đúng các lớp {sorted(want)}."
    else:
        targets_problem = f"target_modules={getattr(config, 'target_modules', None)!r}, đề bài yêu cầu {target_modules!r}."
        targets_hint = "Đọc lại đề: một danh sách tên lớp cụ thể, hay \"all-linear\"."
    other_targets = ["q_proj"] if want != {"q_proj"} else ["v_proj"]
    kind = str(getattr(getattr(config, "task_type", None), "value", getattr(config, "task_type", None)))
    rows = [
        Mistake(lambda c: c.r != r, f"r={getattr(config, 'r', None)}, đề bài yêu cầu r={r}.", "Đặt đúng hạng `r`.",
                example=lambda c: dataclasses.replace(c, r=c.r + 1)),
        Mistake(lambda c: c.lora_alpha != lora_alpha,
                f"lora_alpha={getattr(config, 'lora_alpha', None)}, đề bài yêu cầu lora_alpha={lora_alpha}.",
                "Đề bài giữ alpha/r cố định; tính lại lora_alpha.",
                example=lambda c: dataclasses.replace(c, lora_alpha=c.lora_alpha * 2)),
        Mistake(lambda c: _target_set(c.target_modules) != want, targets_problem, targets_hint,
                example=lambda c: dataclasses.replace(c, target_modules=other_targets)),
    ]
    if lora_dropout is not None:
        rows.append(Mistake(lambda c: c.lora_dropout != lora_dropout,
                            f"lora_dropout={getattr(config, 'lora_dropout', None)}, đề bài yêu cầu {lora_dropout}.",
                            "Vài bước huấn luyện thì không cần dropout; đặt đúng giá trị đề bài cho.",
                            example=lambda c: dataclasses.replace(c, lora_dropout=lora_dropout + 0.1)))
    if task_type is not None:
        rows.append(Mistake(lambda c: kind != task_type, f"task_type={getattr(config, 'task_type', None)!r}, cần {task_type!r}.",
                            f"`task_type=\"{task_type}\"`: peft bọc mô hình sinh văn bản đúng cách (PeftModelForCausalLM).",
                            example=lambda c: dataclasses.replace(c, task_type=None)))
    return Table(
        guard=[Mistake(lambda c: not isinstance(c, LoraConfig), f"`cau_hinh` là {type(config).__name__}, không phải LoraConfig.",
                       "`from peft import LoraConfig`; `cau_hinh = LoraConfig(r=..., lora_alpha=..., target_modules=[...])`.",
                       example=lambda c: c.to_dict())],
        slips=rows,
        ok=f"LoraConfig(r={r}, lora_alpha={lora_alpha}, target_modules={sorted(want) if isinstance(want, set) else want!r}).",
    )


def _trainer(trainer, model=None, steps=None):
    """A stand-in for ``trainer`` with its model or its step count replaced (examples of the table)."""
    from types import SimpleNamespace

    return SimpleNamespace(model=trainer.model if model is None else model,
                           state=SimpleNamespace(global_step=trainer.state.global_step if steps is None else steps))


@check
def check_trained_lora(trainer, r: int, target_modules, steps: int) -> Table:
    """A trainer that trained a LoRA adapter with the asked rank and targets for ``steps`` steps."""
    model, state = getattr(trainer, "model", None), getattr(trainer, "state", None)
    peft = _is_peft_model(model)
    config = next(iter(model.peft_config.values())) if peft else None
    got, want = _target_set(getattr(config, "target_modules", None)), _target_set(target_modules)
    shown = lambda t: sorted(t) if isinstance(t, set) else t  # noqa: E731
    n = sum(p.numel() for p in model.parameters() if p.requires_grad) if peft else 0
    return Table(
        guard=[
            Mistake(lambda t: model is None or state is None,
                    f"`trainer_cua_ban` là {type(trainer).__name__}, không phải một SFTTrainer.",
                    "Tạo `SFTTrainer(model=..., args=..., train_dataset=..., processing_class=..., peft_config=cau_hinh)`.",
                    example=lambda t: "trainer"),
            Mistake(lambda t: not peft, "mô hình trong trainer không có bộ điều hợp LoRA: đây là tinh chỉnh toàn bộ.",
                    "Truyền `peft_config=cau_hinh` vào SFTTrainer.",
                    example=lambda t: _trainer(t, model=t.model.get_base_model())),
        ],
        slips=[
            Mistake(lambda t: config.r != r, f"bộ điều hợp đã huấn luyện có r={getattr(config, 'r', None)}, cần r={r}.",
                    "Truyền đúng `cau_hinh` của bạn.",
                    example=lambda t: _trainer(t, model=edited_copy(t.model, lambda m: setattr(m.peft_config["default"], "r", r + 1)))),
            Mistake(lambda t: got != want, f"bộ điều hợp gắn vào {shown(got)}, cần {shown(want)}.",
                    "Truyền đúng `cau_hinh` của bạn vào `peft_config`.",
                    example=lambda t: _trainer(t, model=edited_copy(
                        t.model, lambda m: setattr(m.peft_config["default"], "target_modules", {"lm_head"})))),
            Mistake(lambda t: state.global_step != steps,
                    f"trainer đã chạy {getattr(state, 'global_step', None)} bước, đề bài yêu cầu {steps}.",
                    f"Đặt `max_steps={steps}` và gọi `trainer_cua_ban.train()`.",
                    example=lambda t: _trainer(t, steps=steps + 1)),
            Mistake(lambda t: not any(bool((layer.lora_B[a].weight != 0).any()) for _, layer in _lora_layers(model)
                                      for a in layer.lora_B),
                    "mọi ma trận B vẫn bằng 0: bộ điều hợp chưa học gì.", "Gọi `trainer_cua_ban.train()`.",
                    example=lambda t: _trainer(t, model=edited_copy(
                        t.model, lambda m: [p.zero_() for name, p in m.named_parameters() if "lora_B" in name]))),
        ],
        ok=f"Đã huấn luyện {steps} bước một bộ điều hợp r={r} ({fmt_count(n)} tham số huấn luyện được).",
    )


@check
def check_curve_comparison(answer, histories) -> Table | CheckResult:
    """``answer`` names the run whose last training loss is the lowest (``histories``: label -> ``loss_history``).

    A wrong pick is told its own last loss only: the message must not give the right run away.
    """
    if not histories:  # nothing to compare yet: the reference is not ready, whatever the answer
        return _wrong("chưa có đường mất mát nào để so sánh.", "Chạy các ô huấn luyện phía trên trước.")
    final = {label: h["train"][-1][1] for label, h in histories.items() if h.get("train")}
    best = min(final, key=final.get)
    return Table(
        guard=[Mistake(lambda a: a not in final, f"{answer!r} không phải tên một lần chạy; các lần chạy: {list(final)}.",
                       "Trả lời bằng đúng một khoá của `lich_su`.", example=lambda a: f"{a}?")],
        slips=[Mistake(lambda a: a != best,
                       f"`{answer}` không phải lần chạy kết thúc với loss huấn luyện thấp nhất "
                       f"(loss ở bước cuối của nó: {final.get(answer, float('nan')):.3f}).",
                       "Đọc giá trị cuối của MỖI đường (`lich_su[tên]['train'][-1]`) rồi so sánh, hoặc nhìn đồ thị (trục log).",
                       example=lambda a: next(label for label in final if label != a))],
        ok=f"`{best}` kết thúc với loss huấn luyện thấp nhất.",
        measured=", ".join(f"`{k}` {v:.3f}" for k, v in final.items()) + " (loss ở bước cuối).",
    )


@check
def check_delta_weight(delta, layer, adapter_name: str = "default") -> Table:
    """ΔW = (lora_alpha / r) · B · A of one LoRA layer, shape ``d_out × d_in`` like W."""
    import torch

    with torch.no_grad():
        A = layer.lora_A[adapter_name].weight.float()
        B = layer.lora_B[adapter_name].weight.float()
        scaling = layer.scaling[adapter_name]
        truth = layer.get_delta_weight(adapter_name).float()
    W = layer.base_layer.weight.float()
    shape = tuple(getattr(delta, "shape", ()))
    r = A.shape[0]
    return Table(
        guard=[
            Mistake(lambda d: not torch.is_tensor(d), f"`delta_w` phải là một tensor, bạn đưa {type(delta).__name__}.",
                    "Dùng các tensor `lop.lora_A[...].weight`, `lop.lora_B[...].weight` và phép nhân `@`.",
                    example=lambda d: d.tolist()),
            Mistake(lambda d: d.shape != truth.shape and d.shape == truth.T.shape,
                    f"kích thước {shape} bị chuyển vị; ΔW phải cùng kích thước với W {tuple(W.shape)}.",
                    "ΔW = B @ A (B: d_out × r, A: r × d_in).", example=lambda d: d.T),
            Mistake(lambda d: d.shape != truth.shape and d.shape == (r, r), f"kích thước {shape}: bạn tính A @ B (r × r).",
                    "Thứ tự nhân ngược lại: ΔW = B @ A, kích thước d_out × d_in như W.",
                    example=lambda d: A @ B if A.shape[1] == B.shape[0] else A @ A.T),  # A @ A.T: the r × r shape of A @ B
            Mistake(lambda d: d.shape != truth.shape, f"kích thước {shape}, cần {tuple(W.shape)} (giống W).",
                    "ΔW = (alpha/r) · B @ A.", example=lambda d: d[:1]),
        ],
        right=lambda d: _close(d, truth),
        slips=[
            Mistake(lambda d: _close(d, B @ A), f"bạn quên hệ số tỉ lệ alpha/r = {scaling:g}.",
                    "Nhân B @ A với `lop.scaling[tên_bộ_điều_hợp]`.", example=lambda d: B @ A),
            Mistake(lambda d: bool(scaling) and _close(d, (B @ A) / scaling), "bạn chia cho alpha/r thay vì nhân (dùng r/alpha).",
                    "ΔW = (lora_alpha / r) · B @ A.", example=lambda d: (B @ A) / scaling),
            Mistake(lambda d: _close(d, W) or _close(d, W + truth), "đó là W (hoặc W + ΔW), không phải riêng ΔW.",
                    "Chỉ tính phần LoRA: (alpha/r) · B @ A.", example=lambda d: W + d),
        ],
        otherwise=("giá trị ΔW chưa khớp (đúng kích thước nhưng sai số).",
                   "Kiểm tra bạn lấy A, B của đúng lớp và đúng bộ điều hợp, rồi ΔW = (alpha/r) · B @ A."),
        ok=f"ΔW = (alpha/r)·B·A, kích thước {tuple(truth.shape)}, hệ số alpha/r = {scaling:g}.",
    )


@check
def check_lora_output(y, layer, x, adapter_name: str = "default") -> Table:
    """``y`` equals the LoRA layer's output ``W x + (alpha/r) · B A x`` on input ``x``."""
    import torch

    with torch.no_grad():
        truth = layer(x)
        base = layer.base_layer(x)
        lora_part = x @ layer.lora_A[adapter_name].weight.T @ layer.lora_B[adapter_name].weight.T
    return Table(
        guard=[
            Mistake(lambda y: not torch.is_tensor(y), f"`y_tu_tinh` phải là tensor, bạn đưa {type(y).__name__}.",
                    "Tính bằng các phép nhân ma trận torch.", example=lambda y: y.tolist()),
            Mistake(lambda y: y.shape != truth.shape, f"kích thước {tuple(getattr(y, 'shape', ()))}, cần {tuple(truth.shape)}.",
                    "Với x có dạng (..., d_in): y = x @ W.T + scaling · (x @ A.T @ B.T).", example=lambda y: y[..., :-1]),
        ],
        right=lambda y: _close(y, truth),
        slips=[
            Mistake(lambda y: _close(y, base), "đó mới là đầu ra của W (lớp gốc), thiếu phần LoRA.",
                    "Cộng thêm scaling · (x @ A.T @ B.T).", example=lambda y: base),
            Mistake(lambda y: _close(y, base + lora_part), "bạn quên hệ số alpha/r ở phần LoRA.",
                    "Nhân phần x @ A.T @ B.T với `lop.scaling[...]`.", example=lambda y: base + lora_part),
            Mistake(lambda y: _close(y, truth - base), "đó chỉ là phần LoRA, thiếu W·x.",
                    "Cộng thêm đầu ra của lớp gốc `lop.base_layer(x)`.", example=lambda y: y - base),
        ],
        otherwise=("giá trị chưa khớp đầu ra của lớp.", "y = lop.base_layer(x) + lop.scaling[...] * (x @ A.T @ B.T)."),
        ok="y = W·x + (alpha/r)·B·A·x khớp đầu ra của lớp LoRA.",
    )


def _value(value):
    """An enum setting (``SaveStrategy.NO``) as its plain value (``"no"``)."""
    return getattr(value, "value", value)


# Per-field explanations for check_sft_config: (problem when it differs, hint). {want} and {got} are filled in.
_SFT_HINTS = {
    "output_dir": ("output_dir={got!r}, bản yêu cầu {want!r}.", "Truyền `output_dir=str(...)` như đề bài."),
    "max_steps": ("max_steps={got}, bản yêu cầu {want} bước.",
                  "Đặt `max_steps=` (số bước tối ưu); `num_train_epochs` bị bỏ qua khi có max_steps."),
    "per_device_train_batch_size": ("per_device_train_batch_size={got}: bộ nhớ chỉ đủ cho {want} câu mỗi lượt.",
                                    "Số câu mỗi lượt tiến/lùi là `per_device_train_batch_size`; phần còn lại của lô "
                                    "hiệu dụng do `gradient_accumulation_steps` gom."),
    "gradient_accumulation_steps": ("gradient_accumulation_steps={got}, cần {want}.",
                                    "Lô hiệu dụng = per_device_train_batch_size × gradient_accumulation_steps "
                                    "(× số GPU): chia lô hiệu dụng cho số câu mỗi lượt."),
    "learning_rate": ("learning_rate={got}, bản yêu cầu {want}.", "Kiểm tra số mũ: 1e-3 = 0.001, 1e-4 = 0.0001."),
    "lr_scheduler_type": ("lr_scheduler_type={got!r}, bản yêu cầu {want!r}.",
                          "Mặc định của transformers là \"linear\" (giảm dần về 0); bản yêu cầu tốc độ học không đổi."),
    "logging_steps": ("logging_steps={got}, cần {want}.", "Muốn một điểm loss mỗi bước: `logging_steps=1`."),
    "save_strategy": ("save_strategy={got!r}, cần {want!r}.",
                      "Mặc định lưu checkpoint định kỳ; bản yêu cầu không lưu gì trong lúc huấn luyện: `save_strategy=\"no\"`."),
    "eval_strategy": ("eval_strategy={got!r}, cần {want!r}.", "Không có tập kiểm định ở đây: `eval_strategy=\"no\"`."),
    "max_length": ("max_length={got}, cần {want} token.",
                   "TRL 1.x gọi nó là `max_length` (tên cũ `max_seq_length` đã bị bỏ)."),
    "completion_only_loss": ("completion_only_loss={got}, cần {want}.",
                             "Chỉ tính loss trên câu trả lời (dữ liệu prompt/completion): `completion_only_loss=True`."),
    "bf16": ("bf16={got}, cần {want} trên máy này.",
             "TRL bật bf16 mặc định; dùng đúng `PRECISION.bf16` mà `precision_profile(DEVICE)` chọn cho máy này."),
    "fp16": ("fp16={got}, cần {want} trên máy này.", "Dùng `fp16=PRECISION.fp16`."),
    "seed": ("seed={got}, cần {want}.", "Cùng `SEED` với lần chạy mốc thì hai lần chạy mới so sánh được."),
    "use_cpu": ("use_cpu={got}, cần {want}.", "`use_cpu=DEVICE == \"cpu\"`."),
    "activation_checkpointing": ("activation_checkpointing={got}, cần {want}.",
                                 "TRL bật nó mặc định: tiết kiệm bộ nhớ kích hoạt bằng cách tính lại, nên chậm hơn; "
                                 "mô hình 135M không cần."),
}


def sft_brief(output_dir, max_steps: int, seed: int, device: str) -> dict:
    """What the ``lora_finetuning`` brief asks of the learner's ``SFTConfig``: kept here, so that the check cell
    does not print the answer next to the question."""
    from ..env import precision_profile

    precision = precision_profile(device)
    return {
        "output_dir": str(output_dir), "max_steps": max_steps, "learning_rate": 1e-3, "lr_scheduler_type": "constant",
        "per_device_train_batch_size": 2, "gradient_accumulation_steps": 2, "logging_steps": 1,
        "eval_strategy": "no", "save_strategy": "no", "max_length": 160, "completion_only_loss": True,
        "bf16": precision.bf16, "fp16": precision.fp16, "use_cpu": device == "cpu",
        "activation_checkpointing": False, "seed": seed,
    }


def _same_setting(name: str, got, want) -> bool:
    from pathlib import Path

    if name == "output_dir":
        return Path(str(got)).resolve() == Path(str(want)).resolve()
    if isinstance(want, float):
        return abs(float(got) - want) <= 1e-12 * max(1.0, abs(want))
    return got == want


def _with_settings(config, **changes):
    """A shallow copy of ``config`` with ``changes`` set as they are, unvalidated (examples of check_sft_config)."""
    twin = copy.copy(config)
    twin.__dict__.update(changes)
    return twin


def _other_setting(value):
    """Another value of the same kind (examples of check_sft_config)."""
    return (not value) if isinstance(value, bool) else (value * 10 or 1) if isinstance(value, int | float) else f"{value}_x"


@check
def check_sft_config(config, expected: dict) -> Table:
    """An ``SFTConfig`` written from a brief, checked field by field against ``expected`` (field -> value).

    The first field that differs is reported with that field's hint (batch split into per-device batch and
    accumulation, learning-rate exponent, scheduler default, checkpoints saved by default, the ``max_length``
    rename, TRL's bf16 default...); ``output_dir`` is compared as a path.
    """
    from trl import SFTConfig

    batch, accumulation = "per_device_train_batch_size", "gradient_accumulation_steps"
    target = expected.get(batch, 1) * expected.get(accumulation, 1)
    got_batch, got_accumulation = getattr(config, batch, None), getattr(config, accumulation, None)

    def differs(name):
        return lambda c: not _same_setting(name, _value(getattr(c, name, None)), _value(expected[name]))

    def split_wrong(c):
        return (differs(batch)(c) or differs(accumulation)(c)) and _as_int(got_batch) * _as_int(got_accumulation) == target

    rows = []
    for name, want in expected.items():
        problem, hint = _SFT_HINTS.get(name, ("{field}={got!r}, cần {want!r}.", "Đọc lại bản yêu cầu."))
        want = str(want) if name == "output_dir" else _value(want)
        rows.append(Mistake(differs(name), problem.format(field=name, got=_value(getattr(config, name, None)), want=want),
                            hint, example=lambda c, name=name, want=want: _with_settings(c, **{name: _other_setting(want)})))
    first_batch_field = next((i for i, name in enumerate(expected) if name in (batch, accumulation)), None)
    if first_batch_field is not None:  # the effective batch is right but split otherwise: said before either field
        rows.insert(first_batch_field, Mistake(
            split_wrong, f"lô hiệu dụng đúng ({target} câu) nhưng chia sai: {got_batch} câu mỗi lượt × {got_accumulation} "
            "lần gom.", _SFT_HINTS[batch][1], example=lambda c: _with_settings(c, **{batch: target, accumulation: 1})))
    return Table(
        guard=[Mistake(lambda c: not isinstance(c, SFTConfig),
                       f"`cau_hinh_sft` là {type(config).__name__}, không phải `SFTConfig` của TRL.",
                       "`from trl import SFTConfig`; `cau_hinh_sft = SFTConfig(output_dir=..., max_steps=..., ...)`.",
                       example=lambda c: c.to_dict())],
        slips=rows,
        ok=f"SFTConfig khớp bản yêu cầu ở cả {len(expected)} trường đã kiểm tra (lô hiệu dụng {got_batch} × {got_accumulation}).",
    )


def _with(answer, part: str, **values):
    """``answer`` with ``answer[part]`` updated by ``values`` (examples of the decide-and-defend tables)."""
    return {**answer, part: {**answer[part], **values}}


_LAYER_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@check
def check_lora_budget(answer, model, budget_bytes: int, required_modules, bytes_per_param: int = 16,
                      ranks=(1, 2, 4, 8, 16, 32, 64)) -> Table | CheckResult:
    """Decide and defend: a rank and target layers that fit a memory budget, justified with r·(d_in + d_out).

    ``answer`` = ``{"lựa_chọn": {"r": int, "target_modules": [...]}, "số_liệu": {"số_tham_số": int, "bộ_nhớ_MB": float}}``.
    A LoRA parameter's training state costs ``bytes_per_param`` bytes (fp32 weight, gradient, AdamW's two moments);
    1 MB = 10⁶ bytes. Any choice is right whose numbers are peft's, that fits, adapts ``required_modules`` and takes
    the largest of ``ranks`` that fits with its layers. A miscount is named by :func:`check_lora_param_count`'s rows.
    """
    from peft import LoraConfig

    choice, numbers = _decision(answer)
    r, targets = _as_int(_field(choice, "r")), _field(choice, "target_modules")

    def config_of(rank, layers):
        layers = [layers] if isinstance(layers, str) and layers != "all-linear" else layers
        return LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=layers if isinstance(layers, str) else list(layers))

    def shapes_of(rank, layers):
        try:
            return _lora_shapes(model, config_of(rank, layers))
        except ValueError:  # peft: no layer of that name
            return []

    def answer_for(a, rank):  # ``a`` at another rank, with peft's own numbers for it
        n = sum(lora_layer_params(rank, i, o) for _, i, o in shapes_of(rank, a["lựa_chọn"]["target_modules"]))
        return {"lựa_chọn": {**a["lựa_chọn"], "r": rank}, "số_liệu": {"số_tham_số": n, "bộ_nhớ_MB": n * bytes_per_param / 1e6}}

    readable = isinstance(choice, dict) and r is not None and targets is not None
    shapes = shapes_of(r, targets) if readable and r in ranks else []
    adapted = {name.split(".")[-1] for name, _, _ in shapes}
    truth = sum(lora_layer_params(r, d_in, d_out) for _, d_in, d_out in shapes)
    megabytes, budget_mb = truth * bytes_per_param / 1e6, budget_bytes / 1e6
    n_params, cited_mb = _as_int(_field(numbers, "số_tham_số")), _number(_field(numbers, "bộ_nhớ_MB"))
    larger = [x for x in ranks if readable and x > r]
    bigger = sum(larger[0] * (i + o) for _, i, o in shapes) * bytes_per_param if larger else None

    said_mb = f"{cited_mb:g}" if cited_mb is not None else "?"

    def near(value, target) -> bool:  # rounded to 2 decimals is fine; tiny models need a relative bound
        return abs(value - target) <= min(0.005, 0.01 * abs(target))

    guard = [
        Mistake(lambda a: not readable, "`lựa_chọn` phải là dict {\"r\": ..., \"target_modules\": [...]}.",
                "Ví dụ `{\"r\": 2, \"target_modules\": [\"q_proj\", \"v_proj\"]}`.",
                example=lambda a: {**a, "lựa_chọn": list(a["lựa_chọn"].values())}),
        Mistake(lambda a: r not in ranks, f"r={_field(choice, 'r')!r}: chọn r trong {list(ranks)}.",
                "Hạng là một số nguyên trong danh sách.",
                example=lambda a: _with(a, "lựa_chọn", r=max(ranks) + 1)),
        Mistake(lambda a: not shapes, f"target_modules={targets!r} không khớp lớp nào của mô hình.",
                "Dùng tên lớp ở bảng kích thước: q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj.",
                example=lambda a: _with(a, "lựa_chọn", target_modules=["gate"])),
        Mistake(lambda a: not set(required_modules) <= adapted,
                f"cấu hình không gắn vào {sorted(set(required_modules) - adapted)}, mà bản yêu cầu bắt buộc "
                f"{sorted(required_modules)}.", "Giữ các lớp bắt buộc, rồi tìm hạng lớn nhất còn vừa ngân sách.",
                example=lambda a: _with(a, "lựa_chọn", target_modules=[n for n in _LAYER_NAMES if n not in required_modules][:1])),
        Mistake(lambda a: n_params is None, "`số_liệu['số_tham_số']` phải là một số nguyên.",
                "Tính Σ r·(d_in + d_out) trên các lớp đã chọn.", example=lambda a: _with(a, "số_liệu", số_tham_số="?")),
    ]
    if not required_modules:
        guard.pop(3)
    count = table_of(check_lora_param_count, n_params, model, config_of(r, targets)) if shapes and n_params is not None else None
    miscounts = [] if count is None else [
        *(Mistake(lambda a, row=row: row.when(n_params), row.problem, row.hint,
                  example=lambda a, row=row: _with(a, "số_liệu", số_tham_số=row.example(truth)))
          for row in count.slips if row.example(truth) != truth),
        Mistake(lambda a: n_params != truth, *count.otherwise, example=lambda a: _with(a, "số_liệu", số_tham_số=truth + 1)),
    ]
    return Table(
        guard=guard,
        slips=[
            *miscounts,
            Mistake(lambda a: cited_mb is None, "`số_liệu['bộ_nhớ_MB']` phải là một số.",
                    f"Bộ nhớ = số tham số × {bytes_per_param} byte / 10⁶.", example=lambda a: _with(a, "số_liệu", bộ_nhớ_MB="?")),
            Mistake(lambda a: not near(cited_mb, megabytes) and near(cited_mb, truth * 4 / 1e6),
                    f"{said_mb} MB chỉ tính trọng số (4 byte mỗi tham số).",
                    f"Huấn luyện còn cần gradient (4 byte) và hai mô-men của AdamW (8 byte): {bytes_per_param} byte "
                    "mỗi tham số huấn luyện được.", example=lambda a: _with(a, "số_liệu", bộ_nhớ_MB=truth * 4 / 1e6)),
            Mistake(lambda a: not near(cited_mb, megabytes) and near(cited_mb, truth * bytes_per_param / 2**20),
                    f"{said_mb} là MiB (chia cho 2²⁰).", "Đề bài dùng 1 MB = 10⁶ byte.",
                    example=lambda a: _with(a, "số_liệu", bộ_nhớ_MB=truth * bytes_per_param / 2**20)),
            Mistake(lambda a: not near(cited_mb, megabytes),
                    f"bộ nhớ {said_mb} MB không khớp số tham số bạn đã tính.",
                    f"Bộ nhớ (MB) = số tham số × {bytes_per_param} / 10⁶.",
                    example=lambda a: _with(a, "số_liệu", bộ_nhớ_MB=2 * megabytes)),
            Mistake(lambda a: truth * bytes_per_param > budget_bytes, f"{megabytes:.2f} MB vượt ngân sách {budget_mb:g} MB.",
                    "Giảm hạng, hoặc bớt các lớp không bắt buộc.", example=lambda a: answer_for(a, max(ranks))),
            Mistake(lambda a: bigger is not None and bigger <= budget_bytes,
                    f"vẫn còn dư ngân sách: với cùng các lớp, r={larger[0] if larger else None} vẫn vừa {budget_mb:g} MB.",
                    "Với một tập lớp đã chọn, lấy hạng lớn nhất còn vừa: hạng lớn hơn cho bộ điều hợp nhiều "
                    "khả năng biểu diễn hơn.", example=lambda a: answer_for(a, max(x for x in ranks if x < r))),
        ],
        ok=f"r={r} trên {sorted(adapted)}: {fmt_count(truth)} tham số, {megabytes:.2f} MB trạng thái huấn luyện, "
           f"vừa ngân sách {budget_mb:g} MB và là hạng lớn nhất vừa với các lớp này.",
    )
