"""Parity check (adapter vs merged), latency/memory helpers, and the checked merge/save."""

import copy
import sys
import time

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from lora_helpers import CourseError
from lora_helpers.bench import Latency, generation_latency, measure_latency, measure_peak_memory
from lora_helpers.merging import (
    available_memory,
    estimate_merge_memory,
    lora_layers,
    merge_checked,
    merge_memory_breakdown,
    save_merged,
)
from lora_helpers.parity import (
    ParityResult,
    check_parity,
    check_parity_ids,
    default_tolerance,
    first_divergence,
    greedy_tokens,
    max_logit_diff,
)

EOS, PAD = 0, 1


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny matrices: one thread is faster, and much faster when other jobs share the CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer):
    assert (tiny_tokenizer.eos_token_id, tiny_tokenizer.pad_token_id) == (EOS, PAD)
    return tiny_tokenizer


PROMPTS = [[{"role": "user", "content": " ".join(f"w{(7 * i + j) % 59}" for j in range(3 + i % 4))}]
           for i in range(6)]


def adapter_model(tiny_model_factory, seed=1):
    """Tiny Llama + LoRA on every linear layer, with B random (a non-zero adapter)."""
    base = tiny_model_factory()
    torch.manual_seed(seed)
    return get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear",
                                           init_lora_weights=False)).eval()


def merged_with_scaled_delta(peft_model, factor):
    """A deliberately wrong merge: W + factor * delta (a correct merge has factor 1)."""
    merged = merge_checked(peft_model, copy=True)
    for name, layer in lora_layers(peft_model):
        target = merged.get_submodule(name.removeprefix("base_model.model."))
        target.weight.data += (factor - 1) * layer.get_delta_weight("default")
    return merged


def ids_and_mask(n=5, length=9):
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 64, (n, length), generator=g)
    mask = torch.ones_like(ids)
    ids[0, :4], mask[0, :4] = PAD, 0  # one left-padded row
    return ids, mask


# --------------------------------------------------------------------------- parity
def test_parity_passes_for_correct_merge(tiny_model_factory, tokenizer):
    from datasets import Dataset

    model = adapter_model(tiny_model_factory)
    merged = merge_checked(model, copy=True)
    rows = [{"messages": p + [{"role": "assistant", "content": "w1"}], "answer": "w1", "task": "ngay_thang"}
            for p in PROMPTS]
    result = check_parity(model, merged, tokenizer, dataset=Dataset.from_list(rows), max_new_tokens=8)
    assert isinstance(result, ParityResult)
    assert result.passed is True, result.details()
    assert result.n_prompts == result.n_identical_generations == len(PROMPTS)
    assert result.first_divergence is None
    assert 0 <= result.max_abs_logit_diff <= result.tolerance == default_tolerance(torch.float32)
    assert result.metric_a == result.metric_b is not None
    assert result.verdict() == str(result) == (
        "✅ KHỚP: 6/6 câu sinh giống hệt, độ chính xác tác vụ bằng nhau, "
        "chênh lệch logits lớn nhất ≤ 1e-03 (ngưỡng mặc định cho fp32)"
    )
    assert len(result.texts_a) == len(PROMPTS) and result.texts_a == result.texts_b


def test_parity_fails_for_wrong_merge_and_reports_divergence(tiny_model_factory, tokenizer):
    model = adapter_model(tiny_model_factory)
    wrong = merged_with_scaled_delta(model, 2.0)  # the delta added twice
    result = check_parity(model, wrong, tokenizer, PROMPTS, max_new_tokens=8)
    assert result.passed is False
    assert result.max_abs_logit_diff > 100 * result.tolerance
    assert result.verdict().startswith("❌ KHÔNG KHỚP")
    assert "vượt ngưỡng" in result.verdict()
    # The reported divergence is the first differing prompt and the first differing token.
    assert result.n_identical_generations < result.n_prompts
    p, t = result.first_divergence
    a, b = result.tokens_a, result.tokens_b
    assert all(a[i] == b[i] for i in range(p)) and a[p] != b[p]
    assert a[p][:t] == b[p][:t] and (t == min(len(a[p]), len(b[p])) or a[p][t] != b[p][t])
    assert f"câu #{p}, từ token mới thứ {t}" in result.verdict()


