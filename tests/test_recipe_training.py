"""One home per fact: the training recipe, the tasks, the layer walk, the shared training function and metrics file.

* the recipe (``lora_helpers.recipe.RECIPE``) is what the demo adapters in adapters/ were built with, and
  what ``sft_config``, ``make_task_splits`` and scripts/train_lora.py take by default;
* each course task carries its scoring, extra metrics and generation length;
* ``lora_helpers.layers`` is the one layer walk (``params``, ``training``, ``merging`` and ``olora`` use it);
* scripts/build_adapters.py runs ``train_lora_adapter`` (the function of scripts/train_lora.py) and writes
  the same metrics file (tested end to end on a tiny model, in seconds, into a temporary folder).
"""

import inspect
import json

import pytest
import torch
from peft import LoraConfig, get_peft_model

from lora_helpers import CourseError
from lora_helpers.adapters import adapter_base_model, demo_adapter_path
from lora_helpers.data import TASKS, get_task, make_task_splits
from lora_helpers.env import precision_profile
from lora_helpers.evaluation import MAX_NEW_TOKENS, score_answer, task_metrics
from lora_helpers.fingerprint import FINGERPRINT_FILE, base_fingerprint, read_fingerprint_record
from lora_helpers.layers import linear_layers, linear_module_names, lora_layers
from lora_helpers.models import HUB_ID
from lora_helpers.params import lora_layer_params, lora_param_count
from lora_helpers.recipe import RECIPE, Recipe
from lora_helpers.training import METRICS_FILE, read_metrics, sft_config, write_metrics


# --------------------------------------------------------------------------- the recipe
def test_recipe_values():
    assert (RECIPE.r, RECIPE.lora_alpha, RECIPE.lora_dropout, RECIPE.target_modules) == (8, 16, 0.0, "all-linear")
    assert (RECIPE.learning_rate, RECIPE.max_steps, RECIPE.batch_size, RECIPE.grad_accum) == (1e-3, 60, 8, 1)
    assert (RECIPE.n_train, RECIPE.n_val, RECIPE.n_test, RECIPE.max_length, RECIPE.seed) == (400, 40, 50, 192, 0)
    assert RECIPE.lr_scheduler_type == "constant_with_warmup" and RECIPE.warmup_steps() == 5
    assert [RECIPE.warmup_steps(n) for n in (2, 10, 30, 60, 1000)] == [0, 1, 3, 5, 5]
    with pytest.raises(AttributeError):
        RECIPE.r = 4  # frozen: a variant is a copy
    assert RECIPE.replace(r=4).r == 4 and RECIPE.r == 8
    assert RECIPE.replace(target_modules=["q_proj", "v_proj"]) == Recipe(target_modules=("q_proj", "v_proj"))


@pytest.mark.parametrize("task", [
    "don_hang",
    "ngay_thang",
])
def test_every_course_row_fits_the_recipe_max_length(task):
    """TRL cuts a row longer than ``max_length`` from the end, i.e. it cuts the answer being learned: every row of
    every split, in the base's chat template (with its default system prompt), must fit."""
    from lora_helpers.models import find_base_model, load_tokenizer

    tokenizer = load_tokenizer(find_base_model(verbose=False))
    splits = make_task_splits(task)
    lengths = [len(tokenizer.apply_chat_template(messages, tokenize=True)["input_ids"])
               for split in splits.values() for messages in split["messages"]]
    assert max(lengths) <= RECIPE.max_length, (task, max(lengths), sum(n > RECIPE.max_length for n in lengths))


