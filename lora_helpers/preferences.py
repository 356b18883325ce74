"""Preference pairs for DPO (chosen vs rejected answers), made by seeded code, and the DPO numbers.

* :func:`make_preference_splits` turns the facts of a course task (``ngay_thang``, see ``data.py``)
  into TRL's *conversational preference* format: ``prompt`` is a list of chat messages, ``chosen``
  and ``rejected`` are one-message assistant lists. ``chosen`` is the correct ISO date; ``rejected``
  is a plausible mistake (day and month swapped, DD-MM-YYYY order, wrong year, no leading zeros,
  a chatty sentence). No download: everything comes from a seeded ``random.Random``.
* :func:`completion_logps`, :func:`implicit_reward_margins` and :func:`preference_accuracy`
  compute what DPO optimises, from the batches TRL's own collator builds, so the lesson can
  check TRL's logged ``rewards/margins`` and ``rewards/accuracies`` by hand.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping

from .data import TASKS, get_task, make_task_splits
from .errors import CourseError

PREFERENCE_TASKS = tuple(name for name, task in TASKS.items() if task.preference)  # Task.preference
DPO_COLUMNS = ("prompt", "chosen", "rejected")

MISTAKES = {
    "dao_ngay_thang": "đảo ngày và tháng",
    "thu_tu_dd_mm_yyyy": "viết theo thứ tự DD-MM-YYYY",
    "sai_nam": "sai năm",
    "thieu_so_0": "thiếu số 0 ở đầu tháng/ngày",
    "lan_man": "trả lời lan man thành cả câu",
}
_CHATTY = (
    "Dạ, ngày đó là ngày {d} tháng {m} năm {y} ạ.",
    "Theo câu trên thì đó là ngày {d}/{m}/{y}.",
    "Ngày bạn cần là {iso}, chúc bạn một ngày tốt lành!",
)
_ISO = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")


def parse_iso_date(answer: str) -> tuple[int, int, int]:
    """(year, month, day) of a ``YYYY-MM-DD`` string; a Vietnamese :class:`CourseError` otherwise."""
    match = _ISO.match(answer.strip()) if isinstance(answer, str) else None
    if match is None:
        raise CourseError(
            f"`{answer!r}` không phải một ngày dạng YYYY-MM-DD.",
            "Câu trả lời đúng (chosen) của tác vụ ngay_thang phải có dạng như 2021-04-03.",
        )
    y, m, d = (int(g) for g in match.groups())
    if not (1 <= m <= 12 and 1 <= d <= 31):
        raise CourseError(f"`{answer}` có tháng hoặc ngày không hợp lệ.", "Tháng từ 01 đến 12, ngày từ 01 đến 31.")
    return y, m, d


def applicable_mistakes(answer: str) -> list[str]:
    """The mistake kinds that give an answer different from ``answer`` (e.g. no swap when day == month)."""
    _, m, d = parse_iso_date(answer)
    kinds = list(MISTAKES)
    if d == m:
        kinds.remove("dao_ngay_thang")
    if m >= 10 and d >= 10:
        kinds.remove("thieu_so_0")
    return kinds


def rejected_answer(answer: str, rng: random.Random, kind: str | None = None) -> tuple[str, str]:
    """A plausible wrong answer for the ISO date ``answer``: ``(text, kind)``.

    ``kind`` is one of :data:`MISTAKES` (drawn with ``rng`` among the applicable ones when ``None``).
    The text always differs from ``answer``.
    """
    y, m, d = parse_iso_date(answer)
    kinds = applicable_mistakes(answer)
    if kind is None:
        kind = rng.choice(kinds)
    elif kind not in MISTAKES:
        raise CourseError(f"Không có kiểu lỗi `{kind}`.", f"Dùng một trong: {', '.join(MISTAKES)}.")
    elif kind not in kinds:
        raise CourseError(
            f"Kiểu lỗi `{kind}` không tạo ra câu sai cho {answer} (kết quả sẽ trùng câu đúng).",
            f"Với ngày này chỉ dùng được: {', '.join(kinds)}.",
        )
    if kind == "dao_ngay_thang":
        text = f"{y:04d}-{d:02d}-{m:02d}"
    elif kind == "thu_tu_dd_mm_yyyy":
        text = f"{d:02d}-{m:02d}-{y:04d}"
    elif kind == "sai_nam":
        text = f"{y + rng.choice([-3, -2, -1, 1, 2, 3]):04d}-{m:02d}-{d:02d}"
    elif kind == "thieu_so_0":
        text = f"{y}-{m}-{d}"
    else:
        text = rng.choice(_CHATTY).format(d=d, m=m, y=y, iso=answer)
    return text, kind



ANSWER_KINDS = {
    "dung": "đúng",
    "dao_ngay_thang": "đảo ngày và tháng",
    "sai_ngay": "sai ngày (năm, tháng đúng)",
    "sai_thang": "sai tháng (năm, ngày đúng)",
    "sai_nam": "sai năm (ngày, tháng đúng)",
    "sai_nhieu_cho": "sai nhiều chỗ",
    "thieu_so_0": "thiếu số 0 ở đầu tháng/ngày",
    "thu_tu_dd_mm_yyyy": "viết theo thứ tự DD-MM-YYYY",
    "sai_dinh_dang": "không phải một ngày YYYY-MM-DD",
}
_LOOSE_ISO = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")
_DMY = re.compile(r"^(\d{1,2})[-/.](\d{1,2})[-/.](\d{4})$")


def classify_date_answer(prediction: str, reference: str) -> str:
    """Which kind of answer ``prediction`` is for the ISO date ``reference``: a key of :data:`ANSWER_KINDS`.

    Used to count a model's real mistakes (e.g. before and after DPO), not only whether it is right.
    """
    y, m, d = parse_iso_date(reference)
    text = prediction.strip() if isinstance(prediction, str) else ""
    if text == reference:
        return "dung"
    strict = _ISO.match(text)
    if strict:
        py, pm, pd = (int(g) for g in strict.groups())
        if (py, pm, pd) == (y, d, m):
            return "dao_ngay_thang"
        wrong = [name for name, a, b in (("nam", py, y), ("thang", pm, m), ("ngay", pd, d)) if a != b]
        return f"sai_{wrong[0]}" if len(wrong) == 1 else "sai_nhieu_cho"
    loose = _LOOSE_ISO.match(text)
    if loose and tuple(int(g) for g in loose.groups()) == (y, m, d):
        return "thieu_so_0"
    dmy = _DMY.match(text)
    if dmy and (int(dmy.group(3)), int(dmy.group(2)), int(dmy.group(1))) == (y, m, d):
        return "thu_tu_dd_mm_yyyy"
    return "sai_dinh_dang"


def _preference_row(row: dict, rng: random.Random) -> dict:
    prompt = row["messages"][:-1]
    answer = row["answer"]
    rejected, kind = rejected_answer(answer, rng)
    return {
        "prompt": prompt,
        "chosen": [{"role": "assistant", "content": answer}],
        "rejected": [{"role": "assistant", "content": rejected}],
        "mistake": kind,
    }


def make_preference_splits(task: str = "ngay_thang", n_train: int = 128, n_val: int = 32, n_test: int = 50,
                           seed: int = 0):
    """Seeded preference pairs ``DatasetDict(train=..., validation=...)`` for DPO.

    The prompts and correct answers are the ``train`` and ``validation`` rows of
    ``make_task_splits(task, n_train, n_val, n_test, seed)``, so no date occurs in both splits,
    and none occurs in ``make_task_splits(task, n_test=k, seed=seed)["test"]`` for any ``k <= n_test``
    (the lesson's generation test set). Columns: ``prompt``, ``chosen``, ``rejected`` (TRL's
    conversational preference format) and ``mistake`` (which kind of wrong answer ``rejected`` is).
    """
    from datasets import Dataset, DatasetDict

    get_task(task)  # unknown names: the error lists the valid ones
    if task not in PREFERENCE_TASKS:
        raise CourseError(
            f"Chưa có dữ liệu ưu tiên (chosen/rejected) cho tác vụ `{task}`.",
            f"Dùng một trong: {', '.join(PREFERENCE_TASKS)}.",
        )
    splits = make_task_splits(task, n_train=n_train, n_val=n_val, n_test=n_test, seed=seed)
    rng = random.Random(f"preferences-{task}-{seed}")
    return DatasetDict({
        name: Dataset.from_list([_preference_row(row, rng) for row in splits[name]])
        for name in ("train", "validation")
    })


def check_preference_dataset(dataset, name: str = "dataset") -> None:
    """Raise a Vietnamese :class:`CourseError` unless ``dataset`` is in TRL's conversational preference format."""
    columns = getattr(dataset, "column_names", None)
    missing = [c for c in DPO_COLUMNS if columns is None or c not in columns]
    if missing:
        raise CourseError(
            f"{name} thiếu cột {missing} (các cột hiện có: {columns}).",
            "DPOTrainer cần ba cột: `prompt` (danh sách tin nhắn), `chosen` và `rejected` "
            "(mỗi cột là danh sách một tin nhắn của `assistant`).",
        )
    if len(dataset) == 0:
        raise CourseError(f"{name} rỗng.", "Kiểm tra lại bước tạo hoặc lọc dữ liệu.")
    for i, row in enumerate(dataset):
        for column in DPO_COLUMNS:
            value = row[column]
            if not isinstance(value, list) or not value or not all(
                    isinstance(msg, dict) and {"role", "content"} <= set(msg) for msg in value):
                raise CourseError(
                    f"{name}[{i}]['{column}'] phải là danh sách các dict có khoá `role` và `content`.",
                    "Ví dụ: prompt=[{'role': 'user', 'content': '...'}], "
                    "chosen=[{'role': 'assistant', 'content': '...'}].",
                )
        if row["prompt"][-1]["role"] != "user":
            raise CourseError(f"{name}[{i}]: lượt cuối của `prompt` phải là của `user`.",
                              "Câu trả lời nằm ở chosen/rejected.")
        if any(msg["role"] != "assistant" for msg in row["chosen"] + row["rejected"]):
            raise CourseError(f"{name}[{i}]: `chosen` và `rejected` chỉ chứa tin nhắn của `assistant`.",
                              "Đặt câu hỏi vào `prompt`.")
        if row["chosen"] == row["rejected"]:
            raise CourseError(f"{name}[{i}]: câu được chọn và câu bị loại giống hệt nhau: DPO không học được gì.",
                              "Câu bị loại (rejected) phải là một câu trả lời kém hơn, khác câu được chọn.")


