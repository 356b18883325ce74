"""Checks of ``serving_many_adapters`` (serving many adapters from one base model).

* :func:`check_manual_routes` (🐢): adapter names chosen by hand for requests typed by users;
* :func:`check_mixed_batch` (🐕): one mixed ``generate(..., adapter_names=...)`` batch, proven identical to
  the per-adapter answers, which the check generates again itself;
* :func:`check_safe_hotswap` (🦁): a learner's hotswap function that refuses an incompatible adapter with a
  Vietnamese ``CourseError`` before changing anything, tried on tiny models built by the check.
"""

from __future__ import annotations

import functools
import tempfile
import warnings
from pathlib import Path

from ..errors import CourseError
from ._common import CheckResult, _todo
from .kit import Mistake, Table, check, part_replaced

BASE = "__base__"
ROUTE_NAMES = ("don_hang", "ngay_thang", BASE)
_SWAP = {"don_hang": "ngay_thang", "ngay_thang": "don_hang"}

# What users type (no task instruction): test-split sentences of both tasks and chat questions.
_CHAT = ["Cho mình hỏi cách luộc trứng lòng đào?", "Bạn có thể kể một câu chuyện cười ngắn không?",
         "Tiếng Anh của 'cảm ơn' là gì?"]


def _routing_rows():
    """``[(text, expected adapter)]``: two requests of each task (test split, rows 10-11) and the chat questions,
    interleaved."""
    from ..data import make_task_splits

    rows = []
    for k in (10, 11):
        for task in ("ngay_thang", "don_hang"):
            row = make_task_splits(task)["test"][k]
            rows.append((row["messages"][0]["content"].split(": ", 1)[1], task))
    chat = [(q, BASE) for q in _CHAT]
    return [rows[0], chat[0], rows[1], rows[2], chat[1], rows[3], chat[2]]


def manual_routing_requests() -> list[str]:
    """The requests of the hand-routing exercise, as a user would type them (the answers stay in the check)."""
    return [text for text, _ in _routing_rows()]


@check
def check_manual_routes(routes) -> Table:
    """``routes``: one adapter name per request of :func:`manual_routing_requests`, in order."""
    rows = _routing_rows()
    expected = [task for _, task in rows]
    is_list = not isinstance(routes, str) and isinstance(routes, (list, tuple))
    stray = next((i for i, name in enumerate(routes) if name not in ROUTE_NAMES), None) if is_list else None
    name = routes[stray] if stray is not None else None
    wrong = [i for i, (got, want) in enumerate(zip(routes, expected)) if got != want] if is_list else []
    stray_problem = f"tên thứ {stray} là {name!r}, không phải tên nào máy chủ đã nạp."
    first = wrong[0] if wrong else None
    misrouted = (f"{len(wrong)} yêu cầu sai chỗ, ví dụ yêu cầu {first}: «{rows[first][0][:70]}» không nên đi tới "
                 f"`{routes[first]}`.") if wrong else ""
    return Table(
        guard=[
            Mistake(lambda r: not is_list, f"`ten_bo_dieu_hop` phải là một danh sách tên, bạn đưa {type(routes).__name__}.",
                    f"Ví dụ: [\"ngay_thang\", \"__base__\", ...], một tên cho mỗi yêu cầu ({len(rows)} yêu cầu).",
                    example=lambda r: r[0]),
            Mistake(lambda r: len(r) != len(rows), f"có {len(rows)} yêu cầu nhưng danh sách của bạn có "
                    f"{len(routes) if is_list else '?'} tên.", "Mỗi yêu cầu đúng một tên, cùng thứ tự với danh sách đã in.",
                    example=lambda r: r[:-1]),
            Mistake(lambda r: isinstance(name, str) and "base" in name.lower(), stray_problem,
                    "Mô hình cơ sở trong lô nhiều bộ điều hợp của peft tên là \"__base__\" (hai dấu gạch dưới mỗi bên).",
                    example=lambda r: [("base" if t == BASE else t) for t in r]),
            Mistake(lambda r: stray is not None, stray_problem, f"Dùng đúng một trong: {', '.join(ROUTE_NAMES)}.",
                    example=lambda r: [(None if t == BASE else t) for t in r]),
        ],
        slips=[
            Mistake(lambda r: len(set(r)) == 1, f"bạn gửi mọi yêu cầu tới `{routes[0] if is_list and routes else ''}`.",
                    "Đọc từng yêu cầu: đơn hàng (có số phần, món, nơi giao), ngày tháng (có năm), hay câu trò chuyện.",
                    example=lambda r: [r[0]] * len(r)),
            Mistake(lambda r: bool(wrong) and all(r[i] == _SWAP.get(expected[i]) for i in wrong),
                    f"{len(wrong)} yêu cầu bị gửi nhầm sang tác vụ kia (ví dụ yêu cầu {first}).",
                    "`don_hang` trích đơn hàng (món, số phần, nơi giao); `ngay_thang` chuẩn hoá một ngày.",
                    example=lambda r: [_SWAP.get(t, t) for t in r]),
            Mistake(lambda r: bool(wrong), misrouted,
                    "Câu không thuộc tác vụ nào đã huấn luyện thì để mô hình cơ sở trả lời (\"__base__\").",
                    example=lambda r: [("don_hang" if t == BASE else t) for t in r]),
        ],
        ok=f"Cả {len(rows)} yêu cầu được gửi đúng chỗ: đây chính là danh sách `adapter_names` cho một lô nhiều bộ điều hợp.",
    )


