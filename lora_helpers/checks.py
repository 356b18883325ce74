"""Checks for the exercise notebooks: each says, in Vietnamese, whether an answer is right.

Every ``check_*`` function takes the learner's answer (plus whatever reference it needs)
and returns a :class:`CheckResult`. Shown in a notebook (the last line of a cell), the
result prints one message:

* ``✅ Đúng rồi! ...`` when the answer is right;
* ``❌ Chưa đúng: <what is wrong>`` followed by ``💡 Gợi ý: <hint>`` when it is not;
* ``⏳ Bài này chưa làm ...`` when the answer is still ``None`` (the placeholder of
  an unanswered exercise notebook), so an unanswered notebook runs top to bottom.

A check never raises on a strange answer: anything it cannot read is reported as wrong,
with what it expected. The tests in ``tests/test_checks.py`` show that every check accepts
the reference answer and rejects the usual wrong ones.
"""

from __future__ import annotations

import functools
import json
import re
import warnings
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


def _ok(text: str) -> CheckResult:
    return CheckResult(OK, f"✅ Đúng rồi! {text}")


def _wrong(problem: str, hint: str) -> CheckResult:
    return CheckResult(WRONG, f"❌ Chưa đúng: {problem}\n💡 Gợi ý: {hint}")


def _todo(what: str = "đáp án vẫn là `None`") -> CheckResult:
    return CheckResult(
        TODO,
        f"⏳ Bài này chưa làm: {what}. Viết code vào chỗ `# VIẾT CODE CỦA BẠN Ở ĐÂY` "
        "ở ô phía trên, chạy ô đó rồi chạy lại ô kiểm tra này.",
    )


def _never_raises(check):
    """A learner's odd answer must give a message, never a traceback inside the check."""

    @functools.wraps(check)
    def wrapper(*args, **kwargs):
        try:
            return check(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - any failure reading the answer is reported to the learner
            return _wrong(
                f"không đọc được đáp án của bạn ({type(exc).__name__}: {str(exc)[:200]}).",
                "Xem lại kiểu dữ liệu mà đề bài yêu cầu, rồi chạy lại ô của bạn.",
            )

    return wrapper


def _as_int(value):
    """``value`` as an int when it is a whole number (int, numpy/torch integer, 1234.0), else None."""
    if isinstance(value, bool):
        return None
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _is_peft_model(model) -> bool:
    from peft import PeftModel

    return isinstance(model, PeftModel)


def _lora_layers(model, adapter_name: str | None = None):
    """(name, module) of the LoRA layers of ``model`` (those holding ``adapter_name`` if given)."""
    from peft.tuners.lora import LoraLayer

    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and (adapter_name is None or adapter_name in module.lora_A):
            yield name, module


def _active(model) -> list[str]:
    active = getattr(model, "active_adapters", None)
    if callable(active):
        active = active()
    if isinstance(active, str):
        active = [active]
    return list(active or [])


# =============================================================== lesson 1: loading, routing, combining


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

    from .adapters import DEMO_ADAPTERS, check_adapter_dir, demo_adapter_path

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


def _routing_cases(n_per_task: int = 10):
    """(prompt text, task) pairs from the validation and test splits of every course task."""
    from .data import TASKS, make_task_splits

    cases = []
    for task in TASKS:
        splits = make_task_splits(task, n_train=1, n_val=n_per_task, n_test=n_per_task, seed=1)
        for split in ("validation", "test"):
            cases += [(row["messages"][0]["content"], task) for row in splits[split]]
    return cases


@_never_raises
def check_router(router, cases=None) -> CheckResult:
    """``router(prompt_text) -> adapter name`` sends every prompt to the adapter of its task.

    ``cases`` is a list of ``(prompt, task)``; by default prompts of both course tasks
    not shown in the notebook. Rejects: a router that always answers the same adapter,
    swapped names, an answer that is not an adapter name, and a router that crashes.
    """
    from .adapters import DEMO_ADAPTERS

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
        hint = "Nhìn vào lời dặn ở đầu câu hỏi: mỗi tác vụ có một câu mở đầu riêng."
        if len(set(choices)) == 1:
            hint = f"Hàm của bạn luôn chọn `{choices[0]}`. " + hint
        elif len(wrong) == len(cases):
            hint = "Hàm của bạn chọn ngược hẳn: đổi chỗ hai tên bộ điều hợp."
        return _wrong(
            f"{len(wrong)}/{len(cases)} câu bị gửi nhầm bộ điều hợp, ví dụ «{prompt[:80]}» "
            f"được gửi tới `{choice}` nhưng cần `{task}`.",
            hint,
        )
    return _ok(f"Hàm định tuyến chọn đúng bộ điều hợp cho cả {len(cases)} câu hỏi mới (chưa xuất hiện trong notebook).")


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


@_never_raises
def check_routed_answers(answers, questions) -> CheckResult:
    """Each answer was produced by the adapter of its question's task (judged by its format).

    ``questions`` are dataset rows (with ``task``); ``answers`` the generated strings, in
    the same order. An order must come back as JSON with keys ten/mon/so_luong/dia_chi, a
    date as ``YYYY-MM-DD``. Rejects: a question sent to the other adapter (its answer has
    the other task's format), answers of the bare base model, and a list of the wrong length.
    """
    if answers is None:
        return _todo()
    if isinstance(answers, str) or not isinstance(answers, (list, tuple)):
        return _wrong(f"`tra_loi` phải là một danh sách chuỗi, bạn đưa {type(answers).__name__}.",
                      "Tạo danh sách: một câu trả lời (chuỗi) cho mỗi câu hỏi, cùng thứ tự.")
    if len(answers) != len(questions):
        return _wrong(f"có {len(questions)} câu hỏi nhưng `tra_loi` có {len(answers)} phần tử.",
                      "Trả lời mọi câu hỏi trong CAU_HOI, mỗi câu đúng một lần, giữ nguyên thứ tự.")
    misrouted, malformed = [], []
    for i, (answer, row) in enumerate(zip(answers, questions)):
        if not isinstance(answer, str):
            return _wrong(f"phần tử {i} của `tra_loi` là {type(answer).__name__}, không phải chuỗi.",
                          "`generate(...)` trả về danh sách chuỗi; lấy từng chuỗi.")
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
    return _ok(f"Cả {len(answers)} câu trả lời đều có đúng dạng của tác vụ: mỗi câu đã đi đúng bộ điều hợp. "
               "(Đúng dạng chưa chắc đúng nội dung: độ chính xác đo riêng.)")


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
                      "Dùng mô hình đã nạp hai bộ điều hợp (bài 1).")
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
            f"(sai số tương đối lớn nhất {worst:.2g}; hạng của bộ kết hợp r={r}).",
            "Kiểm tra lại trọng số (weights). combination_type=\"svd\" (mặc định) và \"linear\" chỉ xấp xỉ tổng; "
            "\"cat\" ghép A và B nên cho đúng tổng, với hạng bằng tổng các hạng.",
        )
    return _ok(f"`{adapter_name}` đang bật, và trong cả {n_layers} lớp ΔW đúng bằng tổng có trọng số của "
               f"{', '.join(sources)} (hạng r={model.peft_config[adapter_name].r}).")


@_never_raises
def check_task_scores(scores, test_sets) -> CheckResult:
    """Per-task results of ``evaluate_task``: one per task, on the whole test set, accuracy consistent.

    ``scores`` maps task -> the dict ``evaluate_task`` returns (``accuracy``, ``predictions``...);
    ``test_sets`` maps task -> the test dataset it should have been measured on. The accuracy is
    recomputed from the predictions. Rejects: a missing task, a percentage instead of a
    fraction, predictions of another set (wrong length) and an accuracy that the predictions do not give.
    """
    from .evaluation import task_metrics

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
    summary = ", ".join(f"{t}: {scores[t]['accuracy']:.0%}" for t in test_sets)
    return _ok(f"Đã đo đủ các tác vụ trên đúng tập kiểm tra ({summary}).")


# =============================================================== lesson 2: LoRA parameters, training, ΔW


def _lora_shapes(model, config) -> list[tuple[str, int, int]]:
    """(module name, d_in, d_out) of every layer peft would adapt with ``config``, found on a meta-device copy."""
    import copy

    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.device("meta"):
            skeleton = AutoModelForCausalLM.from_config(model.config)
        peft_model = get_peft_model(skeleton, copy.deepcopy(config))
    return [(name, layer.in_features, layer.out_features) for name, layer in _lora_layers(peft_model)]


def _count_of(peft_model) -> int:
    return sum(p.numel() for n, p in peft_model.named_parameters() if "lora_" in n)


