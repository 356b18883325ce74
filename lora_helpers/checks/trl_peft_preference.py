"""Checks of ``trl_peft_preference``: preference pairs, DPOTrainer with PEFT, DPO's numbers by hand, the decision."""

from __future__ import annotations

import copy

from ..numbers import count as fmt_count
from ._common import (
    CheckResult,
    _decided,
    _decision,
    _field,
    _is_peft_model,
    _lora_layers,
    _number,
    _plain,
    _target_set,
    _todo,
    _wrong,
)
from .kit import Mistake, Table, Verdict, check, part_replaced


def _date_dd_mm_yyyy(answer: str) -> str:
    y, m, d = answer.split("-")
    return f"{d}-{m}-{y}"


def _message_text(messages):
    """The content of a one-message list, or None when it is not one."""
    if isinstance(messages, list) and len(messages) == 1 and isinstance(messages[0], dict):
        return messages[0].get("content")
    return None


def _changed_pair(pairs, change):
    """A copy of ``pairs`` whose first pair went through ``change(pair)`` (the slips' example answers)."""
    pairs = copy.deepcopy(list(pairs))
    change(pairs[0])
    return pairs


@check
def check_preference_pairs(pairs, rows) -> Table:
    """Preference pairs built by hand from ``rows`` (task rows with ``messages`` and ``answer``).

    Expected, for row ``i``: ``prompt`` = the row's messages without the assistant's answer,
    ``chosen`` = ``[{"role": "assistant", "content": answer}]``, ``rejected`` = the same date
    written DD-MM-YYYY. A slip is reported for the first pair that shows it.
    """
    from datasets import Dataset

    from ..errors import CourseError
    from ..preferences import check_preference_dataset

    rows = list(rows)
    items = [] if isinstance(pairs, dict) else list(pairs)
    keys = ("prompt", "chosen", "rejected")

    def first(bad):
        """Index of the first pair showing ``bad(pair, row, answer, wrong_date)``; None when none does."""
        for i, (pair, row) in enumerate(zip(items, rows)):
            try:
                if bad(pair, row, row["answer"], _date_dd_mm_yyyy(row["answer"])):
                    return i
            except (TypeError, KeyError, AttributeError, IndexError):
                continue
        return None

    def pair_slip(bad, problem, hint, change):
        """``bad`` in some pair; ``problem(i, pair, answer, wrong_date)`` names the first such pair."""
        i = first(bad)
        text = problem(i, items[i], rows[i]["answer"], _date_dd_mm_yyyy(rows[i]["answer"])) if i is not None else ""
        return Mistake(lambda _: i is not None, text, hint, example=lambda ref: _changed_pair(ref, change))

    def text(messages):
        return _message_text(messages)

    try:
        check_preference_dataset(Dataset.from_list(items), "cap_uu_tien")
        refused = None
    except CourseError as exc:
        refused = exc
    except Exception:  # noqa: BLE001 - a shape Dataset cannot hold: the rows above name it
        refused = None
    last = rows[-1]["answer"] if rows else ""
    return Table(
        guard=[
            Mistake(lambda _: isinstance(pairs, dict), "`cap_uu_tien` là một dict, cần một danh sách các cặp (mỗi cặp một dict).",
                    "Tạo một list: `[{'prompt': ..., 'chosen': ..., 'rejected': ...} for row in ROWS]`.",
                    example=lambda ref: ref[0]),
            Mistake(lambda _: len(items) != len(rows), f"có {len(items)} cặp, cần {len(rows)} (một cặp cho mỗi dòng của `ROWS`).",
                    "Duyệt `for row in ROWS:` và tạo đúng một cặp cho mỗi dòng.", example=lambda ref: list(ref)[:-1]),
            pair_slip(lambda p, *_: not isinstance(p, dict) or not set(keys) <= set(p),
                      lambda i, *_: f"cặp {i} không phải dict có ba khoá `prompt`, `chosen`, `rejected`.",
                      "Mỗi cặp: `{'prompt': [...], 'chosen': [...], 'rejected': [...]}`.", lambda p: p.pop("rejected")),
        ],
        slips=[
            pair_slip(lambda p, *_: any(isinstance(p[k], str) for k in keys),
                      lambda i, *_: f"cặp {i} chứa chuỗi thường; định dạng hội thoại (conversational) của TRL cần danh sách "
                      "tin nhắn.", "Viết `'chosen': [{'role': 'assistant', 'content': row['answer']}]`, tương tự cho "
                      "`rejected`; `prompt` là danh sách tin nhắn của người dùng.",
                      lambda p: p.update(chosen=p["chosen"][0]["content"])),
            pair_slip(lambda p, *_: any(isinstance(m, dict) and m.get("role") == "assistant" for m in p["prompt"]),
                      lambda i, *_: f"`prompt` của cặp {i} còn chứa câu trả lời của `assistant`: mô hình sẽ thấy đáp án ngay "
                      "trong câu hỏi.", "Bỏ lượt cuối: `row['messages'][:-1]`.",
                      lambda p: p.update(prompt=rows[0]["messages"])),
            pair_slip(lambda p, row, *_: p["prompt"] != row["messages"][:-1],
                      lambda i, *_: f"`prompt` của cặp {i} không phải câu hỏi của dòng {i} trong `ROWS`.",
                      "Dùng đúng `row['messages'][:-1]` (danh sách tin nhắn, lượt cuối là của `user`).",
                      lambda p: p.update(prompt=rows[-1]["messages"][:-1])),
            pair_slip(lambda p, row, answer, wrong_date: text(p["chosen"]) == wrong_date and text(p["rejected"]) == answer,
                      lambda i, p, answer, _: f"cặp {i} bị đảo: câu đúng `{answer}` nằm ở `rejected`. DPO sẽ dạy mô hình "
                      "ưu tiên câu sai.", "`chosen` là câu trả lời tốt (đáp án đúng), `rejected` là câu trả lời kém.",
                      lambda p: p.update(chosen=p["rejected"], rejected=p["chosen"])),
            pair_slip(lambda p, row, answer, _: text(p["chosen"]) != answer,
                      lambda i, p, answer, _: f"`chosen` của cặp {i} là {text(p['chosen'])!r}, cần đúng đáp án {answer!r} "
                      "trong một tin nhắn `assistant`.", "`'chosen': [{'role': 'assistant', 'content': row['answer']}]`.",
                      lambda p: p["chosen"][0].update(content=p["chosen"][0]["content"].replace("-", "/"))),
            pair_slip(lambda p, row, answer, wrong_date: text(p["rejected"]) != wrong_date,
                      lambda i, p, answer, wrong_date: f"`rejected` của cặp {i} là {text(p['rejected'])!r}; đề bài yêu cầu "
                      f"cùng ngày đó viết theo thứ tự DD-MM-YYYY: {wrong_date!r}.",
                      "Tách `nam, thang, ngay = row['answer'].split('-')` rồi ghép `f'{ngay}-{thang}-{nam}'`.",
                      lambda p: p["rejected"][0].update(content=p["rejected"][0]["content"].replace("-", "/"))),
            Mistake(lambda _: refused is not None, getattr(refused, "problem", ""), getattr(refused, "fix", ""),
                    example=lambda ref: _changed_pair(ref, lambda p: p["rejected"][0].update(role="user"))),
        ],
        ok=f"{len(rows)} cặp đúng định dạng hội thoại của TRL: câu hỏi không lộ đáp án, `chosen` là ngày ISO, "
           f"`rejected` là cùng ngày viết DD-MM-YYYY (ví dụ {last} / {_date_dd_mm_yyyy(last) if last else ''}).",
    )


