"""lora_helpers.serving: three ways to serve many adapters give the same answers; bad input is refused first.

Tiny random Llama models (``tests/conftest.py``) with two saved tiny adapters (``adapter_dirs``, shared with
``tests/check_support.py``) stand in for SmolLM2 and the demo adapters.
"""

import copy
import re

import pytest
import torch
from check_support import (
    TASKS,
    randomize_lora,
    two_adapter_model,
)
from peft import LoraConfig, PeftModel, get_peft_model
from peft.utils.hotswap import prepare_model_for_compiled_hotswap
from safetensors.torch import load_file

from lora_helpers.errors import CourseError
from lora_helpers.serving import (
    BASE,
    TABLE_HEADER,
    Served,
    check_hotswap_compatible,
    check_request_adapters,
    compare_answers,
    evaluate_router,
    generate_batch,
    hotswap_checked,
    loaded_adapters,
    parameter_bytes,
    serve_by_switching,
    serve_merged,
    serve_mixed,
)

PROMPTS = ["w5 w9 w12", "w20 w3", "w7 w30", "w11 w2 w44", "w13", "w40 w41"]
NAMES = ["don_hang", BASE, "ngay_thang", "don_hang", "ngay_thang", BASE]
N_NEW = 5


@pytest.fixture()
def model(tiny_model_factory, adapter_dirs):  # noqa: F811
    return two_adapter_model(tiny_model_factory, adapter_dirs).eval()


# --------------------------------------------------------------------------- names of a request batch
def test_request_names_are_checked_before_anything(model, tiny_model_factory):
    assert loaded_adapters(model) == list(TASKS) and loaded_adapters(tiny_model_factory()) == []
    assert check_request_adapters(model, NAMES) == NAMES
    with pytest.raises(CourseError, match="`khach_moi`, nhưng bộ điều hợp này chưa được nạp") as exc:
        check_request_adapters(model, ["don_hang", "khach_moi"])
    assert "load_adapter" in str(exc.value) and "__base__" in str(exc.value)
    with pytest.raises(CourseError, match="hai dấu gạch dưới"):
        check_request_adapters(model, ["base"])
    with pytest.raises(CourseError, match="danh sách tên"):
        check_request_adapters(model, "don_hang")
    with pytest.raises(CourseError, match="rỗng"):
        check_request_adapters(model, [])
    with pytest.raises(CourseError, match="không phải chuỗi"):
        check_request_adapters(model, ["don_hang", None])
    with pytest.raises(CourseError, match="không có bộ điều hợp nào"):
        check_request_adapters(tiny_model_factory(), ["don_hang"])


def test_mixed_batch_on_a_merged_model_is_refused_before_generating(model, tiny_tokenizer, monkeypatch):
    merged = copy.deepcopy(model).merge_and_unload()
    calls = []
    monkeypatch.setattr(merged, "generate", lambda *a, **k: calls.append(1))
    with pytest.raises(CourseError, match="Không thể sinh một lô nhiều bộ điều hợp") as exc:
        serve_mixed(merged, tiny_tokenizer, PROMPTS, NAMES, N_NEW)
    assert "PeftModel chưa hợp nhất" in str(exc.value) and not calls
    with pytest.raises(CourseError, match="chưa được nạp"):
        serve_mixed(model, tiny_tokenizer, PROMPTS[:2], ["don_hang", "khach"], N_NEW)
    with pytest.raises(CourseError, match="6 câu hỏi nhưng 2 tên"):
        serve_mixed(model, tiny_tokenizer, PROMPTS, NAMES[:2], N_NEW)


# --------------------------------------------------------------------------- the three ways agree
def test_mixed_batch_equals_switching_and_merged_models(model, tiny_tokenizer, tiny_model_factory, adapter_dirs):  # noqa: F811
    model.set_adapter("ngay_thang")
    switched = serve_by_switching(model, tiny_tokenizer, PROMPTS, NAMES, N_NEW)
    assert model.active_adapters == ["ngay_thang"], "the active adapter is restored"
    mixed = serve_mixed(model, tiny_tokenizer, PROMPTS, NAMES, N_NEW)
    merged = {t: PeftModel.from_pretrained(tiny_model_factory(), adapter_dirs[t]).merge_and_unload() for t in TASKS}
    merged[BASE] = tiny_model_factory()
    by_model = serve_merged(merged, tiny_tokenizer, PROMPTS, NAMES, N_NEW)
    assert compare_answers(switched, mixed) == [] and compare_answers(switched, by_model) == []
    # the adapters really change the answers (else the comparison would prove nothing)
    with model.disable_adapter():
        base = generate_batch(model, tiny_tokenizer, PROMPTS, N_NEW)[0]
    assert [i for i, (a, b) in enumerate(zip(base, switched.answers)) if a != b]
    assert switched.calls == 3 and mixed.calls == 1 and by_model.calls == 3
    assert len(set(mixed.latencies)) == 1 and len(set(switched.latencies)) == 3
    assert all(0 <= n <= N_NEW for n in switched.new_tokens)
    assert switched.tokens_per_second > 0 and "(1)" in switched.row() and "token/s" in TABLE_HEADER


def test_compare_answers_and_served_numbers():
    a = Served("a", ["x", "y"], [2, 4], [1.0, 2.0], 2.0, calls=2)
    b = Served("b", ["x", "z"], [2, 4], [2.0, 2.0], 2.0, calls=1)
    assert compare_answers(a, b) == [1]
    assert a.tokens_per_second == 3.0 and a.mean_latency == 1.5
    with pytest.raises(CourseError, match="số câu trả lời khác nhau"):
        compare_answers(a, Served("c", ["x"], [1], [1.0], 1.0, calls=1))