@_never_raises
def check_lora_param_count(answer, model, config) -> CheckResult:
    """The number of trainable LoRA parameters that ``config`` adds to ``model``.

    The truth is counted by peft itself (on a weightless copy of the model). A wrong number
    is compared with the usual slips to say which one it is: rank off by one, only A or only
    B counted, full ``d_in·d_out`` matrices, k_proj/v_proj taken as square (grouped-query
    attention forgotten), one layer only or a wrong number of layers, lora_alpha used as r,
    base parameters added.
    """
    if answer is None:
        return _todo()
    value = _as_int(answer)
    if value is None:
        return _wrong(f"đáp án phải là một số nguyên, bạn đưa {answer!r} ({type(answer).__name__}).",
                      "Số tham số là số nguyên, ví dụ `so_tham_so = 30 * 4 * (576 + 576)`.")
    shapes = _lora_shapes(model, config)
    r, alpha = config.r, config.lora_alpha
    truth = sum(r * (d_in + d_out) for _, d_in, d_out in shapes)
    if value == truth:
        return _ok(f"{truth:,} tham số huấn luyện được: r·(d_in + d_out) cộng trên {len(shapes)} lớp.")
    n_blocks = getattr(model.config, "num_hidden_layers", 0) or 1
    hidden = getattr(model.config, "hidden_size", None)
    per_block = truth // n_blocks
    n_base = sum(p.numel() for p in model.parameters())

    def square_kv(name, d_in, d_out):
        return d_in if name.split(".")[-1] in {"k_proj", "v_proj"} and hidden else d_out

    slips = [
        (sum((r + 1) * (i + o) for _, i, o in shapes), f"lệch hạng một đơn vị: bạn tính với r={r + 1}, cấu hình có r={r}.",
         "Dùng đúng `r` của LoraConfig."),
        (sum((r - 1) * (i + o) for _, i, o in shapes), f"lệch hạng một đơn vị: bạn tính với r={r - 1}, cấu hình có r={r}.",
         "Dùng đúng `r` của LoraConfig."),
        (sum(r * i for _, i, o in shapes), "bạn chỉ đếm ma trận A (r × d_in).",
         "Mỗi lớp có hai ma trận: A (r × d_in) và B (d_out × r): r·(d_in + d_out)."),
        (sum(r * o for _, i, o in shapes), "bạn chỉ đếm ma trận B (d_out × r).",
         "Mỗi lớp có hai ma trận: A (r × d_in) và B (d_out × r): r·(d_in + d_out)."),
        (sum(i * o for _, i, o in shapes), "đó là số tham số của chính các ma trận W (tinh chỉnh toàn bộ), không phải LoRA.",
         "LoRA thay d_in·d_out bằng r·(d_in + d_out)."),
        (sum(r * (i + square_kv(n, i, o)) for n, i, o in shapes),
         "bạn coi k_proj và v_proj là ma trận vuông như q_proj.",
         "SmolLM2 dùng grouped-query attention: k_proj, v_proj có d_out nhỏ hơn (xem kích thước đã in ở trên)."),
        (per_block, "đó là số của một khối (block) thôi.", f"Mô hình có {n_blocks} khối giống nhau: nhân lên."),
        (per_block * (n_blocks + 1), f"bạn nhân với {n_blocks + 1} khối.", f"Mô hình có đúng {n_blocks} khối."),
        (per_block * (n_blocks - 1), f"bạn nhân với {n_blocks - 1} khối.", f"Mô hình có đúng {n_blocks} khối."),
        (sum(alpha * (i + o) for _, i, o in shapes), f"bạn dùng lora_alpha={alpha} thay cho r={r}.",
         "lora_alpha chỉ là hệ số tỉ lệ (alpha/r); kích thước A, B do r quyết định."),
        (truth + n_base, "bạn cộng cả tham số của mô hình cơ sở.",
         "Mô hình cơ sở bị đóng băng (freeze): chỉ A và B là tham số huấn luyện được."),
    ]
    for slip_value, problem, hint in slips:
        if slip_value != truth and value == slip_value:
            return _wrong(f"{value:,}: {problem}", hint)
    targets = sorted({n.split(".")[-1] for n, _, _ in shapes})
    return _wrong(
        f"{value:,} chưa khớp (lệch {value - truth:+,}).",
        f"Cộng r·(d_in + d_out) trên mọi lớp được gắn LoRA ({', '.join(targets)}), trong cả {n_blocks} khối; "
        "đọc d_in, d_out của từng lớp ở ô in kích thước.",
    )


def _target_set(targets):
    if targets is None:
        return None
    if isinstance(targets, str):
        return targets
    return set(targets)


@_never_raises
def check_lora_config_spec(config, r: int, lora_alpha, target_modules) -> CheckResult:
    """A ``LoraConfig`` with the asked rank, alpha and target modules.

    Rejects: not a LoraConfig, a rank off by one (or any other), another alpha, missing or extra target modules,
    and ``"all-linear"`` where a list was asked (or the reverse).
    """
    from peft import LoraConfig

    if config is None:
        return _todo()
    if not isinstance(config, LoraConfig):
        return _wrong(f"`cau_hinh` là {type(config).__name__}, không phải LoraConfig.",
                      "`from peft import LoraConfig`; `cau_hinh = LoraConfig(r=..., lora_alpha=..., target_modules=[...])`.")
    if config.r != r:
        return _wrong(f"r={config.r}, đề bài yêu cầu r={r}.", "Đặt đúng hạng `r`.")
    if config.lora_alpha != lora_alpha:
        return _wrong(f"lora_alpha={config.lora_alpha}, đề bài yêu cầu lora_alpha={lora_alpha}.",
                      "Đề bài giữ alpha/r cố định; tính lại lora_alpha.")
    got, want = _target_set(config.target_modules), _target_set(target_modules)
    if got != want:
        if isinstance(want, str) or isinstance(got, str):
            return _wrong(f"target_modules={config.target_modules!r}, đề bài yêu cầu {target_modules!r}.",
                          "Đọc lại đề: một danh sách tên lớp cụ thể, hay \"all-linear\".")
        missing, extra = sorted(want - got), sorted(got - want)
        parts = ([f"thiếu {missing}"] if missing else []) + ([f"thừa {extra}"] if extra else [])
        return _wrong(f"target_modules {', '.join(parts)}.",
                      f"Đề bài yêu cầu đúng các lớp {sorted(want)}.")
    return _ok(f"LoraConfig(r={r}, lora_alpha={lora_alpha}, target_modules={sorted(want) if isinstance(want, set) else want!r}).")


@_never_raises
def check_trained_lora(trainer, r: int, target_modules, steps: int) -> CheckResult:
    """A trainer that trained a LoRA adapter with the asked rank and targets for ``steps`` steps.

    Rejects: full finetuning (no adapter), an adapter with another rank or other layers,
    and a trainer built but not trained (``lora_B`` still zero, no steps done).
    """
    if trainer is None:
        return _todo()
    model = getattr(trainer, "model", None)
    state = getattr(trainer, "state", None)
    if model is None or state is None:
        return _wrong(f"`trainer_cua_ban` là {type(trainer).__name__}, không phải một SFTTrainer.",
                      "Tạo `SFTTrainer(model=..., args=..., train_dataset=..., processing_class=..., peft_config=cau_hinh)`.")
    if not _is_peft_model(model):
        return _wrong("mô hình trong trainer không có bộ điều hợp LoRA: đây là tinh chỉnh toàn bộ.",
                      "Truyền `peft_config=cau_hinh` vào SFTTrainer.")
    config = next(iter(model.peft_config.values()))
    if config.r != r:
        return _wrong(f"bộ điều hợp đã huấn luyện có r={config.r}, cần r={r}.", "Truyền đúng `cau_hinh` của bạn.")
    got, want = _target_set(config.target_modules), _target_set(target_modules)
    if got != want:
        return _wrong(f"bộ điều hợp gắn vào {sorted(got) if isinstance(got, set) else got}, cần {sorted(want) if isinstance(want, set) else want}.",
                      "Truyền đúng `cau_hinh` của bạn vào `peft_config`.")
    if state.global_step != steps:
        return _wrong(f"trainer đã chạy {state.global_step} bước, đề bài yêu cầu {steps}.",
                      f"Đặt `max_steps={steps}` và gọi `trainer_cua_ban.train()`.")
    trained = any(bool((layer.lora_B[a].weight != 0).any()) for _, layer in _lora_layers(model)
                  for a in layer.lora_B)
    if not trained:
        return _wrong("mọi ma trận B vẫn bằng 0: bộ điều hợp chưa học gì.", "Gọi `trainer_cua_ban.train()`.")
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return _ok(f"Đã huấn luyện {steps} bước một bộ điều hợp r={r} ({n:,} tham số huấn luyện được).")


@_never_raises
def check_curve_comparison(answer, histories) -> CheckResult:
    """``answer`` names the run whose last training loss is the lowest.

    ``histories`` maps a run label to ``training.loss_history(trainer)``. Rejects a label
    that is not a run and the run that ended higher.
    """
    if answer is None:
        return _todo()
    if not histories:
        return _wrong("chưa có đường mất mát nào để so sánh.", "Chạy các ô huấn luyện phía trên trước.")
    final = {label: h["train"][-1][1] for label, h in histories.items() if h.get("train")}
    if answer not in final:
        return _wrong(f"{answer!r} không phải tên một lần chạy; các lần chạy: {list(final)}.",
                      "Trả lời bằng đúng một khoá của `lich_su`.")
    best = min(final, key=final.get)
    if answer != best:
        return _wrong(
            f"loss huấn luyện ở bước cuối của `{answer}` là {final[answer]:.3f}, cao hơn `{best}` ({final[best]:.3f}).",
            "Đọc giá trị cuối của mỗi đường (`lich_su[tên]['train'][-1]`), hoặc nhìn đồ thị (trục log).",
        )
    return _ok(f"`{best}` kết thúc với loss thấp hơn ({final[best]:.3f} so với "
               f"{', '.join(f'{v:.3f}' for k, v in final.items() if k != best)}).")


