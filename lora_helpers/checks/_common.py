"""What every exercise check shares: the result type, its three constructors, and small helpers.

:class:`CheckResult` is what every ``check_*`` returns; :func:`_ok`, :func:`_wrong` and :func:`_todo`
build its three kinds of message (Vietnamese, shown to the learner), :func:`_unreadable` the message of an answer
that cannot be read. The other helpers (reading LoRA layers, comparing tensors and numbers) serve several lessons.
"""

from __future__ import annotations

from dataclasses import dataclass

OK, WRONG, TODO = "dung", "sai", "chua_lam"


@dataclass(frozen=True)
class CheckResult:
    """Outcome of a check: ``status`` is ``"dung"``, ``"sai"`` or ``"chua_lam"``; ``message`` is Vietnamese.

    ``bool(result)`` is True only for a right answer. In Jupyter the result prints its message.
    """

    status: str
    message: str

    def __bool__(self) -> bool:
        return self.status == OK

    @property
    def passed(self) -> bool:
        return self.status == OK

    def __str__(self) -> str:
        return self.message

    __repr__ = __str__

    def _ipython_display_(self) -> None:  # IPython shows the message as plain printed text
        print(self.message)


MEASURED = "   Số đo của lần chạy này:"  # tests/sanitize.cfg masks the rest of this line for nbval


class Verdict(Exception):
    """Raised while a check builds its table, to report ``result`` at once (an answer no row can even read)."""

    def __init__(self, result: CheckResult):
        super().__init__(result.message)
        self.result = result


def _ok(text: str, measured: str | None = None) -> CheckResult:
    """A right answer. ``text`` must read the same on every run (nbval compares it); numbers that vary from run
    to run (losses, accuracies) go in ``measured``, printed on a line of their own that nbval does not compare."""
    return CheckResult(OK, f"✅ Đúng rồi! {text}" + (f"\n{MEASURED} {measured}" if measured else ""))


def _wrong(problem: str, hint: str) -> CheckResult:
    return CheckResult(WRONG, f"❌ Chưa đúng: {problem}\n💡 Gợi ý: {hint}")


def _unreadable(exc: Exception) -> CheckResult:
    """A failure while reading an odd answer, reported to the learner (never a traceback inside a check)."""
    return _wrong(f"không đọc được đáp án của bạn ({type(exc).__name__}: {str(exc)[:200]}).",
                  "Xem lại kiểu dữ liệu mà đề bài yêu cầu, rồi chạy lại ô của bạn.")


def _todo(what: str = "đáp án vẫn là `None`") -> CheckResult:
    return CheckResult(
        TODO,
        f"⏳ Câu này chưa làm: {what}. Viết code vào chỗ `# VIẾT CODE CỦA BẠN Ở ĐÂY` "
        "ở ô phía trên, chạy ô đó rồi chạy lại ô kiểm tra này.",
    )


def _scalar(value):
    """``value`` unwrapped from a 0-d numpy/torch scalar; None for a bool (True is no count)."""
    if isinstance(value, bool):
        return None
    return value.item() if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0 else value


def _as_int(value):
    """``value`` as an int when it is a whole number (int, numpy/torch integer, 1234.0), else None."""
    value = _scalar(value)
    return value if isinstance(value, int) else int(value) if isinstance(value, float) and value.is_integer() else None


