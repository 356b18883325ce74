"""Checks of ``lora_silent_failures`` (LoRA set-ups that fail without an error, found by ``adapter_health``).

* :func:`check_trainable_reload` (🐢): a saved adapter reloaded so that it can be trained further: its own weights,
  every LoRA tensor trainable, no base weight trainable;
* :func:`check_label_batch` (🐕): the learner's ``make_batch(rows)`` for chat rows, its labels recomputed by the
  check from the tokenizer's chat template: prompt and padding masked, the answer and its end-of-turn token learned;
* :func:`check_full_coverage` (🦁): a ``LoraConfig`` that adapts every linear layer type of every decoder block,
  applied by the check to a fresh base and counted against the closed form ``sum r * (d_in + d_out)``;
* :func:`check_fixed_trainer` (🦁): the frozen-reload + ``DataCollatorForLanguageModeling`` set-up, fixed and
  trained a few steps: the reloaded adapter (not a fresh one) trained, on batches that teach the end-of-turn token.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path

from ..health import _block_of
from ..numbers import count as fmt_count
from ._common import _active, _close, _is_peft_model, _lora_layers
from .kit import Mistake, Table, check, edited_copy

IGNORE = -100
KEYS = ("input_ids", "attention_mask", "labels")


# --------------------------------------------------------------------------- shared: saved and current LoRA weights
def _saved_lora(adapter_dir) -> dict:
    """The tensors of a saved adapter (``adapter_model.safetensors``), keyed as peft saves them."""
    from safetensors.torch import load_file

    return load_file(str(Path(adapter_dir) / "adapter_model.safetensors"))


def _active_name(model) -> str | None:
    names = _active(model)
    return names[0] if names else None


def _current_lora(model) -> dict:
    """The active adapter's LoRA tensors of ``model``, keyed like the saved file."""
    from peft import get_peft_model_state_dict

    return {k: v.detach() for k, v in get_peft_model_state_dict(model, adapter_name=_active_name(model)).items()}


def _same_weights(current: dict, saved: dict) -> bool:
    return current.keys() == saved.keys() and all(_close(current[k], saved[k]) for k in saved)


def _lora_params(model):
    """(name, parameter) of the active adapter's LoRA tensors, and of every other parameter."""
    name = _active_name(model)
    lora, other = [], []
    for path, p in model.named_parameters():
        (lora if ".lora_" in path and f".{name}." in f"{path}." else other).append((path, p))
    return lora, other


def _frozen_lora(model) -> int:
    return sum(not p.requires_grad for _, p in _lora_params(model)[0])


def _trainable_base(model) -> list[str]:
    return [path for path, p in _lora_params(model)[1] if p.requires_grad and ".lora_" not in path]


def _restore_saved(model, saved: dict):
    """``model`` (edited in place) with the active adapter's LoRA weights set back to ``saved``."""
    from peft import set_peft_model_state_dict

    set_peft_model_state_dict(model, saved, adapter_name=_active_name(model))
    return model


def _freeze(model):
    """``model`` (edited in place) with the active adapter's LoRA tensors frozen: a reload without is_trainable."""
    for _, p in _lora_params(model)[0]:
        p.requires_grad_(False)
    return model


def _reinit_a(model):
    """A fresh adapter's look (what ``get_peft_model`` gives): new random A, B = 0."""
    import torch

    gen = torch.Generator().manual_seed(1234)
    for path, p in _lora_params(model)[0]:
        if "lora_A" in path:
            p.copy_(torch.randn(p.shape, generator=gen) / p.shape[-1] ** 0.5)
        elif "lora_B" in path:
            p.zero_()


def _jitter(model):
    """Every LoRA tensor moved far from its value: another adapter's weights."""
    import torch

    gen = torch.Generator().manual_seed(4321)
    for _, p in _lora_params(model)[0]:
        p.add_(torch.randn(p.shape, generator=gen) * (p.abs().mean() + 1e-2))