def _close(a, b, rtol: float = 1e-4) -> bool:
    import torch

    if not (torch.is_tensor(a) and torch.is_tensor(b)) or a.shape != b.shape:
        return False
    a, b = a.detach().float().cpu(), b.detach().float().cpu()
    scale = max(b.abs().max().item(), 1e-12)
    return (a - b).abs().max().item() <= rtol * scale


@_never_raises
def check_delta_weight(delta, layer, adapter_name: str = "default") -> CheckResult:
    """ΔW = (lora_alpha / r) · B · A of one LoRA layer, shape ``d_out × d_in`` like W.

    Rejects: the scaling forgotten or inverted, A·B in the wrong order (or transposed), another layer's ΔW.
    """
    import torch

    if delta is None:
        return _todo()
    if not torch.is_tensor(delta):
        return _wrong(f"`delta_w` phải là một tensor, bạn đưa {type(delta).__name__}.",
                      "Dùng các tensor `lop.lora_A[...].weight`, `lop.lora_B[...].weight` và phép nhân `@`.")
    with torch.no_grad():
        A = layer.lora_A[adapter_name].weight.float()
        B = layer.lora_B[adapter_name].weight.float()
        scaling = layer.scaling[adapter_name]
        truth = layer.get_delta_weight(adapter_name).float()
    W = layer.base_layer.weight
    if delta.shape != truth.shape:
        if delta.shape == truth.T.shape:
            return _wrong(f"kích thước {tuple(delta.shape)} bị chuyển vị; ΔW phải cùng kích thước với W {tuple(W.shape)}.",
                          "ΔW = B @ A (B: d_out × r, A: r × d_in).")
        if delta.shape == (A.shape[0], A.shape[0]):
            return _wrong(f"kích thước {tuple(delta.shape)}: bạn tính A @ B (r × r).",
                          "Thứ tự nhân ngược lại: ΔW = B @ A, kích thước d_out × d_in như W.")
        return _wrong(f"kích thước {tuple(delta.shape)}, cần {tuple(W.shape)} (giống W).", "ΔW = (alpha/r) · B @ A.")
    if _close(delta, truth):
        return _ok(f"ΔW = (alpha/r)·B·A, kích thước {tuple(truth.shape)}, hệ số alpha/r = {scaling:g}.")
    if _close(delta, B @ A):
        return _wrong(f"bạn quên hệ số tỉ lệ alpha/r = {scaling:g}.", "Nhân B @ A với `lop.scaling[tên_bộ_điều_hợp]`.")
    if scaling and _close(delta, (B @ A) / scaling):
        return _wrong("bạn chia cho alpha/r thay vì nhân (dùng r/alpha).", "ΔW = (lora_alpha / r) · B @ A.")
    if _close(delta, W.float()) or _close(delta, W.float() + truth):
        return _wrong("đó là W (hoặc W + ΔW), không phải riêng ΔW.", "Chỉ tính phần LoRA: (alpha/r) · B @ A.")
    return _wrong("giá trị ΔW chưa khớp (đúng kích thước nhưng sai số).",
                  "Kiểm tra bạn lấy A, B của đúng lớp và đúng bộ điều hợp, rồi ΔW = (alpha/r) · B @ A.")


@_never_raises
def check_lora_output(y, layer, x, adapter_name: str = "default") -> CheckResult:
    """``y`` equals the LoRA layer's output ``W x + (alpha/r) · B A x`` on input ``x``.

    Rejects: the base output only (LoRA part missing), the LoRA part only, the scaling forgotten.
    """
    import torch

    if y is None:
        return _todo()
    if not torch.is_tensor(y):
        return _wrong(f"`y_tu_tinh` phải là tensor, bạn đưa {type(y).__name__}.", "Tính bằng các phép nhân ma trận torch.")
    with torch.no_grad():
        truth = layer(x)
        base = layer.base_layer(x)
        A = layer.lora_A[adapter_name].weight
        B = layer.lora_B[adapter_name].weight
        lora_part = x @ A.T @ B.T
    if y.shape != truth.shape:
        return _wrong(f"kích thước {tuple(y.shape)}, cần {tuple(truth.shape)}.",
                      "Với x có dạng (..., d_in): y = x @ W.T + scaling · (x @ A.T @ B.T).")
    if _close(y, truth):
        return _ok("y = W·x + (alpha/r)·B·A·x khớp đầu ra của lớp LoRA.")
    if _close(y, base):
        return _wrong("đó mới là đầu ra của W (lớp gốc), thiếu phần LoRA.", "Cộng thêm scaling · (x @ A.T @ B.T).")
    if _close(y, base + lora_part):
        return _wrong("bạn quên hệ số alpha/r ở phần LoRA.", "Nhân phần x @ A.T @ B.T với `lop.scaling[...]`.")
    if _close(y, truth - base):
        return _wrong("đó chỉ là phần LoRA, thiếu W·x.", "Cộng thêm đầu ra của lớp gốc `lop.base_layer(x)`.")
    return _wrong("giá trị chưa khớp đầu ra của lớp.", "y = lop.base_layer(x) + lop.scaling[...] * (x @ A.T @ B.T).")


# =============================================================== lesson 3: merging and parity


def _param_dtype(model):
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype
    return None


def _short_name(name: str) -> str:
    """A LoRA layer's name inside a PeftModel -> the same layer's name in the plain model."""
    return name[len("base_model.model."):] if name.startswith("base_model.model.") else name


@_never_raises
def check_merged_model(merged, adapter_model, adapter_name: str | None = None) -> CheckResult:
    """``merged`` is ``adapter_model`` merged: plain layers whose weights are ``W + (alpha/r)·B·A``.

    Compared layer by layer with the (still unmerged) reference ``adapter_model``. Rejects: a
    model that still has LoRA layers (``merge_and_unload`` forgotten), the result of ``unload()``
    (the base weights, ΔW dropped), a merge in another precision (dtype), another adapter merged,
    and a reference that was itself merged in place (nothing left to compare with).
    """
    import torch

    if merged is None:
        return _todo()
    if _is_peft_model(merged) or any(True for _ in _lora_layers(merged)):
        return _wrong("mô hình vẫn còn các lớp LoRA: nó chưa được hợp nhất.",
                      "Gọi `.merge_and_unload()` trên mô hình có bộ điều hợp; kết quả là một mô hình transformers thường.")
    reference = list(_lora_layers(adapter_model))
    if not reference:
        return _wrong("mô hình tham chiếu `mo_hinh_bo_dieu_hop` không còn lớp LoRA nào: có lẽ bạn đã hợp nhất "
                      "tại chỗ chính nó (merge_and_unload sửa mô hình tại chỗ).",
                      "Chạy lại ô chuẩn bị, rồi hợp nhất một mô hình *khác*: nạp mô hình cơ sở mới + bộ điều hợp, "
                      "hoặc `merge_checked(mo_hinh_bo_dieu_hop, copy=True)`.")
    name = adapter_name or _active(adapter_model)[0]
    want_dtype, got_dtype = _param_dtype(adapter_model), _param_dtype(merged)
    if got_dtype != want_dtype:
        return _wrong(f"mô hình hợp nhất ở {str(got_dtype).replace('torch.', '')}, còn tham chiếu ở "
                      f"{str(want_dtype).replace('torch.', '')}.",
                      "Hợp nhất ở đúng độ chính xác số (dtype) của mô hình tham chiếu; đổi kiểu (nếu cần) sau khi hợp nhất.")
    worst, worst_name, base_like = 0.0, None, 0
    for full_name, layer in reference:
        try:
            target = merged.get_submodule(_short_name(full_name))
        except AttributeError:
            return _wrong(f"mô hình hợp nhất không có lớp `{_short_name(full_name)}`.",
                          "Hợp nhất đúng mô hình cơ sở mà bộ điều hợp được nạp lên.")
        with torch.no_grad():
            delta = layer.get_delta_weight(name).float().cpu()
            W = layer.get_base_layer().weight.float().cpu()
            got = target.weight.float().cpu()
            size = max(delta.abs().max().item(), 1e-12)
            error = (got - (W + delta)).abs().max().item() / size
            if (got - W).abs().max().item() / size < 1e-3:
                base_like += 1
        if error > worst:
            worst, worst_name = error, _short_name(full_name)
    if base_like == len(reference):
        return _wrong("trọng số giống hệt mô hình cơ sở: ΔW chưa được cộng vào (đó là kết quả của `unload()`, "
                      "hoặc mô hình cơ sở chưa gắn bộ điều hợp).",
                      "`unload()` gỡ bộ điều hợp và bỏ ΔW; `merge_and_unload()` mới cộng ΔW vào W.")
    if worst > 1e-3:
        return _wrong(f"trọng số lớp `{worst_name}` khác W + (alpha/r)·B·A (sai lệch {worst:.2g} lần độ lớn của ΔW).",
                      "Hợp nhất đúng bộ điều hợp của mô hình tham chiếu, đúng một lần, với hệ số alpha/r.")
    return _ok(f"Mô hình không còn lớp LoRA, và ở cả {len(reference)} lớp trọng số đúng bằng W + (alpha/r)·B·A.")


def _parity_result(result, variable: str):
    from .parity import ParityResult

    if isinstance(result, ParityResult):
        return None
    hint = ("Lưu chính kết quả của `check_parity(...)` (một ParityResult), không phải chuỗi `.verdict()` "
            "hay một giá trị True/False.")
    return _wrong(f"`{variable}` là {type(result).__name__}, không phải kết quả của `check_parity`.", hint)


