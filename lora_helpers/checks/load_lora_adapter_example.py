"""Checks of ``load_lora_adapter_example``: loading adapters, routing prompts, combining adapters."""

from __future__ import annotations

import contextlib
import json
import re
import warnings
from pathlib import Path

from ._common import (
    CheckResult,
    _active,
    _decision,
    _field,
    _is_peft_model,
    _lora_layers,
    _never_raises,
    _number,
    _ok,
    _parity_result,
    _plain,
    _same_number,
    _todo,
    _wrong,
)


@_never_raises
def check_loaded_adapters(model, expected=None) -> CheckResult:
    """Both demo adapters are loaded on one model, under their own names, with the weights of their folders.

    ``expected`` maps adapter name -> folder (default: the demo adapters ``don_hang`` and
    ``ngay_thang`` in ``adapters/``). Rejects: a plain base model, a missing adapter, an
    adapter left under the default name ``default``, and two adapters loaded under swapped names.
    """
    import torch
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file

    from ..adapters import DEMO_ADAPTERS, check_adapter_dir, demo_adapter_path

    if model is None:
        return _todo()
    if expected is None:
        expected = {name: demo_adapter_path(name) for name in DEMO_ADAPTERS}
    names = ", ".join(f"`{n}`" for n in expected)
    if not _is_peft_model(model):
        return _wrong(
            f"`mo_hinh` là `{type(model).__name__}`, chưa có bộ điều hợp nào.",
            "Bọc mô hình cơ sở bằng `PeftModel.from_pretrained(mô_hình, thư_mục, adapter_name=...)`, "
            "rồi thêm bộ thứ hai bằng `mo_hinh.load_adapter(thư_mục, adapter_name=...)`.",
        )
    loaded = list(model.peft_config)
    missing = [n for n in expected if n not in loaded]
    if missing:
        hint = "Nạp đủ các bộ điều hợp, mỗi bộ một tên: truyền `adapter_name=` khi gọi `from_pretrained`/`load_adapter`."
        if "default" in loaded:
            hint = ("Có một bộ điều hợp tên `default`: bạn quên `adapter_name=` khi nạp. "
                    "Nạp lại với `adapter_name=\"<tên tác vụ>\"`.")
        return _wrong(f"mô hình có các bộ điều hợp {loaded}, thiếu {missing} (cần đủ {names}).", hint)

    on_disk = {n: load_file(str(check_adapter_dir(p) / "adapter_model.safetensors")) for n, p in expected.items()}

    def same(name, reference) -> bool:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = get_peft_model_state_dict(model, adapter_name=name, save_embedding_layers=False)
        if set(state) != set(reference):
            return False
        return all(torch.equal(state[k].detach().cpu().to(reference[k].dtype), reference[k]) for k in reference)

    for name in expected:
        if same(name, on_disk[name]):
            continue
        others = [o for o in expected if o != name and same(name, on_disk[o])]
        if others:
            return _wrong(
                f"bộ điều hợp tên `{name}` lại chứa trọng số của `{others[0]}`: hai tên bị tráo.",
                "Mỗi `adapter_name` phải đi với đúng thư mục của nó, ví dụ "
                "`load_adapter(ADAPTERS[\"ngay_thang\"], adapter_name=\"ngay_thang\")`.",
            )
        return _wrong(
            f"trọng số của `{name}` không khớp với thư mục bộ điều hợp `{name}` (có thể bạn tạo bộ điều hợp mới "
            "bằng `get_peft_model`/`add_adapter` thay vì nạp, hoặc đã sửa trọng số).",
            "Nạp trọng số đã huấn luyện từ thư mục: `PeftModel.from_pretrained` / `load_adapter`.",
        )
    return _ok(f"Mô hình có {len(expected)} bộ điều hợp {names}, mỗi bộ đúng trọng số của nó; "
               f"đang bật: {_active(model)}.")


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


