"""lora_helpers.stats: intervals and exact tests, and the three outcomes they allow (values checked by hand)."""

import pytest

from lora_helpers import CourseError
from lora_helpers.stats import (
    BETTER,
    UNRESOLVED,
    WORSE,
    accuracy,
    accuracy_of,
    compare_independent,
    compare_paired,
    compare_seeds,
)


def test_accuracy_has_the_wilson_interval():
    acc = accuracy(18, 20)
    assert (round(acc.low, 3), round(acc.high, 3)) == (0.699, 0.972)  # Wilson 95%: 69.9%–97.2%
    assert str(acc) == "90% (18/20; KTC 95%: 70–97%)"
    edge = accuracy(20, 20)
    assert edge.high == pytest.approx(1.0) and 0.8 < edge.low < 0.85  # never outside [0, 1]
    assert accuracy_of([True, False, True, True]).k == 3


@pytest.mark.parametrize("k, n", [(3, 2), (-1, 5), (1, 0), (0.5, 2), (True, 3)])
def test_accuracy_rejects_what_is_not_a_count(k, n):
    with pytest.raises(CourseError):
        accuracy(k, n)


def test_paired_three_fixed_one_broken_is_unresolved():
    # 10 items: B fixes items 0-2, breaks item 3; both right on 4-7, both wrong on 8-9.
    a = [False, False, False, True, True, True, True, True, False, False]
    b = [True, True, True, False, True, True, True, True, False, False]
    result = compare_paired(a, b)
    assert (result.fixed, result.broken, result.n) == (3, 1, 10)
    assert result.p_value == pytest.approx(0.625)  # exact McNemar: 2 * P(X <= 1), X ~ Bin(4, 1/2)
    assert result.outcome == UNRESOLVED
    # At the same rates (30% fixed, 10% broken) the exact test is first below 0.05 at 5x: 15 fixed vs 5 broken
    # (p = 0.041); 4x (12 vs 4) gives p = 0.077.
    assert result.n_needed == 50
    line = result.verdict("SFT", "SFT+DPO")
    assert UNRESOLVED in line and "3 câu SFT+DPO sửa được, 1 câu SFT+DPO làm hỏng trên 10 câu" in line
    assert "khoảng 50 câu" in line


def test_paired_clear_differences_and_ties():
    a = [False] * 12 + [True] * 8
    b = [True] * 12 + [True] * 8
    better = compare_paired(a, b)
    assert better.fixed == 12 and better.broken == 0 and better.p_value < 0.001 and better.outcome == BETTER
    assert better.n_needed is None and better.verdict().startswith("B tốt hơn A")
    assert compare_paired(b, a).outcome == WORSE
    tie = compare_paired([True, False, True, False], [False, True, True, False])
    assert tie.fixed == tie.broken == 1 and tie.outcome == UNRESOLVED and tie.n_needed is None
    assert "bằng nhau" in tie.verdict()
    same = compare_paired([True, False], [True, False])
    assert same.p_value == 1.0 and same.outcome == UNRESOLVED
    with pytest.raises(CourseError):
        compare_paired([True], [True, False])


def test_seeds_welch_interval_and_outcomes():
    lora = [0.30, 0.32, 0.31]
    olora = [0.20, 0.21, 0.19]
    result = compare_seeds(lora, olora, lower_is_better=True)
    assert result.difference == pytest.approx(-0.11)
    assert result.high < 0 and result.outcome == BETTER  # lower validation loss is better
    assert compare_seeds(lora, olora, lower_is_better=False).outcome == WORSE
    noisy = compare_seeds([0.30, 0.40, 0.20], [0.28, 0.38, 0.18])
    assert noisy.low < 0 < noisy.high and noisy.outcome == UNRESOLVED
    assert noisy.seeds_needed is not None and noisy.seeds_needed > 3
    assert "hạt giống mỗi bên" in noisy.verdict("LoRA", "OLoRA", metric="loss kiểm định")
    with pytest.raises(CourseError, match="ít nhất 3 hạt giống"):
        compare_seeds([0.3, 0.31], [0.2, 0.21])


def test_independent_sets_fisher_exact_and_outcomes():
    same_model = compare_independent(18, 20, 15, 20)  # test split 90%, held-out set 75%
    assert same_model.p_value == pytest.approx(0.407, abs=1e-3) and same_model.outcome == UNRESOLVED
    line = same_model.verdict("tập kiểm tra", "câu mới")
    assert UNRESOLVED in line and "75% (15/20" in line and "câu mỗi tập" in line
    # At 90% vs 75%, Fisher's test first goes below 0.05 with 80 items per set (p = 0.021; at 60: p = 0.053).
    assert same_model.n_needed == 80
    dropped = compare_independent(18, 20, 8, 20)
    assert dropped.p_value < 0.01 and dropped.outcome == WORSE and dropped.verdict().startswith("B thấp hơn A")
    assert compare_independent(8, 20, 18, 20).outcome == BETTER
    assert compare_independent(10, 20, 5, 10).n_needed is None
    with pytest.raises(CourseError):
        compare_independent(21, 20, 1, 2)