@_never_raises
def check_drift_detected(result, merged_low) -> CheckResult:
    """A parity check at the fp32 tolerance that catches a merge done in a low precision.

    ``merged_low`` is the model merged in bf16/fp16, ``result`` what ``check_parity(reference_fp32,
    merged_low, ...)`` returned. Rejects: a merge done in fp32 after all (nothing to detect), a
    tolerance loosened to the low precision's (the drift is then hidden), a reference that is not
    fp32, a check that passed, and a verdict string instead of the result.
    """
    import torch

    from .parity import default_tolerance

    if result is None:
        return _todo()
    bad = _parity_result(result, "kiem_tra_dtype")
    if bad is not None:
        return bad
    if merged_low is None:
        return _todo()
    low = _param_dtype(merged_low)
    if low not in (torch.bfloat16, torch.float16):
        return _wrong(f"`mo_hinh_sai_dtype` ở {str(low).replace('torch.', '')}: đó không phải một lần hợp nhất sai dtype.",
                      "Nạp mô hình cơ sở với `dtype=torch.bfloat16` (hoặc float16), gắn bộ điều hợp, rồi hợp nhất.")
    if result.dtype != "float32":
        return _wrong(f"mô hình thứ nhất của phép so sánh ở {result.dtype}; nó phải là tham chiếu float32 + bộ điều hợp.",
                      "`check_parity(mo_hinh_bo_dieu_hop, mo_hinh_sai_dtype, tokenizer, dataset=TEST)`: tham chiếu đứng trước.")
    reference_tolerance = default_tolerance(torch.float32)
    if result.tolerance > reference_tolerance:
        return _wrong(f"bạn nới ngưỡng lên {result.tolerance:g} (ngưỡng của tham chiếu fp32 là {reference_tolerance:g}): "
                      "như vậy chính độ lệch cần phát hiện bị che đi.",
                      "Giữ ngưỡng mặc định của tham chiếu (bỏ `tolerance=`): câu hỏi là bản hợp nhất có *giống* bản đã kiểm tra không.")
    if result.passed:
        return _wrong("phép kiểm tra vẫn báo KHỚP, nên nó chưa phát hiện được gì.",
                      "So tham chiếu float32 với *đúng* mô hình đã hợp nhất ở bf16/fp16.")
    return _ok(f"Phép kiểm tra khớp đã bắt được lần hợp nhất ở {str(low).replace('torch.', '')}; "
               f"kết luận của nó: «{result.verdict()}».")


def _loosened_parity(result, min_prompts: int):
    """A CheckResult when a parity result used a tolerance above fp32's default or too few prompts, else None."""
    from .parity import default_tolerance

    limit = default_tolerance("float32")
    if result.tolerance > limit:
        return _wrong(f"ngưỡng {result.tolerance:g} lớn hơn ngưỡng fp32 mặc định {limit:g}: nới ngưỡng thì sai nào cũng qua.",
                      "Bỏ tham số `tolerance=` để dùng ngưỡng mặc định.")
    if result.n_prompts < min_prompts:
        return _wrong(f"chỉ so trên {result.n_prompts} câu; cần ít nhất {min_prompts}.", "Dùng `dataset=TEST`.")
    return None


@_never_raises
def check_parity_passed(result, min_prompts: int = 4) -> CheckResult:
    """A parity check that passed at the fp32 tolerance, on at least ``min_prompts`` prompts.

    Rejects: a failed check, a loosened tolerance, too few prompts, and a verdict string instead of the result.
    """
    if result is None:
        return _todo()
    bad = _parity_result(result, "kiem_tra_tay")
    if bad is not None:
        return bad
    bad = _loosened_parity(result, min_prompts)
    if bad is not None:
        return bad
    if not result.passed:
        return _wrong(f"phép kiểm tra không đạt: {result.verdict()}",
                      "So ΔW của bạn với `lop.get_delta_weight(...)` từng lớp: có quên lớp nào, hệ số alpha/r, "
                      "hay cộng hai lần không?")
    return _ok(f"Bản hợp nhất khớp mô hình tham chiếu; kết luận của phép kiểm tra: «{result.verdict()}».")


# =============================================================== lesson 4: OLoRA (QR initialisation, conversion)


def _is_olora(config) -> bool:
    return str(getattr(config, "init_lora_weights", "")).lower() == "olora"


def _adapter_config(model):
    """The LoraConfig of the active (else first) adapter of a PeftModel."""
    active = _active(model)
    name = active[0] if active and active[0] in model.peft_config else next(iter(model.peft_config))
    return model.peft_config[name]


@_never_raises
def check_olora_init(A, B, shifted, weight, r: int, lora_alpha) -> CheckResult:
    """OLoRA's initialisation of one weight by hand: ``A = R[:r]``, ``B = Q[:, :r]``, ``W' = W - (alpha/r)·B·A``.

    ``weight`` is the layer's original weight (``d_out × d_in``, left untouched); the reference is
    :func:`lora_helpers.olora.olora_factors` (peft's own steps: QR in fp32). Rejects: A and B
    swapped, A or B transposed, the full Q or R kept, r+1 (or r-1) rows/columns, rows of Q or
    columns of R taken instead of columns of Q / rows of R, no shift (``W' = W``), the shift with
    the wrong sign, the scaling forgotten (s = 1) or inverted (r/alpha), and the layer's weight
    shifted in place.
    """
    import torch

    from .olora import olora_factors

    named = (("A", A), ("B", B), ("W_dich", shifted))
    missing = [f"`{n}`" for n, v in named if v is None]
    if len(missing) == len(named):
        return _todo()
    if missing:
        return _todo(f"{', '.join(missing)} vẫn là `None`")
    for name, value in named:
        if not torch.is_tensor(value):
            return _wrong(f"`{name}` phải là một tensor, bạn đưa {type(value).__name__}.",
                          "Tính `Q, R = torch.linalg.qr(W.float())`, rồi cắt lát (slicing) Q và R.")
    if shifted is weight or (shifted.device == weight.device and shifted.data_ptr() == weight.data_ptr()):
        return _wrong("`W_dich` dùng chung bộ nhớ với trọng số của lớp: bạn đã dịch W *tại chỗ* (phép `-=` trên "
                      "chính `lop.weight`), nên mô hình gốc cũng bị sửa.",
                      "Chạy lại ô chuẩn bị, rồi làm trên bản sao `W` (đã `.clone()`): `W_dich = W - s * B @ A` "
                      "tạo một tensor mới.")
    scaling = lora_alpha / r
    truth = olora_factors(weight.detach(), r, scaling)      # QR on the weight's own device, as peft does
    for field in ("Q", "R", "A", "B", "shifted"):
        setattr(truth, field, getattr(truth, field).float().cpu())
    W = weight.detach().float().cpu()
    a, b = A.detach().float().cpu(), B.detach().float().cpu()
    d_out, d_in = W.shape
    want_a, want_b = (r, d_in), (d_out, r)
    qr_hint = ("Với `Q, R = torch.linalg.qr(W.float())`: `B = Q[:, :r]` (r cột đầu của Q, "
               f"{d_out} × r) và `A = R[:r]` (r hàng đầu của R, r × {d_in}).")

    # --- A and B
    if _close(a, truth.B) and _close(b, truth.A):
        return _wrong("A và B bị đổi chỗ: `A` của bạn là Q[:, :r], `B` là R[:r].",
                      "ΔW = B·A với B (d_out × r) lấy từ Q và A (r × d_in) lấy từ R. " + qr_hint)
    if _close(a, truth.A.T) or _close(b, truth.B.T):
        which = "A" if _close(a, truth.A.T) else "B"
        return _wrong(f"`{which}` bị chuyển vị: kích thước {tuple((a if which == 'A' else b).shape)}, cần "
                      f"{want_a if which == 'A' else want_b}.", qr_hint)
    if tuple(a.shape) == tuple(truth.R.shape) or tuple(b.shape) == tuple(truth.Q.shape):
        which = "A = R" if tuple(a.shape) == tuple(truth.R.shape) else "B = Q"
        return _wrong(f"bạn giữ nguyên cả ma trận ({which}, kích thước {tuple(truth.R.shape if which[0] == 'A' else truth.Q.shape)}); "
                      f"OLoRA chỉ giữ r = {r} thành phần đầu.", qr_hint)
    for name, got, rows in (("A", a, True), ("B", b, False)):
        n = got.shape[0] if rows else got.shape[-1]
        same_other = got.ndim == 2 and (got.shape[1] == d_in if rows else got.shape[0] == d_out)
        if same_other and n in (r - 1, r + 1):
            part = "hàng" if rows else "cột"
            return _wrong(f"`{name}` có {n} {part}, cần đúng r = {r} {part} (lệch một).",
                          "`R[:r]` lấy các hàng 0..r−1, tức đúng r hàng; `Q[:, :r]` lấy đúng r cột. " + qr_hint)
    if _close(b, truth.Q[:r]) or _close(a, truth.R[:, :r]):
        return _wrong("bạn lấy nhầm chiều: hàng của Q hoặc cột của R.",
                      "B lấy r cột đầu của Q (`Q[:, :r]`), A lấy r hàng đầu của R (`R[:r]`). " + qr_hint)
    if tuple(a.shape) != want_a or tuple(b.shape) != want_b:
        return _wrong(f"kích thước A {tuple(a.shape)}, B {tuple(b.shape)}; cần A {want_a}, B {want_b}.", qr_hint)
    if not (_close(a, truth.A) and _close(b, truth.B)):
        if _close(b @ a, truth.B @ truth.A):
            return _wrong("tích B·A đúng nhưng dấu của từng cột/hàng khác của peft (một phân rã QR khác).",
                          "Dùng đúng `torch.linalg.qr` trên W ở float32, như peft (`LoraLayer.olora_init`).")
        return _wrong("A, B đúng kích thước nhưng sai giá trị.",
                      "Phân rã chính trọng số W của lớp (ở float32), không phải một ma trận khác. " + qr_hint)

    # --- the shifted weight
    if tuple(shifted.shape) != tuple(W.shape):
        return _wrong(f"`W_dich` có kích thước {tuple(shifted.shape)}, cần {tuple(W.shape)} như W.",
                      "W' = W − s·(B @ A), với s = lora_alpha / r.")
    got = shifted.detach().float().cpu()
    BA = truth.B @ truth.A
    if _close(got, truth.shifted):
        return _ok(f"A = R[:r] ({r} × {d_in}), B = Q[:, :r] ({d_out} × {r}), W' = W − {scaling:g}·B·A: "
                   "khớp đúng phép khởi tạo OLoRA của peft.")
    slips = [
        (W, "`W_dich` bằng W: bạn chưa dịch trọng số.",
         "OLoRA trừ khỏi W đúng phần mà nhánh bộ điều hợp cộng vào: W' = W − s·B·A."),
        (W + scaling * BA, "dịch sai dấu: bạn cộng s·B·A vào W.",
         "Đầu ra ở bước 0 phải không đổi: W'x + s·BAx = Wx, nên W' = W − s·B·A."),
        (W - BA, f"bạn quên hệ số tỉ lệ s = lora_alpha / r = {scaling:g} (đã dùng s = 1).",
         "Nhánh bộ điều hợp cộng s·B·A, nên phần trừ khỏi W cũng là s·B·A."),
        (W - BA / scaling, "bạn dùng r / lora_alpha thay cho lora_alpha / r.",
         f"s = lora_alpha / r = {scaling:g}."),
    ]
    for value, problem, hint in slips:
        if _close(got, value):
            return _wrong(problem, hint)
    return _wrong("`W_dich` đúng kích thước nhưng sai giá trị.", "W' = W − (lora_alpha / r) · (B @ A), tính ở float32.")


