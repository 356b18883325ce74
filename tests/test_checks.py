"""Every exercise check accepts the reference answer and rejects the usual wrong ones.

Tiny random Llama models (``tiny_model_factory``) stand in for SmolLM2: the checks only read
shapes, weights and configs, so what holds here holds for the course model.
"""

import copy
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from lora_helpers import checks
from lora_helpers.checks import (
    CheckResult,
    answer_format,
    check_curve_comparison,
    check_delta_weight,
    check_drift_detected,
    check_loaded_adapters,
    check_lora_config_spec,
    check_lora_output,
    check_lora_param_count,
    check_merged_model,
    check_parity_passed,
    check_routed_answers,
    check_router,
    check_task_scores,
    check_trained_lora,
    check_weighted_adapter,
)
from lora_helpers.data import make_task_splits
from lora_helpers.evaluation import task_metrics
from lora_helpers.parity import ParityResult, check_parity_ids

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


# --------------------------------------------------------------------------- the result object
def test_result_prints_its_message_in_ipython(capsys):
    result = checks._ok("xong")
    assert bool(result) and str(result) == repr(result) == "✅ Đúng rồi! xong"
    result._ipython_display_()
    assert capsys.readouterr().out.strip() == "✅ Đúng rồi! xong"
    assert not checks._wrong("a", "b") and not checks._todo("x")


def test_unreadable_answer_is_reported_not_raised():
    weird = {"don_hang": {"accuracy": object(), "predictions": ["{}"]}}
    test = {"don_hang": make_task_splits("don_hang", n_train=1, n_val=1, n_test=1)["test"]}
    wrong(check_task_scores(weird, test), "không đọc được đáp án")


# --------------------------------------------------------------------------- lesson 1
def test_loaded_adapters(tiny_model_factory, adapter_dirs):
    ok(check_loaded_adapters(two_adapter_model(tiny_model_factory, adapter_dirs), expected=adapter_dirs))
    todo(check_loaded_adapters(None, expected=adapter_dirs))


def test_loaded_adapters_rejects_base_missing_default_swapped_and_fresh(tiny_model_factory, adapter_dirs):
    wrong(check_loaded_adapters(tiny_model_factory(), expected=adapter_dirs), "chưa có bộ điều hợp")
    one = PeftModel.from_pretrained(tiny_model_factory(), adapter_dirs["don_hang"], adapter_name="don_hang")
    wrong(check_loaded_adapters(one, expected=adapter_dirs), "thiếu ['ngay_thang']")
    unnamed = PeftModel.from_pretrained(tiny_model_factory(), adapter_dirs["don_hang"])
    unnamed.load_adapter(adapter_dirs["ngay_thang"], adapter_name="ngay_thang")
    wrong(check_loaded_adapters(unnamed, expected=adapter_dirs), "`default`")
    swapped = two_adapter_model(tiny_model_factory, adapter_dirs, dirs=[adapter_dirs["ngay_thang"], adapter_dirs["don_hang"]])
    wrong(check_loaded_adapters(swapped, expected=adapter_dirs), "tráo")
    fresh = get_peft_model(tiny_model_factory(), LoraConfig(**CONFIG), adapter_name="don_hang")
    fresh.add_adapter("ngay_thang", LoraConfig(**CONFIG))
    wrong(check_loaded_adapters(fresh, expected=adapter_dirs), "không khớp")


def reference_router(text):
    """Route on the request itself: every date has a four-digit year, no order has one."""
    return "ngay_thang" if re.search(r"\b(19|20)\d\d\b", text) else "don_hang"