def completion_logps(model, batch) -> tuple:
    """Summed log-probabilities of the chosen and rejected completions in one preference batch, or in every batch
    of a DataLoader (``batch`` not a mapping: the batches are iterated in eval mode and the results concatenated).

    ``batch`` is what TRL's ``DataCollatorForPreference`` returns (``input_ids``, ``attention_mask``,
    ``completion_mask``; the first half of the rows are the chosen sequences, the second half the
    rejected ones). Computed from the logits with a plain log-softmax, independently of TRL's fused LM head.
    Only the positions that predict a completion token go through the LM head (``logits_to_keep``: they all lie
    at or after the earliest completion start of the batch), which is most of the cost with a 49,152-word
    vocabulary; the numbers are those of the full logits. Returns two float32 CPU tensors ``(chosen, rejected)``.
    """
    import torch

    if not isinstance(batch, Mapping):
        return _loader_logps(model, batch)
    device = next(model.parameters()).device
    input_ids = batch["input_ids"].to(device)
    completion = batch["completion_mask"].to(device)
    starts = completion.float().argmax(dim=1)[completion.any(dim=1)]
    first = max(int(starts.min()) - 1, 0) if len(starts) else 0   # position t predicts token t + 1
    with torch.no_grad():
        logits = model(input_ids=input_ids, attention_mask=batch["attention_mask"].to(device),
                       logits_to_keep=input_ids.shape[1] - first).logits.float()
    token_logps = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, input_ids[:, first + 1:, None]).squeeze(-1)
    sums = (token_logps * completion[:, first + 1:]).sum(dim=1).cpu()
    return sums.chunk(2, dim=0)