# --------------------------------------------------------------------------- 🐕 mixed batch
def mixed_batch_requests():
    """(prompts, adapter names) of the mixed-batch exercise: two date requests, one order, one chat question."""
    from ..data import make_task_splits, prompts_of

    dates = prompts_of(make_task_splits("ngay_thang")["test"].select([20, 21]))
    order = prompts_of(make_task_splits("don_hang")["test"].select([20]))
    chat = [[{"role": "user", "content": "Hãy gợi ý một tên cho quán cà phê nhỏ."}]]
    return [dates[0], chat[0], order[0], dates[1]], ["ngay_thang", BASE, "don_hang", "ngay_thang"]


def _references() -> set[str]:
    from ..data import make_task_splits

    return {str(make_task_splits(t)["test"][k]["answer"]).strip() for t in ("ngay_thang", "don_hang") for k in (20, 21)}


def check_mixed_batch(mixed_answers, separate_answers, identical, model, tokenizer, max_new_tokens: int,
                      requests=None) -> CheckResult:
    """The learner's mixed-batch answers, per-adapter answers and per-request verdict are right.

    The check serves :func:`mixed_batch_requests` again itself, one ``set_adapter`` group at a time
    (``lora_helpers.serving.serve_by_switching``, greedy, ``max_new_tokens``), and requires both of the learner's
    answer lists to equal those answers (stripped), and ``identical`` to be the list of per-request booleans
    comparing them. ``requests``: ``(prompts, names)`` (default :func:`mixed_batch_requests`; the tests pass
    tiny-tokenizer prompts). The table is :func:`_mixed_batch`'s, whose answer is the three answers together.
    """
    if any(value is None for value in (mixed_answers, separate_answers, identical)):
        return _todo()
    return _mixed_batch((mixed_answers, separate_answers, identical), model, tokenizer, max_new_tokens, requests)