def test_router_accepts_reference_and_rejects_typical_mistakes():
    ok(check_router(reference_router))
    # the instruction is gone (users do not type it): a router that reads it always gives the same answer
    wrong(check_router(lambda text: "don_hang" if text.startswith("Trích đơn hàng") else "ngay_thang"), "lời dặn")
    # a keyword that also occurs in the other task ("Ngày giao hàng" is a date event)
    wrong(check_router(lambda text: "don_hang" if "giao" in text or "gửi" in text else "ngay_thang"), "gửi nhầm")
    todo(check_router(None))
    wrong(check_router(lambda text: "don_hang"), "luôn chọn `don_hang`")
    wrong(check_router(lambda text: "ngay_thang" if reference_router(text) == "don_hang" else "don_hang"), "ngược")
    wrong(check_router(lambda text: "JSON"), "không phải tên bộ điều hợp")
    wrong(check_router(lambda text: text["content"]), "báo lỗi")
    wrong(check_router("don_hang"), "phải là một hàm")
    # a router keyed on the date format misses dates written in words
    wrong(check_router(lambda text: "ngay_thang" if "/" in text else "don_hang"), "gửi nhầm")


@pytest.fixture(scope="module")
def mixed_rows():
    tests = {t: make_task_splits(t, n_train=1, n_val=1, n_test=3)["test"] for t in TASKS}
    return [tests[t][i] for i in range(3) for t in TASKS]


def test_answer_format():
    assert answer_format("2024-01-05") == "ngay_thang"
    assert answer_format('{"ten": "Lan", "mon": "phở", "so_luong": 2, "dia_chi": "Quận 1"}') == "don_hang"
    assert answer_format('{"YYYY": "2024"}') is None
    assert answer_format("ngày 5 tháng 1") is None


def test_routed_answers(mixed_rows):
    reference = [row["answer"] for row in mixed_rows]
    ok(check_routed_answers(reference, mixed_rows))
    todo(check_routed_answers(None, mixed_rows))
    # a date question answered by the order adapter, and the reverse
    swapped = [mixed_rows[1]["answer"], mixed_rows[0]["answer"], *reference[2:]]
    wrong(check_routed_answers(swapped, mixed_rows), "đi nhầm bộ điều hợp")
    everything_dates = ["2020-01-01"] * len(mixed_rows)
    wrong(check_routed_answers(everything_dates, mixed_rows), "đi nhầm", "set_adapter")
    base_like = ["Xin chào, tôi có thể giúp gì?"] * len(mixed_rows)
    wrong(check_routed_answers(base_like, mixed_rows), "không có dạng của tác vụ nào")
    wrong(check_routed_answers(reference[:-1], mixed_rows), "phần tử")
    wrong(check_routed_answers(reference[0], mixed_rows), "danh sách")


def test_weighted_adapter(tiny_model_factory, adapter_dirs):
    model = two_adapter_model(tiny_model_factory, adapter_dirs)
    todo(check_weighted_adapter(None, "ket_hop", TASKS, [1.0, 1.0]))
    todo(check_weighted_adapter(model, "ket_hop", TASKS, [1.0, 1.0]))
    model.add_weighted_adapter(list(TASKS), [1.0, 1.0], adapter_name="ket_hop", combination_type="cat")
    wrong(check_weighted_adapter(model, "ket_hop", TASKS, [1.0, 1.0]), "set_adapter")
    model.set_adapter("ket_hop")
    ok(check_weighted_adapter(model, "ket_hop", TASKS, [1.0, 1.0]))
    wrong(check_weighted_adapter(model, "ket_hop", TASKS, [1.0, 0.5]), "trọng số")
    wrong(check_weighted_adapter(tiny_model_factory(), "ket_hop", TASKS, [1.0, 1.0]), "không có bộ điều hợp")


@pytest.mark.parametrize("combination", ["svd", "linear"])
def test_weighted_adapter_rejects_approximate_combinations(tiny_model_factory, adapter_dirs, combination):
    model = two_adapter_model(tiny_model_factory, adapter_dirs)
    model.add_weighted_adapter(list(TASKS), [1.0, 1.0], adapter_name="ket_hop", combination_type=combination)
    model.set_adapter("ket_hop")
    wrong(check_weighted_adapter(model, "ket_hop", TASKS, [1.0, 1.0]), "cat")