@_never_raises
def check_shifted_layer_count(answer, peft_model, original, r: int | None = None, target_modules=None) -> CheckResult:
    """``answer`` is the number of base layers whose weight OLoRA shifted in ``peft_model``.

    Recomputed with :func:`lora_helpers.olora.base_weight_changes` against ``original``, a
    separately loaded copy of the base model. Rejects: a peft model that is not OLoRA (ordinary
    LoRA shifts nothing), another rank or other target modules than asked, an ``original`` that
    was itself wrapped by ``get_peft_model`` (modified in place: the comparison then gives 0),
    the answer 0, the count of one layer type only, the count of every linear layer
    (``all-linear``), a doubled count, and an answer that is not a whole number.
    """
    import torch

    from .olora import base_weight_changes

    if answer is None or peft_model is None or original is None:
        return _todo()
    if not _is_peft_model(peft_model):
        return _wrong(f"`mo_hinh_olora` là `{type(peft_model).__name__}`, chưa có bộ điều hợp.",
                      "Tạo nó bằng `get_peft_model(load_base(), LoraConfig(..., init_lora_weights=\"olora\"))`.")
    config = _adapter_config(peft_model)
    if not _is_olora(config):
        return _wrong(f"`mo_hinh_olora` có `init_lora_weights={config.init_lora_weights!r}`: đó là LoRA thường "
                      "(A ngẫu nhiên, B = 0), nó không dịch lớp nào nên chẳng có gì để đếm.",
                      "Thêm `init_lora_weights=\"olora\"` vào LoraConfig.")
    if r is not None and config.r != r:
        return _wrong(f"bộ điều hợp có r={config.r}, đề bài yêu cầu r={r}.", "Dùng đúng LoraConfig của đề bài.")
    if target_modules is not None and _target_set(config.target_modules) != _target_set(target_modules):
        got = config.target_modules if isinstance(config.target_modules, str) else sorted(config.target_modules)
        want = target_modules if isinstance(target_modules, str) else sorted(target_modules)
        return _wrong(f"bộ điều hợp gắn vào {got}, đề bài yêu cầu {want}.",
                      "Dùng đúng `target_modules` của đề bài.")
    if any(True for _ in _lora_layers(original)) or _is_peft_model(original):
        return _wrong("`mo_hinh_goc` không còn là mô hình gốc: nó đã bị bọc bộ điều hợp. `get_peft_model` sửa tại chỗ "
                      "mô hình bạn truyền vào (gắn lớp LoRA và, với OLoRA, dịch W ngay trong đối tượng đó), nên so với "
                      "nó thì mọi lớp đều \"không đổi\".",
                      "Chạy lại ô chuẩn bị để có `mo_hinh_goc` nguyên vẹn, rồi truyền vào get_peft_model một mô hình "
                      "mới: `get_peft_model(load_base(), ...)`.")
    value = _as_int(answer)
    if value is None:
        return _wrong(f"`so_lop_bi_dich` phải là một số nguyên (số lớp), bạn đưa {answer!r}.",
                      "Dùng một biến đếm: bắt đầu từ 0 và `+= 1` mỗi khi trọng số cơ sở của một lớp khác bản gốc.")
    changes = base_weight_changes(original, peft_model)
    truth, n_layers = changes["n_changed"], changes["n_layers"]
    if value == truth:
        return _ok(f"{truth}/{n_layers} lớp được gắn bộ điều hợp có trọng số cơ sở bị dịch; "
                   "các lớp không gắn bộ điều hợp giữ nguyên.")
    per_type: dict[str, int] = {}
    for name, _ in _lora_layers(peft_model):
        per_type[name.split(".")[-1]] = per_type.get(name.split(".")[-1], 0) + 1
    n_linear = sum(1 for name, m in original.named_modules()
                   if isinstance(m, torch.nn.Linear) and not name.endswith("lm_head"))
    if value == 0:
        return _wrong("0 lớp: bạn đang so trọng số đã bị dịch với chính nó (hai biến trỏ tới cùng một mô hình, hoặc cả hai "
                      "trọng số đều lấy từ `mo_hinh_olora`).",
                      "So `lop.base_layer.weight` của từng lớp LoRA trong `mo_hinh_olora` với `weight` của lớp cùng tên "
                      "trong `mo_hinh_goc` (nạp riêng, chưa bao giờ đưa vào get_peft_model).")
    if value in per_type.values() and len(per_type) > 1:
        return _wrong(f"{value} lớp: bạn chỉ đếm một loại lớp, trong khi bộ điều hợp gắn vào {sorted(per_type)}.",
                      "Duyệt mọi module có `lora_A` (cả q_proj lẫn v_proj của mọi khối).")
    if value == n_linear and n_linear != truth:
        return _wrong(f"{value} lớp: đó là mọi lớp tuyến tính của mô hình; chỉ những lớp được gắn bộ điều hợp mới bị dịch.",
                      "Chỉ xét các module có `lora_A` (các lớp trong `target_modules`).")
    if value == 2 * truth:
        return _wrong(f"{value} lớp: bạn đếm mỗi lớp hai lần (ví dụ đếm cả lora_A và lora_B, hoặc hai lần duyệt).",
                      "Đếm theo lớp: một lần cho mỗi module có `lora_A`.")
    return _wrong(f"{value} lớp chưa đúng.",
                  "Với mỗi module có `lora_A` trong `mo_hinh_olora`, so `base_layer.weight` với `weight` của lớp cùng tên "
                  "trong `mo_hinh_goc` (`torch.equal`), đếm những lớp khác nhau.")


def _converted_delta_is_zero(A, B) -> bool:
    """A converted adapter ``A' = [A; A0]``, ``B' = [B, -B0]`` whose ΔW = B·A − B0·A0 vanishes (A0 = A, B0 = B)."""
    half = A.shape[0] // 2
    A, B = A.detach().float().cpu(), B.detach().float().cpu()
    trained = B[:, :half] @ A[:half]
    delta = trained + B[:, half:] @ A[half:]
    return delta.abs().max().item() <= 1e-5 * max(trained.abs().max().item(), 1e-12)


def _lora_weight_pairs(state: dict):
    """(name, A, B) for every LoRA layer of an adapter state dict (as saved in adapter_model.safetensors)."""
    for key in sorted(state):
        if ".lora_A." in key:
            other = key.replace(".lora_A.", ".lora_B.")
            if other in state:
                yield key.split(".lora_A.")[0], state[key], state[other]


