"""The ``serving_many_adapters`` exercise checks: each walks its table of mistakes, plus what the walk cannot show.

Tiny random Llama models (``tests/conftest.py``) stand in for SmolLM2: ``check_mixed_batch`` is given
tiny-tokenizer prompts; ``check_safe_hotswap`` builds its own tiny models.
"""

import json
from pathlib import Path

import pytest
from check_support import ok, todo, two_adapter_model, walk_table, wrong
from peft.utils.hotswap import hotswap_adapter

from lora_helpers.checks import (
    check_manual_routes,
    check_mixed_batch,
    check_safe_hotswap,
    manual_routing_requests,
    mixed_batch_requests,
)
from lora_helpers.checks.serving_many_adapters import _mixed_batch, _routing_rows
from lora_helpers.errors import CourseError
from lora_helpers.serving import BASE, generate_batch, serve_by_switching

RIGHT = [task for _, task in _routing_rows()]


def test_manual_routes_shows_only_the_texts():
    texts = manual_routing_requests()
    assert len(texts) == len(RIGHT) == 7 and all(isinstance(t, str) for t in texts)
    assert not any(t.startswith(("Trích", "Viết ngày")) for t in texts), "the instruction line is not shown"
    assert set(RIGHT) == {"don_hang", "ngay_thang", BASE}


def test_manual_routes_table():
    walk_table(check_manual_routes, list(RIGHT))
    ok(check_manual_routes(tuple(RIGHT)))


REQUESTS = (["w5 w9 w12", "w20 w3", "w7 w30", "w11 w2 w44"], ["ngay_thang", BASE, "don_hang", "ngay_thang"])
N_NEW = 5


def test_mixed_batch_requests_are_the_task_rows():
    prompts, names = mixed_batch_requests()
    assert names == ["ngay_thang", BASE, "don_hang", "ngay_thang"] and len(prompts) == 4
    assert prompts[0][-1]["content"].startswith("Viết ngày") and prompts[2][-1]["content"].startswith("Trích")


def test_mixed_batch_table(tiny_model_factory, tiny_tokenizer, adapter_dirs):
    model = two_adapter_model(tiny_model_factory, adapter_dirs).eval()
    prompts, names = REQUESTS
    mixed = generate_batch(model, tiny_tokenizer, prompts, N_NEW, adapter_names=names)[0]
    separate = serve_by_switching(model, tiny_tokenizer, prompts, names, N_NEW).answers
    assert mixed == separate
    model.set_adapter("don_hang")
    assert generate_batch(model, tiny_tokenizer, prompts, N_NEW)[0] != mixed, "the tiny adapters must change answers"
    same = [a == b for a, b in zip(mixed, separate)]
    walk_table(_mixed_batch, (mixed, list(separate), same), model, tiny_tokenizer, N_NEW, REQUESTS)
    ok(check_mixed_batch(tuple(mixed), separate, tuple(same), model, tiny_tokenizer, N_NEW, requests=REQUESTS))
    todo(check_mixed_batch(None, None, None, model, tiny_tokenizer, N_NEW))
    todo(check_mixed_batch(mixed, None, same, model, tiny_tokenizer, N_NEW, requests=REQUESTS))
    wrong(check_mixed_batch(mixed, separate, same, model, tiny_tokenizer, N_NEW + 3, requests=REQUESTS), "max_new_tokens=8")


def safe(model, thu_muc, ten):
    if ten not in getattr(model, "peft_config", {}):
        raise CourseError(f"Chưa nạp bộ điều hợp `{ten}`.", "Dùng load_adapter.")
    new = json.loads((Path(thu_muc) / "adapter_config.json").read_text(encoding="utf-8"))
    rank = max(m.lora_A[ten].weight.shape[0] for m in model.modules() if hasattr(m, "lora_A") and ten in m.lora_A)
    if new["r"] > rank:
        raise CourseError(f"Hạng {new['r']} lớn hơn chỗ (hạng {rank}).", "prepare_model_for_compiled_hotswap.")
    if set(new["target_modules"]) - set(model.peft_config[ten].target_modules):
        raise CourseError("Bộ mới gắn thêm lớp đích.", "Cần cùng target_modules.")
    hotswap_adapter(model, str(thu_muc), adapter_name=ten)


def test_safe_hotswap_table():
    walk_table(check_safe_hotswap, safe)

    def no_rank_check(model, d, ten):
        if ten not in model.peft_config:
            raise CourseError("Chưa nạp bộ điều hợp này.")
        hotswap_adapter(model, d, adapter_name=ten)

    def uses_helper(model, d, ten):
        from lora_helpers import serving

        serving.hotswap_checked(model, d, ten)

    wrong(check_safe_hotswap(no_rank_check), "hạng lớn hơn chỗ")
    wrong(check_safe_hotswap(uses_helper), "của khoá học")


@pytest.mark.parametrize("bad", [lambda m, d: None, lambda *a: 1 / 0])
def test_safe_hotswap_never_raises(bad):
    result = check_safe_hotswap(bad)
    assert result.status == "sai" and result.message.startswith("❌")
