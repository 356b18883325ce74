"""lora_helpers.variants: each variant's LoraConfig, bad input, the plain training loop, merge parity, noise words."""

import math

import pytest
import torch
from datasets import Dataset

from lora_helpers.errors import CourseError
from lora_helpers.variants import (
    PISSA_INIT,
    VARIANTS,
    check_rank,
    check_variant,
    lora_scaling,
    make_batches,
    mean_loss,
    merge_parity,
    step_seconds,
    tokenize_rows,
    train_steps,
    train_variant,
    variant_config,
)


def rows(words):
    return [{"messages": [{"role": "user", "content": w}, {"role": "assistant", "content": "w40 w41"}],
             "answer": "w40 w41", "task": "ngay_thang"} for w in words]


TRAIN = rows([f"w{5 + i} w{20 + i}" for i in range(12)])
VAL = rows(["w7 w30", "w11 w2 w44"])


@pytest.mark.parametrize("variant, switch", [
    ("lora", {"use_rslora": False, "use_dora": False, "init_lora_weights": True}),
    ("rslora", {"use_rslora": True, "use_dora": False, "init_lora_weights": True}),
    ("dora", {"use_rslora": False, "use_dora": True, "init_lora_weights": True}),
    ("pissa", {"use_rslora": False, "use_dora": False, "init_lora_weights": PISSA_INIT}),
    ("olora", {"use_rslora": False, "use_dora": False, "init_lora_weights": "olora"}),
])
def test_each_variant_is_one_switch_of_lora_config(variant, switch):
    from peft import LoraConfig

    config = variant_config(variant, r=4, lora_alpha=8, target_modules=("q_proj", "v_proj"))
    for key, value in switch.items():
        assert getattr(config, key) == value
    assert config.r == 4 and config.lora_alpha == 8 and set(config.target_modules) == {"q_proj", "v_proj"}
    assert config == LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                                task_type="CAUSAL_LM", **{k: v for k, v in switch.items() if v not in (False, True)},
                                use_rslora=switch["use_rslora"], use_dora=switch["use_dora"])


def test_variant_names_are_normalised():
    assert check_variant(" DoRA ") == "dora"
    assert set(VARIANTS) == {"lora", "rslora", "dora", "pissa", "olora"}


@pytest.mark.parametrize("name", ["qlora", "", "lora2", None, 3])
def test_unknown_variant_gets_a_vietnamese_message(name):
    with pytest.raises(CourseError) as err:
        variant_config(name)
    assert "Không có biến thể LoRA tên" in str(err.value)
    assert "Cách sửa" in str(err.value) and "dora" in str(err.value)


@pytest.mark.parametrize("r", [0, -4, 2.5, "8", True, None])
def test_invalid_rank_gets_a_vietnamese_message(r):
    with pytest.raises(CourseError) as err:
        variant_config("lora", r=r)
    assert "Hạng r phải là số nguyên dương" in str(err.value) and "r=8" in str(err.value)
    with pytest.raises(CourseError):
        check_rank(r)


@pytest.mark.parametrize("alpha", [0, -1, None, True])
def test_invalid_alpha_gets_a_vietnamese_message(alpha):
    with pytest.raises(CourseError, match="lora_alpha phải là số dương"):
        variant_config("lora", lora_alpha=alpha)


def test_scaling_lora_vs_rslora():
    assert lora_scaling(8, 16) == 2.0
    assert lora_scaling(16, 16, rslora=True) == 4.0
    assert math.isclose(lora_scaling(8, 16, rslora=True), 16 / math.sqrt(8))
    with pytest.raises(CourseError):
        lora_scaling(0, 16)


def test_tokenize_rows_masks_the_prompt(tiny_tokenizer):
    examples = tokenize_rows(tiny_tokenizer, Dataset.from_list(TRAIN[:2]))
    first = examples[0]
    assert len(first["input_ids"]) == len(first["labels"])
    answer = [t for t, lab in zip(first["input_ids"], first["labels"]) if lab != -100]
    assert tiny_tokenizer.decode(answer).split() == ["w40", "w41", "<eos>"]
    assert first["labels"][0] == -100
    short = tokenize_rows(tiny_tokenizer, TRAIN[:1], max_length=3)[0]
    assert len(short["input_ids"]) == 3