def _loader_logps(model, dataloader) -> tuple:
    """:func:`completion_logps` over every batch of ``dataloader``: ``(chosen, rejected)`` tensors."""
    import torch

    was_training = model.training
    model.eval()
    chosen, rejected = [], []
    for batch in dataloader:
        c, r = completion_logps(model, batch)
        chosen.append(c)
        rejected.append(r)
    if was_training:
        model.train()
    return torch.cat(chosen), torch.cat(rejected)


def implicit_reward_margins(policy: tuple, reference: tuple, beta: float):
    """DPO's implicit reward margin per pair: β·[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))].

    ``policy`` and ``reference`` are ``(chosen_logps, rejected_logps)`` pairs of tensors.
    """
    if beta <= 0:
        raise CourseError(f"beta phải dương, bạn đưa {beta!r}.", "DPO thường dùng beta trong khoảng 0.05–0.5.")
    (pc, pr), (rc, rr) = policy, reference
    if not (len(pc) == len(pr) == len(rc) == len(rr)):
        raise CourseError("Số cặp của mô hình và của mô hình tham chiếu không khớp.",
                          "Tính log-xác suất của cả hai trên cùng một tập dữ liệu, cùng thứ tự.")
    return beta * ((pc - rc) - (pr - rr))


def preference_accuracy(margins) -> float:
    """Fraction of pairs with a positive margin (what TRL logs as ``rewards/accuracies``)."""
    if len(margins) == 0:
        raise CourseError("Không có cặp nào để tính độ chính xác ưu tiên.", "Kiểm tra lại tập kiểm định.")
    return (margins > 0).float().mean().item()


def dpo_log_curves(trainer_or_log, keys=("loss", "rewards/margins", "rewards/accuracies")) -> dict:
    """``{key: [(step, value), ...]}`` from a DPO trainer's training log (eval entries left out)."""
    log = getattr(getattr(trainer_or_log, "state", None), "log_history", trainer_or_log)
    return {key: [(e["step"], e[key]) for e in log if key in e and "step" in e] for key in keys}