@pytest.fixture(scope="module")
def test_sets():
    return {t: make_task_splits(t, n_train=1, n_val=1, n_test=4)["test"] for t in TASKS}


def fake_result(task, predictions, references):
    metrics = task_metrics(task, predictions, references)
    metrics["predictions"] = predictions
    return metrics


def test_task_scores(test_sets):
    half = {t: fake_result(t, [*ds["answer"][:2], "sai", "sai"], ds["answer"]) for t, ds in test_sets.items()}
    ok(check_task_scores(half, test_sets))
    todo(check_task_scores(None, test_sets))
    wrong(check_task_scores({"don_hang": half["don_hang"]}, test_sets), "thiếu kết quả", "ngay_thang")
    percent = copy.deepcopy(half)
    percent["ngay_thang"]["accuracy"] = 50
    wrong(check_task_scores(percent, test_sets), "tỉ lệ 0–1")
    made_up = copy.deepcopy(half)
    made_up["don_hang"]["accuracy"] = 0.9
    wrong(check_task_scores(made_up, test_sets), "Đừng tự sửa")
    subset = copy.deepcopy(half)
    subset["don_hang"]["predictions"] = subset["don_hang"]["predictions"][:2]
    wrong(check_task_scores(subset, test_sets), "tập kiểm tra có 4")
    wrong(check_task_scores([0.5, 0.5], test_sets), "dict")


# --------------------------------------------------------------------------- lesson 2
QV = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"])


def test_param_count_truth_is_peft_count(tiny_model_factory):
    for config in (QV, LoraConfig(r=3, target_modules="all-linear")):
        real = get_peft_model(tiny_model_factory(), copy.deepcopy(config))
        n = sum(p.numel() for p in real.parameters() if p.requires_grad)
        ok(check_lora_param_count(n, tiny_model_factory(), config))


def test_param_count_accepts_any_integer_type(tiny_model_factory):
    import numpy as np

    # tiny model: 2 blocks, q_proj 32->32, v_proj 32->16 (one key/value head)
    truth = 2 * 4 * ((32 + 32) + (32 + 16))
    model = tiny_model_factory()
    ok(check_lora_param_count(truth, model, QV))
    ok(check_lora_param_count(np.int64(truth), model, QV))
    ok(check_lora_param_count(float(truth), model, QV))
    ok(check_lora_param_count(torch.tensor(truth), model, QV))


@pytest.mark.parametrize("answer, fragment", [
    (2 * 5 * ((32 + 32) + (32 + 16)), "r=5"),                 # rank off by one (up)
    (2 * 3 * ((32 + 32) + (32 + 16)), "r=3"),                 # rank off by one (down)
    (2 * 4 * (32 + 32), "chỉ đếm ma trận A"),
    (2 * 4 * (32 + 16), "chỉ đếm ma trận B"),
    (2 * (32 * 32 + 32 * 16), "tinh chỉnh toàn bộ"),
    (2 * 4 * ((32 + 32) + (32 + 32)), "k_proj và v_proj"),   # grouped-query attention forgotten
    (1 * 4 * ((32 + 32) + (32 + 16)), "một khối"),
    (3 * 4 * ((32 + 32) + (32 + 16)), "3 khối"),
    (2 * 8 * ((32 + 32) + (32 + 16)), "lora_alpha"),
    (2 * 4 * ((32 + 32) + (32 + 16)) + 1, "lệch +1"),
    ("896", "số nguyên"),
    (896.5, "số nguyên"),
    (True, "số nguyên"),
])
def test_param_count_rejects_and_names_the_slip(tiny_model_factory, answer, fragment):
    wrong(check_lora_param_count(answer, tiny_model_factory(), QV), fragment)


