"""Generation and the task metrics (each task scores its answers: see ``lora_helpers.data.Task``)."""

from __future__ import annotations

import contextlib

from .data import TASKS, get_task, prompts_of
from .env import precision_profile


def in_notebook() -> bool:
    """True inside a Jupyter kernel (where an HTML progress bar can be shown)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def _progress_bar(total: int, prefix: str):
    """The Trainer's notebook progress bar (HTML, updated in place), or None outside a notebook."""
    if not in_notebook():
        return None
    from transformers.utils.notebook import NotebookProgressBar

    bar = NotebookProgressBar(total, prefix=prefix)
    bar.update(0)
    return bar


def generate(model, tokenizer, prompts, max_new_tokens: int = 48, batch_size: int = 16,
             progress: bool | None = None) -> list[str]:
    """Greedy answers to a list of chat prompts (each a list of messages), batched, left-padded.

    ``progress``: show a progress bar (answers done / all) in a notebook; default: only when there is more
    than one batch, i.e. when the call takes long enough to be worth watching.
    """
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
    if progress is None:
        progress = len(texts) > batch_size
    bar = _progress_bar(len(texts), "Sinh câu trả lời") if progress else None
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
            if bar is not None:
                bar.update(len(answers), force_update=True)
    if was_training:
        model.train()
    return answers


def score_answer(task: str, prediction: str, reference: str) -> bool:
    """True when ``prediction`` is right for ``task`` (the task's own rule: ``get_task(task).score``)."""
    return get_task(task).score(prediction, reference)


def task_metrics(task: str, predictions, references) -> dict:
    """Accuracy over a list of predictions, plus the task's extra metrics (orders: the valid-JSON rate)."""
    spec = get_task(task)
    predictions = list(predictions)
    n = len(references)
    correct = sum(spec.score(p, r) for p, r in zip(predictions, references))
    metrics = {"accuracy": correct / n if n else 0.0, "n": n}
    metrics.update(spec.extra_metrics(predictions))
    return metrics


# Generation length per task (room for the longest right answer, plus some), read from the tasks.
MAX_NEW_TOKENS = {name: spec.max_new_tokens for name, spec in TASKS.items()}


def evaluate_task(model, tokenizer, dataset, task: str | None = None, max_new_tokens: int | None = None,
                  batch_size: int = 16, precision=None, progress: bool | None = None) -> dict:
    """Generate greedily for every row of ``dataset`` and score it; returns metrics and predictions.

    Runs under the precision profile of the model's device (``env.precision_profile``: bf16 autocast only where
    it is native and faster, else as loaded); pass ``precision=False`` to evaluate exactly as loaded (parity checks).
    In a notebook a progress bar shows the answers done when there is more than one batch (``progress``).
    """
    task = task or dataset[0]["task"]
    max_new_tokens = max_new_tokens or get_task(task).max_new_tokens
    if precision is None:
        precision = precision_profile(next(model.parameters()).device.type)
    with precision.autocast() if precision else contextlib.nullcontext():
        predictions = generate(model, tokenizer, prompts_of(dataset), max_new_tokens, batch_size, progress=progress)
    metrics = task_metrics(task, predictions, dataset["answer"])
    metrics["predictions"] = predictions
    return metrics
