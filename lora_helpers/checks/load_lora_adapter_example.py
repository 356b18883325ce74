"""Checks of ``load_lora_adapter_example``: loading adapters, routing prompts, combining adapters."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import re
import warnings
from pathlib import Path

from ._common import _active, _field, _is_peft_model, _lora_layers, _number, _plain, _same_number, _todo, _wrong
from .kit import Mistake, Table, check, edited_copy, scratch_dir


def _lora_state(model, adapter_name: str) -> dict:
    from peft.utils import get_peft_model_state_dict

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_peft_model_state_dict(model, adapter_name=adapter_name, save_embedding_layers=False)


def _same_state(state, other) -> bool:
    import torch

    return set(state) == set(other) and all(
        torch.equal(state[k].detach().cpu().to(other[k].dtype), other[k].cpu()) for k in other)


def _nudged(model, fragment: str):
    """A copy of ``model`` whose parameters named with ``fragment`` moved by 1 (other weights than trained)."""
    return edited_copy(model, lambda m: [p.add_(1.0) for n, p in m.named_parameters() if fragment in n])


def _reloaded(model, drop: str, folder, name: str):
    """A copy of ``model`` without its adapter ``drop``, with ``folder`` loaded as adapter ``name``."""
    return edited_copy(model, lambda m: (m.delete_adapter(drop), m.load_adapter(folder, adapter_name=name)))


@check
def check_loaded_adapters(model, expected=None) -> Table:
    """Both demo adapters are loaded on one model, under their own names, with the weights of their folders.

    ``expected`` maps adapter name -> folder (default: the demo adapters in ``adapters/``); every adapter's
    weights are compared with the files of its folder.
    """
    from safetensors.torch import load_file

    from ..adapters import DEMO_ADAPTERS, check_adapter_dir, demo_adapter_path

    expected = expected or {name: demo_adapter_path(name) for name in DEMO_ADAPTERS}
    first, last = list(expected)[0], list(expected)[-1]
    names, peft = ", ".join(f"`{n}`" for n in expected), _is_peft_model(model)
    loaded = list(model.peft_config) if peft else []
    missing = [n for n in expected if n not in loaded]
    on_disk = {n: load_file(str(check_adapter_dir(p) / "adapter_model.safetensors")) for n, p in expected.items()}
    state = {n: _lora_state(model, n) for n in expected} if peft and not missing else {}
    bad = [n for n in state if not _same_state(state[n], on_disk[n])]
    swap = next(((n, o) for n in bad for o in expected if o != n and _same_state(state[n], on_disk[o])), None)
    lacking = f"mô hình có các bộ điều hợp {loaded}, thiếu {missing} (cần đủ {names})."
    return Table(
        guard=[
            Mistake(lambda m: not peft, f"`mo_hinh` là `{type(model).__name__}`, chưa có bộ điều hợp nào.",
                    "Bọc mô hình cơ sở bằng `PeftModel.from_pretrained(mô_hình, thư_mục, adapter_name=...)`, "
                    "rồi thêm bộ thứ hai bằng `mo_hinh.load_adapter(thư_mục, adapter_name=...)`.",
                    example=lambda m: m.get_base_model()),
            Mistake(lambda m: bool(missing) and "default" in loaded, lacking,
                    "Có một bộ điều hợp tên `default`: bạn quên `adapter_name=` khi nạp. "
                    "Nạp lại với `adapter_name=\"<tên tác vụ>\"`.",
                    example=lambda m: _reloaded(m, first, expected[first], "default")),
            Mistake(lambda m: bool(missing), lacking, "Nạp đủ các bộ điều hợp, mỗi bộ một tên: truyền `adapter_name=` "
                    "khi gọi `from_pretrained`/`load_adapter`.",
                    example=lambda m: edited_copy(m, lambda t: t.delete_adapter(last))),
        ],
        slips=[
            Mistake(lambda m: swap is not None,
                    f"bộ điều hợp tên `{swap[0]}` lại chứa trọng số của `{swap[1]}`: hai tên bị tráo." if swap else "",
                    "Mỗi `adapter_name` phải đi với đúng thư mục của nó, ví dụ "
                    "`load_adapter(ADAPTERS[\"ngay_thang\"], adapter_name=\"ngay_thang\")`.",
                    example=lambda m: _reloaded(m, first, expected[last], first)),
            Mistake(lambda m: bool(bad),
                    f"trọng số của `{bad[0]}` không khớp với thư mục bộ điều hợp `{bad[0]}` (có thể bạn tạo bộ "
                    "điều hợp mới bằng `get_peft_model`/`add_adapter` thay vì nạp, hoặc đã sửa trọng số)."
                    if bad else "",
                    "Nạp trọng số đã huấn luyện từ thư mục: `PeftModel.from_pretrained` / `load_adapter`.",
                    example=lambda m: _nudged(m, f"lora_B.{first}.")),
        ],
        ok=f"Mô hình có {len(expected)} bộ điều hợp {names}, mỗi bộ đúng trọng số của nó; "
           f"đang bật: {_active(model) if peft else []}.",
    )


def _content(prompt: str) -> str:
    """A course prompt without its instruction: what a user would really type ("Viết ngày ...: <câu>" -> "<câu>")."""
    return prompt.split(": ", 1)[1] if ": " in prompt else prompt


def _routing_cases(n_per_task: int = 10, content_only: bool = True):
    """(prompt text, task) pairs from the validation and test splits of every course task.

    ``content_only`` drops the instruction that opens every course prompt: users do not write it, so a
    router must read the request itself.
    """
    from ..data import TASKS, make_task_splits

    cases = []
    for task in TASKS:
        splits = make_task_splits(task, n_train=1, n_val=n_per_task, n_test=n_per_task, seed=1)
        for split in ("validation", "test"):
            for row in splits[split]:
                text = row["messages"][0]["content"]
                cases.append((_content(text) if content_only else text, task))
    return cases


@check
def check_router(router, cases=None) -> Table:
    """``router(prompt_text) -> adapter name`` sends every prompt to the adapter of its task.

    ``cases`` is a list of ``(prompt, task)``; by default requests of both course tasks not shown in the notebook,
    *without* the instruction line (a user types only the request), so a router that reads the instruction
    always answers the same adapter.
    """
    from ..adapters import DEMO_ADAPTERS

    cases = cases if cases is not None else _routing_cases()
    choices, crash, stray = [], None, None
    for prompt, _ in cases if callable(router) else ():
        try:
            choice = router(prompt)
        except Exception as exc:  # noqa: BLE001 - the learner's function failed: a row of the table says so
            crash = f"hàm của bạn báo lỗi với câu «{prompt[:80]}»: {type(exc).__name__}: {exc}"
            break
        if choice not in DEMO_ADAPTERS:
            stray = f"với câu «{prompt[:80]}» hàm trả về {choice!r}, không phải tên bộ điều hợp."
            break
        choices.append(choice)
    wrong = [(prompt, choice, task) for (prompt, task), choice in zip(cases, choices) if choice != task]
    problem = ("{}/{} câu bị gửi nhầm bộ điều hợp, ví dụ «{}» được gửi tới `{}` nhưng cần `{}`.".format(
        len(wrong), len(cases), wrong[0][0][:80], *wrong[0][1:]) if wrong else "")
    read = ("Đọc nội dung yêu cầu: một đơn hàng và một ngày tháng khác nhau ở những chi tiết nào (các con số, từ "
            "khoá)? Thử quy tắc của bạn trên cả những câu mẫu in ở trên, và nghĩ xem từ khoá đó có thể xuất hiện "
            "trong tác vụ kia không.")
    return Table(
        guard=[
            Mistake(lambda r: not callable(r), f"`chon_bo_dieu_hop` phải là một hàm, bạn đưa {type(router).__name__}.",
                    "Viết `def chon_bo_dieu_hop(cau_hoi): ... return \"don_hang\"` (hoặc \"ngay_thang\").",
                    example=lambda r: "don_hang"),
            Mistake(lambda r: crash is not None, crash or "",
                    "Hàm nhận một chuỗi (nội dung câu hỏi) và trả về tên bộ điều hợp.",
                    example=lambda r: lambda text: r(text["content"])),
            Mistake(lambda r: stray is not None, stray or "",
                    f"Trả về đúng một trong các tên: {', '.join(DEMO_ADAPTERS)}.",
                    example=lambda r: lambda text: "JSON"),
        ],
        right=lambda r: not wrong,
        slips=[
            Mistake(lambda r: len(set(choices)) == 1, problem,
                    f"Hàm của bạn luôn chọn `{choices[0] if choices else ''}`: có lẽ nó dựa vào lời dặn ở đầu câu hỏi, "
                    "mà người dùng thật không gõ lời dặn đó. " + read,
                    example=lambda r: lambda text: "don_hang"),
            Mistake(lambda r: len(wrong) == len(cases), problem,
                    "Hàm của bạn chọn ngược hẳn: đổi chỗ hai tên bộ điều hợp.",
                    example=lambda r: lambda text: next(a for a in DEMO_ADAPTERS if a != r(text))),
        ],
        otherwise=(problem, read),
        ok=f"Hàm định tuyến chọn đúng bộ điều hợp cho cả {len(cases)} yêu cầu mới (chưa xuất hiện trong notebook, "
           "không có lời dặn).",
    )


def answer_format(text: str) -> str | None:
    """Which task's answer format ``text`` has: ``"don_hang"`` (JSON order), ``"ngay_thang"`` (ISO date) or None."""
    text = (text or "").strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        return "ngay_thang"
    try:
        value = json.loads(text)
    except (json.JSONDecodeError, TypeError):
        return None
    if isinstance(value, dict) and set(value) == {"ten", "mon", "so_luong", "dia_chi"}:
        return "don_hang"
    return None


