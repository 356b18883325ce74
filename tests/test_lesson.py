"""`Lesson.load_base` / `Lesson.load_tokenizer`: the one way lessons load the base after their first `from_pretrained`."""

import time

import pytest
import torch

from lora_helpers import lesson, models
from lora_helpers.errors import CourseError


class _Loaded:
    def __init__(self, path, dtype):
        self.path, self.dtype, self.device = path, dtype, "cpu"

    def to(self, device):
        self.device = device
        return self


@pytest.fixture
def opened(monkeypatch):
    import transformers

    calls = []

    def fake_from_pretrained(path, dtype=None, **kwargs):
        calls.append((path, dtype, kwargs))
        return _Loaded(path, dtype)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_from_pretrained)
    monkeypatch.setattr(models, "find_base_model", lambda verbose=True: "/base/model")
    return lesson.Lesson(device="meta", dtype=torch.float32, precision=None, started=time.perf_counter()), calls


def test_load_base_is_from_pretrained_of_the_course_base_in_the_lesson_dtype_on_its_device(opened):
    start, calls = opened
    model = start.load_base()
    assert calls == [("/base/model", torch.float32, {})]
    assert (model.path, model.dtype, model.device) == ("/base/model", torch.float32, "meta")


@pytest.mark.parametrize("asked, dtype", [(torch.bfloat16, torch.bfloat16), ("float16", torch.float16)])
def test_load_base_takes_a_dtype_or_its_name(opened, asked, dtype):
    start, calls = opened
    assert start.load_base(asked).dtype == dtype and calls[-1][1] == dtype


@pytest.mark.parametrize("bad", ["float33", 16, "Tensor"])
def test_load_base_refuses_what_is_not_a_dtype_in_vietnamese(opened, bad):
    start, calls = opened
    with pytest.raises(CourseError, match="torch"):
        start.load_base(bad)
    assert calls == []


def test_load_tokenizer_is_the_course_tokenizer(monkeypatch, opened):
    start, _ = opened
    seen = []
    monkeypatch.setattr(models, "load_tokenizer", lambda path: seen.append(path) or "tok")
    assert start.load_tokenizer() == "tok" and seen == ["/base/model"]