def _is_dpo_trainer(trainer) -> bool:
    from trl import DPOTrainer

    return isinstance(trainer, DPOTrainer)


def _changed_trainer(trainer, change=None, steps=None, **attributes):
    """A shallow copy of ``trainer`` whose model (deep-copied) went through ``change(model)``, with ``steps`` steps done
    and other ``attributes``: the slips' example answers (the reference trainer is left as it is)."""
    other = copy.copy(trainer)
    if change is not None:
        other.model = copy.deepcopy(trainer.model)
        change(other.model)
    if steps is not None:
        other.state = copy.copy(trainer.state)
        other.state.global_step = steps
    for name, value in attributes.items():
        setattr(other, name, value)
    return other


@check
def check_dpo_trainer(trainer, r: int, target_modules, steps: int) -> Table:
    """A ``DPOTrainer`` built from the base model with ``peft_config`` (no second model), trained ``steps`` steps."""
    import torch

    model = getattr(trainer, "model", None)
    peft = _is_peft_model(model)
    adapters = dict(model.peft_config) if peft else {}
    config = adapters.get("default")
    got, want = _target_set(getattr(config, "target_modules", None)), _target_set(target_modules)
    leaked = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n] if peft else []
    done = getattr(getattr(trainer, "state", None), "global_step", None)
    n_lora = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad) if peft else 0

    def moved(m) -> bool:
        return any(layer.lora_B["default"].weight.abs().max().item() > 0 for _, layer in _lora_layers(m, "default"))

    def zero_b(m):
        with torch.no_grad():
            for _, layer in _lora_layers(m, "default"):
                layer.lora_B["default"].weight.zero_()

    return Table(
        guard=[Mistake(lambda t: not _is_dpo_trainer(t), f"`trainer` là {type(trainer).__name__}, không phải `DPOTrainer` "
                       "của TRL.", "`trainer = DPOTrainer(model=..., args=CAU_HINH, train_dataset=..., processing_class="
                       "tokenizer, peft_config=LoraConfig(...))`.", example=lambda ref: ref.model)],
        slips=[
            Mistake(lambda _: not peft, "mô hình của trainer không có bộ điều hợp: đây là huấn luyện toàn bộ (full "
                    "finetuning), và TRL phải nạp thêm một bản sao làm mô hình tham chiếu.",
                    "Truyền `peft_config=LoraConfig(...)` cho `DPOTrainer`.",
                    example=lambda ref: _changed_trainer(ref, model=ref.model.get_base_model())),
            Mistake(lambda t: t.ref_model is not None, "`trainer.ref_model` không phải None: bạn đã nạp thêm một mô hình "
                    "tham chiếu, tốn thêm bộ nhớ bằng cả một mô hình.",
                    "Bỏ `ref_model=...`: với PEFT, TRL lấy mô hình tham chiếu bằng cách tắt bộ điều hợp.",
                    example=lambda ref: _changed_trainer(ref, ref_model=ref.model.get_base_model())),
            Mistake(lambda _: "ref" in adapters, "trainer có thêm bộ điều hợp `ref`: bạn đã đưa vào một `PeftModel`, nên TRL "
                    "coi đó là bộ điều hợp đã huấn luyện và chép nó làm tham chiếu.",
                    "Với bộ điều hợp mới, đưa mô hình cơ sở (`LESSON.load_base()`) cùng `peft_config=...`, đừng gọi "
                    "`get_peft_model` trước.",
                    example=lambda ref: _changed_trainer(ref, lambda m: m.peft_config.update(ref=m.peft_config["default"]))),
            Mistake(lambda _: getattr(config, "r", None) is None,
                    f"không tìm thấy bộ điều hợp LoRA `default` (có: {list(adapters)}).", "Dùng `peft_config=LoraConfig(...)`.",
                    example=lambda ref: _changed_trainer(ref, lambda m: m.peft_config.update(
                        khac=m.peft_config.pop("default")))),
            Mistake(lambda _: config.r != r, f"hạng r = {getattr(config, 'r', None)}, đề bài yêu cầu r = {r}.",
                    f"`LoraConfig(r={r}, ...)`.",
                    example=lambda ref: _changed_trainer(ref, lambda m: setattr(m.peft_config["default"], "r", r + 1))),
            Mistake(lambda _: got != want, f"bộ điều hợp gắn vào {sorted(got or [])}, đề bài yêu cầu {sorted(want)}.",
                    f"`target_modules={sorted(want)}`.", example=lambda ref: _changed_trainer(
                        ref, lambda m: setattr(m.peft_config["default"], "target_modules", {"o_proj"}))),
            Mistake(lambda _: bool(leaked), f"{len(leaked)} tensor của mô hình cơ sở vẫn được huấn luyện (ví dụ "
                    f"`{leaked[0] if leaked else ''}`).",
                    "Để TRL tạo bộ điều hợp từ `peft_config`; đừng bật `requires_grad` cho trọng số cơ sở.",
                    example=lambda ref: _changed_trainer(ref, lambda m: m.get_base_model().lm_head.weight.requires_grad_(True))),
            Mistake(lambda _: done == 0, "trainer chưa huấn luyện bước nào.", "Gọi `trainer.train()`.",
                    example=lambda ref: _changed_trainer(ref, steps=0)),
            Mistake(lambda _: done != steps, f"trainer đã chạy {done} bước, đề bài yêu cầu {steps}.",
                    f"Dùng `args=CAU_HINH` (max_steps={steps}) và gọi `trainer.train()` một lần.",
                    example=lambda ref: _changed_trainer(ref, steps=steps + 1)),
            Mistake(lambda t: not moved(t.model), "mọi ma trận B vẫn bằng 0: bộ điều hợp không học được gì.",
                    "Kiểm tra tốc độ học trong `CAU_HINH` và gọi `trainer.train()`.",
                    example=lambda ref: _changed_trainer(ref, zero_b)),
        ],
        ok=f"DPO với PEFT: một mô hình, `ref_model` là None, {fmt_count(n_lora)} tham số LoRA (r={r}, "
           f"{', '.join(sorted(want))}), đã huấn luyện {done} bước.",
    )


