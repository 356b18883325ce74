"""Checks of lesson 5 (``olora_finetuning``): OLoRA's QR initialisation, the shifted base layers, the conversion."""

from __future__ import annotations

import json
from pathlib import Path

from ..layers import linear_layers
from ._common import (
    CheckResult,
    _active,
    _as_int,
    _close,
    _decision,
    _field,
    _is_peft_model,
    _loosened_parity,
    _lora_layers,
    _never_raises,
    _number,
    _ok,
    _parity_result,
    _plain,
    _probe_logit_diff,
    _size_hint,
    _target_set,
    _todo,
    _wrong,
)


def _is_olora(config) -> bool:
    return str(getattr(config, "init_lora_weights", "")).lower() == "olora"


def _adapter_config(model):
    """The LoraConfig of the active (else first) adapter of a PeftModel."""
    active = _active(model)
    name = active[0] if active and active[0] in model.peft_config else next(iter(model.peft_config))
    return model.peft_config[name]


@_never_raises
def check_olora_init(A, B, shifted, weight, r: int, lora_alpha) -> CheckResult:
    """OLoRA's initialisation of one weight by hand: ``A = R[:r]``, ``B = Q[:, :r]``, ``W' = W - (alpha/r)·B·A``.

    ``weight`` is the layer's original weight (``d_out × d_in``, left untouched); the reference is
    :func:`lora_helpers.olora.olora_factors` (peft's own steps: QR in fp32). Rejects: A and B
    swapped, A or B transposed, the full Q or R kept, r+1 (or r-1) rows/columns, rows of Q or
    columns of R taken instead of columns of Q / rows of R, no shift (``W' = W``), the shift with
    the wrong sign, the scaling forgotten (s = 1) or inverted (r/alpha), and the layer's weight
    shifted in place.
    """
    import torch

    from ..olora import olora_factors

    named = (("A", A), ("B", B), ("W_dich", shifted))
    missing = [f"`{n}`" for n, v in named if v is None]
    if len(missing) == len(named):
        return _todo()
    if missing:
        return _todo(f"{', '.join(missing)} vẫn là `None`")
    for name, value in named:
        if not torch.is_tensor(value):
            return _wrong(f"`{name}` phải là một tensor, bạn đưa {type(value).__name__}.",
                          "Tính `Q, R = torch.linalg.qr(W.float())`, rồi cắt lát (slicing) Q và R.")
    if shifted is weight or (shifted.device == weight.device and shifted.data_ptr() == weight.data_ptr()):
        return _wrong("`W_dich` dùng chung bộ nhớ với trọng số của lớp: bạn đã dịch W *tại chỗ* (phép `-=` trên "
                      "chính `lop.weight`), nên mô hình gốc cũng bị sửa.",
                      "Chạy lại ô chuẩn bị, rồi làm trên bản sao `W` (đã `.clone()`): `W_dich = W - s * B @ A` "
                      "tạo một tensor mới.")
    scaling = lora_alpha / r
    truth = olora_factors(weight.detach(), r, scaling)      # QR on the weight's own device, as peft does
    for field in ("Q", "R", "A", "B", "shifted"):
        setattr(truth, field, getattr(truth, field).float().cpu())
    W = weight.detach().float().cpu()
    a, b = A.detach().float().cpu(), B.detach().float().cpu()
    d_out, d_in = W.shape
    want_a, want_b = (r, d_in), (d_out, r)
    qr_hint = ("Với `Q, R = torch.linalg.qr(W.float())`: `B = Q[:, :r]` (r cột đầu của Q, "
               f"{d_out} × r) và `A = R[:r]` (r hàng đầu của R, r × {d_in}).")

    # --- A and B
    if _close(a, truth.B) and _close(b, truth.A):
        return _wrong("A và B bị đổi chỗ: `A` của bạn là Q[:, :r], `B` là R[:r].",
                      "ΔW = B·A với B (d_out × r) lấy từ Q và A (r × d_in) lấy từ R. " + qr_hint)
    if _close(a, truth.A.T) or _close(b, truth.B.T):
        which = "A" if _close(a, truth.A.T) else "B"
        return _wrong(f"`{which}` bị chuyển vị: kích thước {tuple((a if which == 'A' else b).shape)}, cần "
                      f"{want_a if which == 'A' else want_b}.", qr_hint)
    if tuple(a.shape) == tuple(truth.R.shape) or tuple(b.shape) == tuple(truth.Q.shape):
        which = "A = R" if tuple(a.shape) == tuple(truth.R.shape) else "B = Q"
        return _wrong(f"bạn giữ nguyên cả ma trận ({which}, kích thước {tuple(truth.R.shape if which[0] == 'A' else truth.Q.shape)}); "
                      f"OLoRA chỉ giữ r = {r} thành phần đầu.", qr_hint)
    for name, got, rows in (("A", a, True), ("B", b, False)):
        n = got.shape[0] if rows else got.shape[-1]
        same_other = got.ndim == 2 and (got.shape[1] == d_in if rows else got.shape[0] == d_out)
        if same_other and n in (r - 1, r + 1):
            part = "hàng" if rows else "cột"
            return _wrong(f"`{name}` có {n} {part}, cần đúng r = {r} {part} (lệch một).",
                          "`R[:r]` lấy các hàng 0..r−1, tức đúng r hàng; `Q[:, :r]` lấy đúng r cột. " + qr_hint)
    if _close(b, truth.Q[:r]) or _close(a, truth.R[:, :r]):
        return _wrong("bạn lấy nhầm chiều: hàng của Q hoặc cột của R.",
                      "B lấy r cột đầu của Q (`Q[:, :r]`), A lấy r hàng đầu của R (`R[:r]`). " + qr_hint)
    if tuple(a.shape) != want_a or tuple(b.shape) != want_b:
        return _wrong(f"kích thước A {tuple(a.shape)}, B {tuple(b.shape)}; cần A {want_a}, B {want_b}.", qr_hint)
    if not (_close(a, truth.A) and _close(b, truth.B)):
        if _close(b @ a, truth.B @ truth.A):
            return _wrong("tích B·A đúng nhưng dấu của từng cột/hàng khác của peft (một phân rã QR khác).",
                          "Dùng đúng `torch.linalg.qr` trên W ở float32, như peft (`LoraLayer.olora_init`).")
        return _wrong("A, B đúng kích thước nhưng sai giá trị.",
                      "Phân rã chính trọng số W của lớp (ở float32), không phải một ma trận khác. " + qr_hint)

    # --- the shifted weight
    if tuple(shifted.shape) != tuple(W.shape):
        return _wrong(f"`W_dich` có kích thước {tuple(shifted.shape)}, cần {tuple(W.shape)} như W.",
                      "W' = W − s·(B @ A), với s = lora_alpha / r.")
    got = shifted.detach().float().cpu()
    BA = truth.B @ truth.A
    if _close(got, truth.shifted):
        return _ok(f"A = R[:r] ({r} × {d_in}), B = Q[:, :r] ({d_out} × {r}), W' = W − {scaling:g}·B·A: "
                   "khớp đúng phép khởi tạo OLoRA của peft.")
    slips = [
        (W, "`W_dich` bằng W: bạn chưa dịch trọng số.",
         "OLoRA trừ khỏi W đúng phần mà nhánh bộ điều hợp cộng vào: W' = W − s·B·A."),
        (W + scaling * BA, "dịch sai dấu: bạn cộng s·B·A vào W.",
         "Đầu ra ở bước 0 phải không đổi: W'x + s·BAx = Wx, nên W' = W − s·B·A."),
        (W - BA, f"bạn quên hệ số tỉ lệ s = lora_alpha / r = {scaling:g} (đã dùng s = 1).",
         "Nhánh bộ điều hợp cộng s·B·A, nên phần trừ khỏi W cũng là s·B·A."),
        (W - BA / scaling, "bạn dùng r / lora_alpha thay cho lora_alpha / r.",
         f"s = lora_alpha / r = {scaling:g}."),
    ]
    for value, problem, hint in slips:
        if _close(got, value):
            return _wrong(problem, hint)
    return _wrong("`W_dich` đúng kích thước nhưng sai giá trị.", "W' = W − (lora_alpha / r) · (B @ A), tính ở float32.")