# --------------------------------------------------------------------------- 🐢 a reload that can be trained
@check
def check_trainable_reload(model, adapter_dir) -> Table:
    """``model``: the adapter saved in ``adapter_dir`` reloaded for more training.

    Right: a ``PeftModel`` whose active adapter holds exactly the saved LoRA weights (read from the safetensors file,
    so a new adapter made with ``get_peft_model`` does not pass), every one of its LoRA tensors with
    ``requires_grad``, and no base weight trainable.
    """
    peft = _is_peft_model(model)
    saved = _saved_lora(adapter_dir)
    current = _current_lora(model) if peft else {}
    lora = _lora_params(model)[0] if peft else []
    frozen = _frozen_lora(model) if peft else 0
    base = _trainable_base(model) if peft else []
    b_zero = bool(current) and all(not v.count_nonzero() for k, v in current.items() if "lora_B" in k)
    return Table(
        guard=[
            Mistake(lambda m: not peft, f"`mo_hinh_nap_lai` là {type(model).__name__}, không phải PeftModel: không "
                    "có bộ điều hợp (adapter) nào để huấn luyện tiếp.",
                    "`PeftModel.from_pretrained(LESSON.load_base(), THU_MUC, is_trainable=True)`.",
                    example=lambda m: m.get_base_model()),
        ],
        slips=[
            Mistake(lambda m: b_zero and not _same_weights(current, saved),
                    "mọi lora_B bằng 0: đây là một bộ điều hợp mới (get_peft_model tạo B = 0), không phải bộ đã lưu.",
                    "Huấn luyện tiếp nghĩa là nạp lại trọng số đã lưu: `PeftModel.from_pretrained(mô_hình, THU_MUC, "
                    "is_trainable=True)`, không phải `get_peft_model(mô_hình, LoraConfig(...))`.",
                    example=lambda m: edited_copy(m, _reinit_a)),
            Mistake(lambda m: not _same_weights(current, saved),
                    "trọng số LoRA của bộ đang bật khác trọng số đã lưu trong THU_MUC.",
                    f"Nạp đúng thư mục ({Path(adapter_dir).name}) và đừng sửa trọng số sau khi nạp; bộ đang bật phải là "
                    "bộ vừa nạp (`model.set_adapter(tên)` nếu có nhiều bộ).",
                    example=lambda m: edited_copy(m, _jitter)),
            Mistake(lambda m: frozen > 0,
                    f"{frozen}/{len(lora)} tensor LoRA bị đóng băng (requires_grad=False): trainer sẽ không học gì.",
                    "`PeftModel.from_pretrained` mặc định nạp để suy luận; thêm `is_trainable=True`.",
                    example=lambda m: edited_copy(m, _freeze)),
            Mistake(lambda m: bool(base),
                    f"{len(base)} tensor của mô hình cơ sở cũng huấn luyện được (ví dụ `{base[0] if base else ''}`): "
                    "đây là tinh chỉnh toàn bộ, không còn là LoRA.",
                    "Đừng gọi `requires_grad_(True)` trên cả mô hình; chỉ cần `is_trainable=True` khi nạp.",
                    example=lambda m: edited_copy(m, lambda t: t.requires_grad_(True))),
        ],
        ok=f"Bộ điều hợp đã lưu được nạp lại với đúng trọng số, mọi tensor LoRA ({len(lora)}) huấn luyện được, "
           "mô hình cơ sở vẫn đóng băng.",
    )


# --------------------------------------------------------------------------- 🐕 labels of a chat batch
def _ids(encoded) -> list[int]:
    """Token ids of an ``apply_chat_template`` result (a list, or a dict/BatchEncoding with ``input_ids``)."""
    if isinstance(encoded, Mapping):
        encoded = encoded["input_ids"]
    return [int(i) for i in encoded]


