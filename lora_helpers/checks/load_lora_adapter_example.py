"""Checks of lesson 1 (``load_lora_adapter_example``): loading adapters, routing prompts, combining adapters."""

from __future__ import annotations

import json
import re
import warnings

from ._common import CheckResult, _active, _is_peft_model, _lora_layers, _never_raises, _ok, _todo, _wrong


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


def _routing_cases(n_per_task: int = 10):
    """(prompt text, task) pairs from the validation and test splits of every course task."""
    from ..data import TASKS, make_task_splits

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
    summary = ", ".join(f"{t}: {scores[t]['accuracy']:.0%}" for t in test_sets)
    return _ok("Đã đo đủ các tác vụ trên đúng tập kiểm tra.", f"độ chính xác {summary}.")
