"""Checks of the exercises of lesson 6 (LoRA from scratch, then its variants side by side)."""

from __future__ import annotations

import math

from ..numbers import count as fmt_count
from ._common import CheckResult, _decision, _field, _never_raises, _number, _ok, _plain, _todo, _wrong


def _scaling_table(answer, ranks):
    """{"lora": {r: s}, "rslora": {r: s}} read from the learner's answer (rank keys as int or str); else a message."""
    table = {}
    for variant in ("lora", "rslora"):
        row = _field(answer, variant)
        if not isinstance(row, dict):
            return f"thiếu khoá `{variant}` (một dict hạng → hệ số tỉ lệ)."
        values = {}
        for r in ranks:
            value = row.get(r, row.get(str(r)))
            if _number(value) is None:
                return f"`{variant}` không có hệ số cho r = {r} (đang có các khoá {list(row)})."
            values[r] = _number(value)
        table[variant] = values
    return table


@_never_raises
def check_scaling(answer, ranks, lora_alpha) -> CheckResult:
    """The scaling factor s of ΔW = s·B·A for LoRA (alpha/r) and rsLoRA (alpha/sqrt(r)) at each rank in ``ranks``.

    ``answer`` = ``{"lora": {r: s, ...}, "rslora": {r: s, ...}}``. Rejects: the two rows swapped, alpha·r,
    r/alpha, alpha/r² for rsLoRA, sqrt(alpha/r), and any other number, with a hint naming the mistake.
    """
    if answer is None:
        return _todo()
    if not isinstance(answer, dict):
        return _wrong(f"đáp án phải là một dict `{{\"lora\": {{r: s}}, \"rslora\": {{r: s}}}}`, bạn đưa {type(answer).__name__}.",
                      "Xem mẫu trong đề bài.")
    table = _scaling_table(answer, ranks)
    if isinstance(table, str):
        return _wrong(table, "Điền đủ hai hàng `lora` và `rslora`, mỗi hàng một hệ số cho mỗi hạng của đề bài.")
    truth = {"lora": {r: lora_alpha / r for r in ranks}, "rslora": {r: lora_alpha / math.sqrt(r) for r in ranks}}

    def close(a, b) -> bool:
        return abs(a - b) <= 1e-3 * max(abs(b), 1e-9)

    def row_is(row, formula) -> bool:
        return all(close(row[r], formula(r)) for r in ranks)

    mistakes = [
        (lambda r: lora_alpha * r, "bạn nhân alpha với r; hệ số là alpha **chia** cho r (LoRA) hoặc cho √r (rsLoRA)."),
        (lambda r: r / lora_alpha, "bạn chia r cho alpha; hệ số là alpha / r (LoRA) hoặc alpha / √r (rsLoRA)."),
        (lambda r: lora_alpha / r**2, "alpha / r² làm hệ số nhỏ đi còn nhanh hơn; rsLoRA dùng alpha / √r."),
        (lambda r: math.sqrt(lora_alpha / r), "căn bậc hai chỉ lấy của r, không lấy của cả alpha / r."),
    ]
    for variant in ("lora", "rslora"):
        row = table[variant]
        if row_is(row, truth[variant].__getitem__):
            continue
        other = "rslora" if variant == "lora" else "lora"
        if row_is(row, truth[other].__getitem__):
            return _wrong(f"hàng `{variant}` chứa hệ số của {other}: hai hàng bị đổi chỗ.",
                          "LoRA: s = alpha / r. rsLoRA (`use_rslora=True`): s = alpha / √r.")
        for formula, hint in mistakes:
            if row_is(row, formula):
                return _wrong(f"hàng `{variant}` chưa đúng: {hint}", "Tính bằng `lora_alpha / r` và `lora_alpha / math.sqrt(r)`.")
        wrong_r = next(r for r in ranks if not close(row[r], truth[variant][r]))
        return _wrong(f"hàng `{variant}`, r = {wrong_r}: {row[wrong_r]:g} chưa đúng.",
                      "LoRA: s = alpha / r. rsLoRA: s = alpha / √r. Không làm tròn quá 3 chữ số.")
    lo, hi = min(ranks), max(ranks)
    return _ok(f"Từ r = {lo} lên r = {hi}, hệ số của LoRA nhỏ đi {hi / lo:g} lần, của rsLoRA chỉ {math.sqrt(hi / lo):g} lần: "
               "với LoRA, tăng hạng mà giữ alpha thì cập nhật bị thu nhỏ; rsLoRA giữ nó ổn định.")


