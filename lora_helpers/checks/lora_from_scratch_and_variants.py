"""Checks of ``lora_from_scratch_and_variants``: LoRA's scaling, a hand-written LoRA layer and its parity with peft,
and a verdict on a variant over three seeds.
"""

from __future__ import annotations

import math

from ..numbers import count as fmt_count
from ._common import CheckResult, _decided, _decision, _field, _number, _plain, _todo, _wrong
from .kit import Mistake, Table, check

_VARIANTS = ("lora", "rslora")


@check
def check_scaling(answer, ranks, lora_alpha) -> Table:
    """The scaling factor s of ΔW = s·B·A for LoRA (alpha/r) and rsLoRA (alpha/sqrt(r)) at each rank in ``ranks``.

    ``answer`` = ``{"lora": {r: s, ...}, "rslora": {r: s, ...}}`` (rank keys as int or str). The rows are checked
    in turn; a wrong row is compared with the usual slips (the two swapped, alpha·r, r/alpha, alpha/r², sqrt(alpha/r)).
    """
    truth = {"lora": {r: lora_alpha / r for r in ranks}, "rslora": {r: lora_alpha / math.sqrt(r) for r in ranks}}
    rows = {v: _field(answer, v) for v in _VARIANTS}
    no_row = next((v for v in _VARIANTS if not isinstance(rows[v], dict)), None)
    values = {} if no_row else {v: {r: _number(row.get(r, row.get(str(r)))) for r in ranks} for v, row in rows.items()}
    gap = next(((v, r) for v in values for r in ranks if values[v][r] is None), None)
    values = {} if gap else values

    def close(a, b) -> bool:
        return abs(a - b) <= 1e-3 * max(abs(b), 1e-9)

    def row_is(variant, formula) -> bool:
        return all(close(values[variant][r], formula(r)) for r in ranks)

    def with_row(variant, formula):
        return lambda a: {**a, variant: {r: formula(r) for r in ranks}}

    slips = []
    for variant, other in (("lora", "rslora"), ("rslora", "lora")):
        row = f"hàng `{variant}`"
        formula = "Tính bằng `lora_alpha / r` và `lora_alpha / math.sqrt(r)`."
        wrong_r = next((r for r in ranks if values and not close(values[variant][r], truth[variant][r])), ranks[0])
        slips += [
            Mistake(lambda a, v=variant, o=other: row_is(v, truth[o].get),
                    f"{row} chứa hệ số của {other}: hai hàng bị đổi chỗ.",
                    "LoRA: s = alpha / r. rsLoRA (`use_rslora=True`): s = alpha / √r.",
                    example=with_row(variant, truth[other].get)),
            *(Mistake(lambda a, v=variant, f=f: row_is(v, f), f"{row} chưa đúng: {problem}", formula,
                      example=with_row(variant, f)) for f, problem in [
                (lambda r: lora_alpha * r, "bạn nhân alpha với r; hệ số là alpha **chia** cho r (LoRA) hoặc cho √r (rsLoRA)."),
                (lambda r: r / lora_alpha, "bạn chia r cho alpha; hệ số là alpha / r (LoRA) hoặc alpha / √r (rsLoRA)."),
                (lambda r: lora_alpha / r**2, "alpha / r² làm hệ số nhỏ đi còn nhanh hơn; rsLoRA dùng alpha / √r."),
                (lambda r: math.sqrt(lora_alpha / r), "căn bậc hai chỉ lấy của r, không lấy của cả alpha / r."),
            ]),
            Mistake(lambda a, v=variant: not row_is(v, truth[v].get),
                    f"{row}, r = {wrong_r}: {values[variant][wrong_r] if values else 0:g} chưa đúng.",
                    "LoRA: s = alpha / r. rsLoRA: s = alpha / √r. Không làm tròn quá 3 chữ số.",
                    example=with_row(variant, lambda r, v=variant: truth[v][r] * (1.5 if r == ranks[0] else 1))),
        ]
    fill = "Điền đủ hai hàng `lora` và `rslora`, mỗi hàng một hệ số cho mỗi hạng của đề bài."
    lo, hi = min(ranks), max(ranks)
    return Table(
        guard=[
            Mistake(lambda a: not isinstance(a, dict),
                    f"đáp án phải là một dict `{{\"lora\": {{r: s}}, \"rslora\": {{r: s}}}}`, bạn đưa {type(answer).__name__}.",
                    "Xem mẫu trong đề bài.", example=lambda a: list(a["lora"].values())),
            Mistake(lambda a: no_row is not None, f"thiếu khoá `{no_row}` (một dict hạng → hệ số tỉ lệ).", fill,
                    example=lambda a: {"lora": a["lora"]}),
            Mistake(lambda a: gap is not None,
                    f"`{gap[0]}` không có hệ số cho r = {gap[1]} (đang có các khoá {list(rows[gap[0]])})." if gap else "",
                    fill, example=lambda a: {**a, "lora": {r: s for r, s in a["lora"].items() if r != ranks[-1]}}),
        ],
        slips=slips,
        ok=f"Từ r = {lo} lên r = {hi}, hệ số của LoRA nhỏ đi {hi / lo:g} lần, của rsLoRA chỉ {math.sqrt(hi / lo):g} lần: "
           "với LoRA, tăng hạng mà giữ alpha thì cập nhật bị thu nhỏ; rsLoRA giữ nó ổn định.",
    )


