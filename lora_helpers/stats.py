"""Verdicts a sample can bear: intervals and exact tests from ``scipy.stats``, worded in Vietnamese.

Three questions the lessons ask, each with the test that answers it:

* *How accurate is one model?* :func:`accuracy` — ``k`` right of ``n``, with the Wilson 95% interval
  (``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``). 18/20 is "90% (KTC 95%: 70–97%)".
* *Is model B better than model A on the same items?* :func:`compare_paired` — only the items on which they
  disagree carry information: ``fixed`` (A wrong, B right) and ``broken`` (A right, B wrong). Under "no
  difference" each disagreement is a coin flip, so the exact McNemar test is ``binomtest(fixed, fixed + broken,
  0.5)``. 3 fixed against 1 broken is p ≈ 0.63.
* *Is one model as accurate on set B as on set A (different items: a test split and a harder held-out set)?*
  :func:`compare_independent` — Fisher's exact test on the 2×2 table (``scipy.stats.fisher_exact``).
  18/20 against 15/20 is p ≈ 0.41.
* *Is training recipe B better than recipe A?* :func:`compare_seeds` — one number per seed and recipe (at least
  3 seeds each), Welch's t-interval for the difference of the means (``scipy.stats.ttest_ind(...,
  equal_var=False).confidence_interval()``). The range of two runs is not a noise band.

Each comparison ends in one of three outcomes (:data:`BETTER`, :data:`WORSE`, :data:`UNRESOLVED`), and an
unresolved one says how large a sample would be needed if the observed effect were real.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from .errors import CourseError

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
BETTER, WORSE, UNRESOLVED = "tốt hơn", "kém hơn", "không phân biệt được ở cỡ mẫu này"
_MAX_SCALE = 1000  # "would need more than 1000x the sample": said as such, not searched further


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _check_count(k, n, what="số câu đúng") -> None:
    for value, name in ((k, what), (n, "số câu")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CourseError(f"{name} phải là số nguyên không âm, đang là {value!r}.",
                              "Đếm số câu bằng sum(...) hoặc len(...), không dùng tỉ lệ phần trăm.")
    if n == 0 or k > n:
        raise CourseError(f"Cần 0 ≤ {what} ≤ số câu và số câu > 0 (đang là {k}/{n}).",
                          "Kiểm tra lại tập đã chấm: có câu nào không, và số câu đúng có vượt số câu không.")


# --------------------------------------------------------------------------- one model
@dataclass(frozen=True)
class Accuracy:
    """``k`` right answers of ``n``, with its Wilson interval at :data:`CONFIDENCE`."""

    k: int
    n: int
    low: float
    high: float

    @property
    def value(self) -> float:
        return self.k / self.n

    def __str__(self) -> str:
        return f"{_pct(self.value)} ({self.k}/{self.n}; KTC 95%: {100 * self.low:.0f}–{_pct(self.high)})"


def accuracy(k: int, n: int) -> Accuracy:
    """``k`` of ``n`` right, with the Wilson 95% confidence interval (exact enough at small ``n``, never
    outside [0, 1], unlike the ``p ± 1.96·sqrt(p(1-p)/n)`` interval)."""
    from scipy.stats import binomtest

    _check_count(k, n)
    ci = binomtest(k, n).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return Accuracy(k, n, float(ci.low), float(ci.high))


def accuracy_of(correct) -> Accuracy:
    """:func:`accuracy` of a list of per-item verdicts (True = right)."""
    correct = [bool(c) for c in correct]
    return accuracy(sum(correct), len(correct))


# --------------------------------------------------------------------------- two models, the same items
@dataclass(frozen=True)
class PairedComparison:
    """Model B against model A on the same ``n`` items: the exact McNemar test on the disagreements."""

    n: int
    a: Accuracy
    b: Accuracy
    fixed: int    # A wrong, B right
    broken: int   # A right, B wrong
    p_value: float
    n_needed: int | None  # items needed for p < ALPHA if the observed rates held (None: no effect to detect)

    @property
    def outcome(self) -> str:
        if self.p_value < ALPHA:
            return BETTER if self.fixed > self.broken else WORSE
        return UNRESOLVED

    def verdict(self, name_a: str = "A", name_b: str = "B") -> str:
        """One Vietnamese line: the outcome, the counts it rests on, the test, and (when unresolved) the sample
        size that would be needed."""
        counts = (f"{self.fixed} câu {name_b} sửa được, {self.broken} câu {name_b} làm hỏng trên {self.n} câu "
                  f"(McNemar chính xác, p = {self.p_value:.2g})")
        if self.outcome != UNRESOLVED:
            return f"{name_b} {self.outcome} {name_a}: {counts}"
        if self.n_needed is None:
            need = "hai bên sửa và hỏng bằng nhau: thêm câu cũng không tách được nếu tỉ lệ giữ nguyên"
        elif self.n_needed > _MAX_SCALE * self.n:
            need = f"cần hơn {_MAX_SCALE * self.n} câu nếu tỉ lệ giữ nguyên"
        else:
            need = f"cần khoảng {self.n_needed} câu nếu tỉ lệ giữ nguyên"
        return f"{name_b} so với {name_a}: {UNRESOLVED} ({counts}; {need})"

    def __str__(self) -> str:
        return self.verdict()


def _mcnemar_p(fixed: int, broken: int) -> float:
    from scipy.stats import binomtest

    if fixed + broken == 0:
        return 1.0
    return float(binomtest(fixed, fixed + broken, 0.5).pvalue)


def _items_needed(n: int, fixed: int, broken: int) -> int | None:
    """Smallest multiple of ``n`` at which the same disagreement rates would give p < ALPHA."""
    if fixed == broken:
        return None
    for scale in range(2, _MAX_SCALE + 1):
        if _mcnemar_p(round(scale * fixed), round(scale * broken)) < ALPHA:
            return scale * n
    return _MAX_SCALE * n + 1


def compare_paired(correct_a, correct_b) -> PairedComparison:
    """Model B against model A, item by item (``correct_a[i]``/``correct_b[i]``: was item ``i`` right?)."""
    correct_a, correct_b = [bool(c) for c in correct_a], [bool(c) for c in correct_b]
    if len(correct_a) != len(correct_b) or not correct_a:
        raise CourseError(f"Hai danh sách kết quả phải cùng độ dài và không rỗng (đang là {len(correct_a)} và "
                          f"{len(correct_b)}).", "So hai mô hình trên cùng các câu, theo cùng thứ tự.")
    fixed = sum((not a) and b for a, b in zip(correct_a, correct_b))
    broken = sum(a and (not b) for a, b in zip(correct_a, correct_b))
    n = len(correct_a)
    p = _mcnemar_p(fixed, broken)
    return PairedComparison(n=n, a=accuracy_of(correct_a), b=accuracy_of(correct_b), fixed=fixed, broken=broken,
                            p_value=p, n_needed=None if p < ALPHA else _items_needed(n, fixed, broken))


# --------------------------------------------------------------------------- one model, two sets of items
@dataclass(frozen=True)
class IndependentComparison:
    """The accuracy on set B against that on set A (different items): Fisher's exact test."""

    a: Accuracy
    b: Accuracy
    p_value: float
    n_needed: int | None  # items per set for p < ALPHA if both rates held (None: equal rates)

    @property
    def outcome(self) -> str:
        if self.p_value < ALPHA:
            return BETTER if self.b.value > self.a.value else WORSE
        return UNRESOLVED

    def verdict(self, name_a: str = "A", name_b: str = "B") -> str:
        numbers = f"{self.b} so với {self.a}; kiểm định chính xác Fisher, p = {self.p_value:.2g}"
        if self.outcome == BETTER:
            return f"{name_b} cao hơn {name_a}: {numbers}"
        if self.outcome == WORSE:
            return f"{name_b} thấp hơn {name_a}: {numbers}"
        if self.n_needed is None:
            need = "hai tỉ lệ bằng nhau"
        elif self.n_needed > _MAX_SCALE * max(self.a.n, self.b.n):
            need = f"cần hơn {_MAX_SCALE * max(self.a.n, self.b.n)} câu mỗi tập nếu hai tỉ lệ giữ nguyên"
        else:
            need = f"cần khoảng {self.n_needed} câu mỗi tập nếu hai tỉ lệ giữ nguyên"
        return f"{name_b} so với {name_a}: {UNRESOLVED} ({numbers}; {need})"

    def __str__(self) -> str:
        return self.verdict()