def test_make_batches_is_seeded_and_padded(tiny_tokenizer):
    examples = tokenize_rows(tiny_tokenizer, TRAIN)
    a = make_batches(examples, 4, 5, seed=0, pad_token_id=1)
    b = make_batches(examples, 4, 5, seed=0, pad_token_id=1)
    c = make_batches(examples, 4, 5, seed=1, pad_token_id=1)
    assert len(a) == 5 and a[0]["input_ids"].shape[0] == 4
    assert all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, b))
    assert not all(torch.equal(x["input_ids"], y["input_ids"]) for x, y in zip(a, c))
    assert (a[0]["labels"][a[0]["attention_mask"] == 0] == -100).all()
    with pytest.raises(CourseError, match="batch_size"):
        make_batches(examples, 0, 2, seed=0, pad_token_id=1)


def test_train_steps_lowers_the_loss_and_needs_trainable_parameters(tiny_model_factory, tiny_tokenizer):
    from peft import get_peft_model

    examples = tokenize_rows(tiny_tokenizer, TRAIN)
    batches = make_batches(examples, 4, 1, seed=0, pad_token_id=1) * 8   # the same batch: its loss must fall
    model = get_peft_model(tiny_model_factory(), variant_config("lora", r=4, lora_alpha=8))
    logged = []
    losses = train_steps(model, batches, learning_rate=1e-2, log=lambda step, loss: logged.append(step))
    assert losses[-1] < losses[0] and logged == list(range(1, 9))
    frozen = tiny_model_factory()
    for p in frozen.parameters():
        p.requires_grad_(False)
    with pytest.raises(CourseError, match="không có tham số nào huấn luyện được"):
        train_steps(frozen, batches)


@pytest.mark.parametrize("variant", VARIANTS)
def test_train_variant_measures_a_run(variant, tiny_model_factory, tiny_tokenizer):
    examples = tokenize_rows(tiny_tokenizer, TRAIN)
    val = make_batches(tokenize_rows(tiny_tokenizer, VAL), 2, 1, seed=0, pad_token_id=1)
    run = train_variant(variant, tiny_model_factory, tiny_tokenizer, examples, val, None, r=2, lora_alpha=4,
                        steps=3, batch_size=4)
    assert run.variant == variant and len(run.losses) == 3
    assert math.isfinite(run.val_loss) and run.val_loss == mean_loss(run.model, val)
    assert run.seconds_per_step > 0 and run.trainable > 0 and run.total > run.trainable
    assert run.history()["eval"] == [(3, run.val_loss)]
    if variant == "dora":  # one magnitude per output of q_proj (32) and v_proj (16), in 2 layers
        lora = train_variant("lora", tiny_model_factory, tiny_tokenizer, examples, val, None, r=2, lora_alpha=4,
                             steps=1, batch_size=4)
        assert run.trainable - lora.trainable == 2 * (32 + 16)


def test_train_variant_scores_the_test_rows_and_merges(tiny_model_factory, tiny_tokenizer):
    examples = tokenize_rows(tiny_tokenizer, TRAIN)
    val = make_batches(tokenize_rows(tiny_tokenizer, VAL), 2, 1, seed=0, pad_token_id=1)
    test = Dataset.from_list(VAL)
    run = train_variant("lora", tiny_model_factory, tiny_tokenizer, examples, val, test, r=2, lora_alpha=4, steps=2,
                        batch_size=4)
    assert run.n_test == 2 and 0.0 <= run.test_accuracy <= 1.0
    assert len(run.test_correct) == 2 and run.test_accuracy == sum(run.test_correct) / 2
    assert run.test_gold_logprob_per_token < 0
    result = merge_parity(run.model, tiny_tokenizer, test, max_new_tokens=3)
    assert result.passed, result.details()
    assert hasattr(run.model, "peft_config")  # the adapter model itself is not merged


def test_step_seconds_times_every_model_interleaved_and_leaves_no_gradient(tiny_model_factory, tiny_tokenizer):
    from peft import get_peft_model

    examples = tokenize_rows(tiny_tokenizer, TRAIN)
    batch = make_batches(examples, 4, 1, seed=0, pad_token_id=1)[0]
    models = {v: get_peft_model(tiny_model_factory(), variant_config(v, r=2, lora_alpha=4)) for v in ("lora", "dora")}
    times = step_seconds(models, batch, repeats=3)
    assert sorted(times) == ["dora", "lora"] and all(len(t) == 3 and min(t) > 0 for t in times.values())
    assert all(p.grad is None for m in models.values() for p in m.parameters())