@_never_raises
def check_olora_conversion(converted_dir, r: int, lora_alpha, target_modules=None) -> CheckResult:
    """``converted_dir`` holds an OLoRA adapter converted to ordinary LoRA, trained after its initialisation was saved.

    peft's ``save_pretrained(dir, path_initial_model_for_weight_conversion=init_dir)`` writes
    ``r = 2r``, ``lora_alpha = 2·alpha`` (same scaling) and ``init_lora_weights: true``, with
    ``A' = [A; A0]`` and ``B' = [B, -B0]``. Rejects: a directory not written yet (reported as not
    done), an adapter saved without conversion (``r`` and ``init_lora_weights: "olora"``), a rank
    or alpha not doubled, other target modules than asked, and a conversion whose initial adapter
    was saved after training (or never trained): then ``A0 = A``, ``B0 = B`` and ΔW = 0 in every layer.
    """
    from pathlib import Path

    import torch
    from safetensors.torch import load_file

    from .adapters import display_path

    if converted_dir is None:
        return _todo()
    path = Path(converted_dir)
    config_file = path / "adapter_config.json"
    if not config_file.is_file():
        return _todo(f"chưa có bộ điều hợp nào trong `{display_path(path)}` (bản chuyển đổi chưa được lưu)")
    cfg = json.loads(config_file.read_text(encoding="utf-8"))
    got_r, got_alpha, init = cfg.get("r"), cfg.get("lora_alpha"), cfg.get("init_lora_weights")
    save_hint = ("Lưu bằng `mo_hinh_huan_luyen.save_pretrained(str(CONVERTED_DIR), "
                 "path_initial_model_for_weight_conversion=str(INIT_DIR))`, với INIT_DIR là bản lưu trước khi huấn luyện.")
    if str(init).lower() == "olora":
        return _wrong(f"`adapter_config.json` vẫn ghi `init_lora_weights: \"olora\"` và r = {got_r}: đây là bộ điều hợp "
                      "lưu thường, chưa chuyển đổi. Nạp nó lên mô hình cơ sở, peft sẽ tính lại QR và dịch trọng số cơ sở lần nữa.",
                      save_hint)
    if got_r == r:
        return _wrong(f"r = {got_r}: hạng chưa được nhân đôi, nên đây không phải bản chuyển đổi (bản chuyển đổi ghép "
                      f"[A; A₀] và [B, −B₀], hạng 2r = {2 * r}).", save_hint)
    if got_r != 2 * r:
        return _wrong(f"r = {got_r}, bản chuyển đổi của một bộ điều hợp r = {r} phải có r = {2 * r}.",
                      f"Tạo bộ điều hợp OLoRA với r = {r} như đề bài, rồi chuyển đổi khi lưu.")
    if got_alpha != 2 * lora_alpha:
        return _wrong(f"lora_alpha = {got_alpha}, cần {2 * lora_alpha}: peft nhân đôi cả alpha để giữ nguyên alpha/r.",
                      f"Tạo bộ điều hợp với lora_alpha = {lora_alpha} như đề bài; đừng sửa adapter_config.json bằng tay.")
    if init is not True:
        return _wrong(f"`init_lora_weights` = {init!r}, bản chuyển đổi phải ghi `true` (nạp như LoRA thường).", save_hint)
    if target_modules is not None and _target_set(cfg.get("target_modules")) != _target_set(target_modules):
        return _wrong(f"bộ điều hợp gắn vào {cfg.get('target_modules')}, đề bài yêu cầu {sorted(_target_set(target_modules))}.",
                      "Dùng đúng `target_modules` của đề bài.")
    weights = path / "adapter_model.safetensors"
    if not weights.is_file():
        return _wrong(f"`{display_path(path)}` không có `adapter_model.safetensors`.", save_hint)
    n_layers = n_zero = 0
    for _, A, B in _lora_weight_pairs(load_file(str(weights))):
        if A.shape[0] != 2 * r or B.shape[1] != 2 * r:
            return _wrong(f"ma trận A có {A.shape[0]} hàng, B có {B.shape[1]} cột; bản chuyển đổi cần {2 * r}.", save_hint)
        n_layers += 1
        n_zero += _converted_delta_is_zero(A, B)
    if n_layers == 0:
        return _wrong("tệp trọng số không có ma trận lora_A/lora_B nào.", save_hint)
    if n_zero == n_layers:
        return _wrong(f"ở cả {n_layers} lớp, ΔW của bản chuyển đổi bằng 0: trong [A; A₀] và [B, −B₀] ta có A₀ = A, "
                      "B₀ = B nên hai nửa triệt tiêu nhau. Tức là bản khởi tạo INIT_DIR giống hệt bộ điều hợp đã huấn luyện: nó được lưu sau khi huấn "
                      "luyện (hoặc bạn chưa huấn luyện), nên bản chuyển đổi không mang gì đã học.",
                      "Lưu INIT_DIR ngay sau `get_peft_model`, trước khi gọi `huan_luyen(...)`; rồi huấn luyện, "
                      "rồi mới lưu bản chuyển đổi.")
    return _ok(f"Bản chuyển đổi là một bộ điều hợp LoRA thường: r = {got_r} (= 2·{r}), lora_alpha = {got_alpha} "
               f"(alpha/r giữ nguyên {got_alpha / got_r:g}), init_lora_weights = true; ΔW khác 0 ở cả {n_layers} lớp.")


@_never_raises
def check_olora_parity(result, trained, converted, r: int | None = None, min_prompts: int = 4) -> CheckResult:
    """``result`` is a parity check, at the fp32 tolerance, between a trained OLoRA model and its converted adapter.

    ``trained`` is the OLoRA ``PeftModel`` (shifted base, as trained), ``converted`` the converted
    adapter loaded on a fresh base model. The check also runs both models itself on a few fixed
    tokens. Rejects: a verdict string instead of the result, a ``converted`` that is not the
    converted adapter (the unconverted one reloaded, or the trained model itself), a ``trained``
    that is not OLoRA, the converted adapter loaded onto the shifted base, a loosened tolerance, too
    few prompts, two models that do not match (e.g. the initialisation saved after training: ΔW = 0),
    and a result computed on another pair than these two models (it disagrees with the check's own
    measurement, or reports a difference of exactly 0, which only two identical computations give).
    """
    import math

    import torch

    from .parity import default_tolerance, max_logit_diff

    if result is None or trained is None or converted is None:
        return _todo()
    bad = _parity_result(result, "kiem_tra_chuyen_doi")
    if bad is not None:
        return bad
    for name, model in (("mo_hinh_huan_luyen", trained), ("mo_hinh_chuyen_doi", converted)):
        if not _is_peft_model(model):
            return _wrong(f"`{name}` là `{type(model).__name__}`, không có bộ điều hợp.",
                          "So mô hình OLoRA đã huấn luyện với bản chuyển đổi nạp bằng `PeftModel.from_pretrained`.")
    t_cfg, c_cfg = _adapter_config(trained), _adapter_config(converted)
    load_hint = "Nạp bản chuyển đổi lên một mô hình cơ sở mới: `PeftModel.from_pretrained(load_base(), str(CONVERTED_DIR))`."
    if not _is_olora(t_cfg):
        return _wrong(f"`mo_hinh_huan_luyen` có `init_lora_weights={t_cfg.init_lora_weights!r}`, không phải mô hình OLoRA "
                      "đã huấn luyện.", "Mô hình thứ nhất là mô hình OLoRA bạn đã huấn luyện (trọng số đã dịch).")
    if converted is trained or _is_olora(c_cfg) or (r is not None and c_cfg.r != 2 * r):
        return _wrong(f"`mo_hinh_chuyen_doi` có r = {c_cfg.r}, `init_lora_weights={c_cfg.init_lora_weights!r}`: đó không "
                      "phải bản chuyển đổi (hạng 2r, `True`) mà là bộ điều hợp OLoRA chưa chuyển đổi. Nó khớp mô hình đã "
                      "huấn luyện chỉ vì nó lại dịch trọng số cơ sở lúc nạp.", load_hint)
    bad = _loosened_parity(result, min_prompts)
    if bad is not None:
        return bad
    trained_layers = dict(_lora_layers(trained))
    pairs = [(layer.get_base_layer().weight, trained_layers[name].get_base_layer().weight)
             for name, layer in _lora_layers(converted) if name in trained_layers]
    if pairs and all(torch.equal(a, b) for a, b in pairs):
        return _wrong("trọng số cơ sở dưới bản chuyển đổi là W' (đã bị OLoRA dịch), không phải W gốc: bạn nạp bản chuyển đổi "
                      "lên chính mô hình cơ sở đã đưa vào get_peft_model.", load_hint)

    vocab = getattr(getattr(trained, "config", None), "vocab_size", None) or 64
    ids = (torch.arange(1, 17) * 37 % vocab).unsqueeze(0)
    modes = (trained.training, converted.training)
    trained.eval()
    converted.eval()
    try:
        own = max_logit_diff(trained, converted, ids)
    finally:
        trained.train(modes[0])
        converted.train(modes[1])
    # random tokens, not course prompts: allow 10x the rounding tolerance (a real mismatch is orders larger)
    if not (math.isfinite(own) and own <= 10 * default_tolerance("float32")):
        delta_zero = all(_converted_delta_is_zero(layer.lora_A[a].weight, layer.lora_B[a].weight)
                         for _, layer in _lora_layers(converted) for a in layer.lora_A)
        if delta_zero:
            return _wrong(f"hai mô hình không khớp (ô kiểm tra tự đo: logits lệch {own:.2g}) vì ΔW của bản chuyển đổi bằng 0: "
                          "bản khởi tạo INIT_DIR được lưu sau khi huấn luyện (hoặc chưa huấn luyện).",
                          "Lưu INIT_DIR ngay sau get_peft_model, trước khi huấn luyện.")
        return _wrong(f"hai mô hình không khớp (ô kiểm tra tự đo: logits lệch {own:.2g}).",
                      "Kiểm tra thứ tự: get_peft_model → save_pretrained(INIT_DIR) → huấn luyện → save_pretrained(CONVERTED_DIR, "
                      "path_initial_model_for_weight_conversion=INIT_DIR) → nạp lên mô hình cơ sở mới.")
    if not result.passed:
        return _wrong(f"kết quả của bạn báo «{result.verdict()}», trong khi ô kiểm tra tự đo thấy hai mô hình khớp: "
                      "`kiem_tra_chuyen_doi` đã so một cặp khác (ví dụ mô hình cơ sở với bản chuyển đổi).",
                      "`check_parity(mo_hinh_huan_luyen, mo_hinh_chuyen_doi, tokenizer, dataset=TEST)`.")
    if result.max_abs_logit_diff == 0.0:
        return _wrong("chênh lệch logits đúng bằng 0: chỉ hai phép tính giống hệt nhau mới cho vậy, nên đó không phải cặp "
                      "(OLoRA trong bộ nhớ, bản chuyển đổi), vốn tính W'x + s·B(Ax) và Wx + s·B'(A'x) theo thứ tự khác nhau.",
                      "`check_parity(mo_hinh_huan_luyen, mo_hinh_chuyen_doi, tokenizer, dataset=TEST)`.")
    return _ok(f"Bản chuyển đổi (r = {c_cfg.r}) trên mô hình cơ sở gốc khớp mô hình OLoRA đã huấn luyện; kết luận: "
               f"«{result.verdict()}».")