@_never_raises
def check_shifted_layer_count(answer, peft_model, original, r: int | None = None, target_modules=None) -> CheckResult:
    """``answer`` is the number of base layers whose weight OLoRA shifted in ``peft_model``.

    Recomputed with :func:`lora_helpers.olora.base_weight_changes` against ``original``, a
    separately loaded copy of the base model. Rejects: a peft model that is not OLoRA (ordinary
    LoRA shifts nothing), another rank or other target modules than asked, an ``original`` that
    was itself wrapped by ``get_peft_model`` (modified in place: the comparison then gives 0),
    the answer 0, the count of one layer type only, the count of every linear layer
    (``all-linear``), a doubled count, and an answer that is not a whole number.
    """

    from ..olora import base_weight_changes

    if answer is None or peft_model is None or original is None:
        return _todo()
    if not _is_peft_model(peft_model):
        return _wrong(f"`mo_hinh_olora` là `{type(peft_model).__name__}`, chưa có bộ điều hợp.",
                      "Tạo nó bằng `get_peft_model(load_base(), LoraConfig(..., init_lora_weights=\"olora\"))`.")
    config = _adapter_config(peft_model)
    if not _is_olora(config):
        return _wrong(f"`mo_hinh_olora` có `init_lora_weights={config.init_lora_weights!r}`: đó là LoRA thường "
                      "(A ngẫu nhiên, B = 0), nó không dịch lớp nào nên chẳng có gì để đếm.",
                      "Thêm `init_lora_weights=\"olora\"` vào LoraConfig.")
    if r is not None and config.r != r:
        return _wrong(f"bộ điều hợp có r={config.r}, đề bài yêu cầu r={r}.", "Dùng đúng LoraConfig của đề bài.")
    if target_modules is not None and _target_set(config.target_modules) != _target_set(target_modules):
        got = config.target_modules if isinstance(config.target_modules, str) else sorted(config.target_modules)
        want = target_modules if isinstance(target_modules, str) else sorted(target_modules)
        return _wrong(f"bộ điều hợp gắn vào {got}, đề bài yêu cầu {want}.",
                      "Dùng đúng `target_modules` của đề bài.")
    if any(True for _ in _lora_layers(original)) or _is_peft_model(original):
        return _wrong("`mo_hinh_goc` không còn là mô hình gốc: nó đã bị bọc bộ điều hợp. `get_peft_model` sửa tại chỗ "
                      "mô hình bạn truyền vào (gắn lớp LoRA và, với OLoRA, dịch W ngay trong đối tượng đó), nên so với "
                      "nó thì mọi lớp đều \"không đổi\".",
                      "Chạy lại ô chuẩn bị để có `mo_hinh_goc` nguyên vẹn, rồi truyền vào get_peft_model một mô hình "
                      "mới: `get_peft_model(load_base(), ...)`.")
    value = _as_int(answer)
    if value is None:
        return _wrong(f"`so_lop_bi_dich` phải là một số nguyên (số lớp), bạn đưa {answer!r}.",
                      "Dùng một biến đếm: bắt đầu từ 0 và `+= 1` mỗi khi trọng số cơ sở của một lớp khác bản gốc.")
    changes = base_weight_changes(original, peft_model)
    truth, n_layers = changes["n_changed"], changes["n_layers"]
    if value == truth:
        return _ok(f"{truth}/{n_layers} lớp được gắn bộ điều hợp có trọng số cơ sở bị dịch; "
                   "các lớp không gắn bộ điều hợp giữ nguyên.")
    per_type: dict[str, int] = {}
    for name, _ in _lora_layers(peft_model):
        per_type[name.split(".")[-1]] = per_type.get(name.split(".")[-1], 0) + 1
    n_linear = len(linear_layers(original))
    if value == 0:
        return _wrong("0 lớp: bạn đang so trọng số đã bị dịch với chính nó (hai biến trỏ tới cùng một mô hình, hoặc cả hai "
                      "trọng số đều lấy từ `mo_hinh_olora`).",
                      "So `lop.base_layer.weight` của từng lớp LoRA trong `mo_hinh_olora` với `weight` của lớp cùng tên "
                      "trong `mo_hinh_goc` (nạp riêng, chưa bao giờ đưa vào get_peft_model).")
    if value in per_type.values() and len(per_type) > 1:
        return _wrong(f"{value} lớp: bạn chỉ đếm một loại lớp, trong khi bộ điều hợp gắn vào {sorted(per_type)}.",
                      "Duyệt mọi module có `lora_A` (cả q_proj lẫn v_proj của mọi khối).")
    if value == n_linear and n_linear != truth:
        return _wrong(f"{value} lớp: đó là mọi lớp tuyến tính của mô hình; chỉ những lớp được gắn bộ điều hợp mới bị dịch.",
                      "Chỉ xét các module có `lora_A` (các lớp trong `target_modules`).")
    if value == 2 * truth:
        return _wrong(f"{value} lớp: bạn đếm mỗi lớp hai lần (ví dụ đếm cả lora_A và lora_B, hoặc hai lần duyệt).",
                      "Đếm theo lớp: một lần cho mỗi module có `lora_A`.")
    return _wrong(f"{value} lớp chưa đúng.",
                  "Với mỗi module có `lora_A` trong `mo_hinh_olora`, so `base_layer.weight` với `weight` của lớp cùng tên "
                  "trong `mo_hinh_goc` (`torch.equal`), đếm những lớp khác nhau.")


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