def test_param_count_todo_and_base_added(tiny_model_factory):
    model = tiny_model_factory()
    todo(check_lora_param_count(None, model, QV))
    n_base = sum(p.numel() for p in model.parameters())
    wrong(check_lora_param_count(n_base + 896, model, QV), "mô hình cơ sở")


def test_config_spec():
    spec = dict(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    ok(check_lora_config_spec(LoraConfig(**spec), **spec))
    ok(check_lora_config_spec(LoraConfig(r=4, lora_alpha=8, target_modules=["o_proj", "v_proj", "k_proj", "q_proj"]),
                              **spec))
    todo(check_lora_config_spec(None, **spec))
    wrong(check_lora_config_spec(LoraConfig(**{**spec, "r": 5}), **spec), "r=5")
    wrong(check_lora_config_spec(LoraConfig(**{**spec, "r": 3}), **spec), "r=3")
    wrong(check_lora_config_spec(LoraConfig(**{**spec, "lora_alpha": 16}), **spec), "lora_alpha=16")
    wrong(check_lora_config_spec(LoraConfig(**{**spec, "target_modules": ["q_proj", "v_proj"]}), **spec),
          "thiếu ['k_proj', 'o_proj']")
    wrong(check_lora_config_spec(LoraConfig(**{**spec, "target_modules": [*spec["target_modules"], "up_proj"]}), **spec),
          "thừa ['up_proj']")
    wrong(check_lora_config_spec(LoraConfig(**{**spec, "target_modules": "all-linear"}), **spec), "all-linear")
    wrong(check_lora_config_spec({"r": 4}, **spec), "không phải LoraConfig")


def fake_trainer(model, steps):
    return SimpleNamespace(model=model, state=SimpleNamespace(global_step=steps))


def test_trained_lora(tiny_model_factory):
    targets = ["q_proj", "k_proj", "v_proj", "o_proj"]
    config = LoraConfig(r=4, lora_alpha=8, target_modules=targets)
    trained = randomize_lora(get_peft_model(tiny_model_factory(), copy.deepcopy(config)))
    ok(check_trained_lora(fake_trainer(trained, 6), 4, targets, 6))
    todo(check_trained_lora(None, 4, targets, 6))
    untrained = get_peft_model(tiny_model_factory(), copy.deepcopy(config))
    wrong(check_trained_lora(fake_trainer(untrained, 6), 4, targets, 6), "B vẫn bằng 0")
    wrong(check_trained_lora(fake_trainer(trained, 5), 4, targets, 6), "5 bước")
    wrong(check_trained_lora(fake_trainer(tiny_model_factory(), 6), 4, targets, 6), "tinh chỉnh toàn bộ")
    off_by_one = randomize_lora(get_peft_model(tiny_model_factory(), LoraConfig(r=5, target_modules=targets)))
    wrong(check_trained_lora(fake_trainer(off_by_one, 6), 4, targets, 6), "r=5")
    other_targets = randomize_lora(get_peft_model(tiny_model_factory(), LoraConfig(r=4, target_modules=["q_proj"])))
    wrong(check_trained_lora(fake_trainer(other_targets, 6), 4, targets, 6), "gắn vào")
    wrong(check_trained_lora("trainer", 4, targets, 6), "không phải một SFTTrainer")


def test_curve_comparison():
    histories = {"a": {"train": [(1, 2.0), (2, 0.4)], "eval": []}, "b": {"train": [(1, 2.0), (2, 1.1)], "eval": []}}
    ok(check_curve_comparison("a", histories))
    todo(check_curve_comparison(None, histories))
    wrong(check_curve_comparison("b", histories), "không phải lần chạy kết thúc với loss huấn luyện thấp nhất")
    wrong(check_curve_comparison("r=4", histories), "không phải tên một lần chạy")
    wrong(check_curve_comparison("a", None), "chưa có đường")


def test_curve_comparison_does_not_reveal_the_answer():
    """Gaming: answer every label in turn and read the hints. A wrong pick must not name the right run."""
    histories = {"r=4": {"train": [(1, 2.0), (2, 0.9)], "eval": []}, "r=16": {"train": [(1, 2.0), (2, 0.3)], "eval": []},
                 "q,v": {"train": [(1, 2.0), (2, 1.2)], "eval": []}}
    for pick in ("r=4", "q,v"):
        message = wrong(check_curve_comparison(pick, histories)).message
        assert "r=16" not in message and "0.300" not in message, message
    right = ok(check_curve_comparison("r=16", histories))
    verdict, measured = right.message.split("\n")
    assert "0.300" not in verdict and "0.300" in measured  # run-dependent numbers only on the masked line


def test_check_messages_keep_run_numbers_off_the_compared_line():
    """nbval compares check cells: the numbers of a run go on the line tests/sanitize.cfg masks."""
    import configparser

    from lora_helpers.checks._common import MEASURED, _ok

    message = _ok("Đúng ý.", "loss 0.123").message
    assert message.splitlines()[0] == "✅ Đúng rồi! Đúng ý." and message.splitlines()[1].startswith(MEASURED)
    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).parent / "sanitize.cfg", encoding="utf-8")
    pattern = next(cfg[s]["regex"] for s in cfg.sections() if MEASURED.strip() in cfg[s]["regex"])
    masked = re.sub(pattern, "X", message)
    assert "0.123" not in masked and "Đúng ý" in masked


