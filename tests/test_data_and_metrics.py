import json
import re

import pytest

from lora_helpers import CourseError
from lora_helpers.data import (
    _EVENTS,
    _ORDER_POOLS,
    TASKS,
    check_messages_dataset,
    make_task_splits,
    make_unseen_split,
    to_prompt_completion,
)
from lora_helpers.evaluation import _progress_bar, in_notebook, score_answer, task_metrics


@pytest.mark.parametrize("task", sorted(TASKS))
def test_splits_are_seeded_and_disjoint(task):
    a = make_task_splits(task, n_train=60, n_val=10, n_test=10, seed=1)
    b = make_task_splits(task, n_train=60, n_val=10, n_test=10, seed=1)
    assert a["train"]["messages"] == b["train"]["messages"]
    answers = {split: set(a[split]["answer"]) for split in a}
    assert not answers["train"] & answers["test"]
    assert not answers["validation"] & answers["test"]
    assert not answers["train"] & answers["validation"]
    check_messages_dataset(a)  # valid chat format


@pytest.mark.parametrize("task", sorted(TASKS))
def test_test_split_uses_held_out_phrasings(task):
    spec = TASKS[task]
    data = make_task_splits(task, n_train=40, n_val=5, n_test=20)
    first_words = lambda t: t.split("{")[0]  # noqa: E731
    assert not set(spec.train_templates) & set(spec.test_templates)
    train_text = " ".join(m[0]["content"] for m in data["train"]["messages"])
    for template in spec.test_templates:
        fixed = [part.split("}")[-1] for part in template.split("{") if len(part.split("}")[-1]) > 6]
        assert any(f not in train_text for f in fixed), first_words(template)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_unseen_split_holds_out_shapes_values_and_answers(task):
    spec = TASKS[task]
    unseen = make_unseen_split(task, n=30)
    assert unseen["messages"] == make_unseen_split(task, n=30)["messages"]  # seeded
    check_messages_dataset(unseen)
    splits = make_task_splits(task)  # the course splits at their default sizes, as the adapters saw them
    assert not {a for s in splits.values() for a in s["answer"]} & set(unseen["answer"])
    assert spec.unseen_templates and not set(spec.unseen_templates) & (set(spec.train_templates) | set(spec.test_templates))
    seen_text = " ".join(m[0]["content"] for s in splits.values() for m in s["messages"])
    for template in spec.unseen_templates:  # the fixed words of each unseen shape never occur in the course splits
        fixed = [part.split("}")[-1] for part in template.split("{") if len(part.split("}")[-1].strip(" .,")) > 6]
        assert any(f not in seen_text for f in fixed), template
    if task == "don_hang":
        seen_values = [set(pool) for pool in _ORDER_POOLS["seen"]]
        for answer in unseen["answer"]:
            order = json.loads(answer)
            for value, seen in zip((order["ten"], order["mon"], order["dia_chi"]), seen_values):
                assert value not in seen
        for pool, seen in zip(_ORDER_POOLS["unseen"], seen_values):
            assert not set(pool) & seen
    with pytest.raises(CourseError, match="n phải"):
        make_unseen_split(task, n=0)


def _shape_of(prompt: str, templates) -> str | None:
    """The template a prompt's sentence was made from (a number slot matches digits, a word slot text
    without punctuation), or None."""
    numbers = {"qty", "d", "m", "y", "dd", "mm"}
    for template in templates:
        pattern = re.sub(r"\\\{(\w+)\\\}", lambda m: r"\d+" if m[1] in numbers else r"[^,:;()/]+?", re.escape(template))
        if re.search(pattern + "$", prompt, flags=re.IGNORECASE):
            return template
    return None