@_never_raises
def check_router(router, cases=None) -> CheckResult:
    """``router(prompt_text) -> adapter name`` sends every prompt to the adapter of its task.

    ``cases`` is a list of ``(prompt, task)``; by default requests of both course tasks not shown in
    the notebook, *without* the instruction line (a user types only the request). Rejects: a router
    that reads the instruction (it then always answers the same adapter), swapped names, a keyword
    that also occurs in the other task ("giao" is in "Ngày giao hàng"), an answer that is not an
    adapter name, and a router that crashes.
    """
    from ..adapters import DEMO_ADAPTERS

    if router is None:
        return _todo()
    if not callable(router):
        return _wrong(f"`chon_bo_dieu_hop` phải là một hàm, bạn đưa {type(router).__name__}.",
                      "Viết `def chon_bo_dieu_hop(cau_hoi): ... return \"don_hang\"` (hoặc \"ngay_thang\").")
    cases = cases if cases is not None else _routing_cases()
    wrong, choices = [], []
    for prompt, task in cases:
        try:
            choice = router(prompt)
        except Exception as exc:  # noqa: BLE001 - the learner's function failed
            return _wrong(f"hàm của bạn báo lỗi với câu «{prompt[:80]}»: {type(exc).__name__}: {exc}",
                          "Hàm nhận một chuỗi (nội dung câu hỏi) và trả về tên bộ điều hợp.")
        if choice not in DEMO_ADAPTERS:
            return _wrong(f"với câu «{prompt[:80]}» hàm trả về {choice!r}, không phải tên bộ điều hợp.",
                          f"Trả về đúng một trong các tên: {', '.join(DEMO_ADAPTERS)}.")
        choices.append(choice)
        if choice != task:
            wrong.append((prompt, choice, task))
    if wrong:
        prompt, choice, task = wrong[0]
        hint = ("Đọc nội dung yêu cầu: một đơn hàng và một ngày tháng khác nhau ở những chi tiết nào (các con số, "
                "từ khoá)? Thử quy tắc của bạn trên cả những câu mẫu in ở trên, và nghĩ xem từ khoá đó có thể xuất "
                "hiện trong tác vụ kia không.")
        if len(set(choices)) == 1:
            hint = (f"Hàm của bạn luôn chọn `{choices[0]}`: có lẽ nó dựa vào lời dặn ở đầu câu hỏi, mà người dùng "
                    "thật không gõ lời dặn đó. " + hint)
        elif len(wrong) == len(cases):
            hint = "Hàm của bạn chọn ngược hẳn: đổi chỗ hai tên bộ điều hợp."
        return _wrong(
            f"{len(wrong)}/{len(cases)} câu bị gửi nhầm bộ điều hợp, ví dụ «{prompt[:80]}» "
            f"được gửi tới `{choice}` nhưng cần `{task}`.",
            hint,
        )
    return _ok(f"Hàm định tuyến chọn đúng bộ điều hợp cho cả {len(cases)} yêu cầu mới (chưa xuất hiện trong notebook, "
               "không có lời dặn).")


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