@pytest.fixture()
def lora_layer(tiny_model_factory):
    model = randomize_lora(get_peft_model(tiny_model_factory(), copy.deepcopy(QV)))
    return model.base_model.model.model.layers[0].self_attn


def test_delta_weight(lora_layer):
    layer = lora_layer.v_proj                       # 32 -> 16, not square
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    s = layer.scaling["default"]
    assert s == 2.0
    ok(check_delta_weight(s * B @ A, layer))
    ok(check_delta_weight(layer.get_delta_weight("default"), layer))
    todo(check_delta_weight(None, layer))
    wrong(check_delta_weight(B @ A, layer), "quên hệ số")
    wrong(check_delta_weight(B @ A / s, layer), "chia")
    wrong(check_delta_weight((s * B @ A).T, layer), "chuyển vị")
    wrong(check_delta_weight(layer.base_layer.weight + s * B @ A, layer), "không phải riêng ΔW")
    q = lora_layer.q_proj                          # square layer: A @ B is possible there (r x r)
    wrong(check_delta_weight(q.lora_A["default"].weight @ q.lora_B["default"].weight, q), "A @ B")
    wrong(check_delta_weight(q.get_delta_weight("default")[:16], layer), "chưa khớp")   # another layer's ΔW
    wrong(check_delta_weight([[0.0]], layer), "tensor")


def test_lora_output(lora_layer):
    layer = lora_layer.q_proj
    x = torch.randn(3, 32, generator=torch.Generator().manual_seed(0))
    A, B = layer.lora_A["default"].weight, layer.lora_B["default"].weight
    s = layer.scaling["default"]
    with torch.no_grad():
        manual = x @ layer.base_layer.weight.T + s * (x @ A.T @ B.T)
        ok(check_lora_output(manual, layer, x))
        todo(check_lora_output(None, layer, x))
        wrong(check_lora_output(layer.base_layer(x), layer, x), "thiếu phần LoRA")
        wrong(check_lora_output(layer.base_layer(x) + x @ A.T @ B.T, layer, x), "quên hệ số")
        wrong(check_lora_output(s * (x @ A.T @ B.T), layer, x), "thiếu W·x")
        wrong(check_lora_output(manual[:, :16], layer, x), "kích thước")


# --------------------------------------------------------------------------- lesson 3
@pytest.fixture()
def adapter_model(tiny_model_factory):
    return randomize_lora(get_peft_model(tiny_model_factory(), LoraConfig(**CONFIG)), scale=0.05).eval()