@check
def _mixed_batch(answer, model, tokenizer, max_new_tokens: int, requests=None) -> Table:
    """The table of :func:`check_mixed_batch`; ``answer`` = ``(mixed answers, separate answers, identical)``."""
    from ..serving import loaded_adapters, serve_by_switching

    prompts, names = requests if requests is not None else mixed_batch_requests()
    n, labels = len(prompts), ("tra_loi_tron", "tra_loi_rieng")

    @functools.cache
    def served(adapter=None) -> list[str]:  # each request through its own adapter, or every one through ``adapter``
        return serve_by_switching(model, tokenizer, prompts, names if adapter is None else [adapter] * n,
                                  max_new_tokens).answers

    guard = []
    for k, label in enumerate(labels):
        value = answer[k]
        guard += [
            Mistake(lambda a, k=k: isinstance(a[k], str) or not isinstance(a[k], (list, tuple)),
                    f"`{label}` phải là một danh sách chuỗi, bạn đưa {type(value).__name__}.",
                    "Giải mã đầu ra bằng tokenizer.batch_decode(..., skip_special_tokens=True).",
                    example=part_replaced(k, lambda a: "w1 w2")),
            Mistake(lambda a, k=k: len(a[k]) != n, f"`{label}` có {len(value) if hasattr(value, '__len__') else '?'} "
                    f"phần tử; cần đúng {n} (một câu trả lời cho mỗi yêu cầu).", "Giữ nguyên thứ tự của CAU_HOI.",
                    example=part_replaced(k, lambda a, k=k: a[k][:-1])),
            Mistake(lambda a, k=k: not all(isinstance(x, str) for x in a[k]), f"`{label}` có phần tử không phải chuỗi.",
                    "Mỗi câu trả lời là một chuỗi.", example=part_replaced(k, lambda a: list(range(n)))),
        ]
    guard += [
        Mistake(lambda a: a[0] is a[1], "`tra_loi_tron` và `tra_loi_rieng` là cùng một danh sách: bạn chưa so hai cách "
                "với nhau.", "Sinh `tra_loi_tron` bằng một lần model.generate(..., adapter_names=TEN), và `tra_loi_rieng` "
                "bằng set_adapter cho từng nhóm; rồi mới so.", example=lambda a: (a[0], a[0], a[2])),
        Mistake(lambda a: isinstance(a[2], bool), "`giong_het` là một giá trị True/False duy nhất; đề bài cần một danh "
                "sách, mỗi yêu cầu một giá trị.", "Ví dụ: [a == b for a, b in zip(tra_loi_tron, tra_loi_rieng)].",
                example=part_replaced(2, lambda a: True)),
    ]
    readable = not any(row.when(answer) for row in guard)
    references = _references()
    slips = []
    for k, label in enumerate(labels):
        answers = answer[k] if readable else []
        bad = [i for i, (a, t) in enumerate(zip(answers, served() if readable else [])) if a.strip() != t.strip()]

        def all_from(adapter, answers=answers, bad=bad) -> bool:
            return bool(bad) and all(answers[j].strip() == served(adapter)[j].strip() for j in bad)

        mixed = k == 0
        slips += [
            Mistake(lambda a, answers=answers, bad=bad: any(answers[j].strip() in references for j in bad),
                    f"`{label}` chứa đáp án mẫu của tập dữ liệu, không phải câu mô hình sinh ra.",
                    "Sinh câu trả lời bằng model.generate, rồi giải mã phần token mới.",
                    example=part_replaced(k, lambda a: (sorted(references) * n)[:n])),
            Mistake(lambda a, all_from=all_from: any(name != BASE for name in names) and all_from(BASE),
                    f"`{label}`: {len(bad)} câu là câu trả lời của mô hình cơ sở (không bộ điều hợp nào).",
                    "Truyền `adapter_names=TEN` cho model.generate." if mixed else "Gọi model.set_adapter(tên) trước khi "
                    "sinh cho mỗi nhóm (và chỉ dùng disable_adapter cho \"__base__\").",
                    example=part_replaced(k, lambda a: served(BASE))),
            *(Mistake(lambda a, adapter=adapter, all_from=all_from: all_from(adapter),
                      f"`{label}`: {len(bad)} câu là câu trả lời của bộ `{adapter}`, không phải bộ của yêu cầu đó.",
                      "Truyền `adapter_names=TEN` cho model.generate: không có nó, cả lô đi qua bộ đang bật." if mixed
                      else "Gọi model.set_adapter(tên) cho TỪNG nhóm trước khi sinh.",
                      example=part_replaced(k, lambda a, adapter=adapter: served(adapter)))
              for adapter in loaded_adapters(model)),
            Mistake(lambda a, bad=bad: bool(bad), f"`{label}`: câu {bad[0]} (`{names[bad[0]]}`) là «{answers[bad[0]][:60]}», "
                    f"nhưng bộ `{names[bad[0]]}` sinh «{served()[bad[0]][:60]}»." if bad else "",
                    f"Dùng đúng thiết lập: tham lam (do_sample=False), max_new_tokens={max_new_tokens}, đệm bên trái "
                    "(padding_side=\"left\"), mẫu hội thoại với add_generation_prompt=True; mỗi câu đúng bộ của nó.",
                    example=part_replaced(k, lambda a, k=k: ["x " + a[k][0], *a[k][1:]])),
        ]
    slips += [
        Mistake(lambda a: not isinstance(a[2], (list, tuple)) or len(a[2]) != n,
                f"`giong_het` phải là danh sách {n} giá trị True/False.",
                "Ví dụ: [a == b for a, b in zip(tra_loi_tron, tra_loi_rieng)].", example=part_replaced(2, lambda a: a[2][:-1])),
        Mistake(lambda a: [bool(x) for x in a[2]] != [x == y for x, y in zip(a[0], a[1])],
                "`giong_het` không khớp với việc so từng cặp câu trả lời của bạn.", "Tính nó từ hai danh sách, đừng viết tay.",
                example=part_replaced(2, lambda a: [not x for x in a[2]])),
    ]
    return Table(guard=guard, slips=slips,
                 ok=f"Lô nhiều bộ điều hợp trả lời giống hệt từng bộ điều hợp riêng ở cả {n} yêu cầu "
                    "(ô kiểm tra đã sinh lại bằng set_adapter theo nhóm để so).")