# --------------------------------------------------------------------------- the from-scratch layer
def _scratch_modules(model):
    """(name, module) of the hand-written LoRA layers: modules with nn.Linear ``lora_A``/``lora_B`` and a ``base``."""
    from torch import nn

    return [(n, m) for n, m in model.named_modules()
            if isinstance(getattr(m, "lora_A", None), nn.Linear) and isinstance(getattr(m, "lora_B", None), nn.Linear)
            and isinstance(getattr(m, "base", None), nn.Linear)]


@_never_raises
def check_lora_forward(lora_forward, layer_class, r: int = 4, lora_alpha: float = 8) -> CheckResult:
    """``lora_forward(layer, x)`` is LoRA's forward: ``base(x) + scaling * B(A(dropout(x)))``, equal to peft's.

    The check builds ``layer_class(nn.Linear(...), r, lora_alpha)`` itself, gives B non-zero values (with
    B = 0, returning ``base(x)`` alone would pass), builds peft's LoRA on a copy of the same linear layer
    with the same A and B, and compares outputs. Rejects: the base output forgotten, the scaling forgotten
    or inverted (r/alpha, alpha·r), the LoRA branch alone, the base weight left trainable, and any output
    that differs from peft's.
    """
    import copy

    import torch
    from peft import LoraConfig, get_peft_model
    from torch import nn

    if lora_forward is None:
        return _todo()
    if not callable(lora_forward):
        return _wrong(f"`lora_forward` phải là một hàm `lora_forward(layer, x)`, bạn đưa {type(lora_forward).__name__}.",
                      "Viết `def lora_forward(layer, x): return ...`.")
    torch.manual_seed(0)
    base = nn.Linear(12, 10)
    layer = layer_class(copy.deepcopy(base), r, lora_alpha)
    if any(p.requires_grad for p in layer.base.parameters()):
        return _wrong("trọng số của lớp gốc vẫn huấn luyện được: LoRA phải đóng băng W.",
                      "Trong `__init__`, gọi `p.requires_grad_(False)` cho mọi tham số của `base`.")
    with torch.no_grad():
        layer.lora_B.weight.normal_(0, 0.5)        # B ≠ 0: otherwise base(x) alone would look right
    holder = nn.Sequential()
    holder.add_module("proj", copy.deepcopy(base))
    reference = get_peft_model(holder, LoraConfig(r=r, lora_alpha=lora_alpha, target_modules=["proj"]))
    peft_layer = reference.base_model.model.proj
    with torch.no_grad():
        peft_layer.lora_A["default"].weight.copy_(layer.lora_A.weight)
        peft_layer.lora_B["default"].weight.copy_(layer.lora_B.weight)
    layer.eval()
    reference.eval()
    x = torch.randn(3, 12)
    with torch.no_grad():
        got = lora_forward(layer, x)
        want = reference(x)
        base_out = base(x)
        branch = layer.lora_B(layer.lora_A(x))
    if not torch.is_tensor(got) or got.shape != want.shape:
        return _wrong(f"`lora_forward` trả về {type(got).__name__} {tuple(getattr(got, 'shape', ()))}, cần một tensor "
                      f"cỡ {tuple(want.shape)}.", "Trả về `layer.base(x) + ...`: cùng cỡ với đầu ra của lớp gốc.")
    scale = max(want.abs().max().item(), 1e-6)

    def same(a) -> bool:
        return (got - a).abs().max().item() <= 1e-5 * scale

    if same(want):
        return _ok(f"Lớp tự viết cho cùng đầu ra với lớp LoRA của peft (cùng A, B ≠ 0, r = {r}, alpha = {lora_alpha:g}).")
    s = lora_alpha / r
    diagnoses = [
        (base_out, "bạn chỉ trả về `layer.base(x)`: nhánh LoRA bị bỏ quên."),
        (branch * s, "bạn quên cộng đầu ra của lớp gốc `layer.base(x)`."),
        (base_out + branch, "bạn quên nhân nhánh LoRA với `layer.scaling` (= alpha / r)."),
        (base_out + branch * (r / lora_alpha), "hệ số tỉ lệ bị đảo: dùng alpha / r, không phải r / alpha."),
        (base_out + branch * (r * lora_alpha), "hệ số tỉ lệ là alpha / r, không phải alpha · r."),
    ]
    for candidate, problem in diagnoses:
        if same(candidate):
            return _wrong(problem, "LoRA: `layer.base(x) + layer.lora_B(layer.lora_A(layer.dropout(x))) * layer.scaling`.")
    return _wrong("đầu ra khác lớp LoRA của peft với cùng A và B.",
                  "Thứ tự: dropout lên x, rồi A, rồi B, nhân `layer.scaling`, cộng `layer.base(x)`.")