_LAST_LOGPS: dict = {}


def _eval_logps(trainer):
    """(policy, reference) log-probabilities over the trainer's evaluation set, recomputed.

    The last result is kept for the same trainer, step and adapter weights (a fingerprint of the trainable
    parameters), so the three checks that read it after one training run pay for it once.
    """
    import torch

    from ..preferences import completion_logps

    with torch.no_grad():
        fingerprint = tuple(round(p.double().sum().item(), 12) for p in trainer.model.parameters() if p.requires_grad)
    key = (id(trainer), trainer.state.global_step, fingerprint)
    if key in _LAST_LOGPS:
        return _LAST_LOGPS[key]
    loader = trainer.get_eval_dataloader()
    with trainer.model.disable_adapter():
        reference = completion_logps(trainer.model, loader)
    policy = completion_logps(trainer.model, loader)
    _LAST_LOGPS.clear()
    _LAST_LOGPS[key] = (policy, reference)
    return policy, reference


def _same(a, b, atol: float = 1e-3) -> bool:
    import torch

    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=atol)


def _require_trainer(trainer):
    """The trainer is the learner's earlier answer, not this one: without it the check reports that at once."""
    if trainer is None or not _is_dpo_trainer(trainer) or not _is_peft_model(trainer.model):
        raise Verdict(_wrong("không có `trainer` DPO với bộ điều hợp để đối chiếu.",
                             "Làm câu 2 trước (tạo và huấn luyện `trainer`)."))