_FORMAT_OF = {"ngay_thang": "2020-01-01", "don_hang": '{"ten": "Lan", "mon": "phở", "so_luong": 1, "dia_chi": "Huế"}'}


@contextlib.contextmanager
def _using(model, adapter: str | None):
    """Run with ``adapter`` active (``None``: every adapter switched off), then restore what was active."""
    before = _active(model)
    try:
        if adapter is None:
            with model.disable_adapter():
                yield
        else:
            model.set_adapter(adapter)
            yield
    finally:
        if before and adapter is not None:
            model.set_adapter(before[0] if len(before) == 1 else before)


def _answers_of(model, tokenizer, rows, adapter: str | None, max_new_tokens: int) -> list[str]:
    """What ``adapter`` answers to each row, one row at a time (as the exercise asks)."""
    from ..evaluation import generate

    with _using(model, adapter):
        return [generate(model, tokenizer, [row["messages"][:-1]], max_new_tokens=max_new_tokens)[0] for row in rows]


@check
def check_routed_answers(answers, questions, model=None, tokenizer=None, max_new_tokens: int = 80) -> Table:
    """Each answer is what the adapter of its question's task generates for that question.

    ``questions`` are dataset rows (with ``task``); ``answers`` the generated strings, in the same order. With
    ``model`` and ``tokenizer`` (the notebook passes them), the check generates every answer again with the right
    adapter (``set_adapter(task)``, greedy, ``max_new_tokens``) and compares the text, so only answers the adapters
    really produced pass. Without a model only the format is judged (an order as JSON, a date as ``YYYY-MM-DD``).
    """
    rows = list(questions)
    listed = isinstance(answers, (list, tuple))
    odd = next((i for i, a in enumerate(answers) if not isinstance(a, str)), None) if listed else None
    readable = listed and len(answers) == len(rows) and odd is None
    guard = [
        Mistake(lambda a: not isinstance(a, (list, tuple)),
                f"`tra_loi` phải là một danh sách chuỗi, bạn đưa {type(answers).__name__}.",
                "Tạo danh sách: một câu trả lời (chuỗi) cho mỗi câu hỏi, cùng thứ tự.", example=lambda a: "\n".join(a)),
        Mistake(lambda a: len(a) != len(rows),
                f"có {len(rows)} câu hỏi nhưng `tra_loi` có {len(answers) if listed else '?'} phần tử.",
                "Trả lời mọi câu hỏi trong CAU_HOI, mỗi câu đúng một lần, giữ nguyên thứ tự.",
                example=lambda a: list(a[:-1])),
        Mistake(lambda a: odd is not None,
                f"phần tử {odd} của `tra_loi` là {type(answers[odd]).__name__}, không phải chuỗi." if odd is not None
                else "", "`generate(...)` trả về danh sách chuỗi; lấy từng chuỗi.", example=lambda a: [[x] for x in a]),
    ]
    if model is None:
        formats = [answer_format(a) for a in answers] if readable else []
        off = [(i, f, row["task"], a) for i, (f, row, a) in enumerate(zip(formats, rows, answers)) if f != row["task"]]
        misrouted, malformed = [x for x in off if x[1] is not None], [x for x in off if x[1] is None]
        return Table(
            guard=guard,
            slips=[
                Mistake(lambda a: bool(misrouted),
                        "{} câu đi nhầm bộ điều hợp: câu {} là tác vụ `{}` nhưng câu trả lời «{}» có dạng của "
                        "`{}`.".format(
                            len(misrouted), misrouted[0][0], misrouted[0][2], misrouted[0][3][:60], misrouted[0][1])
                        if misrouted else "",
                        "Trước khi sinh câu trả lời cho mỗi câu hỏi, gọi "
                        "`mo_hinh.set_adapter(chon_bo_dieu_hop(câu_hỏi))`.",
                        example=lambda a: [next(v for k, v in _FORMAT_OF.items() if k != row["task"]) for row in rows]),
                Mistake(lambda a: bool(malformed),
                        "{} câu trả lời không có dạng của tác vụ nào, ví dụ câu {} (`{}`): «{}».".format(
                            len(malformed), malformed[0][0], malformed[0][2], malformed[0][3][:60])
                        if malformed else "",
                        "Có thể chưa bật bộ điều hợp nào (đang chạy mô hình cơ sở, hoặc trong `disable_adapter()`), "
                        "hoặc `max_new_tokens` quá nhỏ làm câu trả lời bị cắt.",
                        example=lambda a: ["Xin chào, tôi có thể giúp gì?"] * len(a)),
            ],
            ok=f"Cả {len(rows)} câu trả lời đều có đúng dạng của tác vụ: mỗi câu đã đi đúng bộ điều hợp.",
        )

    truth = ([_answers_of(model, tokenizer, [row], row["task"], max_new_tokens)[0].strip() for row in rows]
             if readable else [])
    bad = [i for i, t in enumerate(truth) if answers[i].strip() != t]
    i = bad[0] if bad else 0
    answer = answers[i].strip() if bad else None
    n, at = len(bad), f"câu {i} (`{rows[i]['task']}`): «{(answer or '')[:60]}»"

    @functools.cache
    def said_by(adapter):
        return _answers_of(model, tokenizer, [rows[i]], adapter, max_new_tokens)[0].strip()

    def each_with(adapter):
        return lambda a: _answers_of(model, tokenizer, rows, adapter, max_new_tokens)

    return Table(
        guard=guard,
        right=lambda a: not bad,
        slips=[
            Mistake(lambda a: answer in truth[:i] + truth[i + 1:],
                    f"{n} câu trả lời không phải của câu hỏi tương ứng, ví dụ {at} là câu trả lời của một câu hỏi "
                    "khác.",
                    "Sinh câu trả lời cho TỪNG câu hỏi trong vòng lặp, và gom đúng thứ tự của `CAU_HOI`.",
                    example=lambda a: [a[1], *a[1:]]),
            Mistake(lambda a: answer == str(rows[i]["answer"]).strip(),
                    f"{n} câu trả lời không do mô hình sinh ra, ví dụ {at} là đáp án mẫu của tập dữ liệu, còn bộ điều "
                    "hợp trả lời khác.",
                    "Câu này đo hệ thống định tuyến của bạn: lấy câu trả lời từ `generate(mo_hinh, ...)`, "
                    "không lấy `row[\"answer\"]`.", example=lambda a: [str(row["answer"]) for row in rows]),
            *[Mistake(lambda a, other=other: other != rows[i]["task"] and answer == said_by(other),
                      f"{n} câu đi nhầm bộ điều hợp, ví dụ {at} là câu trả lời của bộ `{other}`.",
                      "Trước khi sinh câu trả lời cho mỗi câu hỏi, gọi "
                      "`mo_hinh.set_adapter(chon_bo_dieu_hop(câu_hỏi))`.", example=each_with(other))
              for other in model.peft_config],
            Mistake(lambda a: answer == said_by(None),
                    f"{n} câu trả lời là của mô hình cơ sở (không bộ điều hợp nào bật), ví dụ {at}.",
                    "Đừng sinh bên trong `with mo_hinh.disable_adapter():`; bật bộ điều hợp bằng `set_adapter`.",
                    example=each_with(None)),
        ],
        otherwise=(f"{n} câu trả lời không khớp câu mà bộ điều hợp của tác vụ sinh ra, ví dụ {at}.",
                   "Sinh bằng `generate(mo_hinh, tokenizer, [row[\"messages\"][:-1]], max_new_tokens=80)` sau khi "
                   "`set_adapter(...)`, và đừng sửa chuỗi trả về (bỏ `[:-1]` là đưa cả đáp án mẫu vào câu hỏi)."),
        ok=f"Cả {len(rows)} câu trả lời đúng là câu mà bộ điều hợp của tác vụ sinh ra cho chính câu hỏi đó "
           "(ô kiểm tra đã sinh lại từng câu để so).",
    )