@_never_raises
def check_scratch_parity(answer, scratch_model, peft_model, tolerance: float = 1e-3) -> CheckResult:
    """The learner's from-scratch model and a peft model with the same A, B: same logits, same trainable count.

    ``answer`` = ``{"chênh_lệch": float, "tham_số": int}``: the largest logit difference the learner measured
    and the trainable-parameter count (equal for both). The check recomputes both on fixed tokens. Rejects:
    the same object twice, B still zero in every layer (then parity says nothing), A/B not copied into peft,
    a model with no hand-written LoRA layer, a reported difference or count that the check's own
    measurement contradicts.
    """

    from ..params import trainable_parameters
    from ._common import _is_peft_model, _probe_logit_diff

    if answer is None or scratch_model is None or peft_model is None:
        return _todo()
    if not isinstance(answer, dict):
        return _wrong(f"đáp án phải là dict `{{\"chênh_lệch\": ..., \"tham_số\": ...}}`, bạn đưa {type(answer).__name__}.",
                      "Xem mẫu trong đề bài.")
    if scratch_model is peft_model:
        return _wrong("hai mô hình là cùng một đối tượng: so nó với chính nó thì luôn khớp.",
                      "Dựng mô hình peft từ một bản mô hình cơ sở khác: `get_peft_model(load_base(), cấu_hình)`.")
    if not _is_peft_model(peft_model):
        return _wrong(f"`mo_hinh_peft` là `{type(peft_model).__name__}`, không phải PeftModel.", "Dùng `get_peft_model(...)`.")
    ours = _scratch_modules(scratch_model)
    if not ours:
        return _wrong("`mo_hinh_tu_viet` không có lớp LoRA tự viết nào (mô-đun có `base`, `lora_A`, `lora_B`).",
                      "Gắn `LoraTuViet` vào `q_proj`, `v_proj` bằng `add_lora(...)`.")
    if all(m.lora_B.weight.abs().max().item() == 0 for _, m in ours):
        return _wrong("mọi B của bạn vẫn bằng 0: khi đó cả hai mô hình đều y hệt mô hình cơ sở, nên \"khớp\" không chứng minh gì.",
                      "Gán B khác 0 trước khi so (đề bài: `torch.randn(...) * 0.01` với hạt giống cố định), rồi mới chép sang peft.")
    own = _probe_logit_diff(peft_model, scratch_model)   # vocabulary size from peft_model
    if not (math.isfinite(own) and own <= tolerance):
        return _wrong(f"hai mô hình không khớp (ô kiểm tra tự đo: logits lệch {own:.2g} > {tolerance:g}).",
                      "Chép `lora_A.weight` và `lora_B.weight` của từng lớp tự viết vào `module.lora_A['default']`, "
                      "`module.lora_B['default']` của lớp peft cùng tên; kiểm tra cùng r, alpha và lớp đích.")
    reported = _number(_field(answer, "chênh_lệch"))
    if reported is None or not (0 <= reported <= tolerance):
        return _wrong(f"`chênh_lệch` = {_field(answer, 'chênh_lệch')!r}: cần chênh lệch logits lớn nhất bạn đo được (≥ 0, "
                      f"≤ {tolerance:g} khi khớp).", "`(logits_tu_viet - logits_peft).abs().max().item()`.")
    counts = {trainable_parameters(scratch_model)[0], trainable_parameters(peft_model)[0]}
    if len(counts) != 1:
        return _wrong(f"số tham số huấn luyện được khác nhau: {sorted(counts)}.",
                      "Đóng băng mọi tham số của mô hình tự viết trừ A và B (`add_lora` làm việc đó).")
    count = counts.pop()
    got = _field(answer, "tham_số")
    if _number(got) != count:
        return _wrong(f"`tham_số` = {got!r}, nhưng cả hai mô hình có {fmt_count(count)} tham số huấn luyện được.",
                      "Đếm bằng `trainable_parameters(mô_hình)[0]` (hoặc tổng `p.numel()` của các p có `requires_grad`).")
    return _ok(f"LoRA tự viết của bạn khớp peft: logits trong ngưỡng {tolerance:g} (đo lại trên 16 token cố định), cùng "
               "số tham số huấn luyện được, và B ≠ 0 nên phép so có nghĩa.",
               f"chênh lệch {own:.1e}, {fmt_count(count)} tham số huấn luyện được, {len(ours)} lớp.")