# --------------------------------------------------------------------------- the from-scratch layer
def _scratch_modules(model):
    """(name, module) of the hand-written LoRA layers: modules with nn.Linear ``lora_A``/``lora_B`` and a ``base``."""
    from torch import nn

    return [(n, m) for n, m in model.named_modules()
            if isinstance(getattr(m, "lora_A", None), nn.Linear) and isinstance(getattr(m, "lora_B", None), nn.Linear)
            and isinstance(getattr(m, "base", None), nn.Linear)]


@check
def check_lora_forward(lora_forward, layer_class, r: int = 4, lora_alpha: float = 8) -> Table | CheckResult:
    """``lora_forward(layer, x)`` is LoRA's forward: ``base(x) + scaling * B(A(dropout(x)))``, equal to peft's.

    The check builds ``layer_class(nn.Linear(...), r, lora_alpha)`` itself, gives B non-zero values (with
    B = 0, returning ``base(x)`` alone would pass), builds peft's LoRA on a copy of the same linear layer
    with the same A and B, and compares outputs.
    """
    import copy

    import torch
    from peft import LoraConfig, get_peft_model
    from torch import nn

    torch.manual_seed(0)
    base = nn.Linear(12, 10)
    layer = layer_class(copy.deepcopy(base), r, lora_alpha)
    if any(p.requires_grad for p in layer.base.parameters()):  # a mistake of the class, not of this answer: no row
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
        got = lora_forward(layer, x) if callable(lora_forward) else None
        want = reference(x)
        base_out = base(x)
        branch = layer.lora_B(layer.lora_A(x))
    scale, s = max(want.abs().max().item(), 1e-6), lora_alpha / r

    def same(a) -> bool:
        return (got - a).abs().max().item() <= 1e-5 * scale

    def scaled(factor):  # the reference with its LoRA branch scaled by ``factor`` instead of alpha / r
        return lambda f: lambda layer, x: layer.base(x) + (f(layer, x) - layer.base(x)) * (factor / s)

    forward = "LoRA: `layer.base(x) + layer.lora_B(layer.lora_A(layer.dropout(x))) * layer.scaling`."
    return Table(
        guard=[
            Mistake(lambda f: not callable(f),
                    f"`lora_forward` phải là một hàm `lora_forward(layer, x)`, bạn đưa {type(lora_forward).__name__}.",
                    "Viết `def lora_forward(layer, x): return ...`.", example=lambda f: "layer.base(x)"),
            Mistake(lambda f: not torch.is_tensor(got) or got.shape != want.shape,
                    f"`lora_forward` trả về {type(got).__name__} {tuple(getattr(got, 'shape', ()))}, cần một tensor "
                    f"cỡ {tuple(want.shape)}.", "Trả về `layer.base(x) + ...`: cùng cỡ với đầu ra của lớp gốc.",
                    example=lambda f: lambda layer, x: x),
        ],
        right=lambda f: same(want),
        slips=[
            Mistake(lambda f: same(base_out), "bạn chỉ trả về `layer.base(x)`: nhánh LoRA bị bỏ quên.", forward,
                    example=lambda f: lambda layer, x: layer.base(x)),
            Mistake(lambda f: same(branch * s), "bạn quên cộng đầu ra của lớp gốc `layer.base(x)`.", forward,
                    example=lambda f: lambda layer, x: f(layer, x) - layer.base(x)),
            Mistake(lambda f: same(base_out + branch), "bạn quên nhân nhánh LoRA với `layer.scaling` (= alpha / r).", forward,
                    example=scaled(1)),
            Mistake(lambda f: same(base_out + branch * (r / lora_alpha)),
                    "hệ số tỉ lệ bị đảo: dùng alpha / r, không phải r / alpha.", forward, example=scaled(r / lora_alpha)),
            Mistake(lambda f: same(base_out + branch * (r * lora_alpha)), "hệ số tỉ lệ là alpha / r, không phải alpha · r.",
                    forward, example=scaled(r * lora_alpha)),
        ],
        otherwise=("đầu ra khác lớp LoRA của peft với cùng A và B.",
                   "Thứ tự: dropout lên x, rồi A, rồi B, nhân `layer.scaling`, cộng `layer.base(x)`."),
        ok=f"Lớp tự viết cho cùng đầu ra với lớp LoRA của peft (cùng A, B ≠ 0, r = {r}, alpha = {lora_alpha:g}).",
    )