def _recombined(model, adapter_name: str, sources, weights, combination_type: str):
    """A copy of ``model`` whose ``adapter_name`` is made again with ``combination_type`` (and switched on)."""
    return edited_copy(model, lambda m: (m.delete_adapter(adapter_name), m.add_weighted_adapter(
        list(sources), list(weights), adapter_name=adapter_name, combination_type=combination_type),
        m.set_adapter(adapter_name)))


@check
def check_weighted_adapter(model, adapter_name: str, sources, weights, rtol: float = 1e-4) -> Table:
    """``adapter_name`` exists, is active, and its ΔW is exactly ``sum(w_i * ΔW_i)`` in every layer.

    ``add_weighted_adapter(..., combination_type="cat")`` gives that sum exactly; ``"svd"`` and ``"linear"`` only
    approximate it, and other weights than asked give another sum.
    """
    import torch

    peft = _is_peft_model(model)
    if peft and adapter_name not in model.peft_config:  # not made yet: "not done", no mistake to name
        return _todo(f"mô hình chưa có bộ điều hợp tên `{adapter_name}` (đang có {list(model.peft_config)})")
    active = _active(model) if peft else []
    worst, n_layers = 0.0, 0
    for _, layer in _lora_layers(model, adapter_name) if active == [adapter_name] else ():
        with torch.no_grad():
            combined = layer.get_delta_weight(adapter_name).float()
            target = sum(w * layer.get_delta_weight(s).float() for s, w in zip(sources, weights) if s in layer.lora_A)
            scale = max(target.abs().max().item(), 1e-12) if torch.is_tensor(target) else 1e-12
            worst, n_layers = max(worst, (combined - target).abs().max().item() / scale), n_layers + 1
    r = model.peft_config[adapter_name].r if peft else None
    return Table(
        guard=[Mistake(lambda m: not peft, f"mô hình là `{type(model).__name__}`, không có bộ điều hợp.",
                       "Dùng mô hình đã nạp hai bộ điều hợp (câu 1).", example=lambda m: m.get_base_model())],
        slips=[
            Mistake(lambda m: active != [adapter_name],
                    f"bộ điều hợp đang bật là {active}, không phải `{adapter_name}`.",
                    f"`add_weighted_adapter` chỉ tạo bộ mới; bật nó bằng `mo_hinh.set_adapter(\"{adapter_name}\")`.",
                    example=lambda m: edited_copy(m, lambda t: t.set_adapter(sources[0]))),
            Mistake(lambda m: n_layers == 0, f"`{adapter_name}` không gắn vào lớp nào.",
                    "Tạo lại bằng add_weighted_adapter.", example=lambda m: edited_copy(m, lambda t: [
                        (layer.lora_A.pop(adapter_name), layer.lora_B.pop(adapter_name))
                        for _, layer in _lora_layers(t, adapter_name)])),
            Mistake(lambda m: worst > rtol,
                    f"ΔW của `{adapter_name}` khác tổng {' + '.join(f'{w}·ΔW({s})' for s, w in zip(sources, weights))} "
                    f"(sai số tương đối lớn nhất {worst:.2g}; hạng của bộ trộn r={r}).",
                    "Kiểm tra lại trọng số (weights). combination_type=\"svd\" (mặc định) và \"linear\" chỉ xấp xỉ "
                    "tổng; \"cat\" ghép A và B nên cho đúng tổng, với hạng bằng tổng các hạng.",
                    example=lambda m: _recombined(m, adapter_name, sources, weights, "svd")),
        ],
        ok=f"`{adapter_name}` đang bật, và trong cả {n_layers} lớp ΔW đúng bằng tổng có trọng số của "
           f"{', '.join(sources)} (hạng r={r}).",
    )