# =============================================================== lesson 5: preference training (DPO with PEFT)


def _date_dd_mm_yyyy(answer: str) -> str:
    y, m, d = answer.split("-")
    return f"{d}-{m}-{y}"


def _message_text(messages):
    """The content of a one-message list, or None when it is not one."""
    if isinstance(messages, list) and len(messages) == 1 and isinstance(messages[0], dict):
        return messages[0].get("content")
    return None


@_never_raises
def check_preference_pairs(pairs, rows) -> CheckResult:
    """Preference pairs built by hand from ``rows`` (task rows with ``messages`` and ``answer``).

    Expected, for row ``i``: ``prompt`` = the row's messages without the assistant's answer,
    ``chosen`` = ``[{"role": "assistant", "content": answer}]``, ``rejected`` = the same date
    written DD-MM-YYYY. Rejects: plain strings instead of message lists, the answer left in the
    prompt, chosen and rejected swapped, another wrong format, a missing or extra pair.
    """
    from datasets import Dataset

    from .errors import CourseError
    from .preferences import check_preference_dataset

    if pairs is None:
        return _todo()
    if isinstance(pairs, dict):
        return _wrong("`cap_uu_tien` là một dict, cần một danh sách các cặp (mỗi cặp một dict).",
                      "Tạo một list: `[{'prompt': ..., 'chosen': ..., 'rejected': ...} for row in ROWS]`.")
    pairs = list(pairs)
    if len(pairs) != len(rows):
        return _wrong(f"có {len(pairs)} cặp, cần {len(rows)} (một cặp cho mỗi dòng của `ROWS`).",
                      "Duyệt `for row in ROWS:` và tạo đúng một cặp cho mỗi dòng.")
    for i, (pair, row) in enumerate(zip(pairs, rows)):
        if not isinstance(pair, dict) or not {"prompt", "chosen", "rejected"} <= set(pair):
            return _wrong(f"cặp {i} không phải dict có ba khoá `prompt`, `chosen`, `rejected`.",
                          "Mỗi cặp: `{'prompt': [...], 'chosen': [...], 'rejected': [...]}`.")
        if any(isinstance(pair[k], str) for k in ("prompt", "chosen", "rejected")):
            return _wrong(f"cặp {i} chứa chuỗi thường; định dạng hội thoại (conversational) của TRL cần danh sách tin nhắn.",
                          "Viết `'chosen': [{'role': 'assistant', 'content': row['answer']}]`, tương tự cho `rejected`; "
                          "`prompt` là danh sách tin nhắn của người dùng.")
        prompt = pair["prompt"]
        if isinstance(prompt, list) and any(isinstance(m, dict) and m.get("role") == "assistant" for m in prompt):
            return _wrong(f"`prompt` của cặp {i} còn chứa câu trả lời của `assistant`: mô hình sẽ thấy đáp án ngay trong câu hỏi.",
                          "Bỏ lượt cuối: `row['messages'][:-1]`.")
        if prompt != row["messages"][:-1]:
            return _wrong(f"`prompt` của cặp {i} không phải câu hỏi của dòng {i} trong `ROWS`.",
                          "Dùng đúng `row['messages'][:-1]` (danh sách tin nhắn, lượt cuối là của `user`).")
        answer, wrong_date = row["answer"], _date_dd_mm_yyyy(row["answer"])
        chosen, rejected = _message_text(pair["chosen"]), _message_text(pair["rejected"])
        if chosen == wrong_date and rejected == answer:
            return _wrong(f"cặp {i} bị đảo: câu đúng `{answer}` nằm ở `rejected`. DPO sẽ dạy mô hình ưu tiên câu sai.",
                          "`chosen` là câu trả lời tốt (đáp án đúng), `rejected` là câu trả lời kém.")
        if chosen != answer:
            return _wrong(f"`chosen` của cặp {i} là {chosen!r}, cần đúng đáp án {answer!r} trong một tin nhắn `assistant`.",
                          "`'chosen': [{'role': 'assistant', 'content': row['answer']}]`.")
        if rejected != wrong_date:
            return _wrong(f"`rejected` của cặp {i} là {rejected!r}; đề bài yêu cầu cùng ngày đó viết theo thứ tự "
                          f"DD-MM-YYYY: {wrong_date!r}.",
                          "Tách `nam, thang, ngay = row['answer'].split('-')` rồi ghép `f'{ngay}-{thang}-{nam}'`.")
    try:
        check_preference_dataset(Dataset.from_list(pairs), "cap_uu_tien")
    except CourseError as exc:
        return _wrong(exc.problem, exc.fix)
    return _ok(f"{len(pairs)} cặp đúng định dạng hội thoại của TRL: câu hỏi không lộ đáp án, `chosen` là ngày ISO, "
               f"`rejected` là cùng ngày viết DD-MM-YYYY (ví dụ {answer} / {wrong_date}).")


def _is_dpo_trainer(trainer) -> bool:
    from trl import DPOTrainer

    return isinstance(trainer, DPOTrainer)


@_never_raises
def check_dpo_trainer(trainer, r: int, target_modules, steps: int) -> CheckResult:
    """A ``DPOTrainer`` built from the base model with ``peft_config`` (no second model), trained ``steps`` steps.

    Rejects: no PEFT (full finetuning, TRL then loads a reference copy), a ``ref_model`` passed
    in, a ``PeftModel`` passed in (TRL copies its adapter as ``"ref"``), another rank or target set,
    base weights left trainable, an untrained trainer or another number of steps.
    """
    from peft.tuners.lora import LoraLayer

    if trainer is None:
        return _todo()
    if not _is_dpo_trainer(trainer):
        return _wrong(f"`trainer` là {type(trainer).__name__}, không phải `DPOTrainer` của TRL.",
                      "`trainer = DPOTrainer(model=..., args=CAU_HINH, train_dataset=..., processing_class=tokenizer, "
                      "peft_config=LoraConfig(...))`.")
    model = trainer.model
    if not _is_peft_model(model):
        return _wrong("mô hình của trainer không có bộ điều hợp: đây là huấn luyện toàn bộ (full finetuning), và TRL "
                      "phải nạp thêm một bản sao làm mô hình tham chiếu.",
                      "Truyền `peft_config=LoraConfig(...)` cho `DPOTrainer`.")
    if trainer.ref_model is not None:
        return _wrong("`trainer.ref_model` không phải None: bạn đã nạp thêm một mô hình tham chiếu, tốn thêm bộ nhớ "
                      "bằng cả một mô hình.",
                      "Bỏ `ref_model=...`: với PEFT, TRL lấy mô hình tham chiếu bằng cách tắt bộ điều hợp.")
    if "ref" in model.peft_config:
        return _wrong("trainer có thêm bộ điều hợp `ref`: bạn đã đưa vào một `PeftModel`, nên TRL coi đó là bộ điều hợp "
                      "đã huấn luyện và chép nó làm tham chiếu.",
                      "Với bộ điều hợp mới, đưa mô hình cơ sở (`load_base()`) cùng `peft_config=...`, đừng gọi "
                      "`get_peft_model` trước.")
    config = model.peft_config.get("default")
    if config is None or getattr(config, "r", None) is None:
        return _wrong(f"không tìm thấy bộ điều hợp LoRA `default` (có: {list(model.peft_config)}).",
                      "Dùng `peft_config=LoraConfig(...)`.")
    if config.r != r:
        return _wrong(f"hạng r = {config.r}, đề bài yêu cầu r = {r}.", f"`LoraConfig(r={r}, ...)`.")
    got, want = _target_set(config.target_modules), _target_set(target_modules)
    if got != want:
        return _wrong(f"bộ điều hợp gắn vào {sorted(got)}, đề bài yêu cầu {sorted(want)}.",
                      f"`target_modules={sorted(want)}`.")
    leaked = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n]
    if leaked:
        return _wrong(f"{len(leaked)} tensor của mô hình cơ sở vẫn được huấn luyện (ví dụ `{leaked[0]}`).",
                      "Để TRL tạo bộ điều hợp từ `peft_config`; đừng bật `requires_grad` cho trọng số cơ sở.")
    done = trainer.state.global_step
    if done == 0:
        return _wrong("trainer chưa huấn luyện bước nào.", "Gọi `trainer.train()`.")
    if done != steps:
        return _wrong(f"trainer đã chạy {done} bước, đề bài yêu cầu {steps}.",
                      f"Dùng `args=CAU_HINH` (max_steps={steps}) và gọi `trainer.train()` một lần.")
    moved = any(m.lora_B["default"].weight.abs().max().item() > 0 for _, m in model.named_modules()
                if isinstance(m, LoraLayer) and "default" in m.lora_B)
    if not moved:
        return _wrong("mọi ma trận B vẫn bằng 0: bộ điều hợp không học được gì.",
                      "Kiểm tra tốc độ học trong `CAU_HINH` và gọi `trainer.train()`.")
    n_lora = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad)
    return _ok(f"DPO với PEFT: một mô hình, `ref_model` là None, {n_lora:,} tham số LoRA (r={r}, "
               f"{', '.join(sorted(want))}), đã huấn luyện {done} bước.")