@_never_raises
def check_olora_conversion(converted_dir, r: int, lora_alpha, target_modules=None) -> CheckResult:
    """``converted_dir`` holds an OLoRA adapter converted to ordinary LoRA, trained after its initialisation was saved.

    peft's ``save_pretrained(dir, path_initial_model_for_weight_conversion=init_dir)`` writes
    ``r = 2r``, ``lora_alpha = 2·alpha`` (same scaling) and ``init_lora_weights: true``, with
    ``A' = [A; A0]`` and ``B' = [B, -B0]``. Rejects: a directory not written yet (reported as not
    done), an adapter saved without conversion (``r`` and ``init_lora_weights: "olora"``), a rank
    or alpha not doubled, other target modules than asked, and a conversion whose initial adapter
    was saved after training (or never trained): then ``A0 = A``, ``B0 = B`` and ΔW = 0 in every layer.
    """
    from pathlib import Path

    from safetensors.torch import load_file

    from ..adapters import display_path

    if converted_dir is None:
        return _todo()
    path = Path(converted_dir)
    config_file = path / "adapter_config.json"
    if not config_file.is_file():
        return _todo(f"chưa có bộ điều hợp nào trong `{display_path(path)}` (bản chuyển đổi chưa được lưu)")
    cfg = json.loads(config_file.read_text(encoding="utf-8"))
    got_r, got_alpha, init = cfg.get("r"), cfg.get("lora_alpha"), cfg.get("init_lora_weights")
    save_hint = ("Lưu bằng `mo_hinh_huan_luyen.save_pretrained(str(CONVERTED_DIR), "
                 "path_initial_model_for_weight_conversion=str(INIT_DIR))`, với INIT_DIR là bản lưu trước khi huấn luyện.")
    if str(init).lower() == "olora":
        return _wrong(f"`adapter_config.json` vẫn ghi `init_lora_weights: \"olora\"` và r = {got_r}: đây là bộ điều hợp "
                      "lưu thường, chưa chuyển đổi. Nạp nó lên mô hình cơ sở, peft sẽ tính lại QR và dịch trọng số cơ sở lần nữa.",
                      save_hint)
    if got_r == r:
        return _wrong(f"r = {got_r}: hạng chưa được nhân đôi, nên đây không phải bản chuyển đổi (bản chuyển đổi ghép "
                      f"[A; A₀] và [B, −B₀], hạng 2r = {2 * r}).", save_hint)
    if got_r != 2 * r:
        return _wrong(f"r = {got_r}, bản chuyển đổi của một bộ điều hợp r = {r} phải có r = {2 * r}.",
                      f"Tạo bộ điều hợp OLoRA với r = {r} như đề bài, rồi chuyển đổi khi lưu.")
    if got_alpha != 2 * lora_alpha:
        return _wrong(f"lora_alpha = {got_alpha}, cần {2 * lora_alpha}: peft nhân đôi cả alpha để giữ nguyên alpha/r.",
                      f"Tạo bộ điều hợp với lora_alpha = {lora_alpha} như đề bài; đừng sửa adapter_config.json bằng tay.")
    if init is not True:
        return _wrong(f"`init_lora_weights` = {init!r}, bản chuyển đổi phải ghi `true` (nạp như LoRA thường).", save_hint)
    if target_modules is not None and _target_set(cfg.get("target_modules")) != _target_set(target_modules):
        return _wrong(f"bộ điều hợp gắn vào {cfg.get('target_modules')}, đề bài yêu cầu {sorted(_target_set(target_modules))}.",
                      "Dùng đúng `target_modules` của đề bài.")
    weights = path / "adapter_model.safetensors"
    if not weights.is_file():
        return _wrong(f"`{display_path(path)}` không có `adapter_model.safetensors`.", save_hint)
    n_layers = n_zero = 0
    for _, A, B in _lora_weight_pairs(load_file(str(weights))):
        if A.shape[0] != 2 * r or B.shape[1] != 2 * r:
            return _wrong(f"ma trận A có {A.shape[0]} hàng, B có {B.shape[1]} cột; bản chuyển đổi cần {2 * r}.", save_hint)
        n_layers += 1
        n_zero += _converted_delta_is_zero(A, B)
    if n_layers == 0:
        return _wrong("tệp trọng số không có ma trận lora_A/lora_B nào.", save_hint)
    if n_zero == n_layers:
        return _wrong(f"ở cả {n_layers} lớp, ΔW của bản chuyển đổi bằng 0: trong [A; A₀] và [B, −B₀] ta có A₀ = A, "
                      "B₀ = B nên hai nửa triệt tiêu nhau. Tức là bản khởi tạo INIT_DIR giống hệt bộ điều hợp đã huấn luyện: nó được lưu sau khi huấn "
                      "luyện (hoặc bạn chưa huấn luyện), nên bản chuyển đổi không mang gì đã học.",
                      "Lưu INIT_DIR ngay sau `get_peft_model`, trước khi gọi `huan_luyen(...)`; rồi huấn luyện, "
                      "rồi mới lưu bản chuyển đổi.")
    return _ok(f"Bản chuyển đổi là một bộ điều hợp LoRA thường: r = {got_r} (= 2·{r}), lora_alpha = {got_alpha} "
               f"(alpha/r giữ nguyên {got_alpha / got_r:g}), init_lora_weights = true; ΔW khác 0 ở cả {n_layers} lớp.")