def test_serve_merged_needs_a_model_for_every_name(tiny_model_factory, tiny_tokenizer):
    with pytest.raises(CourseError, match="Không có mô hình đã hợp nhất cho: __base__"):
        serve_merged({"don_hang": tiny_model_factory()}, tiny_tokenizer, PROMPTS[:2], ["don_hang", BASE], N_NEW)
    with pytest.raises(CourseError, match="dict"):
        serve_merged([], tiny_tokenizer, PROMPTS[:1], ["don_hang"], N_NEW)


def test_parameter_bytes_counts_shared_tensors_once(tiny_model_factory):
    m = tiny_model_factory()
    one = parameter_bytes(m)
    assert one == sum({p.data_ptr(): p.numel() * 4 for p in m.parameters()}.values())
    assert parameter_bytes(m, m) == one and parameter_bytes(m, tiny_model_factory()) == 2 * one


def test_evaluate_router():
    def router(text):
        return "ngay_thang" if "2024" in text else BASE

    report = evaluate_router(router, [("ngày 1/1/2024", "ngay_thang"), ("xin chào", BASE), ("2 phần phở", "don_hang")])
    assert report["accuracy"] == pytest.approx(2 / 3) and report["n"] == 3
    assert report["per_name"] == {"ngay_thang": (1, 1), BASE: (1, 1), "don_hang": (0, 1)}
    assert report["mistakes"] == [("2 phần phở", BASE, "don_hang")]
    with pytest.raises(CourseError, match="phải là một hàm"):
        evaluate_router("ngay_thang", [("x", BASE)])
    with pytest.raises(CourseError, match="Không có câu nào"):
        evaluate_router(router, [])


# --------------------------------------------------------------------------- hotswap
def _saved(tiny_model_factory, root, name, seed, **lora):
    settings = dict(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    settings.update(lora)
    model = randomize_lora(get_peft_model(tiny_model_factory(), LoraConfig(**settings)), seed=seed)
    model.save_pretrained(root / name)
    return root / name


@pytest.fixture()
def slot(tiny_model_factory, tmp_path):
    first = _saved(tiny_model_factory, tmp_path, "first", 1)
    dirs = {"ok": _saved(tiny_model_factory, tmp_path, "ok", 2),
            "rank4": _saved(tiny_model_factory, tmp_path, "rank4", 3, r=4, lora_alpha=8),
            "more": _saved(tiny_model_factory, tmp_path, "more", 4, target_modules=["q_proj", "v_proj", "k_proj"]),
            "dora": _saved(tiny_model_factory, tmp_path, "dora", 5, use_dora=True)}
    return (lambda: PeftModel.from_pretrained(tiny_model_factory(), first, adapter_name="khach").eval()), dirs


def lora_state(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "lora_" in k}


@pytest.mark.parametrize("which, name, message", [
    ("rank4", "khach", "có hạng 4, lớn hơn chỗ của `khach` (hạng 2)"),
    ("more", "khach", "lớp mà `khach` không có"),
    ("dora", "khach", "`use_dora` khác nhau"),
    ("ok", "chua_nap", "Không có bộ điều hợp `chua_nap`"),
])
def test_incompatible_hotswap_is_refused_before_anything_changes(slot, which, name, message):
    fresh, dirs = slot
    model = fresh()
    before = lora_state(model)
    with pytest.raises(CourseError, match=re.escape(message)) as exc:
        hotswap_checked(model, dirs[which], name)
    assert "Cách sửa" in str(exc.value)
    after = lora_state(model)
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert list(model.peft_config) == ["khach"]


def test_rank_message_names_prepare_model_for_compiled_hotswap(slot):
    fresh, dirs = slot
    with pytest.raises(CourseError, match=r"prepare_model_for_compiled_hotswap\(model, target_rank=4\)"):
        check_hotswap_compatible(fresh(), dirs["rank4"], "khach")


def test_hotswap_replaces_weights_in_place(slot):
    fresh, dirs = slot
    model = fresh()
    q = model.base_model.model.model.layers[0].self_attn.q_proj
    ptr = q.lora_A["khach"].weight.data_ptr()
    info = hotswap_checked(model, dirs["ok"], "khach")
    assert info == {"layers": 4, "slot_rank": 2, "new_rank": 2}
    assert q.lora_A["khach"].weight.data_ptr() == ptr, "same tensor: in place"
    saved = load_file(str(dirs["ok"] / "adapter_model.safetensors"))
    assert torch.equal(q.lora_A["khach"].weight, saved["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"])


def test_prepared_slot_takes_a_larger_rank(slot):
    fresh, dirs = slot
    model = fresh()
    prepare_model_for_compiled_hotswap(model, target_rank=4)
    assert hotswap_checked(model, dirs["rank4"], "khach") == {"layers": 4, "slot_rank": 4, "new_rank": 4}


def test_hotswap_needs_a_saved_adapter_and_an_adapter_model(slot, tmp_path, tiny_model_factory):
    fresh, dirs = slot
    with pytest.raises(CourseError, match="không phải một bộ điều hợp đã lưu"):
        check_hotswap_compatible(fresh(), tmp_path / "khong_co", "khach")
    with pytest.raises(CourseError, match="đã hợp nhất"):
        check_hotswap_compatible(tiny_model_factory(), dirs["ok"], "khach")
