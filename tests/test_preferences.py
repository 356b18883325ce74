import random

import pytest
import torch

from lora_helpers import CourseError
from lora_helpers.data import make_task_splits
from lora_helpers.preferences import (
    MISTAKES,
    applicable_mistakes,
    check_preference_dataset,
    completion_logps,
    dpo_log_curves,
    implicit_reward_margins,
    make_preference_splits,
    parse_iso_date,
    preference_accuracy,
    rejected_answer,
)


def test_preference_splits_are_seeded_and_deterministic():
    a = make_preference_splits(n_train=40, n_val=10, seed=3)
    b = make_preference_splits(n_train=40, n_val=10, seed=3)
    c = make_preference_splits(n_train=40, n_val=10, seed=4)
    assert a["train"].to_list() == b["train"].to_list()
    assert a["validation"].to_list() == b["validation"].to_list()
    assert a["train"]["chosen"] != c["train"]["chosen"]
    assert {len(a["train"]), len(a["validation"])} == {40, 10} and set(a) == {"train", "validation"}


def test_chosen_is_the_correct_answer_and_rejected_differs():
    pref = make_preference_splits(n_train=80, n_val=20, seed=0)
    facts = make_task_splits("ngay_thang", n_train=80, n_val=20, n_test=50, seed=0)
    for split in ("train", "validation"):
        assert [c[0]["content"] for c in pref[split]["chosen"]] == facts[split]["answer"]
        assert [p for p in pref[split]["prompt"]] == [m[:-1] for m in facts[split]["messages"]]
        for row in pref[split]:
            assert row["chosen"] != row["rejected"]
            assert row["mistake"] in MISTAKES
            assert row["rejected"][0]["role"] == "assistant"
    kinds = set(pref["train"]["mistake"])
    assert len(kinds) >= 4, kinds  # the mistakes are varied
    check_preference_dataset(pref["train"], "train")


def test_splits_are_disjoint_from_each_other_and_from_the_test_set():
    pref = make_preference_splits(n_train=100, n_val=30, n_test=50, seed=0)
    train = {c[0]["content"] for c in pref["train"]["chosen"]}
    val = {c[0]["content"] for c in pref["validation"]["chosen"]}
    test = set(make_task_splits("ngay_thang", n_test=24, seed=0)["test"]["answer"])
    assert not train & val
    assert not (train | val) & test


@pytest.mark.parametrize("answer,kind,expected", [
    ("2021-04-03", "dao_ngay_thang", "2021-03-04"),
    ("2021-04-03", "thu_tu_dd_mm_yyyy", "03-04-2021"),
    ("2021-04-03", "thieu_so_0", "2021-4-3"),
])
def test_each_mistake_kind(answer, kind, expected):
    assert rejected_answer(answer, random.Random(0), kind) == (expected, kind)


def test_wrong_year_and_chatty_answers():
    rng = random.Random(0)
    for _ in range(20):
        text, _ = rejected_answer("2021-04-03", rng, "sai_nam")
        y, m, d = parse_iso_date(text)
        assert (m, d) == (4, 3) and y != 2021 and abs(y - 2021) <= 3
        chatty, _ = rejected_answer("2021-04-03", rng, "lan_man")
        assert chatty != "2021-04-03" and " " in chatty


def test_mistakes_that_would_equal_the_answer_are_not_applicable():
    assert "dao_ngay_thang" not in applicable_mistakes("2020-05-05")
    assert "thieu_so_0" not in applicable_mistakes("2020-11-25")
    rng = random.Random(1)
    for _ in range(50):
        for answer in ("2020-05-05", "2020-11-25", "1999-12-12"):
            assert rejected_answer(answer, rng)[0] != answer
    with pytest.raises(CourseError, match="không tạo ra câu sai"):
        rejected_answer("2020-05-05", rng, "dao_ngay_thang")