@check
def check_scratch_parity(answer, scratch_model, peft_model, tolerance: float = 1e-3) -> Table | CheckResult:
    """The learner's from-scratch model and a peft model with the same A, B: same logits, same trainable count.

    ``answer`` = ``{"chênh_lệch": float, "tham_số": int}``: the largest logit difference the learner measured
    and the trainable-parameter count (equal for both). The check recomputes both on fixed tokens. The two
    models are checked first, outside the table: their mistakes (the same object twice, B still zero in every
    layer so that parity says nothing, A/B not copied into peft, counts that differ) are not in ``answer``, so no
    example answer can show them; the tests build such models.
    """
    from ..params import trainable_parameters
    from ._common import _is_peft_model, _probe_logit_diff

    if scratch_model is None or peft_model is None:
        return _todo()
    ours = _scratch_modules(scratch_model)
    own = float("nan")

    def measured():
        nonlocal own
        own = _probe_logit_diff(peft_model, scratch_model)   # vocabulary size from peft_model
        return not (math.isfinite(own) and own <= tolerance)

    for bad, problem, hint in [
        (lambda: scratch_model is peft_model, "hai mô hình là cùng một đối tượng: so nó với chính nó thì luôn khớp.",
         "Dựng mô hình peft từ một bản mô hình cơ sở khác: `get_peft_model(LESSON.load_base(), cấu_hình)`."),
        (lambda: not _is_peft_model(peft_model), f"`mo_hinh_peft` là `{type(peft_model).__name__}`, không phải PeftModel.",
         "Dùng `get_peft_model(...)`."),
        (lambda: not ours, "`mo_hinh_tu_viet` không có lớp LoRA tự viết nào (mô-đun có `base`, `lora_A`, `lora_B`).",
         "Gắn `LoraTuViet` vào `q_proj`, `v_proj` bằng `add_lora(...)`."),
        (lambda: all(m.lora_B.weight.abs().max().item() == 0 for _, m in ours),
         "mọi B của bạn vẫn bằng 0: khi đó cả hai mô hình đều y hệt mô hình cơ sở, nên \"khớp\" không chứng minh gì.",
         "Gán B khác 0 trước khi so (đề bài: `torch.randn(...) * 0.01` với hạt giống cố định), rồi mới chép sang peft."),
        (measured, "hai mô hình không khớp (ô kiểm tra tự đo: logits lệch {own:.2g} > {tolerance:g}).",
         "Chép `lora_A.weight` và `lora_B.weight` của từng lớp tự viết vào `module.lora_A['default']`, "
         "`module.lora_B['default']` của lớp peft cùng tên; kiểm tra cùng r, alpha và lớp đích."),
    ]:
        if bad():
            return _wrong(problem.format(own=own, tolerance=tolerance), hint)
    counts = {trainable_parameters(scratch_model)[0], trainable_parameters(peft_model)[0]}
    if len(counts) != 1:
        return _wrong(f"số tham số huấn luyện được khác nhau: {sorted(counts)}.",
                      "Đóng băng mọi tham số của mô hình tự viết trừ A và B (`add_lora` làm việc đó).")
    count = counts.pop()
    reported = _number(_field(answer, "chênh_lệch"))
    return Table(
        guard=[Mistake(lambda a: not isinstance(a, dict),
                       f"đáp án phải là dict `{{\"chênh_lệch\": ..., \"tham_số\": ...}}`, bạn đưa {type(answer).__name__}.",
                       "Xem mẫu trong đề bài.", example=lambda a: list(a.values()))],
        slips=[
            Mistake(lambda a: reported is None or not (0 <= reported <= tolerance),
                    f"`chênh_lệch` = {_field(answer, 'chênh_lệch')!r}: cần chênh lệch logits lớn nhất bạn đo được (≥ 0, "
                    f"≤ {tolerance:g} khi khớp).", "`(logits_tu_viet - logits_peft).abs().max().item()`.",
                    example=lambda a: {**a, "chênh_lệch": -1.0}),
            Mistake(lambda a: _number(_field(a, "tham_số")) != count,
                    f"`tham_số` = {_field(answer, 'tham_số')!r}, nhưng cả hai mô hình có {fmt_count(count)} tham số "
                    "huấn luyện được.",
                    "Đếm bằng `trainable_parameters(mô_hình)[0]` (hoặc tổng `p.numel()` của các p có `requires_grad`).",
                    example=lambda a: {**a, "tham_số": count + 1}),
        ],
        ok=f"LoRA tự viết của bạn khớp peft: logits trong ngưỡng {tolerance:g} (đo lại trên 16 token cố định), cùng "
           "số tham số huấn luyện được, và B ≠ 0 nên phép so có nghĩa.",
        measured=f"chênh lệch {own:.1e}, {fmt_count(count)} tham số huấn luyện được, {len(ours)} lớp.",
    )


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


