"""The teacher-forced scorer (evaluation.teacher_forced_scores) gives generate's verdict, at one forward pass a batch.

On a tiny model taught a few answers, and on the real course model with each demo adapter: every item where
teacher forcing says "right", generate returns the gold answer; on the exact-string task both agree on every item.
"""

import pytest
import torch
from datasets import Dataset

from lora_helpers.evaluation import evaluate_task, evaluate_task_fast, generate, teacher_forced_scores


def _rows(prompts, answers):
    """Rows in the course's format: the chat (question, then the gold answer) and the answer."""
    return Dataset.from_list([{"messages": [{"role": "user", "content": p}, {"role": "assistant", "content": a}],
                               "answer": a, "task": "ngay_thang"} for p, a in zip(prompts, answers)])


@pytest.fixture(scope="module")
def taught(tiny_model_factory, tiny_tokenizer):
    """A tiny model trained until it answers 8 prompts by heart (plain AdamW on prompt + answer + eos)."""
    model = tiny_model_factory(hidden_size=64).train()
    tok = tiny_tokenizer
    prompts = [f"w{i} w{i + 1} w{i + 2}" for i in range(5, 45, 5)]
    answers = [f"w{50 - i} w{i}" for i in range(5, 45, 5)]
    texts = [tok.apply_chat_template([{"role": "user", "content": p}, {"role": "assistant", "content": a}],
                                     tokenize=False) for p, a in zip(prompts, answers)]
    batch = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(150):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval(), tok, prompts, answers


def test_teacher_forcing_agrees_with_generate_on_a_taught_model(taught):
    model, tok, prompts, answers = taught
    unseen = [f"w{i} w{i + 3}" for i in range(7, 47, 5)]
    rows = _rows(prompts + unseen, answers + answers[::-1])
    scores = teacher_forced_scores(model, tok, rows, batch_size=5, precision=False)
    generated = generate(model, tok, [m[0]["content"] for m in rows["messages"]], max_new_tokens=8)
    by_generate = [g == a for g, a in zip(generated, rows["answer"])]
    assert scores["n"] == len(generated) == 16
    assert scores["correct"] == by_generate                     # the same verdict on every item
    assert sum(scores["correct"][:8]) >= 6                      # and it is not "all wrong" by luck
    assert scores["accuracy"] == sum(by_generate) / 16
    assert all(lp <= 0 for lp in scores["gold_logprob"]) and scores["gold_tokens"][0] == 3  # 2 words + eos
    right = [lp for lp, ok in zip(scores["gold_logprob"], scores["correct"]) if ok]
    wrong = [lp for lp, ok in zip(scores["gold_logprob"], scores["correct"]) if not ok]
    assert max(wrong) < min(right)                              # the gold answer is far likelier where it is learned


def test_the_fast_evaluation_gives_evaluate_tasks_result_and_generates_only_the_misses(taught):
    model, tok, prompts, answers = taught
    unseen = [f"w{i} w{i + 3}" for i in range(7, 47, 5)]
    rows = _rows(prompts + unseen, answers + answers[::-1])
    full = evaluate_task(model, tok, rows, max_new_tokens=8, precision=False)
    fast = evaluate_task_fast(model, tok, rows, max_new_tokens=8, precision=False)
    assert fast["predictions"] == full["predictions"] and fast["accuracy"] == full["accuracy"]
    assert fast["generated"] == [i for i, ok in enumerate(fast["teacher_forced_correct"]) if not ok]
    assert 0 < len(fast["generated"]) < 16


def test_a_wrong_gold_answer_is_never_scored_right(taught):
    model, tok, prompts, answers = taught
    shifted = answers[1:] + answers[:1]  # every prompt paired with another prompt's answer
    scores = teacher_forced_scores(model, tok, _rows(prompts, shifted), precision=False)
    assert not any(scores["correct"])
    prefix_only = [a.split()[0] for a in answers]  # the first word only: the model goes on, it does not stop there
    assert not any(teacher_forced_scores(model, tok, _rows(prompts, prefix_only), precision=False)["correct"])


@pytest.mark.slow
@pytest.mark.parametrize("task", ["ngay_thang", "don_hang"])
def test_teacher_forcing_against_generate_on_the_demo_adapters(task):
    """The real model with each demo adapter, 16 test rows: where teacher forcing says right, generate is right;
    on the exact-string task (ngay_thang) the two verdicts are the same on every row."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from lora_helpers.adapters import demo_adapter_path
    from lora_helpers.data import make_task_splits
    from lora_helpers.evaluation import score_answer
    from lora_helpers.models import find_base_model, load_tokenizer

    path = find_base_model(verbose=False)
    tokenizer = load_tokenizer(path)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32),
                                      str(demo_adapter_path(task))).eval()
    rows = make_task_splits(task)["test"].select(range(16))  # one batch of generate
    scores = teacher_forced_scores(model, tokenizer, rows, precision=False)
    generated = evaluate_task(model, tokenizer, rows, precision=False)["predictions"]
    by_generate = [score_answer(task, g, a) for g, a in zip(generated, rows["answer"])]
    assert sum(by_generate) >= 10  # the adapter does the task: the agreement is not "both wrong"
    assert all(g for tf, g in zip(scores["correct"], by_generate) if tf)  # teacher forcing: never right alone
    if task == "ngay_thang":
        assert scores["correct"] == by_generate
    fast = evaluate_task_fast(model, tokenizer, rows, precision=False)  # generate only where teacher forcing says wrong
    assert fast["correct"] == by_generate and fast["accuracy"] == sum(by_generate) / 16
    assert len(fast["generated"]) == 16 - sum(scores["correct"])