def test_merged_model(adapter_model, tiny_model_factory):
    ok(check_merged_model(copy.deepcopy(adapter_model).merge_and_unload(), adapter_model))
    todo(check_merged_model(None, adapter_model))
    wrong(check_merged_model(copy.deepcopy(adapter_model), adapter_model), "chưa được hợp nhất")
    wrong(check_merged_model(copy.deepcopy(adapter_model).unload(), adapter_model), "unload()")
    wrong(check_merged_model(tiny_model_factory(), adapter_model), "ΔW chưa được cộng")
    low = copy.deepcopy(adapter_model).to(torch.bfloat16).merge_and_unload()
    wrong(check_merged_model(low, adapter_model), "bfloat16")
    other = randomize_lora(get_peft_model(tiny_model_factory(), LoraConfig(**CONFIG)), seed=7, scale=0.05)
    wrong(check_merged_model(other.merge_and_unload(), adapter_model), "khác W + (alpha/r)·B·A")
    in_place = adapter_model.merge_and_unload()
    wrong(check_merged_model(in_place, adapter_model), "tại chỗ")


def parity_result(passed=False, tolerance=1e-4, dtype="float32", n=8):
    return ParityResult(max_abs_logit_diff=0.3 if not passed else 1e-6, tolerance=tolerance, n_prompts=n,
                        n_identical_generations=n if passed else n - 3, first_divergence=None if passed else (0, 2),
                        metric_a=None, metric_b=None, passed=passed, dtype=dtype)


def test_drift_detected_on_a_real_bf16_merge(adapter_model):
    ids = torch.randint(0, 64, (4, 12), generator=torch.Generator().manual_seed(0))
    low = copy.deepcopy(adapter_model).to(torch.bfloat16).merge_and_unload()
    real = check_parity_ids(adapter_model, low, ids, max_new_tokens=4)
    assert not real.passed
    ok(check_drift_detected(real, low))
    loosened = check_parity_ids(adapter_model, low, ids, max_new_tokens=4, tolerance=10.0, require_identical=False)
    wrong(check_drift_detected(loosened, low), "nới ngưỡng")
    fp32 = copy.deepcopy(adapter_model).merge_and_unload()
    wrong(check_drift_detected(check_parity_ids(adapter_model, fp32, ids, max_new_tokens=4), fp32), "float32")


def test_drift_detected_rejects_other_mistakes(adapter_model):
    low = copy.deepcopy(adapter_model).to(torch.bfloat16).merge_and_unload()
    todo(check_drift_detected(None, low))
    wrong(check_drift_detected(parity_result().verdict(), low), "không phải kết quả của `check_parity`")
    wrong(check_drift_detected(parity_result(passed=True), low), "vẫn báo KHỚP")
    wrong(check_drift_detected(parity_result(dtype="bfloat16", tolerance=1e-4), low), "tham chiếu float32")


def test_parity_passed():
    ok(check_parity_passed(parity_result(passed=True)))
    todo(check_parity_passed(None))
    wrong(check_parity_passed(parity_result(passed=False)), "không đạt")
    wrong(check_parity_passed(parity_result(passed=True, tolerance=0.25)), "ngưỡng")
    wrong(check_parity_passed(parity_result(passed=True, n=2)), "2 câu")
    wrong(check_parity_passed(True), "không phải kết quả")


def test_every_check_has_a_test():
    """A new check without a test in tests/test_checks*.py is a defect: list them all there."""
    import inspect
    from pathlib import Path

    here = Path(inspect.getsourcefile(test_parity_passed)).parent
    source = "\n".join(p.read_text(encoding="utf-8") for p in sorted(here.glob("test_checks*.py")))
    names = [n for n, f in vars(checks).items() if n.startswith("check_") and callable(f)]
    assert len(names) >= 14
    for name in names:
        assert source.count(f"{name}(") >= 3, f"{name} has no accept/reject tests"
