"""The ``lora_silent_failures`` exercise checks: each walks its table of mistakes, plus the real broken set-ups.

Tiny random Llama models with tied embeddings stand in for SmolLM2, and a word-level tokenizer whose chat template
has SmolLM2's shape: ``<|im_start|> role Ċ content <|im_end|> Ċ``, with pad = eos = ``<|im_end|>`` (id 2), so
masking padding by id masks the end-of-turn token as it does on the course model.
"""

import copy

import pytest
import torch
from check_support import ok, randomize_lora, todo, walk_table, wrong
from datasets import Dataset
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import DataCollatorForLanguageModeling, Trainer, TrainingArguments
from trl import SFTConfig, SFTTrainer

from lora_helpers.checks import check_fixed_trainer, check_full_coverage, check_label_batch, check_trainable_reload
from lora_helpers.checks.kit import table_of
from lora_helpers.checks.lora_silent_failures import _BROKEN_TARGETS, _reference_make_batch

SPECIALS = ["<unk>", "<|im_start|>", "<|im_end|>", "system", "user", "assistant", "Ċ"]
ADAPTER = dict(r=2, lora_alpha=4, target_modules="all-linear", lora_dropout=0.0)


def tied_llama(layers=2, seed=0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=layers,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64,
                         tie_word_embeddings=True, pad_token_id=2, eos_token_id=2, bos_token_id=1)
    return LlamaForCausalLM(config).eval()


def make_chat_tokenizer():
    """The SmolLM2-shaped word-level tokenizer of the module docstring."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(SPECIALS + [f"w{i}" for i in range(64 - len(SPECIALS))])}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|im_end|>",
                                  unk_token="<unk>", bos_token="<|im_start|>")
    tok.chat_template = ("{% for m in messages %}<|im_start|> {{ m['role'] }} Ċ {{ m['content'] }} <|im_end|> Ċ "
                         "{% endfor %}{% if add_generation_prompt %}<|im_start|> assistant Ċ {% endif %}")
    tok.padding_side = "left"  # as LESSON.load_tokenizer() leaves it (ready for generation)
    assert tok.pad_token_id == tok.eos_token_id == 2
    return tok


@pytest.fixture(scope="module")
def chat_tokenizer():
    return make_chat_tokenizer()


def chat_rows(n=8):
    """Chat rows like make_task_splits' (``messages``: question, answer), answers of different lengths."""
    return [{"messages": [{"role": "user", "content": f"w{i % 40} w{(3 * i + 1) % 40} w{(5 * i + 2) % 40}"},
                          {"role": "assistant", "content": " ".join(f"w{(i + k) % 40 + 10}" for k in range(1 + i % 3))}],
             "answer": "", "task": "ngay_thang"} for i in range(n)]


@pytest.fixture(scope="module")
def saved_adapter(tmp_path_factory):
    """A tiny adapter saved with trained-looking weights (B non-zero), like the demo adapter."""
    folder = tmp_path_factory.mktemp("saved") / "ngay_thang"
    randomize_lora(get_peft_model(tied_llama(), LoraConfig(**ADAPTER)), seed=3).save_pretrained(folder)
    return folder


# --------------------------------------------------------------------------- 🐢 reload
def test_trainable_reload_table(saved_adapter):
    reloaded = PeftModel.from_pretrained(tied_llama(), saved_adapter, is_trainable=True)
    walk_table(check_trainable_reload, reloaded, saved_adapter)
    ok(check_trainable_reload(reloaded, saved_adapter))   # the walk edited copies, never the learner's model


def test_trainable_reload_rejects_the_real_slips(saved_adapter):
    frozen = PeftModel.from_pretrained(tied_llama(), saved_adapter)                       # no is_trainable=True
    wrong(check_trainable_reload(frozen, saved_adapter), "is_trainable=True")
    fresh = get_peft_model(tied_llama(), LoraConfig(**ADAPTER))
    wrong(check_trainable_reload(fresh, saved_adapter), "bộ điều hợp mới")
    everything = PeftModel.from_pretrained(tied_llama(), saved_adapter)
    everything.requires_grad_(True)
    wrong(check_trainable_reload(everything, saved_adapter), "mô hình cơ sở")
    named = PeftModel.from_pretrained(tied_llama(), saved_adapter, adapter_name="ngay_thang", is_trainable=True)
    ok(check_trainable_reload(named, saved_adapter))


# --------------------------------------------------------------------------- 🐕 labels
def test_label_batch_reference_follows_the_template(chat_tokenizer):
    rows = chat_rows(4)
    batch = _reference_make_batch(chat_tokenizer)(rows)
    last = batch["attention_mask"][0].nonzero().max()
    assert chat_tokenizer.convert_ids_to_tokens(batch["input_ids"][0, last - 1:last + 1].tolist()) == ["<|im_end|>", "Ċ"]
    assert batch["labels"][0, last - 1] == 2 and (batch["labels"][batch["attention_mask"] == 0] == -100).all()


def test_label_batch_table(chat_tokenizer):
    rows = chat_rows(4)
    reference = _reference_make_batch(chat_tokenizer)
    walk_table(check_label_batch, reference, chat_tokenizer, rows)
    ok(check_label_batch(reference, chat_tokenizer, Dataset.from_list(rows)))     # a datasets split works too


