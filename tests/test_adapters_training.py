import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model

from lora_helpers import CourseError
from lora_helpers.adapters import (
    adapter_base_model,
    check_adapter_dir,
    demo_adapter_path,
    ensure_fresh_dir,
    human_size,
    load_adapter_checked,
    save_adapter,
    set_adapter_checked,
)
from lora_helpers.training import check_lora_config, loss_history, steps_to_reach


def _saved_adapter(model, path, seed=0):
    torch.manual_seed(seed)
    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    peft_model.save_pretrained(path)
    return path


def test_wrong_adapter_path(tiny_model_factory, tmp_path):
    with pytest.raises(CourseError, match="Không tìm thấy"):
        load_adapter_checked(tiny_model_factory(), tmp_path / "khong-co")
    with pytest.raises(CourseError, match="adapter_config.json"):
        check_adapter_dir(tmp_path)


def test_adapter_for_another_base_model(tiny_model_factory, tmp_path):
    path = _saved_adapter(tiny_model_factory(hidden_size=32), tmp_path / "a")
    with pytest.raises(CourseError, match="mô hình cơ sở khác"):
        load_adapter_checked(tiny_model_factory(hidden_size=48), path)


def test_load_then_switch_and_unknown_name(tiny_model_factory, tmp_path):
    a = _saved_adapter(tiny_model_factory(), tmp_path / "a", seed=1)
    b = _saved_adapter(tiny_model_factory(), tmp_path / "b", seed=2)
    model = load_adapter_checked(tiny_model_factory(), a, adapter_name="a")
    assert isinstance(model, PeftModel)
    load_adapter_checked(model, b, adapter_name="b")
    set_adapter_checked(model, "b")
    assert model.active_adapter == "b"
    with pytest.raises(CourseError, match="Các tên đã nạp"):
        set_adapter_checked(model, "c")
    with pytest.raises(CourseError, match="đã được dùng"):
        load_adapter_checked(model, a, adapter_name="a")


def test_set_adapter_on_plain_model(tiny_model_factory):
    with pytest.raises(CourseError, match="chưa có bộ điều hợp"):
        set_adapter_checked(tiny_model_factory(), "a")


def test_nothing_saved_is_overwritten(tiny_model_factory, tmp_path):
    target = tmp_path / "cua_toi"
    target.mkdir()
    (target / "ghi_chu.txt").write_text("của tôi")
    model = get_peft_model(tiny_model_factory(), LoraConfig(r=2, target_modules=["q_proj"]))
    with pytest.raises(CourseError, match="overwrite=True"):
        save_adapter(model, target)
    assert (target / "ghi_chu.txt").read_text() == "của tôi"
    assert not (target / "adapter_config.json").exists()
    save_adapter(model, target, overwrite=True)
    assert (target / "adapter_config.json").exists()
    assert ensure_fresh_dir(tmp_path / "moi").is_dir()


def test_demo_adapters_are_shipped():
    for task in ("don_hang", "ngay_thang"):
        path = demo_adapter_path(task)
        assert (path / "README.md").read_text(encoding="utf-8").count(task) >= 2
        assert adapter_base_model(path) == "HuggingFaceTB/SmolLM2-135M-Instruct"  # no machine path
    with pytest.raises(CourseError):
        demo_adapter_path("khong_co")


@pytest.mark.parametrize("bad_r", [0, -4, 2.5, None])
def test_lora_rank_must_be_positive(tiny_model_factory, bad_r):
    config = LoraConfig(r=8, target_modules=["q_proj"])
    config.r = bad_r
    with pytest.raises(CourseError, match="Hạng r"):
        check_lora_config(tiny_model_factory(), config)


def test_unknown_target_module_lists_real_names(tiny_model_factory):
    with pytest.raises(CourseError, match="q_proj"):
        check_lora_config(tiny_model_factory(), LoraConfig(r=4, target_modules=["query", "value"]))
    check_lora_config(tiny_model_factory(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    check_lora_config(tiny_model_factory(), LoraConfig(r=4, target_modules="all-linear"))


def test_loss_history_and_threshold():
    log = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 0.5}, {"step": 2, "eval_loss": 0.7}, {"train_runtime": 1}]
    hist = loss_history(log)
    assert hist == {"train": [(1, 2.0), (2, 0.5)], "eval": [(2, 0.7)]}
    assert steps_to_reach(hist["train"], 1.0) == 2
    assert steps_to_reach(hist["train"], 0.1) is None


def test_human_size():
    assert human_size(512) == "512 B"
    assert human_size(10 * 10**6) == "10.0 MB" and human_size(2 * 10**9) == "2.0 GB"  # 1 MB = 10⁶ bytes


def test_display_path_hides_machine_specific_prefix(tmp_path, monkeypatch):
    from lora_helpers.adapters import course_root, display_path

    assert display_path("adapters/x") == "adapters/x"                       # relative: unchanged
    assert display_path(course_root() / "outputs" / "m") == "outputs/m"     # inside the course: relative
    monkeypatch.chdir(tmp_path)
    assert display_path(tmp_path / "a" / "b") == "a/b"                       # inside the current folder


def test_estimate_callback_prints_the_whole_run_from_the_first_two_steps(capsys, monkeypatch):
    from types import SimpleNamespace

    from lora_helpers import training

    clock = iter([100.0, 107.0, 110.5])
    monkeypatch.setattr("time.perf_counter", lambda: next(clock))
    callback = training.estimate_callback("LoRA")
    args = SimpleNamespace(eval_strategy="steps")
    state = SimpleNamespace(global_step=0, max_steps=40, is_world_process_zero=True)
    callback.on_step_begin(args, state, None)
    state.global_step = 1
    callback.on_step_end(args, state, None)
    assert capsys.readouterr().out == ""              # waits for the second step
    callback.on_step_begin(args, state, None)
    state.global_step = 2
    callback.on_step_end(args, state, None)
    printed = capsys.readouterr().out               # 7.0 + 39 × 3.5 = 143.5 s
    assert printed.startswith("LoRA: Bước đầu 7.0 s, bước thứ hai 3.5 s: cả 40 bước khoảng 2 phút trên máy này")
    assert "chưa kể các lần đánh giá" in printed
    state.global_step = 3                           # only once
    callback.on_step_end(args, state, None)
    assert capsys.readouterr().out == ""


def test_estimate_callback_of_a_one_step_run(capsys, monkeypatch):
    from types import SimpleNamespace

    from lora_helpers import training

    clock = iter([0.0, 12.0])
    monkeypatch.setattr("time.perf_counter", lambda: next(clock))
    callback = training.estimate_callback()
    args, state = SimpleNamespace(eval_strategy="no"), SimpleNamespace(global_step=0, max_steps=1, is_world_process_zero=True)
    callback.on_step_begin(args, state, None)
    state.global_step = 1
    callback.on_step_end(args, state, None)
    assert capsys.readouterr().out == "Bước đầu 12.0 s: cả 1 bước khoảng 12 giây trên máy này\n"