def test_bad_input_gives_vietnamese_errors():
    with pytest.raises(CourseError, match="không phải một ngày"):
        rejected_answer("03/04/2021", random.Random(0))
    with pytest.raises(CourseError, match="không hợp lệ"):
        parse_iso_date("2021-13-03")
    with pytest.raises(CourseError, match="Không có kiểu lỗi"):
        rejected_answer("2021-04-03", random.Random(0), "typo")
    with pytest.raises(CourseError, match="Chưa có dữ liệu ưu tiên"):
        make_preference_splits("don_hang", n_train=5, n_val=2)
    with pytest.raises(CourseError, match="Không có tác vụ"):
        make_preference_splits("dates", n_train=5, n_val=2)
    with pytest.raises(CourseError, match="số nguyên dương"):
        make_preference_splits(n_train=0, n_val=2)


def test_check_preference_dataset_rejects_bad_rows():
    from datasets import Dataset

    good = make_preference_splits(n_train=3, n_val=1)["train"]
    check_preference_dataset(good)
    with pytest.raises(CourseError, match="thiếu cột"):
        check_preference_dataset(good.remove_columns("rejected"), "d")
    rows = good.to_list()
    rows[1]["rejected"] = rows[1]["chosen"]
    with pytest.raises(CourseError, match="giống hệt"):
        check_preference_dataset(Dataset.from_list(rows), "d")
    plain = Dataset.from_dict({"prompt": ["p"], "chosen": ["a"], "rejected": ["b"]})
    with pytest.raises(CourseError, match="danh sách các dict"):
        check_preference_dataset(plain, "d")
    rows = good.to_list()
    rows[0]["chosen"] = [{"role": "user", "content": "x"}]
    with pytest.raises(CourseError, match="chỉ chứa tin nhắn của `assistant`"):
        check_preference_dataset(Dataset.from_list(rows), "d")


def test_margins_and_accuracy():
    policy = (torch.tensor([-1.0, -2.0, -3.0]), torch.tensor([-5.0, -1.0, -3.0]))
    reference = (torch.tensor([-2.0, -2.0, -3.0]), torch.tensor([-4.0, -2.0, -3.0]))
    margins = implicit_reward_margins(policy, reference, beta=0.5)
    assert torch.allclose(margins, torch.tensor([1.0, -0.5, 0.0]))
    assert preference_accuracy(margins) == pytest.approx(1 / 3)  # a zero margin does not count
    assert (implicit_reward_margins(reference, reference, beta=0.1) == 0).all()
    with pytest.raises(CourseError, match="beta"):
        implicit_reward_margins(policy, reference, beta=0)
    with pytest.raises(CourseError, match="không khớp"):
        implicit_reward_margins(policy, (reference[0][:2], reference[1][:2]), beta=0.1)
    with pytest.raises(CourseError):
        preference_accuracy(torch.tensor([]))


def test_completion_logps_sums_only_completion_tokens(tiny_model_factory):
    model = tiny_model_factory()
    ids = torch.tensor([[1, 5, 6, 7, 0], [1, 5, 8, 0, 0]])
    batch = {"input_ids": ids, "attention_mask": (ids != 0).long(),
             "completion_mask": torch.tensor([[0, 0, 1, 1, 0], [0, 0, 1, 0, 0]])}
    chosen, rejected = completion_logps(model, batch)
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=batch["attention_mask"]).logits, -1)
    assert chosen.item() == pytest.approx((logp[0, 1, 6] + logp[0, 2, 7]).item(), abs=1e-5)
    assert rejected.item() == pytest.approx(logp[1, 1, 8].item(), abs=1e-5)


def test_completion_logps_over_a_loader_concatenates_its_batches_in_eval_mode(tiny_model_factory):
    model = tiny_model_factory().train()
    ids = torch.tensor([[1, 5, 6, 7, 0], [1, 5, 8, 0, 0]])
    batch = {"input_ids": ids, "attention_mask": (ids != 0).long(),
             "completion_mask": torch.tensor([[0, 0, 1, 1, 0], [0, 0, 1, 0, 0]])}
    one = completion_logps(model, batch)
    chosen, rejected = completion_logps(model, [batch, batch])          # any iterable of batches: a DataLoader
    torch.testing.assert_close(chosen, torch.cat([one[0], one[0]]))
    torch.testing.assert_close(rejected, torch.cat([one[1], one[1]]))
    assert model.training                                               # put back in the mode it was in