@pytest.mark.parametrize("task", ["don_hang", "ngay_thang"])
def test_demo_adapters_were_built_with_the_recipe(task):
    from scripts import build_adapters

    path = demo_adapter_path(task)
    config = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    assert (config["r"], config["lora_alpha"], config["lora_dropout"]) == (RECIPE.r, RECIPE.lora_alpha,
                                                                          RECIPE.lora_dropout)
    assert sorted(config["target_modules"]) == sorted(linear_names_of_smollm2())  # "all-linear", resolved by peft
    assert not (path / "course_metrics.json").exists(), "one metrics file per adapter (metrics.json)"
    metrics = read_metrics(path)
    assert metrics["task"] == task and metrics["steps"] == RECIPE.max_steps
    assert metrics["settings"] == dict(RECIPE.as_dict(), base_model=HUB_ID)
    # The course's bar for its demo adapters: 90% on the whole test split (held-out sentence shapes).
    assert metrics["n_test"] == RECIPE.n_test and 0.0 <= metrics["base_test_accuracy"] < 0.9 <= metrics["test_accuracy"]
    # ... and measurements on words, shapes and both that no split uses (make_unseen_split), reported in the card.
    assert metrics["n_unseen"] == RECIPE.n_test
    card = (path / "README.md").read_text(encoding="utf-8")
    assert f"| {metrics['base_test_accuracy']:.0%} |" in card and f"| {metrics['test_accuracy']:.0%} |" in card
    for hold_out, base_key, adapter_key in build_adapters.HELD_OUT_KEYS:
        assert 0.0 <= metrics[base_key] <= 1.0 and 0.0 <= metrics[adapter_key] <= 1.0
        assert f'| `hold_out="{hold_out}"` |' in card
        assert f"| {metrics[base_key]:.0%} | {metrics[adapter_key]:.0%} |" in card, hold_out
    assert f"| {RECIPE.max_steps} / {RECIPE.learning_rate} / {RECIPE.batch_size} |" in card
    assert f"| {RECIPE.r} / {RECIPE.lora_alpha} / {RECIPE.lora_dropout} |" in card
    assert f"{RECIPE.n_train} train, {RECIPE.n_val} validation, {RECIPE.n_test} test" in card
    # the steps are looked at on the validation split, and the card says so
    assert metrics["validation_accuracy_by_step"] and f"{RECIPE.n_val} câu của tập kiểm định" in card


def linear_names_of_smollm2():
    return ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def test_recipe_lora_config_and_sft_config():
    config = RECIPE.lora_config()
    assert isinstance(config, LoraConfig)
    assert (config.r, config.lora_alpha, config.lora_dropout, config.target_modules) == (8, 16, 0.0, "all-linear")
    assert str(config.task_type).endswith("CAUSAL_LM")
    assert set(RECIPE.replace(target_modules=("q_proj",)).lora_config(r=2).target_modules) == {"q_proj"}

    args = sft_config("unused", device="cpu")
    assert (args.max_steps, args.learning_rate, args.per_device_train_batch_size) == (60, 1e-3, 8)
    assert (args.per_device_eval_batch_size, args.gradient_accumulation_steps, args.warmup_steps) == (16, 1, 5)
    assert (args.eval_steps, args.seed, args.data_seed, args.max_length) == (10, 0, 0, 192)
    assert getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type) == "constant_with_warmup"
    # bf16 follows the precision profile of this CPU (on both kinds: tests/test_mixed_precision.py mocks them)
    assert args.use_cpu and args.bf16 == precision_profile("cpu").bf16 and not args.fp16
    custom = sft_config("unused", max_steps=30, recipe=RECIPE.replace(grad_accum=2), device="cpu")
    assert (custom.max_steps, custom.warmup_steps, custom.gradient_accumulation_steps) == (30, 3, 2)


def test_split_defaults_are_the_recipe():
    defaults = {k: p.default for k, p in inspect.signature(make_task_splits).parameters.items() if k != "task"}
    assert defaults == {"n_train": RECIPE.n_train, "n_val": RECIPE.n_val, "n_test": RECIPE.n_test,
                        "seed": RECIPE.seed}


# --------------------------------------------------------------------------- the tasks
def test_each_task_scores_its_answers():
    order = TASKS["don_hang"]
    ref = json.dumps({"ten": "Lan", "mon": "phở bò", "so_luong": 2, "dia_chi": "Quận 1"}, ensure_ascii=False)
    assert order.score(ref, ref) and not order.score("không phải json", ref)
    assert order.extra_metrics([ref, "không phải json"]) == {"valid_json": 0.5}
    assert order.extra_metrics([]) == {"valid_json": 0.0}
    date = TASKS["ngay_thang"]
    assert date.score(" 2024-03-05\n", "2024-03-05") and not date.score("2024-3-5", "2024-03-05")
    assert date.extra_metrics(["2024-03-05"]) == {}
    assert MAX_NEW_TOKENS == {"don_hang": 80, "ngay_thang": 16}
    assert {name: t.max_new_tokens for name, t in TASKS.items()} == MAX_NEW_TOKENS
    # the evaluation helpers delegate to the task
    assert score_answer("don_hang", ref, ref) and task_metrics("ngay_thang", ["x", "y"], ["x", "x"]) == {"accuracy": 0.5, "n": 2, "correct": [True, False]}
    with pytest.raises(CourseError, match="don_hang"):
        score_answer("khong_co", "a", "a")
    assert get_task("don_hang") is order