@_never_raises
def check_routed_answers(answers, questions, model=None, tokenizer=None, max_new_tokens: int = 80) -> CheckResult:
    """Each answer is what the adapter of its question's task generates for that question.

    ``questions`` are dataset rows (with ``task``); ``answers`` the generated strings, in the same order.
    With ``model`` and ``tokenizer`` (the notebook passes them), the check generates every answer again
    with the right adapter (``set_adapter(task)``, greedy, ``max_new_tokens``) and compares the text, so
    only answers the adapters really produced pass. Rejects: hard-coded answers, the reference answers
    of the dataset copied in, an answer copied from another row, a question sent to the other adapter,
    answers of the bare base model, and a list of the wrong length. Without a model only the format
    is judged (an order as JSON, a date as ``YYYY-MM-DD``).
    """
    if answers is None:
        return _todo()
    if isinstance(answers, str) or not isinstance(answers, (list, tuple)):
        return _wrong(f"`tra_loi` phải là một danh sách chuỗi, bạn đưa {type(answers).__name__}.",
                      "Tạo danh sách: một câu trả lời (chuỗi) cho mỗi câu hỏi, cùng thứ tự.")
    if len(answers) != len(questions):
        return _wrong(f"có {len(questions)} câu hỏi nhưng `tra_loi` có {len(answers)} phần tử.",
                      "Trả lời mọi câu hỏi trong CAU_HOI, mỗi câu đúng một lần, giữ nguyên thứ tự.")
    for i, answer in enumerate(answers):
        if not isinstance(answer, str):
            return _wrong(f"phần tử {i} của `tra_loi` là {type(answer).__name__}, không phải chuỗi.",
                          "`generate(...)` trả về danh sách chuỗi; lấy từng chuỗi.")
    if model is None:
        return _routed_by_format(answers, questions)

    rows = list(questions)
    truth = [_answers_of(model, tokenizer, [row], row["task"], max_new_tokens)[0] for row in rows]
    bad = [i for i, (a, t) in enumerate(zip(answers, truth)) if a.strip() != t.strip()]
    if not bad:
        return _ok(f"Cả {len(answers)} câu trả lời đúng là câu mà bộ điều hợp của tác vụ sinh ra cho chính câu hỏi đó "
                   "(ô kiểm tra đã sinh lại từng câu để so).")
    i = bad[0]
    row, answer = rows[i], answers[i].strip()
    where = f"câu {i} (`{row['task']}`): «{answer[:60]}»"
    if any(answer == t.strip() for j, t in enumerate(truth) if j != i):
        return _wrong(f"{len(bad)} câu trả lời không phải của câu hỏi tương ứng, ví dụ {where} là câu trả lời của một câu "
                      "hỏi khác.",
                      "Sinh câu trả lời cho TỪNG câu hỏi trong vòng lặp, và gom đúng thứ tự của `CAU_HOI`.")
    if answer == str(row["answer"]).strip():
        return _wrong(f"{len(bad)} câu trả lời không do mô hình sinh ra, ví dụ {where} là đáp án mẫu của tập dữ liệu, "
                      "còn bộ điều hợp trả lời khác.",
                      "Câu này đo hệ thống định tuyến của bạn: lấy câu trả lời từ `generate(mo_hinh, ...)`, "
                      "không lấy `row[\"answer\"]`.")
    others = [a for a in model.peft_config if a != row["task"]]
    for other in others:
        if answer == _answers_of(model, tokenizer, [row], other, max_new_tokens)[0].strip():
            return _wrong(f"{len(bad)} câu đi nhầm bộ điều hợp, ví dụ {where} là câu trả lời của bộ `{other}`.",
                          "Trước khi sinh câu trả lời cho mỗi câu hỏi, gọi "
                          "`mo_hinh.set_adapter(chon_bo_dieu_hop(câu_hỏi))`.")
    if answer == _answers_of(model, tokenizer, [row], None, max_new_tokens)[0].strip():
        return _wrong(f"{len(bad)} câu trả lời là của mô hình cơ sở (không bộ điều hợp nào bật), ví dụ {where}.",
                      "Đừng sinh bên trong `with mo_hinh.disable_adapter():`; bật bộ điều hợp bằng `set_adapter`.")
    return _wrong(f"{len(bad)} câu trả lời không khớp câu mà bộ điều hợp của tác vụ sinh ra, ví dụ {where}.",
                  "Sinh bằng `generate(mo_hinh, tokenizer, [row[\"messages\"][:-1]], max_new_tokens=80)` sau khi "
                  "`set_adapter(...)`, và đừng sửa chuỗi trả về (bỏ `[:-1]` là đưa cả đáp án mẫu vào câu hỏi).")


