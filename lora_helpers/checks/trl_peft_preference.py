"""Checks of lesson 7 (``trl_peft_preference``): preference pairs, DPOTrainer with PEFT, DPO's numbers by hand."""

from __future__ import annotations

from ..numbers import count as fmt_count
from ._common import (
    CheckResult,
    _decision,
    _field,
    _is_peft_model,
    _lora_layers,
    _never_raises,
    _number,
    _ok,
    _plain,
    _target_set,
    _todo,
    _wrong,
)


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

    from ..errors import CourseError
    from ..preferences import check_preference_dataset

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
    moved = any(m.lora_B["default"].weight.abs().max().item() > 0 for _, m in _lora_layers(model, "default"))
    if not moved:
        return _wrong("mọi ma trận B vẫn bằng 0: bộ điều hợp không học được gì.",
                      "Kiểm tra tốc độ học trong `CAU_HINH` và gọi `trainer.train()`.")
    n_lora = sum(p.numel() for n, p in model.named_parameters() if p.requires_grad)
    return _ok(f"DPO với PEFT: một mô hình, `ref_model` là None, {fmt_count(n_lora)} tham số LoRA (r={r}, "
               f"{', '.join(sorted(want))}), đã huấn luyện {done} bước.")


_LAST_LOGPS: dict = {}


def _eval_logps(trainer):
    """(policy, reference) log-probabilities over the trainer's evaluation set, recomputed.

    The last result is kept for the same trainer, step and adapter weights (a fingerprint of the trainable
    parameters), so the three checks that read it after one training run pay for it once.
    """
    import torch

    from ..preferences import dataloader_logps

    with torch.no_grad():
        fingerprint = tuple(round(p.double().sum().item(), 12) for p in trainer.model.parameters() if p.requires_grad)
    key = (id(trainer), trainer.state.global_step, fingerprint)
    if key in _LAST_LOGPS:
        return _LAST_LOGPS[key]
    loader = trainer.get_eval_dataloader()
    with trainer.model.disable_adapter():
        reference = dataloader_logps(trainer.model, loader)
    policy = dataloader_logps(trainer.model, loader)
    _LAST_LOGPS.clear()
    _LAST_LOGPS[key] = (policy, reference)
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
        return _wrong("không có `trainer` DPO với bộ điều hợp để đối chiếu.", "Làm câu 2 trước (tạo và huấn luyện `trainer`).")
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
        return _ok(f"log π_ref của {n} cặp = log-xác suất của chính mô hình khi TẮT bộ điều hợp.",
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
    return _ok(f"biên, độ chính xác ưu tiên và loss DPO trên {truth.numel()} cặp kiểm định khớp với cách TRL tính "
               "(lúc bắt đầu, loss là log 2 ≈ 0.693).",
               f"biên trung bình {truth.mean().item():.3f}, độ chính xác ưu tiên {acc_truth:.0%}, loss {loss_truth:.4f}.")


_SHIP, _MORE = "giao", "huan luyen them"


@_never_raises
def check_dpo_decision(answer, trainer, beta: float, min_accuracy: float = 0.75) -> CheckResult:
    """Decide and defend: ship the DPO adapter now, or train more? The numbers are recomputed from ``trainer``.

    ``answer`` = ``{"lựa_chọn": "giao" | "huấn luyện thêm", "số_liệu": {"độ_chính_xác_ưu_tiên": float,
    "loss_dpo": float, "biên_trung_bình": float}}`` on the evaluation pairs. The team's rule: ship only when the
    preference accuracy reaches ``min_accuracy`` and the loss is below log 2 (the loss before any training).
    Rejects: numbers that are not this trainer's (made up, a percentage, the training loss instead of the
    evaluation loss), and a choice the numbers contradict.
    """
    import math

    import torch.nn.functional as F

    parsed = _decision(answer)
    if isinstance(parsed, CheckResult):
        return parsed
    choice, numbers = parsed
    plain = _plain(choice)
    if plain not in (_SHIP, _MORE):
        return _wrong(f"`lựa_chọn` = {choice!r}; chọn \"giao\" hoặc \"huấn luyện thêm\".", "Viết đúng một trong hai.")
    bad = _trainer_or_wrong(trainer)
    if bad is not None:
        return bad
    (pc, pr), (rc, rr) = _eval_logps(trainer)
    margins = beta * ((pc - rc) - (pr - rr))
    truth = {"độ_chính_xác_ưu_tiên": (margins > 0).float().mean().item(),
             "loss_dpo": (-F.logsigmoid(margins)).mean().item(),
             "biên_trung_bình": margins.mean().item()}
    for key, value in truth.items():
        got = _number(_field(numbers, key))
        if got is not None and abs(got - value) <= max(1e-3, 1e-3 * abs(value)):
            continue
        hint = "Chép các con số bạn đã tính ở câu 3 (`do_chinh_xac`, `loss_dpo`, `bien.mean()`), đừng gõ tay."
        if got is not None and key == "độ_chính_xác_ưu_tiên" and abs(got - 100 * value) < 1e-3:
            hint = "Độ chính xác ưu tiên là tỉ lệ 0–1, không phải phần trăm."
        elif got is not None and key == "loss_dpo" and trainer.state.log_history:
            train_losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
            if train_losses and abs(got - train_losses[-1]) < 1e-3:
                hint = "Đó là loss huấn luyện của bước cuối; quyết định dựa trên tập kiểm định (câu 3)."
        return _wrong(f"`số_liệu['{key}']` = {_field(numbers, key)!r} không phải con số của tập kiểm định.", hint)
    ready = truth["độ_chính_xác_ưu_tiên"] >= min_accuracy and truth["loss_dpo"] < math.log(2)
    if plain == _SHIP and not ready:
        return _wrong("chính số liệu của bạn phản bác lựa chọn này: độ chính xác ưu tiên hoặc loss chưa đạt ngưỡng giao.",
                      f"Quy tắc: độ chính xác ưu tiên ≥ {min_accuracy:.0%} và loss < log 2 ≈ 0.693.")
    if plain == _MORE and ready:
        return _wrong("số liệu của bạn đã đạt ngưỡng giao, mà bạn chọn huấn luyện thêm.",
                      "Theo quy tắc của nhóm thì đã giao được; huấn luyện thêm tốn thời gian và dễ quá khớp (overfitting) "
                      "với 16 cặp.")
    return _ok("Lựa chọn của bạn đúng theo quy tắc của nhóm, với các con số đã tính lại từ `trainer`.",
               f"bạn chọn «{choice}»: độ chính xác ưu tiên {truth['độ_chính_xác_ưu_tiên']:.0%}, loss "
               f"{truth['loss_dpo']:.4f}, biên trung bình {truth['biên_trung_bình']:.3f}.")