# --------------------------------------------------------------------------- the layer walk
def test_layer_walk(tiny_model_factory):
    model = tiny_model_factory()
    names = linear_module_names(model)
    assert names == sorted(linear_names_of_smollm2())  # lm_head excluded
    assert len(linear_layers(model)) == 2 * 7
    assert [n for n, _ in linear_layers(model, ["q_proj"])] == ["model.layers.0.self_attn.q_proj",
                                                                 "model.layers.1.self_attn.q_proj"]
    q = linear_layers(model, ["q_proj"])[0][1]
    assert lora_layer_params(4, q.in_features, q.out_features) == 4 * (q.in_features + q.out_features)
    assert lora_param_count(model, 4, ["q_proj"]) == 2 * lora_layer_params(4, q.in_features, q.out_features)

    peft_model = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    assert len(lora_layers(peft_model)) == 4 and len(lora_layers(peft_model, "default")) == 4
    assert lora_layers(peft_model, "khac") == []
    from lora_helpers import merging

    assert merging.lora_layers is lora_layers  # the lessons import it from merging


# --------------------------------------------------------------------------- the metrics file
def test_metrics_file_round_trip(tmp_path):
    metrics = {"task": "ngay_thang", "test_accuracy": 0.75, "test_metric": "khớp chuỗi tuyệt đối",
               "settings": RECIPE.as_dict()}
    path = write_metrics(tmp_path, metrics)
    assert path.name == METRICS_FILE and path.read_text(encoding="utf-8").endswith("}\n")
    assert "khớp chuỗi tuyệt đối" in path.read_text(encoding="utf-8")  # UTF-8, not \u escapes
    assert read_metrics(tmp_path) == metrics
    with pytest.raises(CourseError, match=METRICS_FILE):
        read_metrics(tmp_path / "khong_co")


# --------------------------------------------------------------------------- the shared training function
def test_build_adapters_trains_with_the_shared_function(tiny_base_dir, tmp_path, capsys):
    """scripts/build_adapters.py end to end on a tiny model: adapter, model card and metrics.json."""
    from scripts import build_adapters

    recipe = RECIPE.replace(r=2, lora_alpha=4, max_steps=2, batch_size=2, n_train=4, n_val=2, n_test=3)
    out = tmp_path / "adapters"
    built = build_adapters.build("ngay_thang", out, recipe)
    target = out / "ngay_thang"
    assert sorted(p.name for p in target.iterdir()) == ["README.md", "adapter_config.json",
                                                        "adapter_model.safetensors", FINGERPRINT_FILE, METRICS_FILE]
    assert adapter_base_model(target) == "HuggingFaceTB/SmolLM2-135M-Instruct"  # not the tiny model's path
    metrics = read_metrics(target)
    assert metrics["task"] == "ngay_thang" and metrics["steps"] == 2 and metrics["n_test"] == 3
    assert metrics["world_size"] == 1 and metrics["device"].startswith("cpu")
    assert metrics["eval_loss"] > 0  # the validation loss at the end
    assert list(metrics["validation_accuracy_by_step"]) == ["2"]  # every CHECKPOINT_EVERY steps and at the end
    assert metrics == built  # what was measured is what was written
    assert all(key in metrics for _, *keys in build_adapters.HELD_OUT_KEYS for key in keys)
    assert metrics["settings"] == {**recipe.as_dict(), "base_model": "HuggingFaceTB/SmolLM2-135M-Instruct"}
    config = json.loads((target / "adapter_config.json").read_text(encoding="utf-8"))
    assert (config["r"], config["lora_alpha"]) == (2, 4)
    card = (target / "README.md").read_text(encoding="utf-8")
    assert "| 2 / 0.001 / 2 |" in card and "4 train, 2 validation, 3 test" in card
    fingerprint = read_fingerprint_record(target)["fingerprint"]  # the tiny base it was trained on
    assert card.count(f"`{fingerprint}`") == 2
    from transformers import AutoModelForCausalLM

    assert fingerprint == base_fingerprint(AutoModelForCausalLM.from_pretrained(tiny_base_dir, dtype=torch.float32))
    assert not (out / ".ngay_thang.new").exists()
    assert f"| {metrics['unseen_shapes_base_accuracy']:.0%} | {metrics['unseen_shapes_accuracy']:.0%} |" in card

    # --measure-missing: no training; measures only what metrics.json lacks, on the same weights, and rewrites
    # the card. Greedy decoding on the same weights gives the same numbers as the build.
    weights = (target / "adapter_model.safetensors").read_bytes()
    partial = {k: v for k, v in metrics.items() if not k.startswith("unseen_words")}
    write_metrics(target, partial)
    (target / "README.md").write_text("old card", encoding="utf-8")
    again = build_adapters.measure_missing("ngay_thang", target)
    assert again == metrics == read_metrics(target)
    assert (target / "adapter_model.safetensors").read_bytes() == weights
    card = (target / "README.md").read_text(encoding="utf-8")
    assert "`words`" in card and "--measure-missing" in card and card.count(f"`{fingerprint}`") == 2
    capsys.readouterr()
    assert build_adapters.measure_missing("ngay_thang", target) == metrics
    assert "nothing to measure" in capsys.readouterr().out