def _end_ids(tokenizer) -> set[int]:
    """Ids of the end-of-turn token(s): ``eos`` and ``<|im_end|>`` where the vocabulary has it."""
    unk = tokenizer.unk_token_id
    found = {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")}
    return {i for i in found if i is not None and i != unk}


def _turns(tokenizer, messages):
    """(full ids, prompt length, position of the answer's end-of-turn token) of one chat row."""
    prompt = _ids(tokenizer.apply_chat_template(list(messages[:-1]), add_generation_prompt=True))
    full = _ids(tokenizer.apply_chat_template(list(messages)))
    ends = _end_ids(tokenizer)
    end = next((j for j in range(len(prompt), len(full)) if full[j] in ends), len(full) - 1)
    return full, len(prompt), end


def _reference_make_batch(tokenizer):
    """The reference answer of :func:`check_label_batch` (the tests use it): right-padded chat rows, labels = input
    ids on the answer (end-of-turn and the template's trailing tokens included), -100 on prompt and padding."""
    import torch

    def make_batch(rows):
        encoded = [_turns(tokenizer, row["messages"])[:2] for row in rows]
        width = max(len(full) for full, _ in encoded)
        ids = torch.full((len(encoded), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        labels = torch.full_like(ids, IGNORE)
        for i, (full, n_prompt) in enumerate(encoded):
            ids[i, :len(full)] = torch.tensor(full)
            mask[i, :len(full)] = 1
            labels[i, n_prompt:len(full)] = torch.tensor(full[n_prompt:])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    return make_batch


def _read_batch(batch) -> dict | None:
    """The three tensors of ``batch`` as long tensors of one shape, else None."""
    import torch

    if not isinstance(batch, Mapping) or any(k not in batch for k in KEYS):
        return None
    try:
        tensors = {k: torch.as_tensor(batch[k]).long().cpu() for k in KEYS}
    except (TypeError, ValueError, RuntimeError):
        return None
    shapes = {tuple(t.shape) for t in tensors.values()}
    return tensors if len(shapes) == 1 and len(next(iter(shapes))) == 2 else None


def _batch_edit(fn, edit):
    """``fn`` with its batches changed by ``edit(batch dict of cloned tensors)``: the examples of the table."""
    def make_batch(rows):
        batch = {k: (v.clone() if hasattr(v, "clone") else v) for k, v in dict(fn(rows)).items()}
        edit(batch)
        return batch
    return make_batch


def _left_padded(batch):
    import torch

    for key, fill in (("input_ids", None), ("attention_mask", 0), ("labels", IGNORE)):
        rows = []
        for i in range(batch["input_ids"].shape[0]):
            n = int(batch["attention_mask"][i].sum())
            row = batch[key][i]
            pad = row[n:] if fill is None else torch.full_like(row[n:], fill)
            rows.append(torch.cat([pad, row[:n]]))
        batch[key] = torch.stack(rows)
    return batch


@check
def check_label_batch(make_batch, tokenizer, rows) -> Table:
    """``make_batch(rows) -> {"input_ids", "attention_mask", "labels"}`` for chat rows (``messages``: the question,
    then the answer), padded on the right with ``tokenizer.pad_token_id``.

    The check calls it on ``rows`` and recomputes every row itself with ``tokenizer.apply_chat_template``: the
    prompt (``add_generation_prompt=True`` on the messages without the answer) masked with -100, the answer up to
    and including the first end-of-turn token after the prompt learned (label = input id), padding masked
    (attention mask 0). Tokens after that end-of-turn token (the template's trailing newline) may be either.
    """
    import torch

    rows = list(rows)
    pad = tokenizer.pad_token_id
    ends = _end_ids(tokenizer)
    truth = [_turns(tokenizer, row["messages"]) for row in rows]
    got = make_batch(rows) if callable(make_batch) else None
    batch = _read_batch(got)
    width = batch["input_ids"].shape[1] if batch is not None else 0
    longest = max(len(full) for full, _, _ in truth)
    n = len(rows)

    def first(found):
        return next((i for i in range(n) if found(i)), None)

    def row_ids(i):
        full = truth[i][0]
        return torch.tensor(full + [pad] * (width - len(full)))

    def row_mask(i):
        return torch.tensor([1] * len(truth[i][0]) + [0] * (width - len(truth[i][0])))

    shape_ok = batch is not None and batch["input_ids"].shape[0] == n and width >= longest
    ids, mask, labels = (batch[k] for k in KEYS) if batch is not None else (None, None, None)
    bad_ids = first(lambda i: not torch.equal(ids[i], row_ids(i))) if shape_ok else None
    left = shape_ok and bad_ids is not None and all(
        torch.equal(ids[i], torch.cat([row_ids(i)[len(truth[i][0]):], row_ids(i)[:len(truth[i][0])]])) for i in range(n))
    bad_mask = first(lambda i: not torch.equal(mask[i], row_mask(i))) if shape_ok else None

    def learned(i):
        return [j for j in range(len(truth[i][0])) if labels[i, j] != IGNORE]

    def shifted(i):
        js = [j for j in learned(i) if j + 1 < width]
        return bool(js) and all(labels[i, j] == ids[i, j + 1] for j in js) and not all(labels[i, j] == ids[i, j] for j in js)

    def pad_learned(i):
        return bool((labels[i, len(truth[i][0]):] != IGNORE).any())

    def end_masked(i):
        return labels[i, truth[i][2]] == IGNORE

    def prompt_learned(i):
        return bool((labels[i, :truth[i][1]] != IGNORE).any())

    def answer_masked(i):
        _, n_prompt, end = truth[i]
        return bool((labels[i, n_prompt:end] == IGNORE).any())

    def other_value(i):
        full, n_prompt, _ = truth[i]
        return any(int(labels[i, j]) not in (IGNORE, full[j]) for j in range(n_prompt, len(full)))

    readable = shape_ok and bad_ids is None and bad_mask is None
    found = {f.__name__: (first(f) if readable else None)
             for f in (shifted, pad_learned, end_masked, prompt_learned, answer_masked, other_value)}

    def at(kind):
        return lambda f: found[kind] is not None

    def tokens(i, js):
        return ", ".join(repr(tokenizer.convert_ids_to_tokens(int(ids[i, j]))) for j in js)

    row_s, row_e = found["shifted"], found["end_masked"]
    row_p, row_a = found["prompt_learned"], found["answer_masked"]
    end_token = tokens(row_e, [truth[row_e][2]]) if row_e is not None else ""
    shown_keys = list(got) if isinstance(got, Mapping) else []
    return Table(
        guard=[
            Mistake(lambda f: not callable(f), f"`tao_lo` phải là một hàm `tao_lo(hang) -> dict`, bạn đưa "
                    f"{type(make_batch).__name__}.", "Viết `def tao_lo(hang): ...` và truyền chính hàm đó (không gọi nó).",
                    example=lambda f: f(rows)),
            Mistake(lambda f: not isinstance(got, Mapping), f"`tao_lo(hang)` trả về {type(got).__name__}, không phải "
                    "dict.", "Trả về `{\"input_ids\": ..., \"attention_mask\": ..., \"labels\": ...}`.",
                    example=lambda f: lambda r: tuple(f(r).values())),
            Mistake(lambda f: any(k not in got for k in KEYS), f"lô thiếu khoá: cần {', '.join(KEYS)}, lô của bạn có "
                    f"{shown_keys}.", "Trả về đủ ba tensor; `labels` cùng kích thước với `input_ids`.",
                    example=lambda f: lambda r: {k: v for k, v in f(r).items() if k != "labels"}),
            Mistake(lambda f: batch is None, "ba phần của lô không cùng kích thước (số dòng × độ dài), hoặc không "
                    "đổi được thành tensor số nguyên.", "Mỗi khoá là một tensor `torch.long` kích thước (số hàng, độ dài "
                    "dài nhất).", example=lambda f: _batch_edit(f, lambda b: b.update(labels=b["labels"][:, :-1]))),
            Mistake(lambda f: not shape_ok, f"lô có {batch['input_ids'].shape[0] if batch is not None else '?'} dòng, độ "
                    f"dài {width}; cần {n} dòng (một cho mỗi hàng) và độ dài ít nhất {longest}.",
                    "Mã hoá mọi hàng, không cắt bớt, rồi đệm tới độ dài của hàng dài nhất.",
                    example=lambda f: lambda r: f(r[:-1])),
        ],
        right=lambda f: readable and all(row is None for row in found.values()),
        slips=[
            Mistake(lambda f: left, "lô được đệm bên trái; bài này cần đệm bên phải.",
                    "Tokenizer của LESSON đặt `padding_side=\"left\"` (để sinh); khi huấn luyện, đặt phần đệm sau câu "
                    "trả lời (`tokenizer.pad(..., padding_side=\"right\")` hoặc tự nối `pad_token_id`).",
                    example=lambda f: _batch_edit(f, _left_padded)),
            Mistake(lambda f: bad_ids is not None, f"`input_ids` của hàng {bad_ids} không phải mẫu hội thoại đầy đủ của "
                    "hàng đó rồi phần đệm.", "Dùng `tokenizer.apply_chat_template(hang['messages'])` cho cả hội thoại, "
                    "rồi thêm `tokenizer.pad_token_id` ở bên phải tới độ dài dài nhất.",
                    example=lambda f: _batch_edit(f, lambda b: b["input_ids"][:, 0].fill_(pad))),
            Mistake(lambda f: bad_mask is not None, f"`attention_mask` của hàng {bad_mask} sai: phải là 1 trên mọi token "
                    "thật và 0 trên phần đệm.", "Khi pad trùng token kết thúc lượt, chỉ attention_mask phân biệt được "
                    "phần đệm với token thật.", example=lambda f: _batch_edit(f, lambda b: b["attention_mask"].fill_(1))),
            Mistake(at("shifted"), f"nhãn của hàng {row_s} bị dịch sang trái một vị trí (labels[j] = input_ids[j+1]).",
                    "Đừng tự dịch: mô hình tự dịch nhãn bên trong (logits ở j đoán token j+1). labels = input_ids, "
                    "rồi đặt -100 ở chỗ không học.",
                    example=lambda f: _batch_edit(f, lambda b: b.update(labels=torch.cat(
                        [b["labels"][:, 1:], torch.full_like(b["labels"][:, :1], IGNORE)], dim=1)))),
            Mistake(at("pad_learned"), f"phần đệm của hàng {found['pad_learned']} được học (nhãn khác -100 ở chỗ "
                    "attention_mask = 0).", "Đặt labels = -100 ở mọi vị trí có attention_mask = 0.",
                    example=lambda f: _batch_edit(f, lambda b: b["labels"].copy_(torch.where(
                        b["attention_mask"] == 0, b["input_ids"], b["labels"])))),
            Mistake(at("end_masked"), f"token kết thúc lượt ({end_token}) ở cuối câu trả lời của hàng {row_e} mang "
                    "nhãn -100: mô hình không bao giờ học cách dừng.", "Bạn che theo id (`labels[input_ids == "
                    "pad_token_id] = -100`, như DataCollatorForLanguageModeling); pad trùng token kết thúc lượt, nên "
                    "hãy che phần đệm theo attention_mask.",
                    example=lambda f: _batch_edit(f, lambda b: b["labels"].masked_fill_(
                        torch.isin(b["input_ids"], torch.tensor(sorted(ends | {pad}))), IGNORE))),
            Mistake(at("prompt_learned"), f"câu hỏi của hàng {row_p} được học (có nhãn khác -100 trong "
                    f"{truth[row_p][1] if row_p is not None else '?'} token đầu, phần prompt).",
                    "Đặt -100 ở các token của prompt: độ dài là `len(tokenizer.apply_chat_template(messages[:-1], "
                    "add_generation_prompt=True))`.",
                    example=lambda f: _batch_edit(f, lambda b: b["labels"].copy_(torch.where(
                        b["attention_mask"] == 1, b["input_ids"], torch.full_like(b["input_ids"], IGNORE))))),
            Mistake(at("answer_masked"), f"một phần câu trả lời của hàng {row_a} mang nhãn -100.",
                    "Học mọi token từ sau prompt tới hết token kết thúc lượt: đừng cắt lệch một vị trí.",
                    example=lambda f: _batch_edit(f, lambda b: [b["labels"].__setitem__((i, truth[i][1]), IGNORE)
                                                               for i in range(n)])),
        ],
        otherwise=("nhãn trên câu trả lời không bằng `input_ids` ở cùng vị trí.",
                   "labels là bản sao của input_ids, chỉ thay bằng -100 ở prompt và phần đệm."),
        ok=f"Cả {n} hàng: câu hỏi và phần đệm mang nhãn -100, câu trả lời và token kết thúc lượt được học "
           "(ô kiểm tra đã tự mã hoá lại từng hàng bằng mẫu hội thoại).",
    )


# --------------------------------------------------------------------------- 🦁 every linear layer of every block
LINEAR_TYPES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_ATTENTION, _MLP = LINEAR_TYPES[:4], LINEAR_TYPES[4:]
_BROKEN_TARGETS = r".*layers\.[0-9]\.(self_attn|mlp)\.\w+_proj"
R, ALPHA = 8, 16


def _course_base():
    """A fresh float32 copy of the course base on the CPU (the default model of :func:`check_full_coverage`)."""
    import torch
    from transformers import AutoModelForCausalLM

    from ..models import find_base_model

    return AutoModelForCausalLM.from_pretrained(find_base_model(verbose=False), dtype=torch.float32)


def _block_linears(model) -> dict:
    """(block, layer type) -> (d_in, d_out) of the nn.Linear layers inside the decoder blocks of a plain model."""
    import torch

    found = {}
    for path, module in model.named_modules():
        block, kind = _block_of(path)
        if block is not None and isinstance(module, torch.nn.Linear):
            found[(block, kind)] = (module.in_features, module.out_features)
    return found


def _coverage(config, factory) -> dict:
    """What ``config`` adapts on a fresh base: ``error`` (peft refused), or the covered blocks per type, the layers
    adapted outside the blocks, the ranks, and the trainable count against the closed form."""
    from peft import get_peft_model

    from ..params import lora_layer_params

    model = factory()
    expected = _block_linears(model)
    blocks = {b for b, _ in expected}
    try:
        peft_model = get_peft_model(model, copy.deepcopy(config))
    except Exception as exc:  # noqa: BLE001 - peft's ValueError for a target that matches nothing, said in Vietnamese
        return {"error": f"{type(exc).__name__}: {str(exc)[:160]}"}
    covered = {kind: set() for kind in sorted({k for _, k in expected})}
    outside, ranks = [], set()
    for path, module in _lora_layers(peft_model, "default"):
        ranks.add(module.r["default"])
        block, kind = _block_of(path)
        if block is not None and (block, kind) in expected:
            covered[kind].add(block)
        else:
            outside.append(path.removeprefix("base_model.model."))
    return {"error": None, "blocks": len(blocks), "covered": covered, "outside": outside, "ranks": ranks,
            "trainable": sum(p.numel() for p in peft_model.parameters() if p.requires_grad),
            "closed_form": sum(lora_layer_params(R, d_in, d_out) for d_in, d_out in expected.values())}


def _spans(numbers: list[int]) -> str:
    """``[10, 11, 12, 20]`` -> "10–12, 20"."""
    spans = []
    for k in numbers:
        if spans and k == spans[-1][1] + 1:
            spans[-1][1] = k
        else:
            spans.append([k, k])
    return ", ".join(str(a) if a == b else f"{a}–{b}" for a, b in spans)


def _config_with(config, **changes):
    """A copy of a LoraConfig with some fields changed (the examples of the table)."""
    twin = copy.deepcopy(config)
    for key, value in changes.items():
        setattr(twin, key, value)
    return twin


@check
def check_full_coverage(config, model_factory=None) -> Table:
    """``config``: a ``LoraConfig`` with ``r=8``, ``lora_alpha=16`` that adapts every linear layer type (q, k, v, o,
    gate, up, down) in every decoder block, and nothing else.

    The check applies it with ``get_peft_model`` to a fresh base (``model_factory()``, default the course base
    loaded from ``find_base_model``) and reads which layers got LoRA; the trainable parameters must equal the closed
    form ``sum r * (d_in + d_out)`` over the block layers.
    """
    from peft import LoraConfig

    is_config = isinstance(config, LoraConfig)
    facts = _coverage(config, model_factory or _course_base) if is_config else {"error": None}
    error = facts["error"]
    seen = is_config and error is None
    blocks = facts.get("blocks", 0)
    covered = facts.get("covered", {})
    full = [k for k, b in covered.items() if len(b) == blocks]
    partial = {k: len(b) for k, b in covered.items() if 0 < len(b) < blocks}
    missing = [k for k, b in covered.items() if not b]
    outside = facts.get("outside", [])

    def only(kinds):
        return lambda c: set(full) == set(kinds) and set(missing) == set(covered) - set(kinds)

    reached = set().union(*covered.values()) if covered else set()
    unreached = _spans(sorted(set(range(blocks)) - reached))
    if partial and len(set(partial.values())) == 1 and len(partial) == len(covered):
        partial_text = f"cả {len(partial)} loại lớp chỉ ở {next(iter(partial.values()))}/{blocks} khối"
    else:
        partial_text = ", ".join(f"{k} ({n}/{blocks} khối)" for k, n in sorted(partial.items()))
    partial_text += f"; khối không có bộ điều hợp nào: {unreached}" if unreached else ""
    return Table(
        guard=[
            Mistake(lambda c: not is_config, f"`cau_hinh_du` là {type(config).__name__}, không phải LoraConfig.",
                    "`from peft import LoraConfig`; `cau_hinh_du = LoraConfig(r=8, lora_alpha=16, target_modules=...)`.",
                    example=lambda c: c.target_modules),
            Mistake(lambda c: error is not None, f"peft không áp dụng được cấu hình này ({error}).",
                    "`target_modules` dạng chuỗi là một regex phải khớp TRỌN tên đầy đủ của lớp (ví dụ "
                    "`model.layers.3.mlp.up_proj`); in `[n for n, _ in model.named_modules()]` để xem tên.",
                    example=lambda c: _config_with(c, target_modules=r".*layers\.\d+\.attn\.\w+_proj")),
        ],
        slips=[
            Mistake(lambda c: c.r != R or bool(facts["ranks"] - {R}),
                    f"hạng r = {getattr(config, 'r', '?')}; đề bài cần r={R} (như bộ điều hợp mẫu và RECIPE).",
                    f"`LoraConfig(r={R}, lora_alpha={ALPHA}, ...)`; đừng dùng `rank_pattern`.",
                    example=lambda c: _config_with(c, r=4)),
            Mistake(lambda c: c.lora_alpha != ALPHA, f"lora_alpha = {getattr(config, 'lora_alpha', '?')}; đề bài cần "
                    f"lora_alpha={ALPHA}.", f"`lora_alpha={ALPHA}` (hệ số alpha/r = 2).",
                    example=lambda c: _config_with(c, lora_alpha=32)),
            Mistake(lambda c: bool(partial), f"chỉ một số khối được gắn: {partial_text}.",
                    "`[0-9]` chỉ khớp MỘT chữ số (khối 0–9); dùng `\\d+`, hoặc đơn giản hơn `target_modules=\"all-linear\"`"
                    " hay danh sách tên ngắn.", example=lambda c: _config_with(c, target_modules=_BROKEN_TARGETS)),
            Mistake(only(_ATTENTION), "chỉ các lớp chú ý (q, k, v, o_proj) được gắn; lớp MLP (gate, up, down_proj) "
                    "không có bộ điều hợp.", "Thêm `gate_proj`, `up_proj`, `down_proj`, hoặc dùng `\"all-linear\"`.",
                    example=lambda c: _config_with(c, target_modules=list(_ATTENTION))),
            Mistake(only(_MLP), "chỉ các lớp MLP (gate, up, down_proj) được gắn; lớp chú ý không có bộ điều hợp.",
                    "Thêm `q_proj`, `k_proj`, `v_proj`, `o_proj`, hoặc dùng `\"all-linear\"`.",
                    example=lambda c: _config_with(c, target_modules=list(_MLP))),
            Mistake(lambda c: bool(missing), f"không có bộ điều hợp trên: {', '.join(missing)}.",
                    "Không ghi `target_modules`, peft dùng mặc định cho Llama (`q_proj`, `v_proj`); ghi rõ cả bảy loại "
                    "lớp, hoặc `\"all-linear\"`.", example=lambda c: LoraConfig(r=R, lora_alpha=ALPHA)),
            Mistake(lambda c: bool(outside), f"bộ điều hợp gắn cả vào lớp ngoài các khối: {', '.join(outside[:3])}.",
                    "Đề bài chỉ cần các lớp tuyến tính trong khối; `\"all-linear\"` tự bỏ qua lm_head (SmolLM2 gắn đôi "
                    "lm_head với embed_tokens: hợp nhất bộ điều hợp trên lm_head sẽ đổi cả embed_tokens).",
                    example=lambda c: _config_with(c, target_modules=[*LINEAR_TYPES, "lm_head"])),
            Mistake(lambda c: seen and facts["trainable"] != facts["closed_form"],
                    f"{fmt_count(facts.get('trainable', 0))} tham số huấn luyện được, nhưng công thức r·(d_in + d_out) "
                    f"trên các lớp đó cho {fmt_count(facts.get('closed_form', 0))}.",
                    "Có thêm tham số ngoài A và B: bỏ `use_dora`, `bias`, `modules_to_save` khỏi cấu hình.",
                    example=lambda c: _config_with(c, use_dora=True)),
        ],
        ok=f"Bộ điều hợp gắn vào cả {len(LINEAR_TYPES)} loại lớp tuyến tính ở mọi khối "
           f"({blocks} khối), và chỉ ở đó; số tham số huấn luyện được khớp công thức r·(d_in + d_out) "
           f"({fmt_count(facts.get('closed_form', 0))}).",
    )


# --------------------------------------------------------------------------- 🦁 the broken trainer, fixed
def _trainer(trainer, model=None, steps=None, batch=None):
    """A stand-in for ``trainer`` with its model, step count or training batch replaced (examples of the table)."""
    from types import SimpleNamespace

    batches = [batch] if batch is not None else None
    return SimpleNamespace(model=trainer.model if model is None else model,
                           state=SimpleNamespace(global_step=trainer.state.global_step if steps is None else steps),
                           processing_class=getattr(trainer, "processing_class", None),
                           data_collator=getattr(trainer, "data_collator", None),
                           get_train_dataloader=(lambda: batches) if batches else trainer.get_train_dataloader)


def _tokenizer_of(trainer, tokenizer=None):
    """The tokenizer given, else the trainer's (``processing_class``, or its collator's), else the course one."""
    tokenizer = (tokenizer or getattr(trainer, "processing_class", None)
                 or getattr(getattr(trainer, "data_collator", None), "tokenizer", None))
    if tokenizer is None:
        from ..models import find_base_model, load_tokenizer

        tokenizer = load_tokenizer(find_base_model(verbose=False))
    return tokenizer


def _first_batch(trainer) -> dict:
    batch = next(iter(trainer.get_train_dataloader()))
    return {k: v.detach().cpu() if hasattr(v, "detach") else v for k, v in dict(batch).items()}


def _masked_by_id(batch, tokenizer) -> dict:
    """What ``DataCollatorForLanguageModeling(tokenizer, mlm=False)`` gives for the same input ids: labels = input
    ids, -100 wherever the id is the pad id (with SmolLM2, every end-of-turn token)."""
    import torch

    ids = batch["input_ids"]
    masked = torch.isin(ids, torch.tensor(sorted(_end_ids(tokenizer) | {tokenizer.pad_token_id})))
    return {**batch, "labels": ids.masked_fill(masked, IGNORE)}


def _relative_change(current: dict, saved: dict, part: str) -> float:
    """‖now − saved‖ / ‖saved‖ over the ``part`` ("lora_A") tensors; inf when the keys differ."""
    keys = [k for k in saved if part in k]
    if current.keys() != saved.keys() or not keys:
        return float("inf")
    diff = sum(float((current[k].float().cpu() - saved[k].float().cpu()).pow(2).sum()) for k in keys)
    norm = sum(float(saved[k].float().pow(2).sum()) for k in keys)
    return (diff / max(norm, 1e-24)) ** 0.5


@check
def check_fixed_trainer(trainer, adapter_dir, tokenizer=None) -> Table:
    """``trainer``: the fixed set-up, trained a few steps: the adapter saved in ``adapter_dir`` reloaded trainable
    and trained on batches whose labels teach the end-of-turn token.

    Right: every LoRA tensor of ``trainer.model`` trainable; one batch of ``trainer.get_train_dataloader()`` passes the
    label item of ``adapter_health`` (end-of-turn learned in every row, prompt masked); ``trainer.state.global_step``
    at least 1; the LoRA B weights moved from the saved ones while A stayed close to them (relative change under 0.5:
    trained from the saved adapter, not from a fresh one). ``tokenizer``: default the trainer's ``processing_class``.
    """
    from ..health import adapter_health

    model = getattr(trainer, "model", None)
    state = getattr(trainer, "state", None)
    like = model is not None and state is not None and callable(getattr(trainer, "get_train_dataloader", None))
    peft = like and _is_peft_model(model)
    saved = _saved_lora(adapter_dir)
    current = _current_lora(model) if peft else {}
    frozen = _frozen_lora(model) if peft else 0
    steps = getattr(state, "global_step", 0) if like else 0
    a_change = _relative_change(current, saved, "lora_A") if peft else 0.0
    b_moved = peft and current.keys() == saved.keys() and any(
        not _close(current[k], saved[k], rtol=0.0) for k in saved if "lora_B" in k)
    batch = _first_batch(trainer) if peft and not frozen and steps else None
    if batch is not None:
        tokenizer = _tokenizer_of(trainer, tokenizer)
    labels = adapter_health(model, batch=batch, tokenizer=tokenizer)["nhãn"] if batch is not None else None

    def restored(t, steps_now):
        return _trainer(t, model=edited_copy(t.model, lambda m: _restore_saved(m, saved)), steps=steps_now)

    return Table(
        guard=[
            Mistake(lambda t: not like, f"`trainer_da_sua` là {type(trainer).__name__}, không phải một trainer.",
                    "Truyền chính trainer (SFTTrainer hay Trainer) sau khi đã gọi `trainer_da_sua.train()`.",
                    example=lambda t: t.model),
            Mistake(lambda t: not peft, "mô hình của trainer không có bộ điều hợp (không phải PeftModel).",
                    "Đưa vào trainer bộ điều hợp đã nạp lại: `PeftModel.from_pretrained(LESSON.load_base(), THU_MUC, "
                    "is_trainable=True)`.", example=lambda t: _trainer(t, model=t.model.get_base_model())),
        ],
        slips=[
            Mistake(lambda t: frozen > 0, f"{frozen} tensor LoRA của mô hình trong trainer vẫn bị đóng băng: "
                    "`train()` báo RuntimeError (element 0 of tensors does not require grad) và chưa học bước nào.",
                    "Nạp lại với `PeftModel.from_pretrained(..., is_trainable=True)` rồi dựng trainer mới.",
                    example=lambda t: _trainer(t, model=edited_copy(t.model, lambda m: _freeze(_restore_saved(m, saved))),
                                               steps=0)),
            Mistake(lambda t: steps < 1, "trainer chưa huấn luyện bước nào (`trainer.state.global_step` = 0).",
                    "Gọi `trainer_da_sua.train()` (với `max_steps=4`) trước ô kiểm tra.",
                    example=lambda t: restored(t, 0)),
            Mistake(lambda t: a_change > 0.5, "trọng số LoRA không xuất phát từ bộ đã lưu (A khác hẳn bản trong "
                    "THU_MUC): bạn huấn luyện một bộ điều hợp mới.", "Đừng dùng `get_peft_model`/`peft_config=` ở đây: "
                    "huấn luyện tiếp chính bộ đã lưu, nạp bằng `PeftModel.from_pretrained(..., is_trainable=True)`.",
                    example=lambda t: _trainer(t, model=edited_copy(t.model, _reinit_a))),
            Mistake(lambda t: labels is not None and labels.ok is False, f"nhãn của lô huấn luyện sai: "
                    f"{labels.detail if labels is not None else ''}.", "DataCollatorForLanguageModeling che mọi "
                    "`<|im_end|>` (pad trùng token kết thúc lượt) và học cả câu hỏi: dùng SFTTrainer với dữ liệu "
                    "prompt/completion (`to_prompt_completion`), hoặc bộ ghép lô của bạn ở câu 2.",
                    example=lambda t: _trainer(t, batch=_masked_by_id(_first_batch(t), tokenizer))),
            Mistake(lambda t: not b_moved, f"trainer đã chạy {steps} bước mà lora_B vẫn y như bản đã lưu: bộ điều "
                    "hợp không học gì.", "Kiểm tra `learning_rate` > 0, và rằng mô hình bạn đưa vào trainer là mô hình "
                    "có bộ điều hợp huấn luyện được.", example=lambda t: restored(t, t.state.global_step)),
        ],
        ok="Trainer huấn luyện tiếp bộ điều hợp đã lưu (tensor LoRA huấn luyện được, A vẫn gần bản đã lưu, B đã đổi), "
           "trên lô có nhãn che câu hỏi và học token kết thúc lượt.",
        measured=f"{steps} bước; A đổi {a_change:.2%} so với bản đã lưu." if peft else None,
    )