@check
def check_seed_verdict(answer, variant, sweep: str = "variant_seeds", root=None) -> Table | CheckResult:
    """Decide and defend: is ``variant``'s validation loss better than LoRA's, over the recorded seeds?

    ``answer`` = ``{"lựa_chọn": "tốt hơn" | "kém hơn" | "không phân biệt được", "số_liệu": {"hiệu": float,
    "ktc": (low, high)}}``: mean validation loss of the variant − LoRA's over the seeds in ``records/<sweep>/``, and its
    95% Welch interval, recomputed from the records with ``lora_helpers.stats.compare_seeds``. Student's interval is
    named only where it differs from Welch's (equal seed counts and similar spreads: nearly the same, then accepted).
    """
    from scipy.stats import ttest_ind

    from ..records import read_records
    from ..stats import compare_seeds
    from ..variants import VARIANT_LABELS

    choice, numbers = _decision(answer)
    by_seed = {}
    for record in read_records(sweep, root).values():
        settings = record["config"].get("variant_run", {})
        by_seed.setdefault(settings.get("variant"), {})[settings.get("seed")] = record["results"]["eval_loss"]
    seeds = sorted(set(by_seed.get("lora", {})) & set(by_seed.get(variant, {})))
    if len(seeds) < 3:  # the reference is not ready: nothing to judge any answer against
        return _todo(f"chưa có đủ ba hạt giống đã ghi cho LoRA và {variant} trong records/{sweep}/")
    lora = [by_seed["lora"][s] for s in seeds]
    other = [by_seed[variant][s] for s in seeds]
    truth = compare_seeds(lora, other, lower_is_better=True)

    def near(value, target) -> bool:
        return value is not None and abs(value - target) <= max(1e-4, 0.005 * abs(target))

    def interval_is(ci) -> bool:
        return interval is not None and near(low, ci[0]) and near(high, ci[1])

    def welch(a, b, level=0.95, equal_var=False):
        ci = ttest_ind(a, b, equal_var=equal_var).confidence_interval(level)
        return ci.low, ci.high

    got = _number(_field(numbers, "hiệu"))
    interval = _interval(_field(numbers, "ktc"))
    low, high = sorted(interval) if interval else (None, None)
    one_seed = max((o - x for o, x in zip(other, lora)), key=lambda d: abs(d - truth.difference))
    right_choice = {"tốt hơn": "tot hon", "kém hơn": "kem hon"}.get(truth.outcome, "khong phan biet duoc")
    not_difference = f"`số_liệu['hiệu']` = {_field(numbers, 'hiệu')!r} không phải hiệu đo được."
    not_interval = f"`số_liệu['ktc']` = {_field(numbers, 'ktc')!r} không phải khoảng tin cậy 95% của hiệu."
    known_intervals = [
        (welch(other, lora, equal_var=True),
         "Đó là khoảng của kiểm định t Student (phương sai bằng nhau); dùng Welch: `equal_var=False`."),
        (welch(other, lora, 0.90), "Đó là khoảng 90%; đề bài dùng khoảng 95% (`confidence_interval(0.95)`)."),
        (welch(other[:2], lora[:2]), "Khoảng đó chỉ dùng hai hạt giống; dùng cả ba."),
        ((-truth.high, -truth.low), "Đó là khoảng của LoRA − biến thể: đổi thứ tự, `ttest_ind(bien_the, lora, ...)`."),
    ]
    where = "nằm hẳn dưới 0" if (high or 0) < 0 else "nằm hẳn trên 0" if (low or 0) > 0 else "chứa 0"
    label = VARIANT_LABELS.get(variant, variant)
    return Table(
        guard=[Mistake(lambda a: _plain(choice) not in _CHOICES,
                       f"`lựa_chọn` = {choice!r}; chọn một trong {', '.join(repr(c) for c in _CHOICES.values())}.",
                       "Ba kết luận có thể có: khoảng tin cậy nằm hẳn dưới 0, hẳn trên 0, hoặc chứa 0.",
                       example=lambda a: {**a, "lựa_chọn": "vượt"})],
        slips=[
            Mistake(lambda a: near(got, -truth.difference) and not near(got, truth.difference), not_difference,
                    "Dấu bị đảo: hiệu = trung bình(biến thể) − trung bình(LoRA), âm khi biến thể có loss thấp hơn.",
                    example=lambda a: _decided(a, hiệu=-truth.difference)),
            *([Mistake(lambda a: not near(got, truth.difference) and any(near(got, o - x) for o, x in zip(other, lora)),
                       not_difference, "Đó là hiệu của một hạt giống; lấy hiệu của hai trung bình trên cả ba hạt giống.",
                       example=lambda a: _decided(a, hiệu=one_seed))] if not near(one_seed, truth.difference) else []),
            Mistake(lambda a: not near(got, truth.difference), not_difference,
                    "`hiệu` = statistics.fmean(loss của biến thể) − statistics.fmean(loss của LoRA).",
                    example=lambda a: _decided(a, hiệu=truth.difference + 1)),
            Mistake(lambda a: interval is None, "`số_liệu['ktc']` phải là hai số (thấp, cao).",
                    "Ví dụ: `ci = ttest_ind(bien_the, lora, equal_var=False).confidence_interval(0.95)`, "
                    "rồi `(ci.low, ci.high)`.", example=lambda a: _decided(a, ktc=0.1)),
            *(Mistake(lambda a, ci=ci: not interval_is((truth.low, truth.high)) and interval_is(ci), not_interval, hint,
                      example=lambda a, ci=ci: _decided(a, ktc=ci))
              for ci, hint in known_intervals if not (near(ci[0], truth.low) and near(ci[1], truth.high))),
            Mistake(lambda a: not interval_is((truth.low, truth.high)), not_interval,
                    "`ttest_ind(bien_the, lora, equal_var=False).confidence_interval(0.95)`.",
                    example=lambda a: _decided(a, ktc=(truth.low - 1, truth.high + 1))),
            Mistake(lambda a: _plain(choice) != right_choice,
                    f"chính số liệu của bạn phản bác lựa chọn này: khoảng tin cậy [{low or 0:+.3f}; {high or 0:+.3f}] {where}.",
                    "Dưới 0: biến thể có loss thấp hơn, \"tốt hơn\"; trên 0: \"kém hơn\"; chứa 0: "
                    "\"không phân biệt được\" ở cỡ mẫu này.",
                    example=lambda a: {**a, "lựa_chọn": next(c for p, c in _CHOICES.items() if p != right_choice)}),
        ],
        ok=f"Kết luận của bạn đứng vững với số liệu: đo lại từ {len(seeds)} hạt giống mỗi bên đã ghi, khoảng tin cậy "
           f"95% của hiệu (Welch) cho đúng kết luận ấy về {label}.",
        measured=truth.verdict("LoRA", label, "loss kiểm định"),
    )