@_never_raises
def check_olora_parity(result, trained, converted, r: int | None = None, min_prompts: int = 4) -> CheckResult:
    """``result`` is a parity check, at the fp32 tolerance, between a trained OLoRA model and its converted adapter.

    ``trained`` is the OLoRA ``PeftModel`` (shifted base, as trained), ``converted`` the converted
    adapter loaded on a fresh base model. The check also runs both models itself on a few fixed
    tokens. Rejects: a verdict string instead of the result, a ``converted`` that is not the
    converted adapter (the unconverted one reloaded, or the trained model itself), a ``trained``
    that is not OLoRA, the converted adapter loaded onto the shifted base, a loosened tolerance, too
    few prompts, two models that do not match (e.g. the initialisation saved after training: ΔW = 0),
    and a result computed on another pair than these two models (it disagrees with the check's own
    measurement, or reports a difference of exactly 0, which only two identical computations give).
    """
    import math

    import torch

    from ..parity import default_tolerance

    if result is None or trained is None or converted is None:
        return _todo()
    bad = _parity_result(result, "kiem_tra_chuyen_doi")
    if bad is not None:
        return bad
    for name, model in (("mo_hinh_huan_luyen", trained), ("mo_hinh_chuyen_doi", converted)):
        if not _is_peft_model(model):
            return _wrong(f"`{name}` là `{type(model).__name__}`, không có bộ điều hợp.",
                          "So mô hình OLoRA đã huấn luyện với bản chuyển đổi nạp bằng `PeftModel.from_pretrained`.")
    t_cfg, c_cfg = _adapter_config(trained), _adapter_config(converted)
    load_hint = "Nạp bản chuyển đổi lên một mô hình cơ sở mới: `PeftModel.from_pretrained(load_base(), str(CONVERTED_DIR))`."
    if not _is_olora(t_cfg):
        return _wrong(f"`mo_hinh_huan_luyen` có `init_lora_weights={t_cfg.init_lora_weights!r}`, không phải mô hình OLoRA "
                      "đã huấn luyện.", "Mô hình thứ nhất là mô hình OLoRA bạn đã huấn luyện (trọng số đã dịch).")
    if converted is trained or _is_olora(c_cfg) or (r is not None and c_cfg.r != 2 * r):
        return _wrong(f"`mo_hinh_chuyen_doi` có r = {c_cfg.r}, `init_lora_weights={c_cfg.init_lora_weights!r}`: đó không "
                      "phải bản chuyển đổi (hạng 2r, `True`) mà là bộ điều hợp OLoRA chưa chuyển đổi. Nó khớp mô hình đã "
                      "huấn luyện chỉ vì nó lại dịch trọng số cơ sở lúc nạp.", load_hint)
    bad = _loosened_parity(result, min_prompts)
    if bad is not None:
        return bad
    trained_layers = dict(_lora_layers(trained))
    pairs = [(layer.get_base_layer().weight, trained_layers[name].get_base_layer().weight)
             for name, layer in _lora_layers(converted) if name in trained_layers]
    if pairs and all(torch.equal(a, b) for a, b in pairs):
        return _wrong("trọng số cơ sở dưới bản chuyển đổi là W' (đã bị OLoRA dịch), không phải W gốc: bạn nạp bản chuyển đổi "
                      "lên chính mô hình cơ sở đã đưa vào get_peft_model.", load_hint)

    own = _probe_logit_diff(trained, converted)   # vocabulary size from trained
    # random tokens, not course prompts: allow 10x the rounding tolerance (a real mismatch is orders larger)
    if not (math.isfinite(own) and own <= 10 * default_tolerance("float32")):
        delta_zero = all(_converted_delta_is_zero(layer.lora_A[a].weight, layer.lora_B[a].weight)
                         for _, layer in _lora_layers(converted) for a in layer.lora_A)
        if delta_zero:
            return _wrong(f"hai mô hình không khớp (ô kiểm tra tự đo: logits lệch {own:.2g}) vì ΔW của bản chuyển đổi bằng 0: "
                          "bản khởi tạo INIT_DIR được lưu sau khi huấn luyện (hoặc chưa huấn luyện).",
                          "Lưu INIT_DIR ngay sau get_peft_model, trước khi huấn luyện.")
        return _wrong(f"hai mô hình không khớp (ô kiểm tra tự đo: logits lệch {own:.2g}).",
                      "Kiểm tra thứ tự: get_peft_model → save_pretrained(INIT_DIR) → huấn luyện → save_pretrained(CONVERTED_DIR, "
                      "path_initial_model_for_weight_conversion=INIT_DIR) → nạp lên mô hình cơ sở mới.")
    if not result.passed:
        return _wrong(f"kết quả của bạn báo «{result.verdict()}», trong khi ô kiểm tra tự đo thấy hai mô hình khớp: "
                      "`kiem_tra_chuyen_doi` đã so một cặp khác (ví dụ mô hình cơ sở với bản chuyển đổi).",
                      "`check_parity(mo_hinh_huan_luyen, mo_hinh_chuyen_doi, tokenizer, dataset=TEST)`.")
    if result.max_abs_logit_diff == 0.0:
        return _wrong("chênh lệch logits đúng bằng 0: chỉ hai phép tính giống hệt nhau mới cho vậy, nên đó không phải cặp "
                      "(OLoRA trong bộ nhớ, bản chuyển đổi), vốn tính W'x + s·B(Ax) và Wx + s·B'(A'x) theo thứ tự khác nhau.",
                      "`check_parity(mo_hinh_huan_luyen, mo_hinh_chuyen_doi, tokenizer, dataset=TEST)`.")
    return _ok(f"Bản chuyển đổi (r = {c_cfg.r}) trên mô hình cơ sở gốc khớp mô hình OLoRA đã huấn luyện; kết luận: "
               f"«{result.verdict()}».")


