"""The dtype of a QLoRA adapter: TRL's unconditional bf16 cast on quantized models, and the undo that
trl_peft_preference's QLoRA section writes out (``p.data = p.data.to(dtype)`` for every trainable weight).

TRL 1.16 decides "quantized" from ``is_loaded_in_4bit``/``is_loaded_in_8bit`` on the model it is given, so a tiny
random Llama with that attribute set stands in for a bitsandbytes model: the test needs neither bitsandbytes nor the
course model, and fails if a TRL upgrade changes the condition or drops the cast.
"""

import copy

import torch
from datasets import Dataset
from peft import LoraConfig
from trl import DPOConfig, DPOTrainer


def trainable_dtypes(model) -> dict:
    counts = {}
    for p in model.parameters():
        if p.requires_grad:
            counts[str(p.dtype).removeprefix("torch.")] = counts.get(str(p.dtype).removeprefix("torch."), 0) + p.numel()
    return counts


def cast_trainable(model, dtype) -> dict:
    """The lesson's undo, as written in its QLoRA cell."""
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.to(dtype)
    return trainable_dtypes(model)


def _pairs(n=4):
    return Dataset.from_list([{"prompt": f"w{i} w{i + 1}", "chosen": f" w{i + 5} <eos>", "rejected": f" w{i + 9} <eos>"}
                              for i in range(n)])


def _trainer(model, tokenizer, tmp_path):
    tok = copy.deepcopy(tokenizer)
    tok.padding_side = "left"
    args = DPOConfig(output_dir=str(tmp_path), max_steps=1, learning_rate=1e-2, per_device_train_batch_size=2,
                     max_length=32, logging_steps=1, save_strategy="no", report_to="none", bf16=False, fp16=False,
                     activation_checkpointing=False, use_cpu=True, dataloader_num_workers=0, disable_tqdm=True)
    lora = LoraConfig(r=2, lora_alpha=4, lora_dropout=0.0, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    return DPOTrainer(model=model, args=args, train_dataset=_pairs(), processing_class=tok, peft_config=lora)


def test_trl_casts_adapters_of_a_quantized_model_to_bf16_and_cast_trainable_undoes_it(
        tiny_model_factory, tiny_tokenizer, tmp_path):
    plain = _trainer(tiny_model_factory(), tiny_tokenizer, tmp_path / "plain")
    assert set(trainable_dtypes(plain.model)) == {"float32"}         # not quantized: peft keeps fp32 adapters

    model = tiny_model_factory()
    model.is_loaded_in_4bit = True                                    # what TRL reads (bitsandbytes sets it)
    trainer = _trainer(model, tiny_tokenizer, tmp_path / "q")
    n_trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    assert trainable_dtypes(trainer.model) == {"bfloat16": n_trainable}   # TRL's cast, whatever bf16=False says
    frozen = {n: p.dtype for n, p in trainer.model.named_parameters() if not p.requires_grad}

    params = [p for p in trainer.model.parameters() if p.requires_grad]
    assert cast_trainable(trainer.model, torch.float32) == {"float32": n_trainable}
    assert [p for p in trainer.model.parameters() if p.requires_grad] == params      # same Parameter objects
    assert {n: p.dtype for n, p in trainer.model.named_parameters() if not p.requires_grad} == frozen
    before = [p.detach().clone() for p in params]
    trainer.train()                                                   # the optimizer trains the fp32 tensors
    assert trainable_dtypes(trainer.model) == {"float32": n_trainable}
    assert any(not torch.equal(a, p) for a, p in zip(before, params))