def _floats(value):
    import torch

    return torch.as_tensor(value, dtype=torch.float32).detach().cpu().flatten()


@check
def check_reference_logps(reference, trainer) -> Table | CheckResult:
    """Log-probabilities of the reference model (the trainer's model with its adapter disabled) on the eval set."""
    _require_trainer(trainer)
    policy, truth = _eval_logps(trainer)
    n = len(truth[0])
    is_pair = isinstance(reference, (tuple, list)) and len(reference) == 2
    pair = tuple(_floats(v) for v in reference) if is_pair else None
    return Table(
        guard=[Mistake(lambda _: not is_pair, "`logp_tham_chieu` phải là một cặp (log-xác suất câu được chọn, log-xác suất "
                       "câu bị loại).", "`completion_logps(...)` trả về đúng một cặp như vậy.", example=lambda ref: ref[0])],
        right=lambda _: _same(pair[0], truth[0]) and _same(pair[1], truth[1]),
        slips=[
            Mistake(lambda _: len(pair[0]) != n or len(pair[1]) != n,
                    f"có {len(pair[0]) if pair else 0} giá trị, tập kiểm định có {n} cặp.",
                    "Tính trên `trainer.get_eval_dataloader()` (tập kiểm định), không phải tập huấn luyện.",
                    example=lambda ref: (ref[0][:n - 1], ref[1][:n - 1])),
            Mistake(lambda _: _same(pair[0], policy[0]) and _same(pair[1], policy[1]),
                    "đây là log-xác suất của mô hình ĐANG BẬT bộ điều hợp (mô hình đã huấn luyện), không phải "
                    "của mô hình tham chiếu.", "Tính bên trong `with trainer.model.disable_adapter():`.",
                    example=lambda _: policy),
            Mistake(lambda _: _same(pair[0], truth[1]) and _same(pair[1], truth[0]),
                    "hai phần bị đảo: phần đầu phải là log-xác suất câu được chọn, phần sau là câu bị loại.",
                    "Giữ đúng thứ tự mà `completion_logps` trả về: `(chosen, rejected)`.", example=lambda ref: ref[::-1]),
        ],
        otherwise=("các giá trị không khớp log-xác suất của mô hình tham chiếu trên tập kiểm định.",
                   "`with trainer.model.disable_adapter(): logp_tham_chieu = completion_logps(trainer.model, "
                   "trainer.get_eval_dataloader())`."),
        ok=f"log π_ref của {n} cặp = log-xác suất của chính mô hình khi TẮT bộ điều hợp.",
        measured=f"trung bình {truth[0].mean().item():.1f} (câu được chọn), {truth[1].mean().item():.1f} (câu bị loại).",
    )