def _routed_by_format(answers, questions) -> CheckResult:
    """The format-only judgement (no model to generate with): each answer has its task's format."""
    misrouted, malformed = [], []
    for i, (answer, row) in enumerate(zip(answers, questions)):
        fmt = answer_format(answer)
        if fmt == row["task"]:
            continue
        (misrouted if fmt is not None else malformed).append((i, fmt, row["task"], answer))
    if misrouted:
        i, fmt, task, answer = misrouted[0]
        return _wrong(
            f"{len(misrouted)} câu đi nhầm bộ điều hợp: câu {i} là tác vụ `{task}` nhưng câu trả lời "
            f"«{answer[:60]}» có dạng của `{fmt}`.",
            "Trước khi sinh câu trả lời cho mỗi câu hỏi, gọi `mo_hinh.set_adapter(chon_bo_dieu_hop(câu_hỏi))`.",
        )
    if malformed:
        i, _, task, answer = malformed[0]
        return _wrong(
            f"{len(malformed)} câu trả lời không có dạng của tác vụ nào, ví dụ câu {i} (`{task}`): «{answer[:60]}».",
            "Có thể chưa bật bộ điều hợp nào (đang chạy mô hình cơ sở, hoặc trong `disable_adapter()`), "
            "hoặc `max_new_tokens` quá nhỏ làm câu trả lời bị cắt.",
        )
    return _ok(f"Cả {len(answers)} câu trả lời đều có đúng dạng của tác vụ: mỗi câu đã đi đúng bộ điều hợp.")


@_never_raises
def check_weighted_adapter(model, adapter_name: str, sources, weights, rtol: float = 1e-4) -> CheckResult:
    """``adapter_name`` exists, is active, and its ΔW is exactly ``sum(w_i * ΔW_i)`` in every layer.

    ``add_weighted_adapter(..., combination_type="cat")`` gives that sum exactly; ``"svd"``
    and ``"linear"`` only approximate it. Rejects: no such adapter, the combined adapter
    not switched on, an approximate combination, and other weights than asked.
    """
    import torch

    if model is None:
        return _todo()
    if not _is_peft_model(model):
        return _wrong(f"mô hình là `{type(model).__name__}`, không có bộ điều hợp.",
                      "Dùng mô hình đã nạp hai bộ điều hợp (câu 1).")
    if adapter_name not in model.peft_config:
        return _todo(f"mô hình chưa có bộ điều hợp tên `{adapter_name}` (đang có {list(model.peft_config)})")
    if _active(model) != [adapter_name]:
        return _wrong(f"bộ điều hợp đang bật là {_active(model)}, không phải `{adapter_name}`.",
                      f"`add_weighted_adapter` chỉ tạo bộ mới; bật nó bằng `mo_hinh.set_adapter(\"{adapter_name}\")`.")
    worst, n_layers = 0.0, 0
    for _, layer in _lora_layers(model, adapter_name):
        with torch.no_grad():
            combined = layer.get_delta_weight(adapter_name).float()
            target = sum(w * layer.get_delta_weight(s).float() for s, w in zip(sources, weights) if s in layer.lora_A)
            scale = max(target.abs().max().item(), 1e-12) if torch.is_tensor(target) else 1e-12
            error = (combined - target).abs().max().item() / scale
        worst, n_layers = max(worst, error), n_layers + 1
    if n_layers == 0:
        return _wrong(f"`{adapter_name}` không gắn vào lớp nào.", "Tạo lại bằng add_weighted_adapter.")
    if worst > rtol:
        r = model.peft_config[adapter_name].r
        return _wrong(
            f"ΔW của `{adapter_name}` khác tổng {' + '.join(f'{w}·ΔW({s})' for s, w in zip(sources, weights))} "
            f"(sai số tương đối lớn nhất {worst:.2g}; hạng của bộ trộn r={r}).",
            "Kiểm tra lại trọng số (weights). combination_type=\"svd\" (mặc định) và \"linear\" chỉ xấp xỉ tổng; "
            "\"cat\" ghép A và B nên cho đúng tổng, với hạng bằng tổng các hạng.",
        )
    return _ok(f"`{adapter_name}` đang bật, và trong cả {n_layers} lớp ΔW đúng bằng tổng có trọng số của "
               f"{', '.join(sources)} (hạng r={model.peft_config[adapter_name].r}).")