def test_train_lora_adapter_with_validation(tiny_base_dir):
    from lora_helpers.training import train_lora_adapter

    recipe = RECIPE.replace(r=2, max_steps=3, batch_size=2, n_train=6, n_val=2, n_test=2, eval_steps=2)
    seen = []
    run = train_lora_adapter("ngay_thang", recipe, device="cpu", verbose=False,
                             before_training=lambda r: seen.append(r.trainer.state.global_step))
    assert seen == [0]  # called once, before the first step
    evals = [e["step"] for e in run.trainer.state.log_history if "eval_loss" in e]
    assert evals == [2, 3]  # every eval_steps, and once more at the end
    assert run.base_test is None and len(run.test_rows) == 2 == len(run.data["test"])  # n_test: the size of the split
    assert run.data["test"]["messages"] == make_task_splits("ngay_thang")["test"]["messages"][:2]  # its first rows
    assert run.data["train"]["messages"] == make_task_splits("ngay_thang", n_train=6, n_val=2)["train"]["messages"]
    test = run.evaluate_test()
    metrics = run.metrics(base_model="tiny")
    assert metrics["test_accuracy"] == test["accuracy"] and metrics["n_test"] == 2
    assert metrics["effective_batch_size"] == 2 and metrics["settings"]["base_model"] == "tiny"
    assert torch.isfinite(torch.tensor(metrics["eval_loss"]))
    with pytest.raises(CourseError, match="n_test"):  # a size is a size: any positive number, nothing else
        train_lora_adapter("ngay_thang", recipe.replace(n_test=0), device="cpu", verbose=False)


# Where each recipe field goes: the SFTConfig field it must reach (with the value it must take), or the other
# place that reads it. A new Recipe field fails this test until it is given a home here.
_SFT_FIELDS = {
    "learning_rate": ("learning_rate", 5e-4, 5e-4),
    "max_steps": ("max_steps", 37, 37),
    "batch_size": ("per_device_train_batch_size", 3, 3),
    "grad_accum": ("gradient_accumulation_steps", 4, 4),
    "lr_scheduler_type": ("lr_scheduler_type", "cosine", "cosine"),
    "warmup_steps_max": ("warmup_steps", 2, 2),       # with 60 steps: min(2, 60 // 10)
    "warmup_every": ("warmup_steps", 30, 2),         # with 60 steps: min(5, 60 // 30)
    "eval_steps": ("eval_steps", 7, 7),
    "eval_batch_size": ("per_device_eval_batch_size", 5, 5),
    "max_length": ("max_length", 96, 96),
    "seed": ("seed", 11, 11),
}
_ELSEWHERE = {"r", "lora_alpha", "lora_dropout", "target_modules",  # Recipe.lora_config
              "n_train", "n_val", "n_test"}                          # make_task_splits / the scored rows


def test_every_recipe_field_reaches_sft_config_from_the_recipe_given():
    """sft_config(d, recipe=R) trains with R's values (it once took four of them from the global RECIPE)."""
    import dataclasses

    fields = {f.name for f in dataclasses.fields(RECIPE)}
    assert fields == set(_SFT_FIELDS) | _ELSEWHERE, "give each new Recipe field its place in _SFT_FIELDS or _ELSEWHERE"
    for name, (sft_field, value, expected) in _SFT_FIELDS.items():
        args = sft_config("unused", recipe=RECIPE.replace(**{name: value}), device="cpu")
        got = getattr(args, sft_field)
        assert getattr(got, "value", got) == expected, (name, sft_field, got)
    args = sft_config("unused", recipe=RECIPE.replace(seed=11), device="cpu")
    assert args.data_seed == 11
    # An argument given to sft_config wins over the recipe; eval_steps=None switches evaluation off.
    args = sft_config("unused", learning_rate=2e-3, eval_steps=None, recipe=RECIPE.replace(learning_rate=5e-4),
                      device="cpu")
    assert args.learning_rate == 2e-3 and str(getattr(args.eval_strategy, "value", args.eval_strategy)) == "no"