def test_label_batch_rejects_the_transformers_collator(chat_tokenizer):
    """DataCollatorForLanguageModeling itself (pad = end-of-turn): the end-of-turn row reports it first."""
    rows = chat_rows(4)
    collator = DataCollatorForLanguageModeling(chat_tokenizer, mlm=False)

    def by_id(hang):
        texts = [chat_tokenizer.apply_chat_template(r["messages"], tokenize=False) for r in hang]
        return collator([chat_tokenizer(t, add_special_tokens=False) for t in texts])

    tok = copy.deepcopy(chat_tokenizer)
    tok.padding_side = "right"
    collator.tokenizer = tok
    wrong(check_label_batch(by_id, chat_tokenizer, rows), "token kết thúc lượt", "attention_mask")
    wrong(check_label_batch(lambda hang: 1 / 0, chat_tokenizer, rows), "ZeroDivisionError")


# --------------------------------------------------------------------------- 🦁 coverage
def twelve_blocks():
    return tied_llama(layers=12)


def test_full_coverage_table():
    right = LoraConfig(r=8, lora_alpha=16, target_modules="all-linear")
    rows = walk_table(check_full_coverage, right, twelve_blocks)
    assert len(rows) >= 9
    ok(check_full_coverage(LoraConfig(r=8, lora_alpha=16, target_modules=r".*layers\.\d+\.(self_attn|mlp)\.\w+_proj"),
                           twelve_blocks))
    ok(check_full_coverage(LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                          "gate_proj", "up_proj", "down_proj"]),
                           twelve_blocks))


def test_full_coverage_reports_the_lesson_regex_by_block():
    broken = LoraConfig(r=8, lora_alpha=16, target_modules=_BROKEN_TARGETS)
    wrong(check_full_coverage(broken, twelve_blocks), "7 loại lớp chỉ ở 10/12 khối", "khối không có bộ điều hợp nào: 10–11", "\\d+")
    table = table_of(check_full_coverage, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear"), twelve_blocks)
    assert "(12 khối)" in table.ok


# --------------------------------------------------------------------------- 🦁 the fixed trainer
def sft_args(folder, steps=4):
    return SFTConfig(output_dir=str(folder), max_steps=steps, per_device_train_batch_size=4, learning_rate=1e-3,
                     lr_scheduler_type="constant", logging_steps=1, save_strategy="no", report_to="none", seed=0,
                     bf16=False, use_cpu=True, disable_tqdm=True, max_length=32, dataloader_num_workers=0)


def prompt_completion(rows):
    return Dataset.from_list([{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in rows])


@pytest.fixture(scope="module")
def fixed_trainer(saved_adapter, chat_tokenizer, tmp_path_factory):
    model = PeftModel.from_pretrained(tied_llama(), saved_adapter, is_trainable=True)
    tok = copy.deepcopy(chat_tokenizer)
    trainer = SFTTrainer(model=model, args=sft_args(tmp_path_factory.mktemp("sft")), train_dataset=prompt_completion(
        chat_rows()), processing_class=tok)
    trainer.train()
    return trainer


def test_fixed_trainer_table(fixed_trainer, saved_adapter):
    assert fixed_trainer.state.global_step == 4
    walk_table(check_fixed_trainer, fixed_trainer, saved_adapter)
    result = ok(check_fixed_trainer(fixed_trainer, saved_adapter))
    assert "Số đo của lần chạy này" in result.message


def hf_trainer(model, tokenizer, folder, steps=4):
    """The broken set-up of the lesson: transformers' Trainer with DataCollatorForLanguageModeling on chat text."""
    tok = copy.deepcopy(tokenizer)
    tok.padding_side = "right"
    texts = Dataset.from_list([{"text": tok.apply_chat_template(r["messages"], tokenize=False)} for r in chat_rows()])
    data = texts.map(lambda r: tok(r["text"], add_special_tokens=False), remove_columns=["text"])
    args = TrainingArguments(str(folder), max_steps=steps, per_device_train_batch_size=4, learning_rate=1e-3,
                             logging_steps=1, save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True)
    return Trainer(model=model, args=args, train_dataset=data, data_collator=DataCollatorForLanguageModeling(tok, mlm=False))


def test_fixed_trainer_rejects_the_broken_set_ups(saved_adapter, chat_tokenizer, tmp_path):
    broken = hf_trainer(PeftModel.from_pretrained(tied_llama(), saved_adapter), chat_tokenizer, tmp_path / "a")
    with pytest.raises(RuntimeError):
        broken.train()                                                  # what the learner sees: a torch error
    wrong(check_fixed_trainer(broken, saved_adapter), "đóng băng", "is_trainable=True")

    thawed = hf_trainer(PeftModel.from_pretrained(tied_llama(), saved_adapter, is_trainable=True), chat_tokenizer,
                        tmp_path / "b")
    wrong(check_fixed_trainer(thawed, saved_adapter), "chưa huấn luyện")
    thawed.train()
    wrong(check_fixed_trainer(thawed, saved_adapter, tokenizer=chat_tokenizer), "nhãn", "token kết thúc lượt bị che")

    fresh = SFTTrainer(model=tied_llama(), args=sft_args(tmp_path / "c"), train_dataset=prompt_completion(chat_rows()),
                       processing_class=copy.deepcopy(chat_tokenizer), peft_config=LoraConfig(**ADAPTER))
    fresh.train()
    wrong(check_fixed_trainer(fresh, saved_adapter), "bộ điều hợp mới")


@pytest.mark.parametrize("answer", ["trainer", 3, {"model": None}])
def test_fixed_trainer_never_raises(answer, saved_adapter):
    wrong(check_fixed_trainer(answer, saved_adapter), "không phải một trainer")
    todo(check_fixed_trainer(None, saved_adapter))