def _predictions_with(model, tokenizer, dataset, adapter: str | None) -> list[str]:
    """The predictions ``evaluate_task`` gives on ``dataset`` with ``adapter`` active (None: adapters off)."""
    from ..evaluation import evaluate_task

    with _using(model, adapter):
        return evaluate_task(model, tokenizer, dataset)["predictions"]


def _which_adapter(model, tokenizer, dataset, predictions, candidates) -> str | None:
    """The first of ``candidates`` (adapter names, None = base model) whose predictions are ``predictions``."""
    for candidate in candidates:
        if list(predictions) == _predictions_with(model, tokenizer, dataset, candidate):
            return candidate
    return "?"


@_never_raises
def check_task_scores(scores, test_sets, model=None, tokenizer=None, adapter: str | None = None) -> CheckResult:
    """Per-task results of ``evaluate_task``: one per task, on the whole test set, measured WITH ``adapter``.

    ``scores`` maps task -> the dict ``evaluate_task`` returns (``accuracy``, ``predictions``...);
    ``test_sets`` maps task -> the test dataset it should have been measured on. The accuracy is
    recomputed from the predictions. With ``model``, ``tokenizer`` and ``adapter`` (the notebook passes
    them), the predictions are generated again with ``adapter`` active and must be the same, so the
    scores are those of that adapter. Rejects: a missing task, a percentage instead of a fraction,
    predictions of another set (wrong length), an accuracy that the predictions do not give, and
    scores measured with another adapter (each task's own adapter, the base model) than claimed.
    """
    from ..evaluation import task_metrics

    if scores is None:
        return _todo()
    if not isinstance(scores, dict):
        return _wrong(f"`ket_qua` phải là dict {{tác_vụ: kết quả}}, bạn đưa {type(scores).__name__}.",
                      "Ví dụ: `ket_qua = {task: evaluate_task(mo_hinh, tokenizer, TEST[task]) for task in TEST}`.")
    missing = [t for t in test_sets if t not in scores]
    if missing:
        return _wrong(f"thiếu kết quả của tác vụ {missing}.", "Đo trên tập kiểm tra của từng tác vụ.")
    for task, dataset in test_sets.items():
        result = scores[task]
        if not isinstance(result, dict) or "accuracy" not in result or "predictions" not in result:
            return _wrong(f"`ket_qua['{task}']` phải là dict trả về bởi `evaluate_task` (có accuracy, predictions).",
                          f"`ket_qua['{task}'] = evaluate_task(mo_hinh, tokenizer, TEST['{task}'])`.")
        predictions = result["predictions"]
        if len(predictions) != len(dataset):
            return _wrong(f"`{task}`: {len(predictions)} câu trả lời nhưng tập kiểm tra có {len(dataset)} câu.",
                          f"Đo trên đúng tập TEST['{task}'] của tác vụ đó.")
        accuracy = result["accuracy"]
        expected = task_metrics(task, predictions, dataset["answer"])["accuracy"]
        if abs(accuracy - expected) > 1e-9:
            hint = "Đừng tự sửa con số: lấy `accuracy` đúng từ kết quả của `evaluate_task` trên tập của tác vụ đó."
            if expected and abs(accuracy - 100 * expected) < 1e-6:
                hint = "Độ chính xác ở đây là tỉ lệ 0–1 (0.45), không phải phần trăm (45)."
            return _wrong(f"`{task}`: accuracy = {accuracy} nhưng các câu trả lời cho {expected:.2f}.", hint)
    if model is not None and adapter is not None:
        if adapter not in model.peft_config:
            return _todo(f"mô hình chưa có bộ điều hợp `{adapter}`")
        for task, dataset in test_sets.items():
            predictions = list(scores[task]["predictions"])
            if predictions == _predictions_with(model, tokenizer, dataset, adapter):
                continue
            candidates = [a for a in model.peft_config if a != adapter] + [None]
            used = _which_adapter(model, tokenizer, dataset, predictions, candidates)
            if used is None:
                problem = "đó là câu trả lời của mô hình cơ sở (mọi bộ điều hợp bị tắt)"
            elif used == "?":
                problem = "chúng không phải câu trả lời của bộ này (ô kiểm tra đã sinh lại để so)"
            else:
                problem = f"đó là câu trả lời của bộ `{used}`"
            return _wrong(f"`{task}`: các câu trả lời không được đo với bộ `{adapter}`: {problem}. "
                          f"Đang bật lúc kiểm tra: {_active(model)}.",
                          f"Gọi `mo_hinh.set_adapter(\"{adapter}\")` rồi mới `evaluate_task(...)` cho từng tác vụ; "
                          "đừng sửa danh sách `predictions`.")
    summary = ", ".join(f"{t}: {scores[t]['accuracy']:.0%}" for t in test_sets)
    which = f" với bộ `{adapter}`" if model is not None and adapter is not None else ""
    return _ok(f"Đã đo đủ các tác vụ trên đúng tập kiểm tra{which}.", f"độ chính xác {summary}.")