def _evaluated(model, tokenizer, dataset, adapter: str | None) -> dict:
    """What ``evaluate_task`` gives on ``dataset`` with ``adapter`` active (None: adapters off)."""
    from ..evaluation import evaluate_task

    with _using(model, adapter):
        return evaluate_task(model, tokenizer, dataset)


@check
def check_task_scores(scores, test_sets, model=None, tokenizer=None, adapter: str | None = None) -> Table:
    """Per-task results of ``evaluate_task``: one per task, on the whole test set, measured WITH ``adapter``.

    ``scores`` maps task -> the dict ``evaluate_task`` returns (``accuracy``, ``predictions``...); ``test_sets`` maps
    task -> the test dataset it should have been measured on. The accuracy is recomputed from the predictions. With
    ``model``, ``tokenizer`` and ``adapter`` (the notebook passes them), the predictions are generated again with
    ``adapter`` active and must be the same, so the scores are those of that adapter.
    """
    from ..evaluation import task_metrics

    here = model is not None and adapter is not None
    if here and adapter not in model.peft_config:  # the adapter to measure is not made yet: "not done"
        return _todo(f"mô hình chưa có bộ điều hợp `{adapter}`")
    got, t0 = scores if isinstance(scores, dict) else {}, next(iter(test_sets))
    missing = [t for t in test_sets if t not in got]
    unshaped = next((t for t in test_sets
                     if not (isinstance(got.get(t), dict) and {"accuracy", "predictions"} <= set(got[t]))), None)
    short = (next((t for t, ds in test_sets.items() if len(got[t]["predictions"]) != len(ds)), None)
             if not unshaped else None)
    expected = ({t: task_metrics(t, got[t]["predictions"], ds["answer"])["accuracy"] for t, ds in test_sets.items()}
                if not (unshaped or short) else {})
    off = next((t for t in expected if abs(got[t]["accuracy"] - expected[t]) > 1e-9), None)
    predictions = functools.cache(lambda task, used: _evaluated(model, tokenizer, test_sets[task], used)["predictions"])
    other = (next((t for t in test_sets if list(got[t]["predictions"]) != predictions(t, adapter)), None)
             if here and expected and not off else None)
    candidates = [*(a for a in model.peft_config if a != adapter), None] if here else []
    used = (next((u for u in candidates if list(got[other]["predictions"]) == predictions(other, u)), "?")
            if other else "?")
    answers = list(test_sets[t0]["answer"])
    hint = (f"Gọi `mo_hinh.set_adapter(\"{adapter}\")` rồi mới `evaluate_task(...)` cho từng tác vụ; đừng sửa danh "
            "sách `predictions`.")

    def measured_by(what):
        return (f"`{other}`: các câu trả lời không được đo với bộ `{adapter}`: {what}. Đang bật lúc kiểm tra: "
                f"{_active(model) if here else []}.")

    def changed(**fields):
        return lambda s: {**s, t0: {**s[t0], **{k: f(s[t0]) for k, f in fields.items()}}}

    acc = f"`{off}`: accuracy = {got[off]['accuracy']} nhưng các câu trả lời cho {expected[off]:.2f}." if off else ""
    return Table(
        guard=[
            Mistake(lambda s: not isinstance(s, dict), f"`ket_qua` phải là dict {{tác_vụ: kết quả}}, bạn đưa "
                    f"{type(scores).__name__}.", "Ví dụ: `ket_qua = {task: evaluate_task(mo_hinh, tokenizer, "
                    "TEST[task]) for task in TEST}`.", example=lambda s: [r["accuracy"] for r in s.values()]),
            Mistake(lambda s: bool(missing), f"thiếu kết quả của tác vụ {missing}.",
                    "Đo trên tập kiểm tra của từng tác vụ.", example=lambda s: dict(list(s.items())[:-1])),
            Mistake(lambda s: bool(unshaped), f"`ket_qua['{unshaped}']` phải là dict trả về bởi `evaluate_task` (có "
                    "accuracy, predictions).", f"`ket_qua['{unshaped}'] = evaluate_task(mo_hinh, tokenizer, "
                    f"TEST['{unshaped}'])`.", example=lambda s: {**s, t0: s[t0]["accuracy"]}),
            Mistake(lambda s: bool(short), f"`{short}`: {len(got[short]['predictions']) if short else 0} câu trả lời "
                    f"nhưng tập kiểm tra có {len(test_sets[short]) if short else 0} câu.",
                    f"Đo trên đúng tập TEST['{short}'] của tác vụ đó.",
                    example=changed(predictions=lambda r: r["predictions"][:-1])),
        ],
        slips=[
            Mistake(lambda s: bool(off) and got[off]["accuracy"] > 1, acc,
                    "Độ chính xác ở đây là tỉ lệ 0–1 (0.45), không phải phần trăm (45).",
                    example=changed(accuracy=lambda r: 100 * r["accuracy"] or 100)),
            Mistake(lambda s: bool(off), acc, "Đừng tự sửa con số: lấy `accuracy` đúng từ kết quả của `evaluate_task` "
                    "trên tập của tác vụ đó.", example=changed(accuracy=lambda r: r["accuracy"] + 0.25)),
            *[Mistake(lambda s, u=u: bool(other) and used == u,
                      measured_by(f"đó là câu trả lời của bộ `{u}`" if u
                                  else "đó là câu trả lời của mô hình cơ sở (mọi bộ điều hợp bị tắt)"), hint,
                      example=lambda s, u=u: {**s, t0: _evaluated(model, tokenizer, test_sets[t0], u)})
              for u in candidates],
            *([Mistake(lambda s: bool(other), measured_by("chúng không phải câu trả lời của bộ này (ô kiểm tra đã "
                       "sinh lại để so)"), hint, example=lambda s: {**s, t0: {**task_metrics(t0, answers, answers),
                                                                        "predictions": answers}})] if here else []),
        ],
        ok=f"Đã đo đủ các tác vụ trên đúng tập kiểm tra{f' với bộ `{adapter}`' if here else ''}.",
        measured=("độ chính xác " + ", ".join(f"{t}: {got[t]['accuracy']:.0%}" for t in expected) + "."
                  if expected else None),
    )