def _fisher_p(k_a: int, n_a: int, k_b: int, n_b: int) -> float:
    from scipy.stats import fisher_exact

    return float(fisher_exact([[k_a, n_a - k_a], [k_b, n_b - k_b]]).pvalue)


def compare_independent(k_a: int, n_a: int, k_b: int, n_b: int) -> IndependentComparison:
    """``k_b`` right of ``n_b`` on set B against ``k_a`` of ``n_a`` on set A, the sets having different items."""
    _check_count(k_a, n_a)
    _check_count(k_b, n_b)
    p = _fisher_p(k_a, n_a, k_b, n_b)
    needed = None
    if p >= ALPHA and k_a * n_b != k_b * n_a:
        needed = next((scale * max(n_a, n_b) for scale in range(2, _MAX_SCALE + 1)
                       if _fisher_p(round(scale * k_a), scale * n_a, round(scale * k_b), scale * n_b) < ALPHA),
                      _MAX_SCALE * max(n_a, n_b) + 1)
    return IndependentComparison(accuracy(k_a, n_a), accuracy(k_b, n_b), p, needed)


# --------------------------------------------------------------------------- two recipes, several seeds
@dataclass(frozen=True)
class SeedComparison:
    """Recipe B against recipe A: one value per seed each; Welch's interval for ``mean(B) - mean(A)``."""

    values_a: tuple
    values_b: tuple
    difference: float
    low: float
    high: float
    lower_is_better: bool
    seeds_needed: int | None  # seeds per recipe for an interval that excludes 0 if the observed effect held

    @property
    def outcome(self) -> str:
        if self.low > 0 or self.high < 0:
            b_higher = self.low > 0
            return BETTER if b_higher != self.lower_is_better else WORSE
        return UNRESOLVED

    def verdict(self, name_a: str = "A", name_b: str = "B", metric: str = "giá trị", digits: int = 3,
                unit: str = "hạt giống") -> str:
        """One Vietnamese line: outcome, both means with their counts, the difference and its 95% interval; when
        unresolved, how many ``unit`` (seeds, or repeated timings) each side would need."""
        mean_a, mean_b = statistics.fmean(self.values_a), statistics.fmean(self.values_b)
        numbers = (f"{metric} trung bình {mean_b:.{digits}f} ({len(self.values_b)} {unit}) so với "
                   f"{mean_a:.{digits}f} ({len(self.values_a)} {unit}), hiệu {self.difference:+.{digits}f}, "
                   f"KTC 95% [{self.low:+.{digits}f}; {self.high:+.{digits}f}]")
        if self.outcome != UNRESOLVED:
            return f"{name_b} {self.outcome} {name_a}: {numbers}"
        need = ("cần khoảng {} {} mỗi bên nếu hiệu và độ dao động giữ nguyên".format(self.seeds_needed, unit)
                if self.seeds_needed is not None else "hiệu quan sát bằng 0")
        return f"{name_b} so với {name_a}: {UNRESOLVED} ({numbers}; {need})"

    def __str__(self) -> str:
        return self.verdict()