def _lora_state(model, adapter_name: str) -> dict:
    from peft.utils import get_peft_model_state_dict

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return get_peft_model_state_dict(model, adapter_name=adapter_name, save_embedding_layers=False)


def _shares_weights(a, b) -> bool:
    """True when two models hold the same weight tensors (one is built on the other's base model)."""
    pointers = {p.data_ptr() for p in a.parameters()}
    return any(p.data_ptr() in pointers for p in b.parameters())


@_never_raises
def check_reload_parity(result, saved_dir, reloaded, reference, adapter_name: str) -> CheckResult:
    """An adapter saved to ``saved_dir``, reloaded on a fresh base model (``reloaded``), and proven equal.

    ``reference`` is the model that holds ``adapter_name`` (maybe among others); ``result`` the
    ``check_parity(reference, reloaded, ...)`` the learner ran with ``adapter_name`` active. The check
    reads the saved files (they must hold exactly ``adapter_name``'s weights), checks ``reloaded`` is its
    own model with those weights, and recomputes the logit difference itself. Rejects: the parent folder
    of a multi-adapter save (peft writes each named adapter to a sub-folder), another adapter saved,
    the reloaded model built on the reference's (already wrapped) base model, a reloaded model
    without the adapter, a loosened tolerance, a failed or unrun parity check, and a verdict string.
    """
    import torch
    from safetensors.torch import load_file

    from ..parity import default_tolerance, max_logit_diff

    if result is None and saved_dir is None and reloaded is None:
        return _todo()
    if saved_dir is None or reloaded is None or result is None:
        missing = [n for n, v in (("thu_muc_luu", saved_dir), ("mo_hinh_nap_lai", reloaded),
                                  ("kiem_tra_nap_lai", result)) if v is None]
        return _todo(f"còn thiếu {', '.join(f'`{m}`' for m in missing)}")
    folder = Path(saved_dir)
    if not (folder / "adapter_config.json").is_file():
        subs = sorted(p.parent.name for p in folder.glob("*/adapter_config.json"))
        if subs:
            return _wrong(f"`{folder.name}` không chứa bộ điều hợp, chỉ có các thư mục con {subs}: mô hình nhiều bộ "
                          "điều hợp lưu mỗi bộ (trừ bộ tên `default`) vào một thư mục con mang tên nó.",
                          f"Trỏ `thu_muc_luu` vào thư mục con `{adapter_name}`, hoặc lưu riêng bộ đó bằng "
                          f"`save_pretrained(..., selected_adapters=[\"{adapter_name}\"])` rồi dùng thư mục con.")
        return _wrong(f"`{folder}` không phải thư mục bộ điều hợp (thiếu adapter_config.json).",
                      "Lưu bằng `mo_hinh.save_pretrained(thư_mục, selected_adapters=[...])`.")
    weights = folder / "adapter_model.safetensors"
    if not weights.is_file():
        return _wrong(f"`{folder.name}` thiếu adapter_model.safetensors.", "Lưu lại bằng `save_pretrained`.")
    on_disk = load_file(str(weights))
    want = _lora_state(reference, adapter_name)

    def same(state, other) -> bool:
        return set(state) == set(other) and all(
            torch.equal(state[k].detach().cpu().to(other[k].dtype), other[k].cpu()) for k in other)

    if not same(want, on_disk):
        others = [a for a in reference.peft_config if a != adapter_name and same(_lora_state(reference, a), on_disk)]
        problem = f"đó là trọng số của bộ `{others[0]}`" if others else "trọng số không khớp bộ nào của mô hình"
        return _wrong(f"tệp đã lưu trong `{folder.name}` không phải bộ `{adapter_name}`: {problem}.",
                      f"Lưu đúng bộ cần chia sẻ: `selected_adapters=[\"{adapter_name}\"]`.")
    if not _is_peft_model(reloaded):
        return _wrong(f"`mo_hinh_nap_lai` là `{type(reloaded).__name__}`, chưa mang bộ điều hợp nào.",
                      "`PeftModel.from_pretrained(mô_hình_cơ_sở_mới, thu_muc_luu)`.")
    if reloaded is reference or _shares_weights(reference, reloaded):
        return _wrong("`mo_hinh_nap_lai` dùng chung trọng số với `mo_hinh`: bạn nạp lại lên chính mô hình cơ sở đã bị "
                      "`PeftModel.from_pretrained` bọc tại chỗ ở câu 1, nên phép so không chứng minh được gì.",
                      "Nạp một mô hình cơ sở MỚI: `AutoModelForCausalLM.from_pretrained(BASE_PATH, dtype=DTYPE)`.")
    names = [a for a in reloaded.peft_config if same(_lora_state(reloaded, a), on_disk)]
    if not names:
        return _wrong("bộ điều hợp trong `mo_hinh_nap_lai` không phải bộ vừa lưu.",
                      "Nạp từ đúng `thu_muc_luu`.")
    bad = _parity_result(result, "kiem_tra_nap_lai")
    if bad is not None:
        return bad
    limit = default_tolerance(result.dtype)
    if result.tolerance > limit:
        return _wrong(f"ngưỡng {result.tolerance:g} lớn hơn ngưỡng mặc định {limit:g}: nới ngưỡng thì sai nào cũng qua.",
                      "Bỏ tham số `tolerance=`.")
    if result.n_prompts < 4:
        return _wrong(f"chỉ so trên {result.n_prompts} câu; cần ít nhất 4.", "Dùng `dataset=TEST[...]`.")
    if not result.passed:
        return _wrong(f"phép kiểm tra khớp không đạt: {result.verdict()}",
                      f"Trước khi so, bật đúng bộ trên mô hình tham chiếu: `mo_hinh.set_adapter(\"{adapter_name}\")`.")
    vocab = reference.config.vocab_size
    ids = torch.randint(0, vocab, (2, 12), generator=torch.Generator().manual_seed(0))
    device = next(reference.parameters()).device
    with _using(reference, adapter_name), _using(reloaded, names[0]):
        diff = max_logit_diff(reference, reloaded, ids.to(device))
    if not diff <= limit:
        return _wrong(f"ô kiểm tra tự so lại hai mô hình (bộ `{adapter_name}` bật) và thấy logits lệch {diff:.2g} "
                      f"(ngưỡng {limit:g}).",
                      "Kiểm tra mô hình cơ sở của `mo_hinh_nap_lai` (cùng BASE_PATH, cùng dtype) và thư mục đã nạp.")
    return _ok(f"Bộ `{adapter_name}` đã lưu, nạp lại trên một mô hình cơ sở mới, và khớp bản gốc; kết luận của phép "
               f"kiểm tra: «{result.verdict()}».")