def check_dpo_numbers(margins, accuracy, loss, trainer, beta: float) -> CheckResult:
    """DPO's reward margins, preference accuracy and loss on the eval set, computed by hand.

    ``margins`` per pair = β·[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))];
    ``accuracy`` = fraction of margins > 0; ``loss`` = mean of −log σ(margin). The mistakes: :func:`_dpo_numbers`.
    """
    named = (("bien", margins), ("do_chinh_xac", accuracy), ("loss_dpo", loss))
    missing = [f"`{n}`" for n, v in named if v is None]
    if 0 < len(missing) < 3:
        return _todo(f"còn thiếu {', '.join(missing)}")
    return _dpo_numbers(None if missing else (margins, accuracy, loss), trainer, beta)


@check
def _dpo_numbers(answer, trainer, beta: float) -> Table | CheckResult:
    """The table of :func:`check_dpo_numbers`; ``answer`` is ``(margins, accuracy, loss)``."""
    import torch
    import torch.nn.functional as F

    _require_trainer(trainer)
    (pc, pr), (rc, rr) = _eval_logps(trainer)
    truth = beta * ((pc - rc) - (pr - rr))
    acc_truth, n_right = (truth > 0).float().mean().item(), (truth > 0).sum().item()
    loss_truth = (-F.logsigmoid(truth)).mean().item()
    m = _floats(answer[0])
    acc, value = (float(torch.as_tensor(v, dtype=torch.float64).item()) for v in answer[1:])
    margins_right = m.shape == truth.shape and _same(m, truth)
    acc_right = abs(acc - acc_truth) <= 1e-6
    loss_right = abs(value - loss_truth) <= 1e-4 * max(1.0, abs(loss_truth))

    def margins_slip(when, problem, hint, wrong):
        return Mistake(lambda _: when(), problem, hint, example=lambda ref: (wrong, *ref[1:]))

    def number_slip(i, wrong, problem, hint, near=1e-4):
        got = acc if i == 1 else value
        return Mistake(lambda _: abs(got - wrong) < near, problem, hint, example=part_replaced(i, lambda _: wrong))

    return Table(
        right=lambda _: margins_right and acc_right and loss_right,
        slips=[
            # --- the margins
            margins_slip(lambda: m.shape != truth.shape, f"`bien` có {m.numel()} giá trị, cần một biên cho mỗi cặp của tập "
                         f"kiểm định ({truth.numel()}).", "Đừng lấy trung bình: `bien` là một tensor, mỗi cặp một giá trị.",
                         truth.mean()),
            margins_slip(lambda: not margins_right and m.abs().max().item() < 1e-6, "mọi biên bằng 0: log π và log π_ref "
                         "của bạn là một.", "Tính log π_ref trong `with trainer.model.disable_adapter():`, log π thì ở "
                         "ngoài khối đó.", truth * 0),
            margins_slip(lambda: not margins_right and _same(m, truth / beta), f"biên lớn gấp {1 / beta:g} lần: thiếu hệ số "
                         "β.", f"Nhân với `BETA` (= {beta:g}).", truth / beta),
            margins_slip(lambda: not margins_right and _same(m, -truth), "biên ngược dấu: bạn đã đảo câu được chọn và câu bị "
                         "loại.", "Biên = β·[(log π(y_w) − log π_ref(y_w)) − (log π(y_l) − log π_ref(y_l))], y_w là câu được "
                         "chọn.", -truth),
            margins_slip(lambda: not margins_right and _same(m, beta * (pc - pr)), "đây là β·(log π(y_w) − log π(y_l)): thiếu "
                         "mô hình tham chiếu.", "Trừ log π_ref của từng câu trả lời trước khi lấy hiệu.", beta * (pc - pr)),
            margins_slip(lambda: not margins_right, "biên không khớp công thức DPO tính lại từ `trainer`.",
                         "bien = BETA * ((logp_mo_hinh[0] - logp_tham_chieu[0]) - (logp_mo_hinh[1] - logp_tham_chieu[1])).",
                         truth + 0.5),
            # --- the preference accuracy
            *([number_slip(1, n_right, f"{acc:g} là số cặp có biên > 0; cần tỉ lệ (từ 0 đến 1).",
                           "Chia cho số cặp, hoặc dùng `.float().mean()`.", near=1e-6)] if abs(n_right - acc_truth) > 1e-6 else []),
            *([number_slip(1, 100 * acc_truth, f"{acc:g} là phần trăm; cần tỉ lệ từ 0 đến 1.", "Bỏ phép nhân 100.")]
              if acc_truth > 0 else []),
            Mistake(lambda _: not acc_right, f"độ chính xác ưu tiên {acc:g} không đúng: tỉ lệ cặp có biên > 0 là {acc_truth:g}.",
                    "`(bien > 0).float().mean().item()`: biên bằng 0 không tính là đúng.",
                    example=lambda ref: (ref[0], 1.5, ref[2])),
            # --- the loss
            number_slip(2, (-F.logsigmoid(truth)).sum().item(), "đây là tổng loss của các cặp; DPO lấy trung bình.",
                        "Dùng `.mean()` thay cho `.sum()`.", near=1e-3),
            number_slip(2, -loss_truth, "loss âm: thiếu dấu trừ.", "loss = −log σ(biên), trung bình trên các cặp."),
            number_slip(2, (-F.logsigmoid(-truth)).mean().item(), "đây là loss khi đảo dấu biên.",
                        "loss = `-F.logsigmoid(bien).mean()`."),
        ],
        otherwise=(f"loss {value:.4f} không khớp −log σ(biên) trung bình = {loss_truth:.4f}.",
                   "`-torch.nn.functional.logsigmoid(bien).mean().item()` (không phải `1 - sigmoid`, và nhớ lấy log)."),
        ok=f"biên, độ chính xác ưu tiên và loss DPO trên {truth.numel()} cặp kiểm định khớp với cách TRL tính "
           "(lúc bắt đầu, loss là log 2 ≈ 0.693).",
        measured=f"biên trung bình {truth.mean().item():.3f}, độ chính xác ưu tiên {acc_truth:.0%}, loss {loss_truth:.4f}.",
    )


