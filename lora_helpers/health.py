"""Is my LoRA adapter really doing something? One report of the failures that raise no error.

Training runs, the loss may even fall, and yet the adapter does nothing or the saved model is wrong. Each item
of :func:`adapter_health` measures one such failure on the model itself (never on what the code claims) and says,
in Vietnamese, what to do when it fails:

* **trainable** (with ``for_training=True``): every LoRA tensor of the active adapter has ``requires_grad``. An
  adapter reloaded with ``PeftModel.from_pretrained`` without ``is_trainable=True`` stays frozen, and a trainer
  built on it trains nothing (or only what else is trainable);
* **count**: the trainable parameters equal the closed form ``sum r * (d_in + d_out)`` over the adapted layers
  (plus ``modules_to_save``); more means base weights are trainable too (full finetuning by accident);
* **coverage**: which linear layer types of the decoder blocks got the adapter, in how many blocks; a
  ``target_modules`` that matches only some types or some blocks is reported with the names it missed;
* **B ≠ 0** (with ``trained=True``): after training, ``lora_B`` is non-zero in every adapted layer (peft starts it
  at zero; still zero means no gradient ever reached it);
* **active**: the adapter is the active one and no layer has adapters switched off. ``load_adapter`` does not
  activate what it loads (``set_adapter`` does), and ``disable_adapter_layers()`` (or code left inside
  ``with model.disable_adapter():``) switches every adapter off until ``enable_adapter_layers()``;
* **effect** (with a ``probe``): the logits with the adapter on and under ``disable_adapter()`` differ, in eval
  mode; identical logits mean the adapter is disabled, not active, or zero;
* **labels** (with a training ``batch``): the prompt is masked (``-100``) and the answer's last token, the
  end-of-turn token, is learned in every row. A collator that masks padding *by id* when pad = end-of-turn
  (SmolLM2: ``<|im_end|>``) masks that token too, and the model never learns to stop;
* **base** (with ``adapter_dir``): the base weights are the ones the adapter was trained on (fingerprint);
* **autocast**: no module still runs under a mixed-precision Trainer's autocast wrapper (a "fp32" comparison
  after ``Trainer(bf16=True)`` would run in bf16).

:func:`merged_health` (``adapter_health(merged, saved_dir=...)``) checks a merged model after save and reload: tied
embeddings kept tied, same logits.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import CourseError
from .numbers import count

OK, FAIL, SKIP = "✓", "✗", "–"


@dataclass(frozen=True)
class Finding:
    """One item of a health report: ``ok`` is True, False, or None (not measured: the input it needs was not
    given, or it does not apply)."""

    item: str
    ok: bool | None
    detail: str
    fix: str = ""

    def line(self) -> str:
        mark = SKIP if self.ok is None else OK if self.ok else FAIL
        text = f"{mark} {self.item}: {self.detail}"
        return text + (f"\n    👉 {self.fix}" if self.ok is False and self.fix else "")


@dataclass(frozen=True)
class HealthReport:
    """The findings of :func:`adapter_health`, printed one per line (✓ passed, ✗ failed, – not measured)."""

    findings: tuple
    title: str = "Sức khoẻ bộ điều hợp"

    @property
    def ok(self) -> bool:
        """No item failed (items not measured do not count)."""
        return all(f.ok is not False for f in self.findings)

    def failed(self) -> list[str]:
        """The names of the failed items."""
        return [f.item for f in self.findings if f.ok is False]

    def __getitem__(self, item: str) -> Finding:
        for finding in self.findings:
            if finding.item == item:
                return finding
        raise KeyError(item)

    def __str__(self) -> str:
        head = f"{self.title}: " + ("không phát hiện lỗi." if self.ok else
                                           f"{len(self.failed())} mục hỏng ({', '.join(self.failed())}).")
        return "\n".join([head, *(f.line() for f in self.findings)])

    def _repr_pretty_(self, printer, cycle):  # IPython shows the report itself as a cell's last value
        printer.text(str(self))


def _lora_layers(model, name: str):
    return [(path, m) for path, m in model.named_modules()
            if hasattr(m, "lora_A") and hasattr(m.lora_A, "keys") and name in m.lora_A.keys()]


def _block_of(path: str) -> tuple[int | None, str]:
    """(decoder block index, layer type) of a module path such as ``...layers.3.self_attn.q_proj``."""
    parts = path.split(".")
    for i in range(len(parts) - 1, 0, -1):
        if parts[i - 1] in {"layers", "h", "blocks", "layer"} and parts[i].isdigit():
            return int(parts[i]), parts[-1]
    return None, parts[-1]


def _linear_paths(model) -> list[str]:
    """Paths of the linear layers a LoRA could target inside the decoder blocks (LoRA-wrapped ones included)."""
    import torch

    paths = []
    for path, module in model.named_modules():
        if ".lora_" in path or path.endswith(("base_layer",)) or ".base_layer." in path:
            continue
        wrapped = hasattr(module, "base_layer") and hasattr(module, "lora_A")
        if (wrapped or isinstance(module, torch.nn.Linear)) and _block_of(path)[0] is not None:
            paths.append(path)
    return paths


def _adapter_name(model, adapter_name):
    configs = getattr(model, "peft_config", None)
    if not configs:
        raise CourseError("Mô hình này không mang bộ điều hợp nào (không phải PeftModel).",
                          "Gắn bộ điều hợp trước: `PeftModel.from_pretrained(mô_hình, thư_mục)` hoặc "
                          "`get_peft_model(mô_hình, LoraConfig(...))`.")
    name = adapter_name or getattr(model, "active_adapter", None)
    name = name[0] if isinstance(name, (list, tuple)) else name
    if name not in configs:
        raise CourseError(f"Không có bộ điều hợp tên `{name}`; mô hình có: {', '.join(configs)}.",
                          "Truyền `adapter_name=` là một trong các tên đó.")
    return name, configs[name]


def _trainable(layers, name, for_training: bool) -> Finding:
    tensors = [p for _, m in layers for part in (m.lora_A[name], m.lora_B[name]) for p in part.parameters()]
    frozen = sum(not p.requires_grad for p in tensors)
    if not for_training:
        return Finding("huấn luyện được", None, f"{len(tensors) - frozen}/{len(tensors)} tensor LoRA có "
                       "requires_grad (chỉ là lỗi khi bạn định huấn luyện tiếp: for_training=True)")
    return Finding("huấn luyện được", frozen == 0, f"{len(tensors) - frozen}/{len(tensors)} tensor LoRA có requires_grad",
                   "Bộ điều hợp nạp bằng `PeftModel.from_pretrained(...)` mặc định bị đóng băng: nạp lại với "
                   "`is_trainable=True` trước khi đưa vào trainer.")


def _count(model, layers, name, config) -> Finding:
    from .params import lora_layer_params

    expected = 0
    for _, m in layers:
        r = m.r[name]
        base = m.get_base_layer()
        d_in, d_out = getattr(base, "in_features", None), getattr(base, "out_features", None)
        if d_in is None:  # embeddings, convolutions: count the tensors themselves
            expected += sum(p.numel() for part in (m.lora_A[name], m.lora_B[name]) for p in part.parameters())
        else:
            expected += lora_layer_params(r, d_in, d_out)
            if getattr(m, "use_dora", {}).get(name):
                expected += d_out  # DoRA's magnitude vector
    saved = sum(p.numel() for path, p in model.named_parameters()
                if f"modules_to_save.{name}." in path)
    expected += saved
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    detail = (f"{count(trainable)} tham số huấn luyện được; công thức r·(d_in + d_out) cho {len(layers)} lớp"
              f"{' + modules_to_save' if saved else ''}: {count(expected)}")
    if trainable == 0:
        return Finding("số tham số", None, detail + " (không tham số nào huấn luyện được: xem mục trên)")
    return Finding("số tham số", trainable <= expected, detail,
                   "Có trọng số của mô hình cơ sở đang huấn luyện được (bạn tinh chỉnh cả mô hình mà không biết): "
                   "tạo bộ điều hợp bằng `get_peft_model` trên mô hình cơ sở mới nạp, đừng bật `requires_grad` "
                   "trên nó; lớp cần học trọn vẹn thì khai trong `modules_to_save`.")


def _coverage(model, layers) -> Finding:
    adapted = {path for path, _ in layers}
    by_type: dict[str, set] = {}
    blocks = set()
    for path in _linear_paths(model):
        block, kind = _block_of(path)
        blocks.add(block)
        if path in adapted:
            by_type.setdefault(kind, set()).add(block)
        else:
            by_type.setdefault(kind, set())
    full = sorted(k for k, b in by_type.items() if b == blocks)
    partial = {k: len(b) for k, b in by_type.items() if b and b != blocks}
    missed = sorted(k for k, b in by_type.items() if not b)
    detail = f"{len(full)} loại lớp ở đủ {len(blocks)} khối ({', '.join(full) or 'không loại nào'})"
    if partial:
        detail += "; chỉ ở một số khối: " + ", ".join(f"{k} ({n}/{len(blocks)})" for k, n in sorted(partial.items()))
    if missed:
        detail += "; không có bộ điều hợp: " + ", ".join(missed)
    ok = bool(layers) and not partial
    return Finding("lớp được gắn", ok, detail,
                   "`target_modules` chỉ khớp một phần số khối: kiểm tra tên (regex, `layers_to_transform`); "
                   "muốn mọi lớp tuyến tính thì dùng `target_modules=\"all-linear\"`.")


def _b_nonzero(layers, name, trained) -> Finding:
    zero = [path for path, m in layers if not m.lora_B[name].weight.detach().count_nonzero()]
    detail = f"lora_B bằng 0 ở {len(zero)}/{len(layers)} lớp"
    if not trained:
        return Finding("B khác 0", None, detail + " (lúc khởi tạo B = 0 là bình thường; trained=True để kiểm)")
    return Finding("B khác 0", not zero, detail,
                   "B vẫn bằng 0 sau huấn luyện: không gradient nào tới bộ điều hợp. Xem mục \"huấn luyện được\", "
                   "tốc độ học, và (với gradient checkpointing) `model.enable_input_require_grads()`.")


def _active(model, layers, name) -> Finding:
    active = getattr(model, "active_adapters", None)
    active = list(active() if callable(active) else active or [getattr(model, "active_adapter", None)])
    off = sum(bool(getattr(m, "disable_adapters", False)) for _, m in layers)
    detail = f"bộ đang chọn: {', '.join(map(str, active))}; lớp đang tắt bộ điều hợp: {off}/{len(layers)}"
    if name not in active:
        return Finding("đang bật", False, detail,
                       f"`load_adapter` chỉ nạp, không chọn: gọi `model.set_adapter(\"{name}\")` trước khi dùng nó.")
    return Finding("đang bật", off == 0, detail,
                   "Bộ điều hợp đang bị tắt (`disable_adapter_layers()`, hoặc mã còn nằm trong "
                   "`with model.disable_adapter():`): gọi `model.enable_adapter_layers()`, hoặc ra khỏi khối `with`.")


def _effect(model, probe) -> Finding:
    import torch

    if probe is None:
        return Finding("có tác dụng", None, "chưa đo (truyền probe=: một lô câu hỏi đã mã hoá, ví dụ "
                       "`tokenizer.apply_chat_template(..., return_dict=True, return_tensors=\"pt\")`)")
    was_training = model.training
    model.eval()
    inputs = {k: v for k, v in dict(probe).items() if k in {"input_ids", "attention_mask"}}
    with torch.no_grad():
        on = model(**inputs).logits.float()
        with model.disable_adapter():
            off = model(**inputs).logits.float()
    model.train(was_training)
    diff = (on - off).abs().max().item()
    return Finding("có tác dụng", diff > 0, f"max |logits có − logits tắt bộ điều hợp| = {diff:.3g}",
                   "Bộ điều hợp không đổi gì: nó đang tắt (còn trong `with model.disable_adapter()`?), không phải "
                   "bộ đang chọn (`model.set_adapter(tên)`), hoặc B = 0 (chưa huấn luyện).")


def _labels(batch, tokenizer) -> Finding:
    if batch is None:
        return Finding("nhãn", None, "chưa đo (truyền batch=: một lô huấn luyện có `labels`, và tokenizer=)")
    if tokenizer is None:
        raise CourseError("Kiểm tra nhãn cần tokenizer (để biết token kết thúc lượt).", "Truyền `tokenizer=tokenizer`.")
    labels, ids = batch["labels"], batch["input_ids"]
    mask = batch.get("attention_mask")
    end_ids = {i for i in (tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>")) if i is not None}
    rows, stop_masked, prompt_learned = labels.shape[0], 0, 0
    for row in range(rows):
        real = (mask[row] > 0) if mask is not None else (labels[row] == labels[row])
        learned = ((labels[row] != -100) & real).nonzero().flatten()
        if not len(learned):
            stop_masked += 1
            continue
        first, last = learned[0].item(), learned[-1].item()
        if first == int(real.nonzero()[0]):
            prompt_learned += 1
        ends = [p for p in range(first, int(real.nonzero()[-1]) + 1) if ids[row, p].item() in end_ids]
        if not ends or labels[row, ends[0]].item() == -100 or last < ends[0]:
            stop_masked += 1
    detail = (f"{rows} dòng: token kết thúc lượt bị che ở {stop_masked} dòng, câu hỏi được học ở {prompt_learned} "
              "dòng")
    return Finding("nhãn", stop_masked == 0 and prompt_learned == 0, detail,
                   "Nhãn -100 phải che câu hỏi và chỉ câu hỏi. Khi pad trùng token kết thúc lượt (`<|im_end|>`), "
                   "đừng che phần đệm theo id (DataCollatorForLanguageModeling làm vậy): che theo attention_mask, "
                   "như bộ ghép lô SFT của TRL; mô hình không học token kết thúc thì không biết dừng.")


def _base(model, adapter_dir) -> Finding:
    if adapter_dir is None:
        return Finding("mô hình cơ sở", None, "chưa đo (truyền adapter_dir=: thư mục bộ điều hợp đã lưu)")
    from .fingerprint import compare_with_record, read_fingerprint_record

    result = compare_with_record(model, read_fingerprint_record(adapter_dir))
    if result.same is None:
        return Finding("mô hình cơ sở", None, f"không so được ({result.reason})")
    return Finding("mô hình cơ sở", bool(result.same),
                   "trọng số cơ sở " + ("đúng" if result.same else "KHÁC") + " bản bộ điều hợp được huấn luyện trên",
                   "Nạp đúng mô hình cơ sở đã dùng khi huấn luyện (`find_base_model()`), hoặc huấn luyện lại.")


def _autocast(model) -> Finding:
    from .env import autocast_wrapped

    wrapped = autocast_wrapped(model)
    return Finding("autocast", not wrapped,
                   "còn bọc autocast của Trainer" if wrapped else "không còn lớp bọc autocast nào",
                   "Sau `Trainer(bf16=True)`, forward vẫn chạy bf16: gỡ lớp bọc trước mọi phép so fp32 "
                   "(`trainer.accelerator.unwrap_model(trainer.model, keep_fp32_wrapper=False)`), hoặc so trên một "
                   "bản nạp mới.")


def adapter_health(model, *, adapter_name: str | None = None, for_training: bool = False, trained: bool = False,
                   probe=None, batch=None, tokenizer=None, adapter_dir=None, saved_dir=None) -> HealthReport:
    """Measure the silent LoRA failures on ``model`` (a ``PeftModel``) and report each (module docstring).

    A merged model (no adapter left, e.g. after ``merge_and_unload``) with ``saved_dir``, the folder it was saved
    to: the report of :func:`merged_health` (tied embeddings and logits after reload).

    ``adapter_name``: default the active adapter. ``for_training``: you are about to train it (frozen LoRA tensors
    are then a failure). ``trained``: it has been trained (``lora_B`` must be non-zero). ``probe``: an encoded batch
    (``input_ids``, ``attention_mask``) for the on/off logit comparison. ``batch`` and ``tokenizer``: one training
    batch with ``labels``, for the label mask. ``adapter_dir``: the adapter's folder, for the base fingerprint.
    """
    if saved_dir is not None:
        if getattr(model, "peft_config", None):
            raise CourseError("`saved_dir=` là cho mô hình đã hợp nhất; mô hình này còn bộ điều hợp.",
                              "Hợp nhất trước (`merge_and_unload()`), lưu bằng `save_pretrained`, rồi khám bản đó.")
        return merged_health(model, saved_dir, probe)
    name, config = _adapter_name(model, adapter_name)
    layers = _lora_layers(model, name)
    if not layers:
        raise CourseError(f"Bộ điều hợp `{name}` không có lớp LoRA nào trong mô hình.",
                          "`target_modules` không khớp lớp nào: in `model.named_modules()` để xem tên các lớp.")
    findings = (
        _trainable(layers, name, for_training),
        _count(model, layers, name, config),
        _coverage(model, layers),
        _b_nonzero(layers, name, trained),
        _active(model, layers, name),
        _effect(model, probe),
        _labels(batch, tokenizer),
        _base(model, adapter_dir),
        _autocast(model),
    )
    return HealthReport(findings)


def merged_health(merged, saved_dir, probe=None) -> HealthReport:
    """A merged model saved to ``saved_dir``: reload it and check tied embeddings and logits against ``merged``.

    SmolLM2 ties ``lm_head`` to ``embed_tokens`` (``config.tie_word_embeddings``): a reload that unties them, or a
    save that wrote only one, changes the output layer without an error."""
    import torch
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(saved_dir, dtype=next(merged.parameters()).dtype)
    findings = []
    if getattr(merged.config, "tie_word_embeddings", False):
        tied = reloaded.get_output_embeddings().weight.data_ptr() == reloaded.get_input_embeddings().weight.data_ptr()
        same = torch.equal(reloaded.get_output_embeddings().weight, merged.get_output_embeddings().weight)
        findings.append(Finding("nhúng gắn đôi", tied and same,
                                f"lm_head {'vẫn' if tied else 'KHÔNG còn'} dùng chung trọng số với embed_tokens; "
                                f"lm_head {'giống' if same else 'KHÁC'} bản trước khi lưu",
                                "Lưu bằng `save_pretrained` của chính mô hình đã hợp nhất (không chép tay state_dict) "
                                "và giữ `tie_word_embeddings` trong config."))
    if probe is None:
        findings.append(Finding("logits sau khi nạp lại", None, "chưa đo (truyền probe=)"))
    else:
        inputs = {k: v for k, v in dict(probe).items() if k in {"input_ids", "attention_mask"}}
        merged.eval()
        with torch.no_grad():
            diff = (merged(**inputs).logits.float() - reloaded.to(merged.device)(**inputs).logits.float()).abs().max()
        findings.append(Finding("logits sau khi nạp lại", diff.item() == 0,
                                f"max |logits trước − sau khi lưu và nạp lại| = {diff.item():.3g}",
                                "Bản trên đĩa khác bản trong bộ nhớ: lưu lại bằng `save_pretrained` (kèm tokenizer) "
                                "và kiểm tra bằng check_parity trước khi triển khai."))
    return HealthReport(tuple(findings), "Mô hình đã hợp nhất, sau khi lưu và nạp lại")