# --------------------------------------------------------------------------- 🦁 safe hotswap
def _tiny_setup(tmp: Path):
    """A tiny Llama with a LoRA slot "khach" (r=4 on q_proj, v_proj) and three saved adapters:
    ``ok`` (same shape, other weights), ``rank8`` (r=8), ``more_targets`` (adds k_proj)."""
    import torch
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    def base():
        torch.manual_seed(0)
        config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
        return LlamaForCausalLM(config).eval()

    def saved(name, seed, **lora):
        model = base()
        torch.manual_seed(seed)  # after base(), which seeds itself: each adapter gets its own weights
        settings = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "init_lora_weights": False}
        peft_model = get_peft_model(model, LoraConfig(**{**settings, **lora}))
        peft_model.save_pretrained(tmp / name)
        return tmp / name

    first = saved("first", 1)
    dirs = {"ok": saved("ok", 2), "rank8": saved("rank8", 3, r=8),
            "more_targets": saved("more_targets", 4, target_modules=["q_proj", "v_proj", "k_proj"])}

    def fresh():
        return PeftModel.from_pretrained(base(), first, adapter_name="khach").eval()

    return fresh, dirs


def _lora_state(model) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items() if "lora_" in k}


def _unchanged(model, before) -> bool:
    import torch

    after = _lora_state(model)
    return after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)


def _same(a, b) -> bool:
    import torch

    return a.shape == b.shape and torch.allclose(a.float().cpu(), b.float().cpu())


_REFUSALS = [  # (saved adapter, slot name, what it is, how to find it out)
    ("rank8", "khach", "bộ điều hợp có hạng lớn hơn chỗ (r=8 vào chỗ r=4)",
     "So r trong adapter_config.json với kích thước hiện có: model.peft_config[ten].r hoặc lora_A[ten].weight.shape[0]."),
    ("more_targets", "khach", "bộ điều hợp gắn vào lớp mà chỗ không có (thêm k_proj)",
     "So target_modules (hoặc các khoá trong adapter_model.safetensors) với các lớp của chỗ đang có."),
    ("ok", "chua_nap", "tên bộ điều hợp chưa được nạp", "Kiểm tra `ten in model.peft_config` trước tiên."),
]
_VIETNAMESE = "ạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỷỹỵđ"


def _tried(fn) -> tuple[str, str, str, str]:
    """What ``fn`` does on the tiny models: ``(kind, case, hint, what it said)`` of its first mistake, ``kind`` "" when
    none: a compatible adapter swapped in, each of :data:`_REFUSALS` refused by a Vietnamese CourseError first."""
    from safetensors.torch import load_file

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")          # transformers/peft deprecation notes while building tiny models
        fresh, dirs = _tiny_setup(Path(tmp))
        model = fresh()
        try:
            fn(model, str(dirs["ok"]), "khach")
        except CourseError as exc:
            return "refuses_compatible", "", "", str(exc)
        state = model.state_dict()
        for key, value in load_file(str(dirs["ok"] / "adapter_model.safetensors")).items():
            slot_key = key.replace(".weight", ".khach.weight")
            if slot_key not in state or not _same(state[slot_key], value):
                return "not_swapped", "", "", ""
        for which, name, what, hint in _REFUSALS:
            model = fresh()
            before, names_before = _lora_state(model), list(model.peft_config)
            try:
                fn(model, str(dirs[which]), name)
            except CourseError as exc:
                if not _unchanged(model, before) or list(model.peft_config) != names_before:
                    return "late", what, hint, ""
                if not any(c in str(exc) for c in _VIETNAMESE):
                    return "not_vietnamese", what, hint, str(exc)
                continue
            except Exception as exc:  # noqa: BLE001 - peft's own error, or another exception type
                return "other_error", what, hint, f"{type(exc).__name__} («{str(exc)[:100]}»)"
            return ("swapped_silently" if not _unchanged(model, before) else "no_error"), what, hint, ""
    return "", "", "", ""


def _wrapped(fn, before=None, instead=None):
    """``fn`` with ``before(model, name)`` run first, and its CourseError replaced by ``instead(error)`` (raised unless
    None): the examples of the table."""
    def wrapper(model, folder, name):
        if before is not None:
            before(model, name)
        try:
            return fn(model, folder, name)
        except CourseError as exc:
            replacement = exc if instead is None else instead(exc)
            if replacement is not None:
                raise replacement from None
    return wrapper


