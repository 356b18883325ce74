"""Generation and the task metrics: exact match for dates, exact JSON match for orders."""

from __future__ import annotations

import json

from .data import get_task, prompts_of


def generate(model, tokenizer, prompts, max_new_tokens: int = 48, batch_size: int = 16) -> list[str]:
    """Greedy answers to a list of chat prompts (each a list of messages), batched, left-padded."""
    import torch

    if isinstance(prompts, str):
        prompts = [[{"role": "user", "content": prompts}]]
    prompts = [[{"role": "user", "content": p}] if isinstance(p, str) else p for p in prompts]
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    device = next(model.parameters()).device
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    answers = []
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start : start + batch_size], return_tensors="pt", padding=True,
                              add_special_tokens=False).to(device)
            out = model.generate(
                **batch, max_new_tokens=max_new_tokens, do_sample=False,
                pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
            )
            new_tokens = out[:, batch["input_ids"].shape[1]:]
            answers += [t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
    if was_training:
        model.train()
    return answers


def _parse_json(text: str):
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return None
    return value if isinstance(value, dict) else None


def score_answer(task: str, prediction: str, reference: str) -> bool:
    """True when ``prediction`` is right for ``task`` (JSON compared as objects, dates as strings)."""
    get_task(task)
    if task == "don_hang":
        parsed = _parse_json(prediction)
        return parsed is not None and parsed == json.loads(reference)
    return prediction.strip() == reference.strip()


def task_metrics(task: str, predictions, references) -> dict:
    """Accuracy (and, for JSON, the valid-JSON rate) over a list of predictions."""
    n = len(references)
    correct = sum(score_answer(task, p, r) for p, r in zip(predictions, references))
    metrics = {"accuracy": correct / n if n else 0.0, "n": n}
    if task == "don_hang":
        metrics["valid_json"] = sum(_parse_json(p) is not None for p in predictions) / n if n else 0.0
    return metrics


MAX_NEW_TOKENS = {"don_hang": 80, "ngay_thang": 16}  # room for the longest right answer, plus some


def evaluate_task(model, tokenizer, dataset, task: str | None = None, max_new_tokens: int | None = None,
                  batch_size: int = 16) -> dict:
    """Generate greedily for every row of ``dataset`` and score it; returns metrics and predictions."""
    task = task or dataset[0]["task"]
    max_new_tokens = max_new_tokens or MAX_NEW_TOKENS.get(task, 48)
    predictions = generate(model, tokenizer, prompts_of(dataset), max_new_tokens, batch_size)
    metrics = task_metrics(task, predictions, dataset["answer"])
    metrics["predictions"] = predictions
    return metrics