def test_tolerance_parameter_is_respected(tiny_model_factory):
    model = adapter_model(tiny_model_factory)
    slightly_wrong = merged_with_scaled_delta(model, 1.001)
    ids, mask = ids_and_mask()
    # A random tiny model has near-tied logits, so even this small error may flip a greedy token:
    # require_identical=False leaves the decision to the tolerance alone.
    kwargs = {"max_new_tokens": 6, "eos_token_id": EOS, "pad_token_id": PAD, "require_identical": False}
    diff = check_parity_ids(model, slightly_wrong, ids, mask, **kwargs).max_abs_logit_diff
    assert diff > 0
    strict = check_parity_ids(model, slightly_wrong, ids, mask, tolerance=diff / 2, **kwargs)
    loose = check_parity_ids(model, slightly_wrong, ids, mask, tolerance=diff * 2, **kwargs)
    assert strict.passed is False and "vượt ngưỡng" in strict.verdict() and "ngưỡng bạn đặt" in strict.verdict()
    assert loose.passed is True
    assert check_parity_ids(model, slightly_wrong, ids, mask, tolerance=diff * 2,
                            **{**kwargs, "require_identical": True}).passed is loose.generations_ok


class GarbageOnPadding(torch.nn.Module):
    """Same logits as ``model`` on real tokens, +1000 on padding positions."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask):
        from types import SimpleNamespace

        logits = self.model(input_ids=input_ids, attention_mask=attention_mask).logits
        return SimpleNamespace(logits=logits + 1000.0 * (1 - attention_mask)[..., None])


def test_padding_positions_are_ignored(tiny_model_factory):
    model = tiny_model_factory()
    ids, mask = ids_and_mask()
    assert (mask == 0).any()
    assert max_logit_diff(model, GarbageOnPadding(model), ids, mask) == 0.0
    assert max_logit_diff(model, GarbageOnPadding(model), ids, mask, batch_size=2) == 0.0
    with torch.no_grad():  # the garbage is there, only masked out
        gap = GarbageOnPadding(model)(ids, mask).logits - model(input_ids=ids, attention_mask=mask).logits
    assert gap.abs().max().item() == pytest.approx(1000.0)


def test_first_divergence_and_tolerances():
    assert first_divergence([[1, 2], [3, 4, 5]], [[1, 2], [3, 4, 5]]) is None
    assert first_divergence([[1, 2], [3, 4, 5]], [[1, 2], [3, 9, 5]]) == (1, 1)
    assert first_divergence([[1, 2, 0]], [[1, 2]]) == (0, 2)
    assert default_tolerance(torch.float32) < default_tolerance(torch.float16) < default_tolerance(torch.bfloat16)
    assert default_tolerance("float32") == 1e-3
    with pytest.raises(CourseError, match="ngưỡng mặc định"):
        default_tolerance(torch.float64)


def test_parity_input_errors(tiny_model_factory, tokenizer):
    model = adapter_model(tiny_model_factory)
    merged = merge_checked(model, copy=True)
    with pytest.raises(CourseError, match="rỗng"):
        check_parity(model, merged, tokenizer, [])
    with pytest.raises(CourseError, match="cùng một đối tượng"):
        check_parity(model, model, tokenizer, PROMPTS)
    with pytest.raises(CourseError, match="thiết bị khác nhau"):
        check_parity(model, copy.deepcopy(merged).to("meta"), tokenizer, PROMPTS)
    with pytest.raises(CourseError, match="tolerance"):
        check_parity(model, merged, tokenizer, PROMPTS, tolerance=-1)


def test_models_are_evaluated_in_eval_mode_and_restored(tiny_model_factory):
    model = adapter_model(tiny_model_factory)
    merged = merge_checked(model, copy=True)
    model.train()
    seen = []
    hook = merged.register_forward_pre_hook(lambda m, args: seen.append(m.training))
    ids, mask = ids_and_mask(n=2)
    check_parity_ids(model, merged, ids, mask, max_new_tokens=2, eos_token_id=EOS, pad_token_id=PAD)
    hook.remove()
    assert seen and not any(seen)
    assert model.training and not merged.training


# --------------------------------------------------------------------------- bench
def test_latency_excludes_warmup():
    calls = []

    def slow_first():
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.3)

    result = measure_latency(slow_first, warmup=1, repeats=3)
    assert isinstance(result, Latency) and len(result.times) == 3 and len(calls) == 4
    assert max(result.times) < 0.15
    assert result.min <= result.median <= max(result.times)
    calls.clear()
    assert max(measure_latency(slow_first, warmup=0, repeats=2).times) >= 0.3
    with pytest.raises(CourseError):
        measure_latency(slow_first, repeats=0)


def test_generation_latency_generates_exactly_n_tokens(tiny_model_factory, tokenizer, monkeypatch):
    model = tiny_model_factory()
    model.model.norm.weight.data.zero_()  # every logit 0: greedy picks id 0, which is EOS
    ids, mask = ids_and_mask(n=2)
    assert all(len(t) == 1 for t in greedy_tokens(model, ids, mask, 5, eos_token_id=EOS, pad_token_id=PAD))
    seconds = generation_latency(model, tokenizer, PROMPTS[:2], max_new_tokens=5, warmup=1, repeats=2)
    assert isinstance(seconds, float) and seconds > 0
    # Without min_new_tokens the run would stop at EOS: the helper notices and refuses to time it.
    real_generate = model.generate
    monkeypatch.setattr(model, "generate", lambda **kw: real_generate(**{k: v for k, v in kw.items()
                                                                         if k != "min_new_tokens"}))
    with pytest.raises(CourseError, match="thay vì đúng 5"):
        generation_latency(model, tokenizer, PROMPTS[:2], max_new_tokens=5)


def test_compare_latency_interleaves_and_excludes_warmup():
    from lora_helpers.bench import compare_latency

    order = []

    def make(name, first_sleep):
        def fn():
            order.append(name)
            if order.count(name) == 1:
                time.sleep(first_sleep)
        return fn

    result = compare_latency({"a": make("a", 0.3), "b": make("b", 0.3)}, warmup=1, rounds=3)
    assert order == ["a", "b"] + ["a", "b"] * 3          # warm-up of each, then interleaved rounds
    assert set(result) == {"a", "b"} and all(len(r.times) == 3 for r in result.values())
    assert all(max(r.times) < 0.15 for r in result.values())
    with pytest.raises(CourseError):
        compare_latency({}, rounds=2)
    with pytest.raises(CourseError):
        compare_latency({"a": lambda: None}, rounds=0)


def test_compare_generation_latency_on_two_models(tiny_model_factory, tokenizer):
    from lora_helpers.bench import compare_generation_latency

    models = {"m1": tiny_model_factory(seed=0), "m2": tiny_model_factory(seed=1)}
    models["m2"].train()
    result = compare_generation_latency(models, tokenizer, PROMPTS[:2], max_new_tokens=3, warmup=1, rounds=2)
    assert set(result) == {"m1", "m2"} and all(len(r.times) == 2 and r.median > 0 for r in result.values())
    assert models["m2"].training and not models["m1"].training      # modes restored


def test_peak_memory_of_a_callable():
    def allocate():
        t = torch.ones(25_000_000)  # 100 MB, touched
        time.sleep(0.05)
        return t

    measured = measure_peak_memory(allocate, device="cpu")
    assert measured.result.numel() == 25_000_000
    assert measured.peak_bytes >= 80_000_000
    assert measured.seconds >= 0.05


# --------------------------------------------------------------------------- merge and save
def test_merge_checked_returns_model_without_lora(tiny_model_factory):
    model = adapter_model(tiny_model_factory)
    n_lora = len(lora_layers(model))
    kept = merge_checked(model, copy=True)
    assert len(lora_layers(model)) == n_lora  # copy=True leaves the adapter model as it was
    merged = merge_checked(model)  # in place
    assert not isinstance(merged, PeftModel) and not isinstance(kept, PeftModel)
    assert lora_layers(merged) == [] and lora_layers(kept) == []
    assert type(merged).__name__ == "LlamaForCausalLM"
    ids, _ = ids_and_mask(n=2)
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, kept(input_ids=ids).logits, atol=1e-5)


def test_merge_checked_refuses_when_memory_is_short(tiny_model_factory, monkeypatch):
    from lora_helpers import merging

    model = adapter_model(tiny_model_factory)
    monkeypatch.setattr(merging, "available_memory", lambda device="cpu": 1000)
    with pytest.raises(CourseError, match="Không đủ bộ nhớ") as info:
        merge_checked(model)
    assert "giữ bộ điều hợp tách riêng" in str(info.value)
    assert len(lora_layers(model)) > 0  # nothing was merged
    with pytest.raises(CourseError, match="không có bộ điều hợp"):
        merge_checked(tiny_model_factory())


def test_memory_estimate_model(tiny_model_factory):
    model = adapter_model(tiny_model_factory)
    biggest = max(layer.get_base_layer().weight.numel() for _, layer in lora_layers(model))
    model_bytes = sum(p.numel() * 4 for p in model.parameters()) + sum(b.numel() * b.element_size()
                                                                        for b in model.buffers())
    plain = merge_memory_breakdown(model, safe_merge=False)
    assert plain["largest_layer"] == biggest * 2 * 4  # B@A and its scaled copy, fp32
    assert estimate_merge_memory(model) == biggest * 3 * 4  # + the clone safe_merge checks
    assert estimate_merge_memory(model, copy=True) == biggest * 3 * 4 + model_bytes
    assert merge_memory_breakdown(model, dtype=torch.float64)["cast"] == model_bytes  # fp32 -> fp64 doubles it
    assert available_memory("cpu") > 0


def test_available_memory_without_psutil(monkeypatch):
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil now fails
    value = available_memory("cpu")
    assert value is None or value > 0


def test_failed_merge_is_rolled_back(tiny_model_factory):
    model = adapter_model(tiny_model_factory)
    before = {n: layer.get_base_layer().weight.detach().clone() for n, layer in lora_layers(model)}
    n_lora = len(before)
    _, last = lora_layers(model)[-1]
    # Finite adapter weights whose product overflows: peft's safe_merge raises at the last layer,
    # after every other layer was merged and unwrapped.
    last.lora_A["default"].weight.data.fill_(1e30)
    last.lora_B["default"].weight.data.fill_(1e30)
    with pytest.raises(CourseError, match="NaN") as info:
        merge_checked(model, safe_merge=True)
    assert f"{n_lora - 1}/{n_lora} lớp đã kịp hợp nhất và đã được hoàn tác" in str(info.value)
    assert isinstance(model, PeftModel) and len(lora_layers(model)) == n_lora
    for name, layer in lora_layers(model):
        assert not layer.merged
        torch.testing.assert_close(layer.get_base_layer().weight, before[name], atol=1e-6, rtol=0)


def test_nan_adapter_is_refused_before_touching_anything(tiny_model_factory):
    model = adapter_model(tiny_model_factory)
    _, layer = lora_layers(model)[3]
    layer.lora_B["default"].weight.data[0, 0] = float("nan")
    with pytest.raises(CourseError, match="NaN/Inf .*Chưa có gì bị thay đổi"):
        merge_checked(model)
    assert not any(layer.merged for _, layer in lora_layers(model))


def test_save_merged_refuses_overwrite(tiny_model_factory, tokenizer, tmp_path):
    from transformers import AutoModelForCausalLM

    model = adapter_model(tiny_model_factory)
    with pytest.raises(CourseError, match="chưa hợp nhất"):
        save_merged(model, tokenizer, tmp_path / "x")
    merged = merge_checked(model, copy=True)
    out = save_merged(merged, tokenizer, tmp_path / "merged")
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert (out / "tokenizer.json").is_file()
    (out / "model-00002-of-00002.safetensors").write_bytes(b"stale shard")
    with pytest.raises(CourseError, match="đã chứa một mô hình"):
        save_merged(merged, tokenizer, out)
    assert (out / "model-00002-of-00002.safetensors").read_bytes() == b"stale shard"  # untouched
    save_merged(merged, tokenizer, out, overwrite=True)
    assert not (out / "model-00002-of-00002.safetensors").exists()
    reloaded = AutoModelForCausalLM.from_pretrained(out).eval()
    ids, _ = ids_and_mask(n=2)
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=ids).logits, merged(input_ids=ids).logits)