_CONVERTED, _PLAIN = "chuyen doi", "thuong"


@_never_raises
def check_olora_share_decision(answer, converted_dir, plain_dir, load_base, original) -> CheckResult:
    """Decide and defend: share the trained OLoRA adapter converted (rank 2r) or saved plainly? Numbers recomputed.

    ``answer`` = ``{"lựa_chọn": "chuyển đổi" | "thường", "số_liệu": {"MB_chuyển_đổi": float, "MB_thường": float,
    "lớp_bị_sửa": int}}``: the two ``adapter_model.safetensors`` sizes (1 MB = 10⁶ bytes) and how many base
    layers loading the plain save on a fresh base model (``load_base()``) shifts, compared with ``original``.
    The check reads the files and loads the plain save itself. The team's rule: what is shared must not
    modify the user's base model, so "thường" contradicts any shifted layer. Rejects: a ``plain_dir`` that
    is not a plain OLoRA save (converted, or ordinary LoRA), sizes made up or swapped or in MiB, a wrong
    layer count, and a choice the numbers contradict.
    """
    from peft import PeftModel

    from ..olora import base_weight_changes

    parsed = _decision(answer)
    if isinstance(parsed, CheckResult):
        return parsed
    choice, numbers = parsed
    plain = _plain(choice)
    if plain not in (_CONVERTED, _PLAIN):
        return _wrong(f"`lựa_chọn` = {choice!r}; chọn \"chuyển đổi\" hoặc \"thường\".", "Viết đúng một trong hai.")
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

    def near(value, target) -> bool:
        return value is not None and abs(value - target) <= min(0.01, 0.02 * target)

    for key, value in sizes.items():
        got = _number(_field(numbers, key))
        if near(got, value):
            continue
        other = "MB_thường" if key == "MB_chuyển_đổi" else "MB_chuyển_đổi"
        hint = _size_hint(got, value, sizes[other], near,
                          "Hai dung lượng bị đổi chỗ: bản chuyển đổi có hạng 2r nên lớn gấp đôi.",
                          "Đọc kích thước tệp: `(thư_mục / \"adapter_model.safetensors\").stat().st_size / 1e6`.")
        return _wrong(f"`số_liệu['{key}']` = {_field(numbers, key)!r} không phải kích thước tệp trên đĩa.", hint)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = PeftModel.from_pretrained(load_base(), str(plain_path))
    shifted = base_weight_changes(original, loaded)["n_changed"]
    del loaded
    got = _as_int(_field(numbers, "lớp_bị_sửa"))
    if got != shifted:
        return _wrong(f"`số_liệu['lớp_bị_sửa']` = {_field(numbers, 'lớp_bị_sửa')!r} không khớp số lớp mà bản lưu thường "
                      "dịch khi nạp lên một mô hình cơ sở mới.",
                      "Nạp `thu_muc_thuong` lên `load_base()` bằng `PeftModel.from_pretrained`, rồi đếm bằng "
                      "`base_weight_changes(mo_hinh_goc, ...)['n_changed']`.")
    if plain == _PLAIN and shifted > 0:
        return _wrong(f"chính số liệu của bạn phản bác lựa chọn này: nạp bản thường sửa {shifted} lớp của mô hình cơ sở "
                      "người dùng (peft tính lại QR và dịch W).",
                      "Quy tắc là không sửa mô hình cơ sở của người dùng; cái giá của bản chuyển đổi là dung lượng.")
    return _ok("Lựa chọn của bạn đứng vững với số liệu của bạn, đã đo lại từ các tệp và bằng một lần nạp thật.",
               f"bạn chọn «{choice}»: bản chuyển đổi {sizes['MB_chuyển_đổi']:.2f} MB, bản thường "
               f"{sizes['MB_thường']:.2f} MB, nạp bản thường sửa {shifted} lớp.")
