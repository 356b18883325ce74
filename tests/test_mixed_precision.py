"""After a mixed-precision Trainer, comparisons must still compute in fp32 (lora_helpers.env, lora_helpers.parity).

``SFTTrainer(args=SFTConfig(bf16=True, ...)).train()`` leaves the model's ``forward`` wrapped in Accelerate's
autocast: its logits come back as float32 but are computed in bf16. These tests train one real step under bf16
autocast on a tiny model (cheap even where bf16 is emulated) and prove: the trap is real (the wrapped logits differ
from the fp32 ones), the parity helpers see fp32 logits anyway, and the wrapper can be removed in place.
"""

import pytest
import torch
from peft import LoraConfig, PeftModel

from lora_helpers import env
from lora_helpers.data import make_task_splits, to_prompt_completion
from lora_helpers.parity import check_parity_ids, greedy_tokens, max_logit_diff
from lora_helpers.recipe import RECIPE
from lora_helpers.training import sft_config


@pytest.fixture
def forced_bf16(monkeypatch):
    monkeypatch.setenv(env.ENV_PRECISION, "bf16")
    env.cpu_bf16_native.cache_clear()
    yield
    env.cpu_bf16_native.cache_clear()


def _train_one_step(model, tokenizer, out_dir, bf16: bool):
    from trl import SFTTrainer

    rows = to_prompt_completion(make_task_splits("ngay_thang", n_train=4, n_val=2, n_test=2)["train"])
    trainer = SFTTrainer(
        model=model, processing_class=tokenizer, train_dataset=rows,
        args=sft_config(str(out_dir), max_steps=1, batch_size=2, eval_steps=None, device="cpu", bf16=bf16,
                        learning_rate=5e-2),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    trainer.train()
    trainer.model.eval()
    return trainer


def _ids(tokenizer):
    batch = tokenizer(["w1 w2 w3 w4 w5 w6", "w7 w8 w9 w10 w11 w12"], return_tensors="pt")
    return batch["input_ids"], batch["attention_mask"]


def test_bf16_training_leaves_an_autocast_wrapper_that_parity_helpers_see_through(
        tiny_model_factory, tiny_tokenizer, tmp_path, forced_bf16):
    trainer = _train_one_step(tiny_model_factory(), tiny_tokenizer, tmp_path / "run", bf16=True)
    model = trainer.model
    assert trainer.args.bf16 and env.precision_profile("cpu").bf16
    assert env.autocast_wrapped(model)  # the trap: the trained model still computes under autocast
    ids, mask = _ids(tiny_tokenizer)
    with torch.no_grad():
        wrapped_logits = model(input_ids=ids, attention_mask=mask).logits
        with env.fp32_forward(model):
            fp32_logits = model(input_ids=ids, attention_mask=mask).logits
    assert wrapped_logits.dtype == torch.float32  # looks fp32 ...
    assert (wrapped_logits - fp32_logits).abs().max().item() > 1e-4  # ... but was computed in bf16
    assert env.autocast_wrapped(model)  # fp32_forward puts the wrapper back: training could go on in bf16

    # Reloaded on a fresh fp32 base, the adapter is the same function: the helpers must say so.
    model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(tiny_model_factory(), str(tmp_path / "adapter")).eval()
    with torch.no_grad():
        naive = (wrapped_logits - reloaded(input_ids=ids, attention_mask=mask).logits).abs().max().item()
    assert naive > 1e-4
    assert max_logit_diff(model, reloaded, ids, mask) < 1e-5
    assert greedy_tokens(model, ids, mask, max_new_tokens=4) == greedy_tokens(reloaded, ids, mask, max_new_tokens=4)
    assert check_parity_ids(model, reloaded, ids, mask, max_new_tokens=4).passed
    # Inside the helpers' fp32 context, an ambient autocast block is switched off too.
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert max_logit_diff(model, reloaded, ids, mask) < 1e-5

    # The library call removes the wrapper in place; afterwards plain calls compute in fp32.
    unwrapped = trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)
    assert unwrapped is model and not env.autocast_wrapped(model)
    with torch.no_grad():
        assert torch.equal(model(input_ids=ids, attention_mask=mask).logits, fp32_logits)


def test_remove_autocast_wrapper_matches_the_library_and_leaves_fp32_models_alone(
        tiny_model_factory, tiny_tokenizer, tmp_path, forced_bf16):
    trainer = _train_one_step(tiny_model_factory(), tiny_tokenizer, tmp_path / "run", bf16=True)
    ids, mask = _ids(tiny_tokenizer)
    with torch.no_grad(), env.fp32_forward(trainer.model):
        expected = trainer.model(input_ids=ids, attention_mask=mask).logits
    assert env.remove_autocast_wrapper(trainer.model) is trainer.model
    assert not env.autocast_wrapped(trainer.model)
    with torch.no_grad():
        assert torch.equal(trainer.model(input_ids=ids, attention_mask=mask).logits, expected)
    assert env.remove_autocast_wrapper(trainer.model) is trainer.model  # twice: nothing left to remove

    fp32 = _train_one_step(tiny_model_factory(), tiny_tokenizer, tmp_path / "fp32", bf16=False)
    assert not fp32.args.bf16 and not env.autocast_wrapped(fp32.model)  # fp32 training adds no wrapper


def test_train_lora_adapter_returns_a_model_without_the_wrapper(tiny_base_dir, forced_bf16):
    from lora_helpers.training import train_lora_adapter

    recipe = RECIPE.replace(r=2, max_steps=1, batch_size=2, n_train=4, n_val=2, n_test=2)
    run = train_lora_adapter("ngay_thang", recipe, device="cpu", verbose=False, validate=False)
    assert run.trainer.args.bf16  # trained under bf16 autocast ...
    assert not env.autocast_wrapped(run.trainer.model) and not env.autocast_wrapped(run.model)  # ... compares in fp32


@pytest.mark.parametrize("native", [True, False], ids=["cpu-with-bf16", "cpu-avx2-only"])
def test_sft_config_follows_the_profile_on_both_cpu_kinds(monkeypatch, native):
    monkeypatch.delenv(env.ENV_PRECISION, raising=False)
    monkeypatch.setattr(env, "cpu_bf16_native", lambda: env.CpuBf16(native, "mocked"))
    args = sft_config("unused", device="cpu")
    assert args.bf16 is native and not args.fp16 and args.use_cpu
    monkeypatch.setenv(env.ENV_PRECISION, "fp32")
    assert not sft_config("unused", device="cpu").bf16  # LORA_COURSE_PRECISION=fp32 wins on every CPU