# --------------------------------------------------------------------------- decide and defend: three seeds each
_CHOICES = {"tot hon": "tốt hơn", "kem hon": "kém hơn", "khong phan biet duoc": "không phân biệt được"}


def _interval(value):
    """``(low, high)`` from a tuple/list of two numbers or scipy's ``ConfidenceInterval``; None otherwise."""
    if hasattr(value, "low") and hasattr(value, "high"):
        value = (value.low, value.high)
    if isinstance(value, (tuple, list)) and len(value) == 2:
        low, high = _number(value[0]), _number(value[1])
        if low is not None and high is not None:
            return low, high
    return None


@_never_raises
def check_seed_verdict(answer, variant, sweep: str = "variant_seeds", root=None) -> CheckResult:
    """Decide and defend: is ``variant``'s validation loss better than LoRA's, over the recorded seeds?

    ``answer`` = ``{"lựa_chọn": "tốt hơn" | "kém hơn" | "không phân biệt được", "số_liệu": {"hiệu": float,
    "ktc": (low, high)}}``: the difference of the mean validation losses (variant − LoRA) over the seeds recorded in
    ``records/<sweep>/`` and its 95% Welch interval (``scipy.stats.ttest_ind(variant, lora, equal_var=False)
    .confidence_interval()``). The check reads the records itself and recomputes with
    ``lora_helpers.stats.compare_seeds``. Rejects: a flipped sign (LoRA − variant), one seed's difference, Student's
    interval (equal variances: with equal seed counts and similar spreads it is nearly Welch's, and is then accepted),
    a 90% interval, an interval from two seeds, and a choice the interval contradicts.
    """
    from scipy.stats import ttest_ind

    from ..records import read_records
    from ..stats import compare_seeds
    from ..variants import VARIANT_LABELS

    parsed = _decision(answer)
    if isinstance(parsed, CheckResult):
        return parsed
    choice, numbers = parsed
    plain = _plain(choice)
    if plain not in _CHOICES:
        return _wrong(f"`lựa_chọn` = {choice!r}; chọn một trong {', '.join(repr(c) for c in _CHOICES.values())}.",
                      "Ba kết luận có thể có: khoảng tin cậy nằm hẳn dưới 0, hẳn trên 0, hoặc chứa 0.")
    recorded = read_records(sweep, root)
    by_seed = {}
    for record in recorded.values():
        settings = record["config"].get("variant_run", {})
        by_seed.setdefault(settings.get("variant"), {})[settings.get("seed")] = record["results"]["eval_loss"]
    seeds = sorted(set(by_seed.get("lora", {})) & set(by_seed.get(variant, {})))
    if len(seeds) < 3:
        return _todo(f"chưa có đủ ba hạt giống đã ghi cho LoRA và {variant} trong records/{sweep}/")
    lora = [by_seed["lora"][s] for s in seeds]
    other = [by_seed[variant][s] for s in seeds]
    truth = compare_seeds(lora, other, lower_is_better=True)

    def near(value, target) -> bool:
        return value is not None and abs(value - target) <= max(1e-4, 0.005 * abs(target))

    got = _number(_field(numbers, "hiệu"))
    if not near(got, truth.difference):
        if near(got, -truth.difference):
            hint = "Dấu bị đảo: hiệu = trung bình(biến thể) − trung bình(LoRA), âm khi biến thể có loss thấp hơn."
        elif got is not None and any(near(got, other[k] - lora[k]) for k in range(len(seeds))):
            hint = "Đó là hiệu của một hạt giống; lấy hiệu của hai trung bình trên cả ba hạt giống."
        else:
            hint = "`hiệu` = statistics.fmean(loss của biến thể) − statistics.fmean(loss của LoRA)."
        return _wrong(f"`số_liệu['hiệu']` = {_field(numbers, 'hiệu')!r} không phải hiệu đo được.", hint)
    interval = _interval(_field(numbers, "ktc"))
    if interval is None:
        return _wrong("`số_liệu['ktc']` phải là hai số (thấp, cao).",
                      "Ví dụ: `ci = ttest_ind(bien_the, lora, equal_var=False).confidence_interval(0.95)`, "
                      "rồi `(ci.low, ci.high)`.")
    low, high = sorted(interval)
    if not (near(low, truth.low) and near(high, truth.high)):
        student = ttest_ind(other, lora, equal_var=True).confidence_interval(0.95)
        narrow = ttest_ind(other, lora, equal_var=False).confidence_interval(0.90)
        two = ttest_ind(other[:2], lora[:2], equal_var=False).confidence_interval(0.95)
        if near(low, student.low) and near(high, student.high):
            hint = "Đó là khoảng của kiểm định t Student (phương sai bằng nhau); dùng Welch: `equal_var=False`."
        elif near(low, narrow.low) and near(high, narrow.high):
            hint = "Đó là khoảng 90%; đề bài dùng khoảng 95% (`confidence_interval(0.95)`)."
        elif near(low, two.low) and near(high, two.high):
            hint = "Khoảng đó chỉ dùng hai hạt giống; dùng cả ba."
        elif near(low, -truth.high) and near(high, -truth.low):
            hint = "Đó là khoảng của LoRA − biến thể: đổi thứ tự, `ttest_ind(bien_the, lora, ...)`."
        else:
            hint = "`ttest_ind(bien_the, lora, equal_var=False).confidence_interval(0.95)`."
        return _wrong(f"`số_liệu['ktc']` = {_field(numbers, 'ktc')!r} không phải khoảng tin cậy 95% của hiệu.", hint)
    right = {"tốt hơn": "tot hon", "kém hơn": "kem hon"}.get(truth.outcome, "khong phan biet duoc")
    label = VARIANT_LABELS.get(variant, variant)
    if plain != right:
        where = "nằm hẳn dưới 0" if high < 0 else "nằm hẳn trên 0" if low > 0 else "chứa 0"
        return _wrong(f"chính số liệu của bạn phản bác lựa chọn này: khoảng tin cậy [{low:+.3f}; {high:+.3f}] {where}.",
                      "Dưới 0: biến thể có loss thấp hơn, \"tốt hơn\"; trên 0: \"kém hơn\"; chứa 0: "
                      "\"không phân biệt được\" ở cỡ mẫu này.")
    return _ok(f"Kết luận của bạn đứng vững với số liệu: đo lại từ {len(seeds)} hạt giống mỗi bên đã ghi, khoảng tin cậy "
               f"95% của hiệu (Welch) cho đúng kết luận ấy về {label}.",
               truth.verdict("LoRA", label, "loss kiểm định"))