def _shares_weights(a, b) -> bool:
    """True when two models hold the same weight tensors (one is built on the other's base model)."""
    pointers = {p.data_ptr() for p in a.parameters()}
    return any(p.data_ptr() in pointers for p in b.parameters())


def _saved_alone(model, adapter: str, weights: bool = True) -> Path:
    """A new temporary folder where ``save_pretrained`` wrote ``adapter`` of ``model`` alone (``weights``: or only its
    config), for the examples of the tables."""
    root = scratch_dir()
    model.save_pretrained(root, selected_adapters=[adapter], save_embedding_layers=False)
    folder = root if adapter == "default" else root / adapter
    _ = weights or (folder / "adapter_model.safetensors").unlink()
    return folder


@check
def _saved_and_reloaded(answer, reference, adapter_name: str) -> Table:
    """The folder and model half of :func:`check_reload_parity`; ``answer`` is ``(saved_dir, reloaded)``.

    The saved files must hold exactly ``adapter_name``'s weights of ``reference``; ``reloaded`` must be its own model
    (not built on ``reference``'s base model) holding them, and give ``reference``'s logits (recomputed here, with
    ``adapter_name`` active, at the default tolerance of ``reference``'s dtype).
    """
    import torch
    from safetensors.torch import load_file

    from ..parity import default_tolerance, max_logit_diff

    folder, reloaded = Path(answer[0]), answer[1]
    adapter_dir, weights = (folder / "adapter_config.json").is_file(), folder / "adapter_model.safetensors"
    subs = sorted(p.parent.name for p in folder.glob("*/adapter_config.json"))
    on_disk = load_file(str(weights)) if adapter_dir and weights.is_file() else {}
    others = [a for a in reference.peft_config if a != adapter_name]
    saved = [a for a in [adapter_name, *others] if _same_state(_lora_state(reference, a), on_disk)]
    peft = _is_peft_model(reloaded)
    names = [a for a in reloaded.peft_config if _same_state(_lora_state(reloaded, a), on_disk)] if peft else []
    shared = peft and (reloaded is reference or _shares_weights(reference, reloaded))
    limit = default_tolerance(next(reference.parameters()).dtype)
    diff = float("nan")
    if names and not shared:
        ids = torch.randint(0, reference.config.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
        with _using(reference, adapter_name), _using(reloaded, names[0]):
            diff = max_logit_diff(reference, reloaded, ids.to(next(reference.parameters()).device))
    return Table(
        guard=[
            Mistake(lambda a: not adapter_dir and bool(subs),
                    f"`{folder.name}` không chứa bộ điều hợp, chỉ có các thư mục con {subs}: mô hình nhiều bộ điều hợp "
                    "lưu mỗi bộ (trừ bộ tên `default`) vào một thư mục con mang tên nó.",
                    f"Trỏ `thu_muc_luu` vào thư mục con `{adapter_name}`, hoặc lưu riêng bộ đó bằng "
                    f"`save_pretrained(..., selected_adapters=[\"{adapter_name}\"])` rồi dùng thư mục con.",
                    example=lambda a: (Path(a[0]).parent, a[1])),
            Mistake(lambda a: not adapter_dir,
                    f"`{folder}` không phải thư mục bộ điều hợp (thiếu adapter_config.json).",
                    "Lưu bằng `mo_hinh.save_pretrained(thư_mục, selected_adapters=[...])`.",
                    example=lambda a: (Path(a[0]) / "khong_co", a[1])),
            Mistake(lambda a: not weights.is_file(), f"`{folder.name}` thiếu adapter_model.safetensors.",
                    "Lưu lại bằng `save_pretrained`.",
                    example=lambda a: (_saved_alone(reference, adapter_name, False), a[1])),
        ],
        slips=[
            Mistake(lambda a: adapter_name not in saved,
                    f"tệp đã lưu trong `{folder.name}` không phải bộ `{adapter_name}`: "
                    + (f"đó là trọng số của bộ `{saved[0]}`." if saved else "trọng số không khớp bộ nào của mô hình."),
                    f"Lưu đúng bộ cần chia sẻ: `selected_adapters=[\"{adapter_name}\"]`.",
                    example=lambda a: (_saved_alone(reference, others[0]), a[1])),
            Mistake(lambda a: not peft, f"`mo_hinh_nap_lai` là `{type(reloaded).__name__}`, chưa mang bộ điều hợp nào.",
                    "`PeftModel.from_pretrained(mô_hình_cơ_sở_mới, thu_muc_luu)`.",
                    example=lambda a: (a[0], a[1].get_base_model())),
            Mistake(lambda a: shared, "`mo_hinh_nap_lai` dùng chung trọng số với `mo_hinh`: bạn nạp lại lên chính mô "
                    "hình cơ sở đã bị `PeftModel.from_pretrained` bọc tại chỗ ở câu 1, nên phép so không chứng minh "
                    "được gì.",
                    "Nạp một mô hình cơ sở MỚI: `AutoModelForCausalLM.from_pretrained(BASE_PATH, dtype=DTYPE)`.",
                    example=lambda a: (a[0], reference)),
            Mistake(lambda a: not names, "bộ điều hợp trong `mo_hinh_nap_lai` không phải bộ vừa lưu.",
                    "Nạp từ đúng `thu_muc_luu`.", example=lambda a: (a[0], _nudged(a[1], "lora_B."))),
            Mistake(lambda a: not diff <= limit, f"ô kiểm tra tự so lại hai mô hình (bộ `{adapter_name}` bật) và thấy "
                    f"logits lệch {diff:.2g} (ngưỡng {limit:g}).",
                    "Kiểm tra mô hình cơ sở của `mo_hinh_nap_lai` (cùng BASE_PATH, cùng dtype) và thư mục đã nạp.",
                    example=lambda a: (a[0], _nudged(a[1], "embed_tokens"))),
        ],
        ok="thư mục và mô hình nạp lại đúng.",
    )


@check
def check_reload_parity(result, saved_dir, reloaded, reference, adapter_name: str) -> Table:
    """An adapter saved to ``saved_dir``, reloaded on a fresh base model (``reloaded``), and proven equal.

    ``reference`` is the model that holds ``adapter_name`` (maybe among others); ``result`` the
    ``check_parity(reference, reloaded, ...)`` the learner ran with ``adapter_name`` active. The folder and the
    reloaded model are judged first (:func:`_saved_and_reloaded`, which recomputes the logit difference itself),
    then the parity result: a real, unloosened, passed ``ParityResult``.
    """
    from ..parity import ParityResult, default_tolerance
    from ._common import _parity_guard

    if saved_dir is None or reloaded is None:  # a part not done yet is "not done", not a mistake
        missing = [n for n, v in (("thu_muc_luu", saved_dir), ("mo_hinh_nap_lai", reloaded)) if v is None]
        return _todo(f"còn thiếu {', '.join(f'`{m}`' for m in missing)}")
    saved = _saved_and_reloaded((saved_dir, reloaded), reference, adapter_name)
    if not saved:  # two tables, so that the tests can walk the rows about the folder and model too
        return saved
    parity = isinstance(result, ParityResult)
    limit, verdict = (default_tolerance(result.dtype), result.verdict()) if parity else (0.0, "")
    return Table(
        guard=[_parity_guard(result, "kiem_tra_nap_lai")],
        slips=[
            Mistake(lambda r: r.tolerance > limit, f"ngưỡng {getattr(result, 'tolerance', 0):g} lớn hơn ngưỡng mặc "
                    f"định {limit:g}: nới ngưỡng thì sai nào cũng qua.", "Bỏ tham số `tolerance=`.",
                    example=lambda r: dataclasses.replace(r, tolerance=5.0)),
            Mistake(lambda r: r.n_prompts < 4, f"chỉ so trên {getattr(result, 'n_prompts', 0)} câu; cần ít nhất 4.",
                    "Dùng `dataset=TEST[...]`.", example=lambda r: dataclasses.replace(r, n_prompts=2)),
            Mistake(lambda r: not r.passed, f"phép kiểm tra khớp không đạt: {verdict}",
                    f"Trước khi so, bật đúng bộ trên mô hình tham chiếu: `mo_hinh.set_adapter(\"{adapter_name}\")`.",
                    example=lambda r: dataclasses.replace(r, passed=False)),
        ],
        ok=f"Bộ `{adapter_name}` đã lưu, nạp lại trên một mô hình cơ sở mới, và khớp bản gốc; kết luận của phép "
           f"kiểm tra: «{verdict}».",
    )


_ROUTING, _COMBINED = "dinh tuyen", "tron"


def _decided(answer, choice=None, edit=lambda numbers: None) -> dict:
    """``answer`` with another choice, or its numbers changed by ``edit`` (on a copy): the examples of the table."""
    numbers = copy.deepcopy(_field(answer, "số_liệu"))
    edit(numbers)
    return {"lựa_chọn": choice or _field(answer, "lựa_chọn"), "số_liệu": numbers}


@check
def check_adapter_choice(answer, combined, alone, test_sets, max_drop: float = 0.1) -> Table:
    """Decide and defend: route between the two adapters, or ship the combined one? Numbers recomputed.

    ``answer`` = ``{"lựa_chọn": "định tuyến" | "trộn", "số_liệu": {task: {"riêng": acc, "trộn": acc}}}``;
    ``combined`` and ``alone`` map task -> ``evaluate_task`` results (combined adapter; each task's own adapter),
    whose accuracies are recomputed here from their predictions. "trộn" is defensible only when it loses at most
    ``max_drop`` accuracy on every task.
    """
    from ..evaluation import task_metrics
    from ._common import _decision_rows

    if combined is None or alone is None:  # nothing measured to compare with: no mistake of the answer to name
        return _wrong("chưa có kết quả đo để đối chiếu.", "Chạy các ô đo `ket_qua` và `rieng` phía trên trước.")
    truth = {task: {key: task_metrics(task, results[task]["predictions"], dataset["answer"])["accuracy"]
                    for key, results in (("riêng", alone), ("trộn", combined))} for task, dataset in test_sets.items()}
    drops = {task: want["riêng"] - want["trộn"] for task, want in truth.items()}
    worst = max(drops, key=drops.get)
    choice, numbers = _field(answer, "lựa_chọn"), _field(answer, "số_liệu")
    plain = _plain(choice)
    cited = {task: _field(numbers, task) for task in truth}
    no_task = next((task for task, c in cited.items() if not isinstance(c, dict)), None)
    values = {(t, k): _number(_field(cited[t], k)) for t in truth for k in truth[t]} if not no_task else {}
    no_value = next((tk for tk, v in values.items() if v is None), None)
    off = next((tk for tk, v in values.items() if not _same_number(v, truth[tk[0]][tk[1]], rel=0, abs_=1e-6)),
               None) if not no_value else None
    task, key = off or no_value or (None, None)
    got, value = values.get(off), truth[task][key] if task else 0.0
    other = truth[task]["trộn" if key == "riêng" else "riêng"] if task else 0.0
    problem = f"`số_liệu['{task}']['{key}']` = {got:g} không phải con số của lần chạy này." if off else ""
    # the examples cite a wrong number where every slip can show: non-zero, and unlike the other column
    t0, k0 = next(((t, k) for t, w in truth.items() for k, v in w.items() if v and len(set(w.values())) == 2),
                  (worst, "riêng"))
    v0, o0 = truth[t0][k0], truth[t0]["trộn" if k0 == "riêng" else "riêng"]

    def cite(wrong_value):
        return lambda a: _decided(a, edit=lambda n: n[t0].update({k0: wrong_value}))

    return Table(
        guard=[
            *_decision_rows(answer),
            Mistake(lambda a: plain not in (_ROUTING, _COMBINED), f"`lựa_chọn` = {choice!r}; chọn một trong \"định "
                    "tuyến\" hoặc \"trộn\".", "Viết đúng một trong hai lựa chọn.",
                    example=lambda a: _decided(a, choice="cả hai")),
            Mistake(lambda a: bool(no_task), f"`số_liệu` thiếu tác vụ `{no_task}` (cần dict {{\"riêng\": ..., "
                    "\"trộn\": ...}).", "Mỗi tác vụ một dict với hai độ chính xác.",
                    example=lambda a: _decided(a, edit=lambda n: n.pop(t0))),
            Mistake(lambda a: bool(no_value), f"`số_liệu['{task}']` thiếu con số `{key}`.",
                    "Ghi độ chính xác (tỉ lệ 0–1) của cả hai cột.",
                    example=lambda a: _decided(a, edit=lambda n: n[t0].pop(k0))),
        ],
        slips=[
            Mistake(lambda a: bool(off) and _same_number(got, 100 * value, rel=0, abs_=1e-4), problem,
                    "Độ chính xác là tỉ lệ 0–1, không phải phần trăm.", example=cite(100 * v0)),
            Mistake(lambda a: bool(off) and _same_number(got, other, rel=0, abs_=1e-6), problem,
                    "Hai cột bị đổi chỗ: `riêng` là bộ của chính tác vụ, `trộn` là bộ ket_hop.", example=cite(o0)),
            Mistake(lambda a: bool(off), problem, "Chép con số từ kết quả đo (`ket_qua[task]['accuracy']`, "
                    "`rieng[task]['accuracy']`), đừng gõ tay.", example=cite(v0 + 0.123)),
            Mistake(lambda a: plain == _COMBINED and drops[worst] > max_drop,
                    f"chính số liệu của bạn phản bác lựa chọn này: trên `{worst}`, bộ trộn kém bộ riêng "
                    f"{drops[worst]:.0%} (quá {max_drop:.0%}).",
                    "Một hệ thống phải giữ được chất lượng ở MỌI tác vụ; đọc lại hai cột của từng tác vụ.",
                    example=lambda a: _decided(a, choice="trộn")),
        ],
        ok="Lựa chọn của bạn đứng vững với số liệu của bạn, đã đối chiếu với các câu trả lời đã đo.",
        measured=f"bạn chọn «{choice}»: " + (f"bộ trộn mất tới {drops[worst]:.0%} trên `{worst}`" if plain == _ROUTING
                                             and drops[worst] > max_drop else "hai cách gần nhau trên mọi tác vụ")
        + "; " + ", ".join(f"{t}: riêng {v['riêng']:.0%}, trộn {v['trộn']:.0%}" for t, v in truth.items()) + ".",
    )