def compare_seeds(values_a, values_b, lower_is_better: bool = True) -> SeedComparison:
    """Recipe B against recipe A from one value per seed (e.g. validation loss: ``lower_is_better=True``).

    Needs at least 3 seeds each: with two, the interval is so wide that it says nothing."""
    from scipy.stats import t, ttest_ind

    values_a, values_b = tuple(float(v) for v in values_a), tuple(float(v) for v in values_b)
    if min(len(values_a), len(values_b)) < 3:
        raise CourseError(f"Cần ít nhất 3 hạt giống cho mỗi cách (đang có {len(values_a)} và {len(values_b)}).",
                          "Chạy thêm hạt giống; khoảng dao động của hai lần chạy không phải là mức nhiễu.")
    difference = statistics.fmean(values_b) - statistics.fmean(values_a)
    if max(values_a) == min(values_a) and max(values_b) == min(values_b):
        low = high = difference  # no spread at all: the difference is what it is
    else:
        ci = ttest_ind(values_b, values_a, equal_var=False).confidence_interval(confidence_level=CONFIDENCE)
        low, high = float(ci.low), float(ci.high)
    needed = None
    if low <= 0 <= high and difference != 0:
        var = (statistics.variance(values_a) + statistics.variance(values_b)) / 2
        needed = next((k for k in range(max(len(values_a), len(values_b)) + 1, 1001)
                       if t.ppf(1 - ALPHA / 2, 2 * k - 2) * math.sqrt(2 * var / k) < abs(difference)), 1001)
    return SeedComparison(values_a, values_b, difference, low, high, lower_is_better, needed)

