"""Checks of ``olora_finetuning``: OLoRA's QR initialisation, the shifted base layers, the conversion, sharing it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..layers import linear_layers
from ._common import (
    CheckResult,
    _active,
    _as_int,
    _close,
    _decided,
    _decision,
    _field,
    _fp32_parity_rows,
    _is_peft_model,
    _lora_layers,
    _number,
    _parity_guard,
    _plain,
    _probe_logit_diff,
    _target_set,
    _todo,
    _wrong,
)
from .kit import Mistake, Table, check, part_replaced, scratch_dir


def _is_olora(config) -> bool:
    return str(getattr(config, "init_lora_weights", "")).lower() == "olora"


def _adapter_config(model):
    """The LoraConfig of the active (else first) adapter of a PeftModel."""
    active = _active(model)
    name = active[0] if active and active[0] in model.peft_config else next(iter(model.peft_config))
    return model.peft_config[name]


def check_olora_init(A, B, shifted, weight, r: int, lora_alpha) -> CheckResult:
    """OLoRA's initialisation of one weight by hand: ``A = R[:r]``, ``B = Q[:, :r]``, ``W' = W - (alpha/r)·B·A``.

    ``weight`` is the layer's original weight (``d_out × d_in``, left untouched); the reference is
    :func:`lora_helpers.olora.olora_factors` (peft's own steps: QR in fp32). The mistakes: :func:`_olora_init`.
    """
    missing = [f"`{n}`" for n, v in (("A", A), ("B", B), ("W_dich", shifted)) if v is None]
    if 0 < len(missing) < 3:
        return _todo(f"{', '.join(missing)} vẫn là `None`")
    return _olora_init(None if missing else (A, B, shifted), weight, r, lora_alpha)


@check
def _olora_init(answer, weight, r: int, lora_alpha) -> Table:
    """The table of :func:`check_olora_init`; ``answer`` is ``(A, B, W_dich)``."""
    import torch

    from ..olora import olora_factors

    names = ("A", "B", "W_dich")
    not_tensor = next((n for n, v in zip(names, answer) if not torch.is_tensor(v)), None)
    shifted = answer[2]
    scaling = lora_alpha / r
    truth = olora_factors(weight.detach(), r, scaling)      # QR on the weight's own device, as peft does
    Q, R, tA, tB, tW = (getattr(truth, f).float().cpu() for f in ("Q", "R", "A", "B", "shifted"))
    W, BA = weight.detach().float().cpu(), tB @ tA
    a, b, got = (v.detach().float().cpu() if torch.is_tensor(v) else None for v in answer)
    d_out, d_in = W.shape
    want_a, want_b = (r, d_in), (d_out, r)
    shape = lambda t: tuple(t.shape) if t is not None else None  # noqa: E731
    qr_hint = ("Với `Q, R = torch.linalg.qr(W.float())`: `B = Q[:, :r]` (r cột đầu của Q, "
               f"{d_out} × r) và `A = R[:r]` (r hàng đầu của R, r × {d_in}).")
    off_by_one = "`R[:r]` lấy các hàng 0..r−1, tức đúng r hàng; `Q[:, :r]` lấy đúng r cột. " + qr_hint
    n_rows = a.shape[0] if a is not None and a.ndim == 2 else None
    n_cols = b.shape[-1] if b is not None and b.ndim == 2 else None

    def shift(value, problem, hint):
        return Mistake(lambda _: _close(got, value), problem, hint, example=part_replaced(2, lambda _: value.clone()))

    return Table(
        guard=[
            Mistake(lambda _: not_tensor is not None, f"`{not_tensor}` phải là một tensor, bạn đưa "
                    f"{type(dict(zip(names, answer)).get(not_tensor)).__name__}.",
                    "Tính `Q, R = torch.linalg.qr(W.float())`, rồi cắt lát (slicing) Q và R.",
                    example=part_replaced(0, lambda ref: ref[0].tolist())),
            Mistake(lambda _: shifted is weight or shifted.device == weight.device and shifted.data_ptr() == weight.data_ptr(),
                    "`W_dich` dùng chung bộ nhớ với trọng số của lớp: bạn đã dịch W *tại chỗ* (phép `-=` trên "
                    "chính `lop.weight`), nên mô hình gốc cũng bị sửa.",
                    "Chạy lại ô chuẩn bị, rồi làm trên bản sao `W` (đã `.clone()`): `W_dich = W - s * B @ A` "
                    "tạo một tensor mới.", example=part_replaced(2, lambda _: weight)),
        ],
        right=lambda _: _close(a, tA) and _close(b, tB) and _close(got, tW),
        ok=f"A = R[:r] ({r} × {d_in}), B = Q[:, :r] ({d_out} × {r}), W' = W − {scaling:g}·B·A: "
           "khớp đúng phép khởi tạo OLoRA của peft.",
        slips=[
            # --- A and B
            Mistake(lambda _: _close(a, tB) and _close(b, tA), "A và B bị đổi chỗ: `A` của bạn là Q[:, :r], `B` là R[:r].",
                    "ΔW = B·A với B (d_out × r) lấy từ Q và A (r × d_in) lấy từ R. " + qr_hint,
                    example=lambda ref: (ref[1], ref[0], ref[2])),
            Mistake(lambda _: _close(a, tA.T), f"`A` bị chuyển vị: kích thước {shape(a)}, cần {want_a}.", qr_hint,
                    example=part_replaced(0, lambda ref: ref[0].T)),
            Mistake(lambda _: _close(b, tB.T), f"`B` bị chuyển vị: kích thước {shape(b)}, cần {want_b}.", qr_hint,
                    example=part_replaced(1, lambda ref: ref[1].T)),
            Mistake(lambda _: shape(a) == tuple(R.shape), f"bạn giữ nguyên cả ma trận (A = R, kích thước {tuple(R.shape)}); "
                    f"OLoRA chỉ giữ r = {r} thành phần đầu.", qr_hint, example=part_replaced(0, lambda _: R)),
            Mistake(lambda _: shape(b) == tuple(Q.shape), f"bạn giữ nguyên cả ma trận (B = Q, kích thước {tuple(Q.shape)}); "
                    f"OLoRA chỉ giữ r = {r} thành phần đầu.", qr_hint, example=part_replaced(1, lambda _: Q)),
            Mistake(lambda _: n_rows in (r - 1, r + 1) and a.shape[1] == d_in,
                    f"`A` có {n_rows} hàng, cần đúng r = {r} hàng (lệch một).", off_by_one,
                    example=part_replaced(0, lambda _: R[: r + 1])),
            Mistake(lambda _: n_cols in (r - 1, r + 1) and b.shape[0] == d_out,
                    f"`B` có {n_cols} cột, cần đúng r = {r} cột (lệch một).", off_by_one,
                    example=part_replaced(1, lambda _: Q[:, : r - 1])),
            Mistake(lambda _: _close(b, Q[:r]) or _close(a, R[:, :r]), "bạn lấy nhầm chiều: hàng của Q hoặc cột của R.",
                    "B lấy r cột đầu của Q (`Q[:, :r]`), A lấy r hàng đầu của R (`R[:r]`). " + qr_hint,
                    example=part_replaced(1, lambda _: Q[:r])),
            Mistake(lambda _: shape(a) != want_a or shape(b) != want_b,
                    f"kích thước A {shape(a)}, B {shape(b)}; cần A {want_a}, B {want_b}.", qr_hint,
                    example=part_replaced(0, lambda ref: ref[0][:, :-1])),
            Mistake(lambda _: not (_close(a, tA) and _close(b, tB)) and _close(b @ a, BA),
                    "tích B·A đúng nhưng dấu của từng cột/hàng khác của peft (một phân rã QR khác).",
                    "Dùng đúng `torch.linalg.qr` trên W ở float32, như peft (`LoraLayer.olora_init`).",
                    example=lambda ref: (-ref[0], -ref[1], ref[2])),
            Mistake(lambda _: not (_close(a, tA) and _close(b, tB)), "A, B đúng kích thước nhưng sai giá trị.",
                    "Phân rã chính trọng số W của lớp (ở float32), không phải một ma trận khác. " + qr_hint,
                    example=part_replaced(0, lambda ref: ref[0] + 1)),
            # --- the shifted weight
            Mistake(lambda _: shape(got) != tuple(W.shape), f"`W_dich` có kích thước {shape(got)}, cần {tuple(W.shape)} như W.",
                    "W' = W − s·(B @ A), với s = lora_alpha / r.", example=part_replaced(2, lambda ref: ref[2][:-1])),
            shift(W, "`W_dich` bằng W: bạn chưa dịch trọng số.",
                  "OLoRA trừ khỏi W đúng phần mà nhánh bộ điều hợp cộng vào: W' = W − s·B·A."),
            shift(W + scaling * BA, "dịch sai dấu: bạn cộng s·B·A vào W.",
                  "Đầu ra ở bước 0 phải không đổi: W'x + s·BAx = Wx, nên W' = W − s·B·A."),
            shift(W - BA, f"bạn quên hệ số tỉ lệ s = lora_alpha / r = {scaling:g} (đã dùng s = 1).",
                  "Nhánh bộ điều hợp cộng s·B·A, nên phần trừ khỏi W cũng là s·B·A."),
            shift(W - BA / scaling, "bạn dùng r / lora_alpha thay cho lora_alpha / r.", f"s = lora_alpha / r = {scaling:g}."),
        ],
        otherwise=("`W_dich` đúng kích thước nhưng sai giá trị.", "W' = W − (lora_alpha / r) · (B @ A), tính ở float32."),
    )


@check
def check_shifted_layer_count(answer, peft_model, original, r: int | None = None, target_modules=None) -> Table | CheckResult:
    """``answer`` is the number of base layers whose weight OLoRA shifted in ``peft_model``.

    Recomputed with :func:`lora_helpers.olora.base_weight_changes` against ``original``, a separately loaded copy of
    the base model.
    """
    from ..olora import base_weight_changes

    # The learner's two models come first: no answer can show these mistakes, so they are not rows of the table.
    if peft_model is None or original is None:
        return _todo()
    if not _is_peft_model(peft_model):
        return _wrong(f"`mo_hinh_olora` là `{type(peft_model).__name__}`, chưa có bộ điều hợp.",
                      "Tạo nó bằng `get_peft_model(LESSON.load_base(), LoraConfig(..., init_lora_weights=\"olora\"))`.")
    config = _adapter_config(peft_model)
    if not _is_olora(config):
        return _wrong(f"`mo_hinh_olora` có `init_lora_weights={config.init_lora_weights!r}`: đó là LoRA thường "
                      "(A ngẫu nhiên, B = 0), nó không dịch lớp nào nên chẳng có gì để đếm.",
                      "Thêm `init_lora_weights=\"olora\"` vào LoraConfig.")
    if r is not None and config.r != r:
        return _wrong(f"bộ điều hợp có r={config.r}, đề bài yêu cầu r={r}.", "Dùng đúng LoraConfig của đề bài.")
    if target_modules is not None and _target_set(config.target_modules) != _target_set(target_modules):
        got, want = (t if isinstance(t, str) else sorted(t) for t in (config.target_modules, target_modules))
        return _wrong(f"bộ điều hợp gắn vào {got}, đề bài yêu cầu {want}.", "Dùng đúng `target_modules` của đề bài.")
    if any(True for _ in _lora_layers(original)) or _is_peft_model(original):
        return _wrong("`mo_hinh_goc` không còn là mô hình gốc: nó đã bị bọc bộ điều hợp. `get_peft_model` sửa tại chỗ "
                      "mô hình bạn truyền vào (gắn lớp LoRA và, với OLoRA, dịch W ngay trong đối tượng đó), nên so với "
                      "nó thì mọi lớp đều \"không đổi\".",
                      "Chạy lại ô chuẩn bị để có `mo_hinh_goc` nguyên vẹn, rồi truyền vào get_peft_model một mô hình "
                      "mới: `get_peft_model(LESSON.load_base(), ...)`.")
    changes = base_weight_changes(original, peft_model)
    truth, n_layers = changes["n_changed"], changes["n_layers"]
    per_type: dict[str, int] = {}
    for name, _ in _lora_layers(peft_model):
        per_type[name.split(".")[-1]] = per_type.get(name.split(".")[-1], 0) + 1
    n_linear = len(linear_layers(original))
    value = _as_int(answer)

    def slip(wrong_value, problem, hint):
        return Mistake.value(wrong_value, f"{value} lớp: {problem}", hint, truth=truth, same=lambda a, b: _as_int(a) == b)

    return Table(
        guard=[Mistake(lambda a: value is None, f"`so_lop_bi_dich` phải là một số nguyên (số lớp), bạn đưa {answer!r}.",
                       "Dùng một biến đếm: bắt đầu từ 0 và `+= 1` mỗi khi trọng số cơ sở của một lớp khác bản gốc.",
                       example=str)],
        right=lambda _: value == truth,
        ok=f"{truth}/{n_layers} lớp được gắn bộ điều hợp có trọng số cơ sở bị dịch; "
           "các lớp không gắn bộ điều hợp giữ nguyên.",
        slips=[
            slip(0, "bạn đang so trọng số đã bị dịch với chính nó (hai biến trỏ tới cùng một mô hình, hoặc cả hai "
                 "trọng số đều lấy từ `mo_hinh_olora`).",
                 "So `lop.base_layer.weight` của từng lớp LoRA trong `mo_hinh_olora` với `weight` của lớp cùng tên "
                 "trong `mo_hinh_goc` (nạp riêng, chưa bao giờ đưa vào get_peft_model)."),
            *([Mistake(lambda _: value in per_type.values(),
                       f"{value} lớp: bạn chỉ đếm một loại lớp, trong khi bộ điều hợp gắn vào {sorted(per_type)}.",
                       "Duyệt mọi module có `lora_A` (cả q_proj lẫn v_proj của mọi khối).",
                       example=lambda _: min(per_type.values()))] if len(per_type) > 1 else []),
            slip(n_linear, "đó là mọi lớp tuyến tính của mô hình; chỉ những lớp được gắn bộ điều hợp mới bị dịch.",
                 "Chỉ xét các module có `lora_A` (các lớp trong `target_modules`)."),
            slip(2 * truth, "bạn đếm mỗi lớp hai lần (ví dụ đếm cả lora_A và lora_B, hoặc hai lần duyệt).",
                 "Đếm theo lớp: một lần cho mỗi module có `lora_A`."),
        ],
        otherwise=(f"{value} lớp chưa đúng.",
                   "Với mỗi module có `lora_A` trong `mo_hinh_olora`, so `base_layer.weight` với `weight` của lớp cùng tên "
                   "trong `mo_hinh_goc` (`torch.equal`), đếm những lớp khác nhau."),
    )


def _converted_delta_is_zero(A, B) -> bool:
    """A converted adapter ``A' = [A; A0]``, ``B' = [B, -B0]`` whose ΔW = B·A − B0·A0 vanishes (A0 = A, B0 = B)."""
    half = A.shape[0] // 2
    A, B = A.detach().float().cpu(), B.detach().float().cpu()
    trained = B[:, :half] @ A[:half]
    delta = trained + B[:, half:] @ A[half:]
    return delta.abs().max().item() <= 1e-5 * max(trained.abs().max().item(), 1e-12)


def _lora_weight_pairs(state: dict):
    """(name, A, B) for every LoRA layer of an adapter state dict (as saved in adapter_model.safetensors)."""
    for key in sorted(state):
        if ".lora_A." in key:
            other = key.replace(".lora_A.", ".lora_B.")
            if other in state:
                yield key.split(".lora_A.")[0], state[key], state[other]


def _saved_copy(directory, config=None, weights=None) -> Path:
    """A copy of a saved adapter, in a new temporary folder, with entries of its config changed and its weights
    passed through ``weights(state)`` (None: the weights file removed): the conversion slips' example answers."""
    import shutil

    from safetensors.torch import load_file, save_file

    out = scratch_dir() / Path(directory).name
    shutil.copytree(directory, out)
    file = out / "adapter_config.json"
    file.write_text(json.dumps({**json.loads(file.read_text(encoding="utf-8")), **(config or {})}), encoding="utf-8")
    if weights is not None:
        file = out / "adapter_model.safetensors"
        state = weights(load_file(str(file)))
        file.unlink()
        if state is not None:
            save_file(state, str(file))
    return out


@check
def check_olora_conversion(converted_dir, r: int, lora_alpha, target_modules=None) -> Table | CheckResult:
    """``converted_dir`` holds an OLoRA adapter converted to ordinary LoRA, trained after its initialisation was saved.

    peft's ``save_pretrained(dir, path_initial_model_for_weight_conversion=init_dir)`` writes ``r = 2r``,
    ``lora_alpha = 2·alpha`` (same scaling) and ``init_lora_weights: true``, with ``A' = [A; A0]`` and
    ``B' = [B, -B0]``. A directory without an adapter is "not done yet" (it is written by the learner's cell).
    """
    import torch
    from safetensors.torch import load_file

    from ..adapters import display_path

    path = Path(converted_dir)
    config_file = path / "adapter_config.json"
    if not config_file.is_file():  # not a wrong answer: the cell that saves it has not run
        return _todo(f"chưa có bộ điều hợp nào trong `{display_path(path)}` (bản chuyển đổi chưa được lưu)")
    cfg = json.loads(config_file.read_text(encoding="utf-8"))
    got_r, got_alpha, init = cfg.get("r"), cfg.get("lora_alpha"), cfg.get("init_lora_weights")
    weights = path / "adapter_model.safetensors"
    pairs = list(_lora_weight_pairs(load_file(str(weights)))) if weights.is_file() else []
    bad_shape = next(((A, B) for _, A, B in pairs if A.shape[0] != 2 * r or B.shape[1] != 2 * r), None)
    n_zero = sum(_converted_delta_is_zero(A, B) for _, A, B in pairs) if bad_shape is None else 0
    save_hint = ("Lưu bằng `mo_hinh_huan_luyen.save_pretrained(str(CONVERTED_DIR), "
                 "path_initial_model_for_weight_conversion=str(INIT_DIR))`, với INIT_DIR là bản lưu trước khi huấn luyện.")

    def half(state):  # rank r kept: the halves [A] and [B] only
        return {k: v[:r] if ".lora_A." in k else v[:, :r].contiguous() if ".lora_B." in k else v for k, v in state.items()}

    def untrained(state):  # [A₀; A₀] and [B₀, −B₀]: the initialisation saved after training
        return {k: torch.cat([v[:r]] * 2) if ".lora_A." in k else torch.cat([v[:, :r], -v[:, :r]], dim=1)
                if ".lora_B." in k else v for k, v in state.items()}

    rows = [
        Mistake(lambda _: str(init).lower() == "olora",
                f"`adapter_config.json` vẫn ghi `init_lora_weights: \"olora\"` và r = {got_r}: đây là bộ điều hợp "
                "lưu thường, chưa chuyển đổi. Nạp nó lên mô hình cơ sở, peft sẽ tính lại QR và dịch trọng số cơ sở lần nữa.",
                save_hint, example=lambda d: _saved_copy(d, {"init_lora_weights": "olora", "r": r})),
        Mistake(lambda _: got_r == r, f"r = {got_r}: hạng chưa được nhân đôi, nên đây không phải bản chuyển đổi (bản chuyển "
                f"đổi ghép [A; A₀] và [B, −B₀], hạng 2r = {2 * r}).", save_hint, example=lambda d: _saved_copy(d, {"r": r})),
        Mistake(lambda _: got_r != 2 * r, f"r = {got_r}, bản chuyển đổi của một bộ điều hợp r = {r} phải có r = {2 * r}.",
                f"Tạo bộ điều hợp OLoRA với r = {r} như đề bài, rồi chuyển đổi khi lưu.",
                example=lambda d: _saved_copy(d, {"r": 2 * r + 2})),
        Mistake(lambda _: got_alpha != 2 * lora_alpha,
                f"lora_alpha = {got_alpha}, cần {2 * lora_alpha}: peft nhân đôi cả alpha để giữ nguyên alpha/r.",
                f"Tạo bộ điều hợp với lora_alpha = {lora_alpha} như đề bài; đừng sửa adapter_config.json bằng tay.",
                example=lambda d: _saved_copy(d, {"lora_alpha": lora_alpha})),
        Mistake(lambda _: init is not True, f"`init_lora_weights` = {init!r}, bản chuyển đổi phải ghi `true` (nạp như "
                "LoRA thường).", save_hint, example=lambda d: _saved_copy(d, {"init_lora_weights": "gaussian"})),
        *([Mistake(lambda _: _target_set(cfg.get("target_modules")) != _target_set(target_modules),
                   f"bộ điều hợp gắn vào {cfg.get('target_modules')}, đề bài yêu cầu {sorted(_target_set(target_modules))}.",
                   "Dùng đúng `target_modules` của đề bài.", example=lambda d: _saved_copy(d, {"target_modules": ["x"]}))]
          if target_modules is not None else []),
        Mistake(lambda _: not weights.is_file(), f"`{display_path(path)}` không có `adapter_model.safetensors`.", save_hint,
                example=lambda d: _saved_copy(d, weights=lambda state: None)),
        Mistake(lambda _: bad_shape is not None, f"ma trận A có {bad_shape[0].shape[0] if bad_shape else '?'} hàng, B có "
                f"{bad_shape[1].shape[1] if bad_shape else '?'} cột; bản chuyển đổi cần {2 * r}.", save_hint,
                example=lambda d: _saved_copy(d, weights=half)),
        Mistake(lambda _: not pairs, "tệp trọng số không có ma trận lora_A/lora_B nào.", save_hint,
                example=lambda d: _saved_copy(d, weights=lambda state: {"khac": next(iter(state.values()))})),
        Mistake(lambda _: n_zero == len(pairs),
                f"ở cả {len(pairs)} lớp, ΔW của bản chuyển đổi bằng 0: trong [A; A₀] và [B, −B₀] ta có A₀ = A, B₀ = B nên "
                "hai nửa triệt tiêu nhau. Tức là bản khởi tạo INIT_DIR giống hệt bộ điều hợp đã huấn luyện: nó được lưu sau "
                "khi huấn luyện (hoặc bạn chưa huấn luyện), nên bản chuyển đổi không mang gì đã học.",
                "Lưu INIT_DIR ngay sau `get_peft_model`, trước khi gọi `huan_luyen(...)`; rồi huấn luyện, "
                "rồi mới lưu bản chuyển đổi.", example=lambda d: _saved_copy(d, weights=untrained)),
    ]
    return Table(slips=rows, ok=f"Bản chuyển đổi là một bộ điều hợp LoRA thường: r = {2 * r} (= 2·{r}), lora_alpha = "
                 f"{2 * lora_alpha} (alpha/r giữ nguyên {lora_alpha / r:g}), init_lora_weights = true; ΔW khác 0 ở cả "
                 f"{len(pairs)} lớp.")


@check
def check_olora_parity(result, trained, converted, r: int | None = None, min_prompts: int = 4) -> Table | CheckResult:
    """``result`` is a parity check, at the fp32 tolerance, between a trained OLoRA model and its converted adapter.

    ``trained`` is the OLoRA ``PeftModel`` (shifted base, as trained), ``converted`` the converted adapter loaded on a
    fresh base model. The check also runs both models itself on a few fixed tokens, so a result computed on another
    pair disagrees with it (or reports a difference of exactly 0, which only two identical computations give).
    """
    import math

    import torch

    from ..parity import ParityResult, default_tolerance

    # The learner's two models come first: no parity result can show these mistakes, so they are not rows of the table.
    if trained is None or converted is None:
        return _todo()
    for name, model in (("mo_hinh_huan_luyen", trained), ("mo_hinh_chuyen_doi", converted)):
        if not _is_peft_model(model):
            return _wrong(f"`{name}` là `{type(model).__name__}`, không có bộ điều hợp.",
                          "So mô hình OLoRA đã huấn luyện với bản chuyển đổi nạp bằng `PeftModel.from_pretrained`.")
    t_cfg, c_cfg = _adapter_config(trained), _adapter_config(converted)
    load_hint = "Nạp bản chuyển đổi lên một mô hình cơ sở mới: `PeftModel.from_pretrained(LESSON.load_base(), str(CONVERTED_DIR))`."
    if not _is_olora(t_cfg):
        return _wrong(f"`mo_hinh_huan_luyen` có `init_lora_weights={t_cfg.init_lora_weights!r}`, không phải mô hình OLoRA "
                      "đã huấn luyện.", "Mô hình thứ nhất là mô hình OLoRA bạn đã huấn luyện (trọng số đã dịch).")
    if converted is trained or _is_olora(c_cfg) or (r is not None and c_cfg.r != 2 * r):
        return _wrong(f"`mo_hinh_chuyen_doi` có r = {c_cfg.r}, `init_lora_weights={c_cfg.init_lora_weights!r}`: đó không "
                      "phải bản chuyển đổi (hạng 2r, `True`) mà là bộ điều hợp OLoRA chưa chuyển đổi. Nó khớp mô hình đã "
                      "huấn luyện chỉ vì nó lại dịch trọng số cơ sở lúc nạp.", load_hint)
    trained_layers = dict(_lora_layers(trained))
    pairs = [(layer.get_base_layer().weight, trained_layers[name].get_base_layer().weight)
             for name, layer in _lora_layers(converted) if name in trained_layers]
    if pairs and all(torch.equal(a, b) for a, b in pairs):
        return _wrong("trọng số cơ sở dưới bản chuyển đổi là W' (đã bị OLoRA dịch), không phải W gốc: bạn nạp bản chuyển đổi "
                      "lên chính mô hình cơ sở đã đưa vào get_peft_model.", load_hint)
    own = _probe_logit_diff(trained, converted)   # vocabulary size from trained
    # random tokens, not course prompts: allow 10x the rounding tolerance (a real mismatch is orders larger)
    if not (math.isfinite(own) and own <= 10 * default_tolerance("float32")):
        if all(_converted_delta_is_zero(layer.lora_A[a].weight, layer.lora_B[a].weight)
               for _, layer in _lora_layers(converted) for a in layer.lora_A):
            return _wrong(f"hai mô hình không khớp (ô kiểm tra tự đo: logits lệch {own:.2g}) vì ΔW của bản chuyển đổi bằng 0: "
                          "bản khởi tạo INIT_DIR được lưu sau khi huấn luyện (hoặc chưa huấn luyện).",
                          "Lưu INIT_DIR ngay sau get_peft_model, trước khi huấn luyện.")
        return _wrong(f"hai mô hình không khớp (ô kiểm tra tự đo: logits lệch {own:.2g}).",
                      "Kiểm tra thứ tự: get_peft_model → save_pretrained(INIT_DIR) → huấn luyện → save_pretrained(CONVERTED_DIR, "
                      "path_initial_model_for_weight_conversion=INIT_DIR) → nạp lên mô hình cơ sở mới.")

    readable = isinstance(result, ParityResult)
    same_pair = "`check_parity(mo_hinh_huan_luyen, mo_hinh_chuyen_doi, tokenizer, dataset=TEST)`."
    return Table(
        guard=[_parity_guard(result, "kiem_tra_chuyen_doi")],
        ok=f"Bản chuyển đổi (r = {c_cfg.r}) trên mô hình cơ sở gốc khớp mô hình OLoRA đã huấn luyện; kết luận: "
           f"«{result.verdict() if readable else ''}».",
        slips=[
            *_fp32_parity_rows(result, min_prompts),
            Mistake(lambda p: not p.passed, f"kết quả của bạn báo «{result.verdict() if readable else ''}», trong khi ô kiểm "
                    "tra tự đo thấy hai mô hình khớp: `kiem_tra_chuyen_doi` đã so một cặp khác (ví dụ mô hình cơ sở với "
                    "bản chuyển đổi).", same_pair, example=lambda ref: dataclasses.replace(ref, passed=False)),
            Mistake(lambda p: p.max_abs_logit_diff == 0.0, "chênh lệch logits đúng bằng 0: chỉ hai phép tính giống hệt nhau "
                    "mới cho vậy, nên đó không phải cặp (OLoRA trong bộ nhớ, bản chuyển đổi), vốn tính W'x + s·B(Ax) và "
                    "Wx + s·B'(A'x) theo thứ tự khác nhau.", same_pair,
                    example=lambda ref: dataclasses.replace(ref, max_abs_logit_diff=0.0)),
        ],
    )


_CONVERTED, _PLAIN = "chuyen doi", "thuong"


@check
def check_olora_share_decision(answer, converted_dir, plain_dir, load_base, original) -> Table | CheckResult:
    """Decide and defend: share the trained OLoRA adapter converted (rank 2r) or saved plainly? Numbers recomputed.

    ``answer`` = ``{"lựa_chọn": "chuyển đổi" | "thường", "số_liệu": {"MB_chuyển_đổi": float, "MB_thường": float,
    "lớp_bị_sửa": int}}``: the two ``adapter_model.safetensors`` sizes (1 MB = 10⁶ bytes) and how many base
    layers loading the plain save on a fresh base model (``load_base()``) shifts, compared with ``original``.
    The check reads the files and loads the plain save itself. The team's rule: what is shared must not
    modify the user's base model, so "thường" contradicts any shifted layer.
    """
    import warnings

    from peft import PeftModel

    from ..olora import base_weight_changes

    choice, numbers = _decision(answer)
    plain = _plain(choice)
    # The learner's plain save comes first: no answer can show these mistakes, so they are not rows of the table.
    if plain_dir is None:
        return _todo("`thu_muc_thuong` vẫn là `None`")
    plain_path, converted_path = Path(plain_dir), Path(converted_dir)
    config = json.loads((plain_path / "adapter_config.json").read_text(encoding="utf-8"))
    if str(config.get("init_lora_weights")).lower() != "olora":
        return _wrong(f"`thu_muc_thuong` có init_lora_weights = {config.get('init_lora_weights')!r}: đó không phải bản "
                      "OLoRA lưu thường.",
                      "Lưu `mo_hinh_huan_luyen.save_pretrained(str(thu_muc_thuong))`, không có "
                      "`path_initial_model_for_weight_conversion`.")
    sizes = {"MB_chuyển_đổi": (converted_path / "adapter_model.safetensors").stat().st_size / 1e6,
             "MB_thường": (plain_path / "adapter_model.safetensors").stat().st_size / 1e6}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = PeftModel.from_pretrained(load_base(), str(plain_path))
    shifted = base_weight_changes(original, loaded)["n_changed"]
    del loaded

    def near(value, target) -> bool:
        return value is not None and abs(value - target) <= min(0.01, 0.02 * target)

    def size_rows(key, other):
        got = _number(_field(numbers, key))
        problem = f"`số_liệu['{key}']` = {_field(numbers, key)!r} không phải kích thước tệp trên đĩa."
        mib = sizes[key] * 1e6 / 2**20
        return [
            Mistake(lambda _: near(got, sizes[other]), problem, "Hai dung lượng bị đổi chỗ: bản chuyển đổi có hạng 2r nên "
                    "lớn gấp đôi.", example=lambda ref: _decided(ref, **{key: sizes[other]})),
            Mistake(lambda _: near(got, mib), problem, "Đó là MiB; đề bài dùng 1 MB = 10⁶ byte.",
                    example=lambda ref: _decided(ref, **{key: mib})),
            Mistake(lambda _: not near(got, sizes[key]), problem,
                    "Đọc kích thước tệp: `(thư_mục / \"adapter_model.safetensors\").stat().st_size / 1e6`.",
                    example=lambda ref: _decided(ref, **{key: sizes[key] + 1})),
        ]

    return Table(
        guard=[Mistake(lambda _: plain not in (_CONVERTED, _PLAIN), f"`lựa_chọn` = {choice!r}; chọn \"chuyển đổi\" hoặc "
                       "\"thường\".", "Viết đúng một trong hai.", example=lambda ref: _decided(ref, "cả hai"))],
        slips=[
            *size_rows("MB_chuyển_đổi", "MB_thường"),
            *size_rows("MB_thường", "MB_chuyển_đổi"),
            Mistake(lambda _: _as_int(_field(numbers, "lớp_bị_sửa")) != shifted,
                    f"`số_liệu['lớp_bị_sửa']` = {_field(numbers, 'lớp_bị_sửa')!r} không khớp số lớp mà bản lưu thường "
                    "dịch khi nạp lên một mô hình cơ sở mới.",
                    "Nạp `thu_muc_thuong` lên `LESSON.load_base()` bằng `PeftModel.from_pretrained`, rồi đếm bằng "
                    "`base_weight_changes(mo_hinh_goc, ...)['n_changed']`.",
                    example=lambda ref: _decided(ref, **{"lớp_bị_sửa": shifted + 1})),
            *([Mistake(lambda _: plain == _PLAIN, f"chính số liệu của bạn phản bác lựa chọn này: nạp bản thường sửa {shifted} "
                       "lớp của mô hình cơ sở người dùng (peft tính lại QR và dịch W).",
                       "Quy tắc là không sửa mô hình cơ sở của người dùng; cái giá của bản chuyển đổi là dung lượng.",
                       example=lambda ref: _decided(ref, "thường"))] if shifted > 0 else []),
        ],
        ok="Lựa chọn của bạn đứng vững với số liệu của bạn, đã đo lại từ các tệp và bằng một lần nạp thật.",
        measured=f"bạn chọn «{choice}»: bản chuyển đổi {sizes['MB_chuyển_đổi']:.2f} MB, bản thường "
                 f"{sizes['MB_thường']:.2f} MB, nạp bản thường sửa {shifted} lớp.",
    )