def test_completion_logps_with_completions_starting_at_different_places(tiny_model_factory):
    """Only the positions from the earliest completion start go through the LM head: same sums as the full logits."""
    model = tiny_model_factory()
    ids = torch.tensor([[1, 5, 6, 7, 9, 3], [1, 5, 8, 4, 2, 0], [1, 2, 3, 4, 5, 6]])
    completion = torch.tensor([[0, 0, 0, 0, 1, 1], [0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 1]])
    batch = {"input_ids": torch.cat([ids, ids.flip(0)]), "attention_mask": torch.cat([ids != 0, ids.flip(0) != 0]).long(),
             "completion_mask": torch.cat([completion, completion.flip(0)])}
    chosen, rejected = completion_logps(model, batch)
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, -1)
    token = logp[:, :-1].gather(-1, batch["input_ids"][:, 1:, None]).squeeze(-1)
    full = (token * batch["completion_mask"][:, 1:]).sum(dim=1)
    torch.testing.assert_close(torch.cat([chosen, rejected]), full, rtol=1e-5, atol=1e-5)


def test_dpo_log_curves_reads_training_entries():
    log = [{"loss": 0.69, "rewards/margins": 0.0, "step": 1}, {"loss": 0.5, "rewards/margins": 0.3, "step": 2},
           {"eval_loss": 0.6, "step": 2}, {"train_runtime": 3.0, "step": 2}]
    curves = dpo_log_curves(log, keys=("loss", "rewards/margins"))
    assert curves == {"loss": [(1, 0.69), (2, 0.5)], "rewards/margins": [(1, 0.0), (2, 0.3)]}


def test_preference_plots_draw_every_series():
    import matplotlib

    matplotlib.use("Agg")
    from lora_helpers.plotting import plot_histograms, plot_metric_curves

    ax = plot_histograms({"trước": torch.zeros(5), "sau": torch.tensor([0.5, 1.0, -0.2, 2.0, 0.1])}, bins=4)
    assert len(ax.patches) == 8 and [t.get_text() for t in ax.get_legend().get_texts()] == ["trước", "sau"]
    fig = plot_metric_curves({"loss": [(1, 0.69), (2, 0.4)], "rewards/margins": [(1, 0.0), (2, 0.8)]})
    assert len(fig.axes) == 2 and list(fig.axes[1].lines[0].get_ydata()) == [0.0, 0.8]


@pytest.mark.parametrize("prediction, kind", [
    ("2021-04-03", "dung"), (" 2021-04-03 ", "dung"), ("2021-03-04", "dao_ngay_thang"), ("2021-04-30", "sai_ngay"),
    ("2021-05-03", "sai_thang"), ("2020-04-03", "sai_nam"), ("2020-05-03", "sai_nhieu_cho"), ("2021-4-3", "thieu_so_0"),
    ("03-04-2021", "thu_tu_dd_mm_yyyy"), ("3/4/2021", "thu_tu_dd_mm_yyyy"), ("Ngày 3 tháng 4 năm 2021", "sai_dinh_dang"),
    ("", "sai_dinh_dang"), (None, "sai_dinh_dang"),
])
def test_classify_date_answer(prediction, kind):
    from lora_helpers.preferences import ANSWER_KINDS, classify_date_answer

    assert classify_date_answer(prediction, "2021-04-03") == kind and kind in ANSWER_KINDS


def test_classify_needs_an_iso_reference():
    from lora_helpers.preferences import classify_date_answer

    with pytest.raises(CourseError, match="YYYY-MM-DD"):
        classify_date_answer("2021-04-03", "3/4/2021")
