"""Generation and the task metrics (each task scores its answers: see ``lora_helpers.data.Task``)."""

from __future__ import annotations

import contextlib

from .data import TASKS, get_task, prompts_of
from .env import precision_profile
from .models import encode_chat


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
    answers = []
    if progress is None:
        progress = len(prompts) > batch_size
    bar = _progress_bar(len(prompts), "Sinh câu trả lời") if progress else None
    was_training = model.training
    model.eval()
    with torch.no_grad():
        for start in range(0, len(prompts), batch_size):
            batch = encode_chat(tokenizer, prompts[start : start + batch_size], device)
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
    """Accuracy over a list of predictions, the verdict per row (``correct``, for paired comparisons) and the
    task's extra metrics (orders: the valid-JSON rate)."""
    spec = get_task(task)
    predictions = list(predictions)
    n = len(references)
    correct = [bool(spec.score(p, r)) for p, r in zip(predictions, references)]
    metrics = {"accuracy": sum(correct) / n if n else 0.0, "n": n, "correct": correct}
    metrics.update(spec.extra_metrics(predictions))
    return metrics


# Generation length per task (room for the longest right answer, plus some), read from the tasks.
MAX_NEW_TOKENS = {name: spec.max_new_tokens for name, spec in TASKS.items()}


def evaluate_task(model, tokenizer, dataset, task: str | None = None, max_new_tokens: int | None = None,
                  batch_size: int = 16, precision=None, progress: bool | None = None) -> dict:
    """Generate greedily for every row of ``dataset`` and score it; returns :func:`task_metrics` (``accuracy``,
    ``n``, ``correct`` per row, the task's extra metrics) and ``predictions``.

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


def teacher_forced_scores(model, tokenizer, dataset, batch_size: int = 16, precision=None) -> dict:
    """Score every row of ``dataset`` with one teacher-forced forward pass per batch, instead of generating.

    Greedy decoding writes a row's gold answer, and stops right after it, exactly when every gold token (the
    end-of-turn token included) is the arg-max of the logits given the prompt and the gold tokens before it. So
    one forward pass over prompt + gold answer tells whether ``generate`` would return the gold answer, without
    generating. The gold tokens are those the model was trained on: the chat template rendered with the answer
    as the assistant turn, cut after its end-of-turn token.

    This is the greedy verdict for the answer in its canonical form. ``generate`` can also be scored right on a
    different string (extra spaces, another tokenization of the same text, a JSON object with other key order or
    spacing: ``don_hang``'s metric accepts those): there teacher forcing is a lower bound on the task accuracy.
    ``tests/test_teacher_forcing.py`` measures where both run.

    Returns ``{"accuracy", "n", "correct": [bool per row], "gold_logprob": [sum of the gold tokens'
    log-probabilities per row, in nats], "gold_tokens": [their count per row]}``; the log-likelihood of the gold
    answer is the low-noise metric to compare training runs with. Runs under the device's precision profile like
    :func:`evaluate_task` (``precision=False``: exactly as loaded).
    """
    import torch

    from .errors import CourseError

    if precision is None:
        precision = precision_profile(next(model.parameters()).device.type)
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    rows = []
    for prompt, answer in zip(prompts_of(dataset), dataset["answer"]):
        prompt_text = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        full_text = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": answer}], tokenize=False)
        prompt_ids = tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
        full_ids = tokenizer(full_text, add_special_tokens=False)["input_ids"]
        gold = full_ids[len(prompt_ids):]
        if full_ids[:len(prompt_ids)] != prompt_ids or eos not in gold:
            raise CourseError("Mẫu hội thoại (chat template) của tokenizer không cho câu trả lời nối tiếp đúng sau "
                              "câu hỏi, hoặc không kết thúc lượt trả lời bằng token kết thúc (eos).",
                              "Dùng tokenizer của chính mô hình (AutoTokenizer.from_pretrained(đường_dẫn_mô_hình)), "
                              "hoặc chấm bằng evaluate_task(...), hàm sinh câu trả lời thật.")
        rows.append((prompt_ids, gold[:gold.index(eos) + 1]))

    device = next(model.parameters()).device
    correct, logprobs = [], []
    was_training = model.training
    model.eval()
    with torch.no_grad(), precision.autocast() if precision else contextlib.nullcontext():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start:start + batch_size]
            length = max(len(p) + len(g) for p, g in chunk)
            ids = torch.full((len(chunk), length), pad, dtype=torch.long)
            mask = torch.zeros((len(chunk), length), dtype=torch.long)
            for i, (p, g) in enumerate(chunk):  # right padding: every row's positions start at 0
                ids[i, :len(p) + len(g)] = torch.tensor(p + g)
                mask[i, :len(p) + len(g)] = 1
            # only the positions that predict a gold token go through the LM head (49,152 words: most of the
            # cost); they all lie at or after the shortest prompt's last token
            first = min(len(p) for p, _ in chunk) - 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device),
                           logits_to_keep=length - first).logits.float().cpu()
            for i, (p, g) in enumerate(chunk):
                start_at = len(p) - 1 - first  # position t predicts token t + 1
                predicting = logits[i, start_at:start_at + len(g)]
                target = torch.tensor(g)
                correct.append(bool(torch.equal(predicting.argmax(-1), target)))
                logprobs.append(predicting.log_softmax(-1).gather(1, target[:, None]).sum().item())
    if was_training:
        model.train()
    n = len(rows)
    return {"accuracy": sum(correct) / n if n else 0.0, "n": n, "correct": correct, "gold_logprob": logprobs,
            "gold_tokens": [len(g) for _, g in rows]}


def evaluate_task_fast(model, tokenizer, dataset, task: str | None = None, max_new_tokens: int | None = None,
                       batch_size: int = 16, precision=None) -> dict:
    """What :func:`evaluate_task` returns, computed with one teacher-forced pass, generating only where needed.

    :func:`teacher_forced_scores` says on which rows greedy decoding would write the gold answer; those rows are
    right, and their prediction is the gold answer. Only the other rows are generated (greedy) and scored with the
    task's metric, so a row the task accepts in another form (``don_hang``: JSON with other key order or spacing)
    is still counted right. On a well-trained model few rows are generated, which is where the time goes.

    Returns ``evaluate_task``'s keys (``accuracy``, ``n``, ``correct`` per row, the task's extra metrics,
    ``predictions``) plus ``generated`` (the indices of the rows that were generated) and
    ``teacher_forced_correct`` (the teacher-forced verdict per row). ``tests/test_teacher_forcing.py`` checks that
    it agrees with :func:`evaluate_task`.
    """
    task = task or dataset[0]["task"]
    max_new_tokens = max_new_tokens or get_task(task).max_new_tokens
    if precision is None:
        precision = precision_profile(next(model.parameters()).device.type)
    forced = teacher_forced_scores(model, tokenizer, dataset, batch_size=batch_size, precision=precision)
    predictions = list(dataset["answer"])
    generated = [i for i, ok in enumerate(forced["correct"]) if not ok]
    if generated:
        prompts = prompts_of(dataset)
        with precision.autocast() if precision else contextlib.nullcontext():
            answers = generate(model, tokenizer, [prompts[i] for i in generated], max_new_tokens, batch_size,
                               progress=False)
        for i, answer in zip(generated, answers):
            predictions[i] = answer
    metrics = task_metrics(task, predictions, dataset["answer"])
    metrics["predictions"] = predictions
    metrics["generated"] = generated
    metrics["teacher_forced_correct"] = forced["correct"]
    return metrics
