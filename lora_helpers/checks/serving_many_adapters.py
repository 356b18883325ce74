"""Checks of the serving lesson's exercises (serving many adapters from one base model).

* :func:`check_manual_routes` (🐢): adapter names chosen by hand for requests typed by users;
* :func:`check_mixed_batch` (🐕): one mixed ``generate(..., adapter_names=...)`` batch, proven identical to
  the per-adapter answers, which the check generates again itself;
* :func:`check_safe_hotswap` (🦁): a learner's hotswap function that refuses an incompatible adapter with a
  Vietnamese ``CourseError`` before changing anything, tried on tiny models built by the check.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

from ._common import CheckResult, _never_raises, _ok, _todo, _wrong

BASE = "__base__"
ROUTE_NAMES = ("don_hang", "ngay_thang", BASE)

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


@_never_raises
def check_manual_routes(routes) -> CheckResult:
    """``routes``: one adapter name per request of :func:`manual_routing_requests`, in order.

    Rejects: a wrong length, a name that is not one of ``don_hang``/``ngay_thang``/``__base__`` (``"base"``,
    ``None``), the same name everywhere, swapped task names, and any wrongly routed request.
    """
    if routes is None:
        return _todo()
    rows = _routing_rows()
    if isinstance(routes, str) or not isinstance(routes, (list, tuple)):
        return _wrong(f"`ten_bo_dieu_hop` phải là một danh sách tên, bạn đưa {type(routes).__name__}.",
                      f"Ví dụ: [\"ngay_thang\", \"__base__\", ...], một tên cho mỗi yêu cầu ({len(rows)} yêu cầu).")
    if len(routes) != len(rows):
        return _wrong(f"có {len(rows)} yêu cầu nhưng danh sách của bạn có {len(routes)} tên.",
                      "Mỗi yêu cầu đúng một tên, cùng thứ tự với danh sách đã in.")
    for i, name in enumerate(routes):
        if name not in ROUTE_NAMES:
            hint = f"Dùng đúng một trong: {', '.join(ROUTE_NAMES)}."
            if isinstance(name, str) and "base" in name.lower():
                hint = "Mô hình cơ sở trong lô nhiều bộ điều hợp của peft tên là \"__base__\" (hai dấu gạch dưới mỗi bên)."
            return _wrong(f"tên thứ {i} là {name!r}, không phải tên nào máy chủ đã nạp.", hint)
    expected = [task for _, task in rows]
    if len(set(routes)) == 1:
        return _wrong(f"bạn gửi mọi yêu cầu tới `{routes[0]}`.",
                      "Đọc từng yêu cầu: đơn hàng (có số phần, món, nơi giao), ngày tháng (có năm), hay câu trò chuyện.")
    wrong = [i for i, (got, want) in enumerate(zip(routes, expected)) if got != want]
    if not wrong:
        return _ok(f"Cả {len(rows)} yêu cầu được gửi đúng chỗ: đây chính là danh sách `adapter_names` cho một lô nhiều bộ điều hợp.")
    swapped = {"don_hang": "ngay_thang", "ngay_thang": "don_hang"}
    if all(routes[i] == swapped.get(expected[i]) for i in wrong):
        return _wrong(f"{len(wrong)} yêu cầu bị gửi nhầm sang tác vụ kia (ví dụ yêu cầu {wrong[0]}).",
                      "`don_hang` trích đơn hàng (món, số phần, nơi giao); `ngay_thang` chuẩn hoá một ngày.")
    i = wrong[0]
    return _wrong(f"{len(wrong)} yêu cầu sai chỗ, ví dụ yêu cầu {i}: «{rows[i][0][:70]}» không nên đi tới `{routes[i]}`.",
                  "Câu không thuộc tác vụ nào đã huấn luyện thì để mô hình cơ sở trả lời (\"__base__\").")


# --------------------------------------------------------------------------- 🐕 mixed batch
def mixed_batch_requests():
    """(prompts, adapter names) of the mixed-batch exercise: two date requests, one order, one chat question."""
    from ..data import make_task_splits, prompts_of

    dates = prompts_of(make_task_splits("ngay_thang")["test"].select([20, 21]))
    order = prompts_of(make_task_splits("don_hang")["test"].select([20]))
    chat = [[{"role": "user", "content": "Hãy gợi ý một tên cho quán cà phê nhỏ."}]]
    return [dates[0], chat[0], order[0], dates[1]], ["ngay_thang", BASE, "don_hang", "ngay_thang"]


def _string_list(value, name: str, n: int):
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        return _wrong(f"`{name}` phải là một danh sách chuỗi, bạn đưa {type(value).__name__}.",
                      "Giải mã đầu ra bằng tokenizer.batch_decode(..., skip_special_tokens=True).")
    if len(value) != n:
        return _wrong(f"`{name}` có {len(value)} phần tử; cần đúng {n} (một câu trả lời cho mỗi yêu cầu).",
                      "Giữ nguyên thứ tự của CAU_HOI.")
    if not all(isinstance(a, str) for a in value):
        return _wrong(f"`{name}` có phần tử không phải chuỗi.", "Mỗi câu trả lời là một chuỗi.")
    return None


@_never_raises
def check_mixed_batch(mixed_answers, separate_answers, identical, model, tokenizer, max_new_tokens: int,
                      requests=None) -> CheckResult:
    """The learner's mixed-batch answers, per-adapter answers and per-request verdict are right.

    The check serves :func:`mixed_batch_requests` again itself, one ``set_adapter`` group at a time
    (``lora_helpers.serving.serve_by_switching``, greedy, ``max_new_tokens``), and requires both of the
    learner's answer lists to equal those answers (stripped), and ``identical`` to be the list of
    per-request booleans comparing them. Rejects: a batch generated without ``adapter_names`` (base
    answers), every request sent to one adapter, the dataset's reference answers copied in, the same
    list object passed twice, and a verdict that is not computed (a bare ``True``). ``requests``:
    ``(prompts, names)`` (default :func:`mixed_batch_requests`; the tests pass tiny-tokenizer prompts).
    """
    if mixed_answers is None or separate_answers is None or identical is None:
        return _todo()
    from ..serving import generate_batch, loaded_adapters, serve_by_switching

    prompts, names = requests if requests is not None else mixed_batch_requests()
    for value, label in ((mixed_answers, "tra_loi_tron"), (separate_answers, "tra_loi_rieng")):
        problem = _string_list(value, label, len(prompts))
        if problem is not None:           # a CheckResult is falsy when wrong
            return problem
    if mixed_answers is separate_answers:
        return _wrong("`tra_loi_tron` và `tra_loi_rieng` là cùng một danh sách: bạn chưa so hai cách với nhau.",
                      "Sinh `tra_loi_tron` bằng một lần model.generate(..., adapter_names=TEN), và `tra_loi_rieng` "
                      "bằng set_adapter cho từng nhóm; rồi mới so.")
    if isinstance(identical, bool):
        return _wrong("`giong_het` là một giá trị True/False duy nhất; đề bài cần một danh sách, mỗi yêu cầu một giá trị.",
                      "Ví dụ: [a == b for a, b in zip(tra_loi_tron, tra_loi_rieng)].")
    truth = serve_by_switching(model, tokenizer, prompts, names, max_new_tokens).answers
    references = _references()
    for label, answers in (("tra_loi_tron", mixed_answers), ("tra_loi_rieng", separate_answers)):
        bad = [i for i, (a, t) in enumerate(zip(answers, truth)) if a.strip() != t.strip()]
        if not bad:
            continue
        i = bad[0]
        if any(answers[j].strip() in references for j in bad):
            return _wrong(f"`{label}` chứa đáp án mẫu của tập dữ liệu, không phải câu mô hình sinh ra.",
                          "Sinh câu trả lời bằng model.generate, rồi giải mã phần token mới.")
        base = _base_answers(model, tokenizer, prompts, max_new_tokens, generate_batch)
        if all(answers[j].strip() == base[j].strip() for j in bad) and any(n != BASE for n in names):
            hint = ("Truyền `adapter_names=TEN` cho model.generate." if label == "tra_loi_tron" else
                    "Gọi model.set_adapter(tên) trước khi sinh cho mỗi nhóm (và chỉ dùng disable_adapter cho \"__base__\").")
            return _wrong(f"`{label}`: {len(bad)} câu là câu trả lời của mô hình cơ sở (không bộ điều hợp nào).", hint)
        for adapter in loaded_adapters(model):
            one = serve_by_switching(model, tokenizer, prompts, [adapter] * len(prompts), max_new_tokens).answers
            if all(answers[j].strip() == one[j].strip() for j in bad):
                hint = ("Truyền `adapter_names=TEN` cho model.generate: không có nó, cả lô đi qua bộ đang bật."
                        if label == "tra_loi_tron" else "Gọi model.set_adapter(tên) cho TỪNG nhóm trước khi sinh.")
                return _wrong(f"`{label}`: {len(bad)} câu là câu trả lời của bộ `{adapter}`, không phải bộ của yêu cầu đó.",
                              hint)
        return _wrong(f"`{label}`: câu {i} (`{names[i]}`) là «{answers[i][:60]}», nhưng bộ `{names[i]}` sinh «{truth[i][:60]}».",
                      f"Dùng đúng thiết lập: tham lam (do_sample=False), max_new_tokens={max_new_tokens}, đệm bên trái "
                      "(padding_side=\"left\"), mẫu hội thoại với add_generation_prompt=True; mỗi câu đúng bộ của nó.")
    if not isinstance(identical, (list, tuple)) or len(identical) != len(prompts):
        return _wrong(f"`giong_het` phải là danh sách {len(prompts)} giá trị True/False.",
                      "Ví dụ: [a == b for a, b in zip(tra_loi_tron, tra_loi_rieng)].")
    expected = [a == b for a, b in zip(mixed_answers, separate_answers)]
    if [bool(x) for x in identical] != expected:
        return _wrong("`giong_het` không khớp với việc so từng cặp câu trả lời của bạn.",
                      "Tính nó từ hai danh sách, đừng viết tay.")
    return _ok(f"Lô nhiều bộ điều hợp trả lời giống hệt từng bộ điều hợp riêng ở cả {len(prompts)} yêu cầu "
               "(ô kiểm tra đã sinh lại bằng set_adapter theo nhóm để so).")


def _references() -> set[str]:
    from ..data import make_task_splits

    return {str(make_task_splits(t)["test"][k]["answer"]).strip() for t in ("ngay_thang", "don_hang") for k in (20, 21)}


def _base_answers(model, tokenizer, prompts, max_new_tokens, generate_batch):
    with model.disable_adapter():
        return generate_batch(model, tokenizer, prompts, max_new_tokens)[0]


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
        torch.manual_seed(seed)
        settings = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "init_lora_weights": False}
        settings.update(lora)
        peft_model = get_peft_model(base(), LoraConfig(**settings))
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


@_never_raises
def check_safe_hotswap(fn) -> CheckResult:
    """``fn(model, adapter_dir, adapter_name)`` hotswaps when safe and otherwise raises ``CourseError`` first.

    Tried on tiny models: a compatible adapter must really be swapped in (the slot's weights equal the saved
    ones); a larger rank, extra target layers and an adapter name that is not loaded must each raise
    :class:`~lora_helpers.errors.CourseError` (Vietnamese message) with every LoRA weight unchanged. Rejects a
    function that calls the course's own ``hotswap_checked``/``check_hotswap_compatible`` (write the checks
    yourself), one that always raises, plain ``hotswap_adapter`` (it swaps a larger rank silently, or raises
    peft's English error), and one that changes weights before refusing.
    """
    if fn is None:
        return _todo()
    if not callable(fn):
        return _wrong(f"`doi_nong_an_toan` phải là một hàm, bạn đưa {type(fn).__name__}.",
                      "Viết `def doi_nong_an_toan(model, thu_muc, ten): ...`.")
    code = getattr(fn, "__code__", None)
    if code is not None and {"hotswap_checked", "check_hotswap_compatible"} & set(code.co_names):
        return _wrong("hàm của bạn gọi `hotswap_checked`/`check_hotswap_compatible` của khoá học.",
                      "Câu này yêu cầu tự viết các phép kiểm tra: đọc adapter_config.json (hạng r, target_modules) và "
                      "so với chỗ đang có trên mô hình (model.peft_config[ten], kích thước lora_A).")
    from safetensors.torch import load_file

    from ..errors import CourseError

    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")          # transformers/peft deprecation notes while building tiny models
        fresh, dirs = _tiny_setup(Path(tmp))
        # 1. compatible: swapped in
        model = fresh()
        try:
            fn(model, str(dirs["ok"]), "khach")
        except CourseError as exc:
            return _wrong(f"hàm từ chối một bộ điều hợp tương thích (cùng hạng, cùng lớp đích): «{str(exc)[:120]}».",
                          "Chỉ từ chối khi thật sự không thay được: hạng lớn hơn chỗ, thêm lớp đích, hoặc tên chưa nạp.")
        saved = load_file(str(dirs["ok"] / "adapter_model.safetensors"))
        state = model.state_dict()
        for key, value in saved.items():
            slot_key = key.replace(".weight", ".khach.weight")
            if slot_key not in state or not _same(state[slot_key], value):
                return _wrong("với bộ điều hợp tương thích, trọng số của chỗ `khach` không được thay bằng trọng số mới.",
                              "Sau các phép kiểm tra, gọi hotswap_adapter(model, thu_muc, adapter_name=ten).")
        # 2-4. refusals, before anything changes
        cases = [
            ("rank8", "khach", "bộ điều hợp có hạng lớn hơn chỗ (r=8 vào chỗ r=4)",
             "So r trong adapter_config.json với kích thước hiện có: model.peft_config[ten].r hoặc lora_A[ten].weight.shape[0]."),
            ("more_targets", "khach", "bộ điều hợp gắn vào lớp mà chỗ không có (thêm k_proj)",
             "So target_modules (hoặc các khoá trong adapter_model.safetensors) với các lớp của chỗ đang có."),
            ("ok", "chua_nap", "tên bộ điều hợp chưa được nạp",
             "Kiểm tra `ten in model.peft_config` trước tiên."),
        ]
        for which, name, what, hint in cases:
            model = fresh()
            before, names_before = _lora_state(model), list(model.peft_config)
            try:
                fn(model, str(dirs[which]), name)
            except CourseError as exc:
                if not _unchanged(model, before) or list(model.peft_config) != names_before:
                    return _wrong(f"với {what}, hàm báo lỗi nhưng SAU KHI đã sửa mô hình.",
                                  "Kiểm tra mọi thứ trước, rồi mới gọi hotswap_adapter.")
                if not any(c in str(exc) for c in "ạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỷỹỵđ"):
                    return _wrong(f"với {what}, thông báo lỗi không phải tiếng Việt: «{str(exc)[:100]}».",
                                  "Viết thông báo bằng tiếng Việt, nói cái gì sai và cách sửa.")
                continue
            except Exception as exc:  # noqa: BLE001 - peft's own error, or another exception type
                return _wrong(f"với {what}, hàm báo {type(exc).__name__} («{str(exc)[:100]}») thay vì CourseError.",
                              "Tự kiểm tra trước và raise CourseError(\"...\", \"cách sửa\") "
                              "(from lora_helpers import CourseError). " + hint)
            if not _unchanged(model, before):
                return _wrong(f"với {what}, hàm không báo lỗi mà đã thay trọng số (peft làm được trên mô hình chưa "
                              "compile, nhưng mô hình đã compile sẽ phải biên dịch lại).", hint)
            return _wrong(f"với {what}, hàm không báo lỗi.", hint)
    return _ok("Hàm đổi nóng bộ tương thích, và từ chối (CourseError, tiếng Việt, trước khi sửa gì) hạng lớn hơn, "
               "lớp đích khác và tên chưa nạp.")


def _same(a, b) -> bool:
    import torch

    return a.shape == b.shape and torch.allclose(a.float().cpu(), b.float().cpu())
