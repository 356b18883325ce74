"""What the check tests share: result assertions, tiny saved adapters, fake results (not a test module).

Tiny random Llama models (``tests/conftest.py``) stand in for SmolLM2: the checks only read shapes, weights
and configs, so what holds here holds for the course model.
"""

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from lora_helpers.checks import CheckResult
from lora_helpers.evaluation import task_metrics
from lora_helpers.parity import ParityResult

TASKS = ("don_hang", "ngay_thang")


def ok(result):
    assert isinstance(result, CheckResult)
    assert result.status == "dung", result.message
    assert result.message.startswith("✅")
    return result


def wrong(result, *fragments):
    assert isinstance(result, CheckResult)
    assert result.status == "sai", result.message
    assert result.message.startswith("❌") and "💡 Gợi ý:" in result.message
    for fragment in fragments:
        assert fragment in result.message, (fragment, result.message)
    return result


def todo(result):
    assert result.status == "chua_lam", result.message
    assert result.message.startswith("⏳") and "chưa làm" in result.message
    return result


def randomize_lora(model, seed=0, scale=0.5):
    """Give every lora_B a non-zero value, as training would (B starts at zero), and A a seed-specific one."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
            elif "lora_A" in name:
                p.copy_(torch.randn(p.shape, generator=gen) / p.shape[1] ** 0.5)
    return model


CONFIG = dict(r=2, lora_alpha=4, target_modules="all-linear", lora_dropout=0.0)


@pytest.fixture(scope="module")
def adapter_dirs(tmp_path_factory, tiny_model_factory):
    """Two saved tiny adapters with different trained-looking weights."""
    root = tmp_path_factory.mktemp("adapters")
    dirs = {}
    for seed, task in enumerate(TASKS):
        model = randomize_lora(get_peft_model(tiny_model_factory(), LoraConfig(**CONFIG)), seed=seed + 1)
        model.save_pretrained(root / task)
        dirs[task] = root / task
    return dirs


def two_adapter_model(tiny_model_factory, adapter_dirs, names=TASKS, dirs=None):
    dirs = dirs or [adapter_dirs[t] for t in TASKS]
    model = PeftModel.from_pretrained(tiny_model_factory(), dirs[0], adapter_name=names[0])
    model.load_adapter(dirs[1], adapter_name=names[1])
    return model


def fake_result(task, predictions, references):
    metrics = task_metrics(task, predictions, references)
    metrics["predictions"] = predictions
    return metrics


def parity_result(passed=False, tolerance=1e-4, dtype="float32", n=8):
    return ParityResult(max_abs_logit_diff=0.3 if not passed else 1e-6, tolerance=tolerance, n_prompts=n,
                        n_identical_generations=n if passed else n - 3, first_divergence=None if passed else (0, 2),
                        metric_a=None, metric_b=None, passed=passed, dtype=dtype)


def rows_of(task, words):
    """Dataset rows of ``task`` whose questions are tiny-tokenizer words (``w5 w6``...)."""
    return [{"messages": [{"role": "user", "content": w}, {"role": "assistant", "content": "w40"}],
             "answer": "w40", "task": task} for w in words]


def measured(tests, right_counts):
    return {t: fake_result(t, [*ds["answer"][:right_counts[t]], *["sai"] * (4 - right_counts[t])], ds["answer"])
            for t, ds in tests.items()}


def _same(a, b) -> bool:
    """``a == b``, tensors (also inside tuples and lists) compared with ``torch.equal``."""
    if torch.is_tensor(a) or torch.is_tensor(b):
        return torch.is_tensor(a) and torch.is_tensor(b) and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


def walk_table(check_function, reference, *args, **kwargs):
    """Walk a check's mistake table: the reference answer passes, ``None`` is "not done", and every row's example
    (a wrong answer made from the reference) is reported by that very row: its problem and its hint."""
    from lora_helpers.checks.kit import table_of

    ok(check_function(reference, *args, **kwargs))
    todo(check_function(None, *args, **kwargs))
    rows = table_of(check_function, reference, *args, **kwargs).rows
    assert rows, "a check without mistakes to report"
    for i, row in enumerate(rows):
        assert row.example is not None, f"row {i} ({row.problem!r}) has no example answer to test it with"
        answer = row.example(reference)
        table = table_of(check_function, answer, *args, **kwargs)
        first = next(j for j, other in enumerate(table.rows) if other.when(answer))
        if first != i:  # on a tiny model two slips can give the same number: the earlier row reports it
            assert first < i and _same(table.rows[first].example(reference), answer), (i, row.problem, table.rows[first].problem)
        wrong(check_function(answer, *args, **kwargs), table.rows[first].problem, table.rows[first].hint)
    return rows