_ROUTING, _COMBINED = "dinh tuyen", "tron"


@_never_raises
def check_adapter_choice(answer, combined, alone, test_sets, max_drop: float = 0.1) -> CheckResult:
    """Decide and defend: route between the two adapters, or ship the combined one? Numbers recomputed.

    ``answer`` = ``{"lựa_chọn": "định tuyến" | "trộn", "số_liệu": {task: {"riêng": acc, "trộn": acc}}}``;
    ``combined`` and ``alone`` map task -> ``evaluate_task`` results (combined adapter; each task's own
    adapter), whose accuracies are recomputed here from their predictions. "trộn" is defensible only
    when it loses at most ``max_drop`` accuracy on every task. Rejects: a number that is not the
    run's (made up, rounded to a percentage, the two columns swapped), a missing task, and a choice
    the cited numbers contradict.
    """
    from ..evaluation import task_metrics

    parsed = _decision(answer)
    if isinstance(parsed, CheckResult):
        return parsed
    choice, numbers = parsed
    if combined is None or alone is None:
        return _wrong("chưa có kết quả đo để đối chiếu.", "Chạy các ô đo `ket_qua` và `rieng` phía trên trước.")
    plain = _plain(choice)
    if plain not in (_ROUTING, _COMBINED):
        return _wrong(f"`lựa_chọn` = {choice!r}; chọn một trong \"định tuyến\" hoặc \"trộn\".",
                      "Viết đúng một trong hai lựa chọn.")
    truth = {}
    for task, dataset in test_sets.items():
        truth[task] = {key: task_metrics(task, results[task]["predictions"], dataset["answer"])["accuracy"]
                       for key, results in (("riêng", alone), ("trộn", combined))}
    for task, want in truth.items():
        cited = _field(numbers, task)
        if not isinstance(cited, dict):
            return _wrong(f"`số_liệu` thiếu tác vụ `{task}` (cần dict {{\"riêng\": ..., \"trộn\": ...}}).",
                          "Mỗi tác vụ một dict với hai độ chính xác.")
        for key, value in want.items():
            got = _number(_field(cited, key))
            if got is None:
                return _wrong(f"`số_liệu['{task}']` thiếu con số `{key}`.", "Ghi độ chính xác (tỉ lệ 0–1) của cả hai cột.")
            if _same_number(got, value, rel=0, abs_=1e-6):
                continue
            other = "trộn" if key == "riêng" else "riêng"
            if _same_number(got, 100 * value, rel=0, abs_=1e-4):
                hint = "Độ chính xác là tỉ lệ 0–1, không phải phần trăm."
            elif _same_number(got, want[other], rel=0, abs_=1e-6):
                hint = "Hai cột bị đổi chỗ: `riêng` là bộ của chính tác vụ, `trộn` là bộ ket_hop."
            else:
                hint = "Chép con số từ kết quả đo (`ket_qua[task]['accuracy']`, `rieng[task]['accuracy']`), đừng gõ tay."
            return _wrong(f"`số_liệu['{task}']['{key}']` = {got:g} không phải con số của lần chạy này.", hint)
    drops = {task: want["riêng"] - want["trộn"] for task, want in truth.items()}
    worst = max(drops, key=drops.get)
    if plain == _COMBINED and drops[worst] > max_drop:
        return _wrong(f"chính số liệu của bạn phản bác lựa chọn này: trên `{worst}`, bộ trộn kém bộ riêng "
                      f"{drops[worst]:.0%} (quá {max_drop:.0%}).",
                      "Một hệ thống phải giữ được chất lượng ở MỌI tác vụ; đọc lại hai cột của từng tác vụ.")
    reason = (f"bộ trộn mất tới {drops[worst]:.0%} trên `{worst}`" if plain == _ROUTING and drops[worst] > max_drop
              else "hai cách gần nhau trên mọi tác vụ")
    return _ok("Lựa chọn của bạn đứng vững với số liệu của bạn, đã đối chiếu với các câu trả lời đã đo.",
               f"bạn chọn «{choice}»: {reason}; " + ", ".join(f"{t}: riêng {v['riêng']:.0%}, trộn {v['trộn']:.0%}"
                                          for t, v in truth.items()) + ".")