_SHIP, _MORE = "giao", "huan luyen them"


@check
def check_dpo_decision(answer, trainer, beta: float, min_accuracy: float = 0.75) -> Table | CheckResult:
    """Decide and defend: ship the DPO adapter now, or train more? The numbers are recomputed from ``trainer``.

    ``answer`` = ``{"lựa_chọn": "giao" | "huấn luyện thêm", "số_liệu": {"độ_chính_xác_ưu_tiên": float,
    "loss_dpo": float, "biên_trung_bình": float}}`` on the evaluation pairs. The team's rule: ship only when the
    preference accuracy reaches ``min_accuracy`` and the loss is below log 2 (the loss before any training).
    """
    import math

    import torch.nn.functional as F

    choice, numbers = _decision(answer)
    plain = _plain(choice)
    _require_trainer(trainer)
    (pc, pr), (rc, rr) = _eval_logps(trainer)
    margins = beta * ((pc - rc) - (pr - rr))
    truth = {"độ_chính_xác_ưu_tiên": (margins > 0).float().mean().item(),
             "loss_dpo": (-F.logsigmoid(margins)).mean().item(),
             "biên_trung_bình": margins.mean().item()}
    train_losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    ready = truth["độ_chính_xác_ưu_tiên"] >= min_accuracy and truth["loss_dpo"] < math.log(2)

    def near(key, value) -> bool:
        got = _number(_field(numbers, key))
        return got is not None and abs(got - value) <= max(1e-3, 1e-3 * abs(value))

    def number_rows(key, known):
        """``known``: (wrong value, hint) of the ways this number is known to go wrong, then any other value."""
        problem = f"`số_liệu['{key}']` = {_field(numbers, key)!r} không phải con số của tập kiểm định."
        return [*(Mistake(lambda _, w=w: near(key, w), problem, hint, example=lambda ref, w=w: _decided(ref, **{key: w}))
                  for w, hint in known if abs(w - truth[key]) > 1e-3),
                Mistake(lambda _: not near(key, truth[key]), problem, "Chép các con số bạn đã tính ở câu 3 (`do_chinh_xac`, "
                        "`loss_dpo`, `bien.mean()`), đừng gõ tay.",
                        example=lambda ref: _decided(ref, **{key: truth[key] + 0.2}))]

    return Table(
        guard=[Mistake(lambda _: plain not in (_SHIP, _MORE), f"`lựa_chọn` = {choice!r}; chọn \"giao\" hoặc \"huấn luyện "
                       "thêm\".", "Viết đúng một trong hai.", example=lambda ref: _decided(ref, "có lẽ"))],
        slips=[
            *number_rows("độ_chính_xác_ưu_tiên", [(100 * truth["độ_chính_xác_ưu_tiên"],
                                                   "Độ chính xác ưu tiên là tỉ lệ 0–1, không phải phần trăm.")]),
            *number_rows("loss_dpo", [(train_losses[-1], "Đó là loss huấn luyện của bước cuối; quyết định dựa trên tập "
                                       "kiểm định (câu 3).")] if train_losses else []),
            *number_rows("biên_trung_bình", []),
            Mistake(lambda _: plain == _SHIP, "chính số liệu của bạn phản bác lựa chọn này: độ chính xác ưu tiên hoặc loss "
                    "chưa đạt ngưỡng giao.", f"Quy tắc: độ chính xác ưu tiên ≥ {min_accuracy:.0%} và loss < log 2 ≈ 0.693.",
                    example=lambda ref: _decided(ref, "giao")) if not ready else
            Mistake(lambda _: plain == _MORE, "số liệu của bạn đã đạt ngưỡng giao, mà bạn chọn huấn luyện thêm.",
                    "Theo quy tắc của nhóm thì đã giao được; huấn luyện thêm tốn thời gian và dễ quá khớp (overfitting) "
                    "với 16 cặp.", example=lambda ref: _decided(ref, "huấn luyện thêm")),
        ],
        ok="Lựa chọn của bạn đúng theo quy tắc của nhóm, với các con số đã tính lại từ `trainer`.",
        measured=f"bạn chọn «{choice}»: độ chính xác ưu tiên {truth['độ_chính_xác_ưu_tiên']:.0%}, loss "
                 f"{truth['loss_dpo']:.4f}, biên trung bình {truth['biên_trung_bình']:.3f}.",
    )