def _is_peft_model(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def _lora_layers(model, adapter_name: str | None = None):
    """(name, module) of the LoRA layers of ``model`` (those holding ``adapter_name`` if given)."""
    from ..layers import lora_layers

    return lora_layers(model, adapter_name)


def _active(model) -> list[str]:
    active = getattr(model, "active_adapters", None)
    if callable(active):
        active = active()
    if isinstance(active, str):
        active = [active]
    return list(active or [])


def _target_set(targets):
    if targets is None:
        return None
    if isinstance(targets, str):
        return targets
    return set(targets)


def _close(a, b, rtol: float = 1e-4) -> bool:
    import torch

    if not (torch.is_tensor(a) and torch.is_tensor(b)) or a.shape != b.shape:
        return False
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    scale = max(b.abs().max().item(), 1e-12)
    return (a - b).abs().max().item() <= rtol * scale


def _parity_guard(result, variable: str):
    """The row every parity answer shares: the ``ParityResult`` itself, not its verdict string or a bool."""
    from ..parity import ParityResult
    from .kit import Mistake

    return Mistake(lambda r: not isinstance(r, ParityResult),
                   f"`{variable}` là {type(result).__name__}, không phải kết quả của `check_parity`.",
                   "Lưu chính kết quả của `check_parity(...)` (một ParityResult), không phải chuỗi `.verdict()` "
                   "hay một giá trị True/False.", example=lambda r: r.verdict())


def _fp32_parity_rows(result, min_prompts: int) -> list:
    """The rows of a parity result loosened above fp32's default tolerance, or run on fewer than ``min_prompts``."""
    import dataclasses

    from ..parity import default_tolerance
    from .kit import Mistake

    limit = default_tolerance("float32")
    return [Mistake(lambda r: r.tolerance > limit, f"ngưỡng {getattr(result, 'tolerance', 0):g} lớn hơn ngưỡng fp32 mặc "
                    f"định {limit:g}: nới ngưỡng thì sai nào cũng qua.", "Bỏ tham số `tolerance=` để dùng ngưỡng mặc định.",
                    example=lambda r: dataclasses.replace(r, tolerance=0.25)),
            Mistake(lambda r: r.n_prompts < min_prompts,
                    f"chỉ so trên {getattr(result, 'n_prompts', 0)} câu; cần ít nhất {min_prompts}.", "Dùng `dataset=TEST`.",
                    example=lambda r: dataclasses.replace(r, n_prompts=min_prompts - 1))]


def _plain(text) -> str:
    """``text`` lower-cased, without Vietnamese diacritics, ``_``/``-`` read as spaces: "Lựa_chọn" -> "lua chon"."""
    import unicodedata

    text = str(text).replace("đ", "d").replace("Đ", "D")
    text = "".join(c for c in unicodedata.normalize("NFD", text) if unicodedata.category(c) != "Mn")
    return " ".join(text.lower().replace("_", " ").replace("-", " ").split())


def _field(mapping, name: str, default=None):
    """``mapping[name]``, also found when the learner's key has other diacritics, case or ``_``/space."""
    if not isinstance(mapping, dict):
        return default
    if name in mapping:
        return mapping[name]
    wanted = _plain(name)
    for key, value in mapping.items():
        if _plain(key) == wanted:
            return value
    return default


def _decision_rows(answer, fields: str = "`lựa_chọn` và `số_liệu`") -> list:
    """The rows of a "decide and defend" answer ``{"lựa_chọn": ..., "số_liệu": {...}}`` that cannot be read."""
    from .kit import Mistake

    choice, numbers = _field(answer, "lựa_chọn"), _field(answer, "số_liệu")
    return [
        Mistake(lambda a: not isinstance(a, dict), f"đáp án phải là một dict có hai khoá {fields}, bạn đưa "
                f"{type(answer).__name__}.", "Ví dụ: `{\"lựa_chọn\": ..., \"số_liệu\": {...}}`.",
                example=lambda a: _field(a, "lựa_chọn")),
        Mistake(lambda a: choice is None or numbers is None, f"thiếu khoá: đáp án cần {fields} (đang có "
                f"{list(answer) if isinstance(answer, dict) else []}).",
                "Viết đủ hai khoá: quyết định của bạn, và các con số bạn dựa vào.",
                example=lambda a: {"lựa_chọn": _field(a, "lựa_chọn")}),
        Mistake(lambda a: not isinstance(numbers, dict), f"`số_liệu` phải là một dict, bạn đưa "
                f"{type(numbers).__name__}.", "Mỗi con số một khoá, như đề bài liệt kê.",
                example=lambda a: {"lựa_chọn": _field(a, "lựa_chọn"), "số_liệu": list(_field(a, "số_liệu").values())}),
    ]


def _decision(answer, fields: str = "`lựa_chọn` và `số_liệu`"):
    """(choice, numbers) of a "decide and defend" answer; else raises :class:`Verdict` ("not done yet" for None, the
    first of :func:`_decision_rows` when unreadable), which the check reports."""
    from .kit import first_wrong

    if (result := _todo() if answer is None else first_wrong(_decision_rows(answer, fields), answer)) is not None:
        raise Verdict(result)
    return _field(answer, "lựa_chọn"), _field(answer, "số_liệu")


def _decided(answer, choice=None, **numbers) -> dict:
    """A decide-and-defend answer with its choice or some of its numbers replaced (the examples of the tables)."""
    return {"lựa_chọn": choice or _field(answer, "lựa_chọn"), "số_liệu": {**_field(answer, "số_liệu"), **numbers}}


def _size_hint(got, value, other_value, near, swapped: str, recount: str) -> str:
    """The hint for a wrong size in MB: swapped with the other size, given in MiB, or miscounted."""
    if near(got, other_value):
        return swapped
    if near(got, value * 1e6 / 2**20):
        return "Đó là MiB; đề bài dùng 1 MB = 10⁶ byte."
    return recount


def _number(value):
    """``value`` as a float (int, float, numpy/torch scalar), else None."""
    value = _scalar(value)
    return float(value) if isinstance(value, (int, float)) else None


def _same_number(cited, truth, rel: float = 1e-3, abs_: float = 1e-9) -> bool:
    value = _number(cited)
    return value is not None and abs(value - truth) <= max(abs_, rel * abs(truth))


def _probe_logit_diff(model_a, model_b) -> float:
    """Max logit difference of two models on 16 fixed token ids, measured in eval mode (train modes restored)."""
    import torch

    from ..parity import max_logit_diff

    vocab = getattr(getattr(model_a, "config", None), "vocab_size", None) or 64
    ids = (torch.arange(1, 17) * 37 % vocab).unsqueeze(0)
    modes = (model_a.training, model_b.training)
    model_a.eval()
    model_b.eval()
    try:
        return max_logit_diff(model_a, model_b, ids)
    finally:
        model_a.train(modes[0])
        model_b.train(modes[1])