def _refuse(*_):
    raise CourseError("Không được đổi.")


def _zero_slot(model, name):  # an example's edit: the slot's B matrices changed before anything is checked
    for module in model.modules():
        if hasattr(module, "lora_B") and name in module.lora_B:
            module.lora_B[name].weight.data.zero_()


@check
def check_safe_hotswap(fn) -> Table:
    """``fn(model, adapter_dir, adapter_name)`` hotswaps when safe and otherwise raises ``CourseError`` first.

    Tried on tiny models: a compatible adapter must really be swapped in (the slot's weights equal the saved ones);
    a larger rank, extra target layers and an adapter name that is not loaded must each raise
    :class:`~lora_helpers.errors.CourseError` (Vietnamese message) with every LoRA weight unchanged. The course's own
    ``hotswap_checked``/``check_hotswap_compatible`` may not be called (the point is to write the checks).
    """
    from peft.utils.hotswap import hotswap_adapter

    from ..serving import hotswap_checked

    code = getattr(fn, "__code__", None)
    helper = code is not None and bool({"hotswap_checked", "check_hotswap_compatible"} & set(code.co_names))
    kind, what, hint, said = _tried(fn) if callable(fn) and not helper else ("", "", "", "")

    def did(name):
        return lambda f: kind == name

    return Table(
        guard=[
            Mistake(lambda f: not callable(f), f"`doi_nong_an_toan` phải là một hàm, bạn đưa {type(fn).__name__}.",
                    "Viết `def doi_nong_an_toan(model, thu_muc, ten): ...`.", example=lambda f: "hotswap_adapter"),
            Mistake(lambda f: helper, "hàm của bạn gọi `hotswap_checked`/`check_hotswap_compatible` của khoá học.",
                    "Câu này yêu cầu tự viết các phép kiểm tra: đọc adapter_config.json (hạng r, target_modules) và so với "
                    "chỗ đang có trên mô hình (model.peft_config[ten], kích thước lora_A).", example=lambda f: hotswap_checked),
        ],
        slips=[
            Mistake(did("refuses_compatible"), "hàm từ chối một bộ điều hợp tương thích (cùng hạng, cùng lớp đích): "
                    f"«{said[:120]}».", "Chỉ từ chối khi thật sự không thay được: hạng lớn hơn chỗ, thêm lớp đích, hoặc "
                    "tên chưa nạp.", example=lambda f: _refuse),
            Mistake(did("not_swapped"), "với bộ điều hợp tương thích, trọng số của chỗ `khach` không được thay bằng "
                    "trọng số mới.", "Sau các phép kiểm tra, gọi hotswap_adapter(model, thu_muc, adapter_name=ten).",
                    example=lambda f: lambda model, folder, name: None),
            Mistake(did("late"), f"với {what}, hàm báo lỗi nhưng SAU KHI đã sửa mô hình.",
                    "Kiểm tra mọi thứ trước, rồi mới gọi hotswap_adapter.", example=lambda f: _wrapped(f, before=_zero_slot)),
            Mistake(did("not_vietnamese"), f"với {what}, thông báo lỗi không phải tiếng Việt: «{said[:100]}».",
                    "Viết thông báo bằng tiếng Việt, nói cái gì sai và cách sửa.",
                    example=lambda f: _wrapped(f, instead=lambda exc: CourseError("error"))),
            Mistake(did("other_error"), f"với {what}, hàm báo {said} thay vì CourseError.",
                    "Tự kiểm tra trước và raise CourseError(\"...\", \"cách sửa\") (from lora_helpers import CourseError). "
                    + hint, example=lambda f: _wrapped(f, instead=lambda exc: ValueError(str(exc)))),
            Mistake(did("swapped_silently"), f"với {what}, hàm không báo lỗi mà đã thay trọng số (peft làm được trên mô "
                    "hình chưa compile, nhưng mô hình đã compile sẽ phải biên dịch lại).", hint,
                    example=lambda f: lambda model, folder, name: hotswap_adapter(model, folder, adapter_name=name)),
            Mistake(did("no_error"), f"với {what}, hàm không báo lỗi.", hint,
                    example=lambda f: _wrapped(f, instead=lambda exc: None)),
        ],
        ok="Hàm đổi nóng bộ tương thích, và từ chối (CourseError, tiếng Việt, trước khi sửa gì) hạng lớn hơn, "
           "lớp đích khác và tên chưa nạp.",
    )