def _eval_logps(trainer):
    """(policy, reference) log-probabilities over the trainer's evaluation set, recomputed."""
    from .preferences import dataloader_logps

    loader = trainer.get_eval_dataloader()
    with trainer.model.disable_adapter():
        reference = dataloader_logps(trainer.model, loader)
    policy = dataloader_logps(trainer.model, loader)
    return policy, reference


def _as_pair(value, variable: str):
    """(chosen, rejected) float tensors from a learner's pair; a CheckResult when it is not one."""
    import torch

    if not isinstance(value, (tuple, list)) or len(value) != 2:
        return _wrong(f"`{variable}` phải là một cặp (log-xác suất câu được chọn, log-xác suất câu bị loại).",
                      "`dataloader_logps(...)` trả về đúng một cặp như vậy.")
    return tuple(torch.as_tensor(v, dtype=torch.float32).detach().cpu().flatten() for v in value)


def _same(a, b, atol: float = 1e-3) -> bool:
    import torch

    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=atol)


def _trainer_or_wrong(trainer):
    if trainer is None or not _is_dpo_trainer(trainer) or not _is_peft_model(trainer.model):
        return _wrong("không có `trainer` DPO với bộ điều hợp để đối chiếu.", "Làm bài 2 trước (tạo và huấn luyện `trainer`).")
    return None


@_never_raises
def check_reference_logps(reference, trainer) -> CheckResult:
    """Log-probabilities of the reference model (the trainer's model with its adapter disabled) on the eval set.

    Rejects: values computed with the adapter on (the trained policy), chosen and rejected swapped,
    another dataset (length or values differ), something that is not a pair.
    """
    if reference is None:
        return _todo()
    bad = _trainer_or_wrong(trainer)
    if bad is not None:
        return bad
    pair = _as_pair(reference, "logp_tham_chieu")
    if isinstance(pair, CheckResult):
        return pair
    policy, truth = _eval_logps(trainer)
    n = len(truth[0])
    if len(pair[0]) != n or len(pair[1]) != n:
        return _wrong(f"có {len(pair[0])} giá trị, tập kiểm định có {n} cặp.",
                      "Tính trên `trainer.get_eval_dataloader()` (tập kiểm định), không phải tập huấn luyện.")
    if _same(pair[0], truth[0]) and _same(pair[1], truth[1]):
        return _ok(f"log π_ref của {n} cặp = log-xác suất của chính mô hình khi TẮT bộ điều hợp; "
                   f"trung bình {truth[0].mean().item():.1f} (câu được chọn), {truth[1].mean().item():.1f} (câu bị loại).")
    if _same(pair[0], policy[0]) and _same(pair[1], policy[1]):
        return _wrong("đây là log-xác suất của mô hình ĐANG BẬT bộ điều hợp (mô hình đã huấn luyện), không phải "
                      "của mô hình tham chiếu.",
                      "Tính bên trong `with trainer.model.disable_adapter():`.")
    if _same(pair[0], truth[1]) and _same(pair[1], truth[0]):
        return _wrong("hai phần bị đảo: phần đầu phải là log-xác suất câu được chọn, phần sau là câu bị loại.",
                      "Giữ đúng thứ tự mà `dataloader_logps` trả về: `(chosen, rejected)`.")
    return _wrong("các giá trị không khớp log-xác suất của mô hình tham chiếu trên tập kiểm định.",
                  "`with trainer.model.disable_adapter(): logp_tham_chieu = dataloader_logps(trainer.model, "
                  "trainer.get_eval_dataloader())`.")


@_never_raises
def check_dpo_numbers(margins, accuracy, loss, trainer, beta: float) -> CheckResult:
    """DPO's reward margins, preference accuracy and loss on the eval set, computed by hand.

    ``margins`` per pair = β·[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))];
    ``accuracy`` = fraction of margins > 0; ``loss`` = mean of −log σ(margin).
    Rejects: β forgotten, chosen/rejected swapped (sign), the reference left out, all-zero margins
    (reference computed with the adapter on), an accuracy given as a count or a percentage, a loss
    summed instead of averaged, without the minus sign, or without the log.
    """
    import torch
    import torch.nn.functional as F

    if margins is None and accuracy is None and loss is None:
        return _todo()
    if margins is None or accuracy is None or loss is None:
        missing = [n for n, v in (("bien", margins), ("do_chinh_xac", accuracy), ("loss_dpo", loss)) if v is None]
        return _todo(f"còn thiếu {', '.join(f'`{m}`' for m in missing)}")
    bad = _trainer_or_wrong(trainer)
    if bad is not None:
        return bad
    (pc, pr), (rc, rr) = _eval_logps(trainer)
    truth = beta * ((pc - rc) - (pr - rr))
    m = torch.as_tensor(margins, dtype=torch.float32).detach().cpu().flatten()
    if m.shape != truth.shape:
        return _wrong(f"`bien` có {m.numel()} giá trị, cần một biên cho mỗi cặp của tập kiểm định ({truth.numel()}).",
                      "Đừng lấy trung bình: `bien` là một tensor, mỗi cặp một giá trị.")
    if not _same(m, truth):
        if m.abs().max().item() < 1e-6:
            return _wrong("mọi biên bằng 0: log π và log π_ref của bạn là một.",
                          "Tính log π_ref trong `with trainer.model.disable_adapter():`, log π thì ở ngoài khối đó.")
        if _same(m, truth / beta):
            return _wrong(f"biên lớn gấp {1 / beta:g} lần: thiếu hệ số β.", f"Nhân với `BETA` (= {beta:g}).")
        if _same(m, -truth):
            return _wrong("biên ngược dấu: bạn đã đảo câu được chọn và câu bị loại.",
                          "Biên = β·[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))], y_w là câu được chọn.")
        if _same(m, beta * (pc - pr)):
            return _wrong("đây là β·(log π(y_w) − log π(y_l)): thiếu mô hình tham chiếu.",
                          "Trừ log π_ref của từng câu trả lời trước khi lấy hiệu.")
        return _wrong("biên không khớp công thức DPO tính lại từ `trainer`.",
                      "bien = BETA * ((logp_mo_hinh[0] - logp_tham_chieu[0]) - (logp_mo_hinh[1] - logp_tham_chieu[1])).")
    acc_truth = (truth > 0).float().mean().item()
    acc = float(torch.as_tensor(accuracy, dtype=torch.float64).item())
    if abs(acc - acc_truth) > 1e-6:
        if abs(acc - (truth > 0).sum().item()) < 1e-6 and truth.numel() > 1:
            return _wrong(f"{acc:g} là số cặp có biên > 0; cần tỉ lệ (từ 0 đến 1).", "Chia cho số cặp, hoặc dùng `.float().mean()`.")
        if abs(acc - 100 * acc_truth) < 1e-4:
            return _wrong(f"{acc:g} là phần trăm; cần tỉ lệ từ 0 đến 1.", "Bỏ phép nhân 100.")
        return _wrong(f"độ chính xác ưu tiên {acc:g} không đúng: tỉ lệ cặp có biên > 0 là {acc_truth:g}.",
                      "`(bien > 0).float().mean().item()`: biên bằng 0 không tính là đúng.")
    value = float(torch.as_tensor(loss, dtype=torch.float64).item())
    loss_truth = (-F.logsigmoid(truth)).mean().item()
    if abs(value - loss_truth) > 1e-4 * max(1.0, abs(loss_truth)):
        if abs(value - (-F.logsigmoid(truth)).sum().item()) < 1e-3:
            return _wrong("đây là tổng loss của các cặp; DPO lấy trung bình.", "Dùng `.mean()` thay cho `.sum()`.")
        if abs(value + loss_truth) < 1e-4:
            return _wrong("loss âm: thiếu dấu trừ.", "loss = −log σ(biên), trung bình trên các cặp.")
        if abs(value - (-F.logsigmoid(-truth)).mean().item()) < 1e-4:
            return _wrong("đây là loss khi đảo dấu biên.", "loss = `-F.logsigmoid(bien).mean()`.")
        return _wrong(f"loss {value:.4f} không khớp −log σ(biên) trung bình = {loss_truth:.4f}.",
                      "`-torch.nn.functional.logsigmoid(bien).mean().item()` (không phải `1 - sigmoid`, và nhớ lấy log).")
    return _ok(f"trên {truth.numel()} cặp kiểm định: biên trung bình {truth.mean().item():.3f}, độ chính xác ưu tiên "
               f"{acc_truth:.0%}, loss {loss_truth:.4f} (lúc bắt đầu, loss là log 2 ≈ 0,693).")