@pytest.mark.parametrize("task", sorted(TASKS))
def test_unseen_split_can_hold_out_words_or_shapes_alone(task):
    spec = TASKS[task]
    splits = make_task_splits(task)
    split_answers = {a for s in splits.values() for a in s["answer"]}
    both = make_unseen_split(task, n=30)
    words = make_unseen_split(task, n=30, hold_out="words")
    shapes = make_unseen_split(task, n=30, hold_out="shapes")
    assert words["messages"] == make_unseen_split(task, n=30, hold_out="words")["messages"]  # seeded
    for data, templates in ((both, spec.unseen_templates), (words, spec.test_templates), (shapes, spec.unseen_templates)):
        check_messages_dataset(data)
        assert not split_answers & set(data["answer"])
        prompts = [m[0]["content"] for m in data["messages"]]
        assert all(_shape_of(p, templates) for p in prompts), templates
        assert not any(_shape_of(p, spec.train_templates) for p in prompts)
    if task == "don_hang":  # the values: unseen in "words", the training pools' in "shapes"
        seen_pools, unseen_pools = _ORDER_POOLS["seen"], _ORDER_POOLS["unseen"]
        for data, pools in ((words, unseen_pools), (shapes, seen_pools)):
            for answer in data["answer"]:
                order = json.loads(answer)
                assert all(v in pool for v, pool in zip((order["ten"], order["mon"], order["dia_chi"]), pools))
    else:
        events = lambda data: {e for p in data["messages"] for e in _EVENTS if e.lower() in p[0]["content"].lower()}  # noqa: E731
        assert not events(words) and events(shapes)
    with pytest.raises(CourseError, match="hold_out"):
        make_unseen_split(task, n=5, hold_out="names")


def test_no_progress_bar_outside_a_notebook():
    assert not in_notebook() and _progress_bar(10, "x") is None


def test_seed_changes_data():
    a = make_task_splits("ngay_thang", n_train=20, n_val=5, n_test=5, seed=0)
    b = make_task_splits("ngay_thang", n_train=20, n_val=5, n_test=5, seed=1)
    assert a["train"]["answer"] != b["train"]["answer"]


def test_unknown_task_and_bad_sizes():
    with pytest.raises(CourseError, match="don_hang"):
        make_task_splits("dich_thuat")
    with pytest.raises(CourseError, match="n_train"):
        make_task_splits("don_hang", n_train=0)


def test_dataset_without_messages_is_explained():
    from datasets import Dataset

    with pytest.raises(CourseError, match="messages"):
        check_messages_dataset(Dataset.from_list([{"text": "xin chào"}]))
    with pytest.raises(CourseError, match="assistant"):
        check_messages_dataset(Dataset.from_list([{"messages": [{"role": "user", "content": "hi"}]}]))
    with pytest.raises(CourseError, match="role"):
        check_messages_dataset(Dataset.from_list([{"messages": [{"text": "hi"}]}]))


def test_prompt_completion_split():
    data = make_task_splits("don_hang", n_train=5, n_val=1, n_test=1)
    pc = to_prompt_completion(data["train"])
    assert pc[0]["prompt"][-1]["role"] == "user"
    assert pc[0]["completion"] == [{"role": "assistant", "content": data["train"][0]["answer"]}]


def test_json_metric_compares_objects_not_strings():
    ref = json.dumps({"ten": "Lan", "mon": "phở bò", "so_luong": 2, "dia_chi": "Quận 1"}, ensure_ascii=False)
    reordered = '{"so_luong": 2, "ten": "Lan", "dia_chi": "Quận 1", "mon": "phở bò"}'
    assert score_answer("don_hang", reordered, ref)
    assert not score_answer("don_hang", reordered.replace("2", '"2"'), ref)  # quantity as text
    assert not score_answer("don_hang", "Đây là JSON: " + ref, ref)  # prose around it
    metrics = task_metrics("don_hang", [ref, "không phải json"], [ref, ref])
    assert metrics["accuracy"] == 0.5 and metrics["valid_json"] == 0.5


def test_date_metric_is_exact():
    assert score_answer("ngay_thang", " 2024-03-05\n", "2024-03-05")
    assert not score_answer("ngay_thang", "2024-3-5", "2024-03-05")
    assert not score_answer("ngay_thang", "05/03/2024", "2024-03-05")


def test_progress_bar_is_sanitized_for_nbval():
    """nbval compares a checked cell's outputs after tests/sanitize.cfg; it records a bar's first display while the
    committed notebook holds its last update, so the two must read the same once sanitized."""
    import configparser
    import re
    from pathlib import Path

    from transformers.utils.notebook import html_progress_bar

    config = configparser.ConfigParser()
    config.read(Path(__file__).with_name("sanitize.cfg"), encoding="utf-8")
    rules = [(config[s]["regex"], config[s]["replace"]) for s in config.sections()]

    def sanitize(text):
        for regex, replace in rules:
            text = re.sub(regex, replace, text)
        return text

    first = html_progress_bar(0, 20, "Sinh câu trả lời", "[ 0/20 : < :]")
    last = html_progress_bar(20, 20, "Sinh câu trả lời", "[20/20 01:08]")
    assert first != last and sanitize(first) == sanitize(last)
    assert sanitize("Đánh giá xong trong 35 s") == sanitize("Đánh giá xong trong 12 s")
