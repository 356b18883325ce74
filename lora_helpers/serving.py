"""Serving many LoRA adapters from one base model: the plumbing of the serving lesson.

Three ways to answer a list of requests, each naming the adapter it wants (or ``"__base__"`` for the
plain base model), all with the same greedy settings so that their answers can be compared:

* :func:`serve_by_switching`: one ``generate`` call per adapter group, ``set_adapter`` in between
  (``disable_adapter()`` for the base group);
* :func:`serve_merged`: one merged model per adapter (``merge_and_unload``), one call per group;
* :func:`serve_mixed`: one ``generate(..., adapter_names=[...])`` call for the whole mixed batch.

Each returns a :class:`Served` (answers in request order, new tokens, latency per request as seen by a
client whose request arrived at time 0, tokens per second). Bad input (an adapter name that is not
loaded, a mixed batch on a merged model, an incompatible hotswap) raises a Vietnamese
:class:`~lora_helpers.errors.CourseError` **before** anything is changed or generated.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from .bench import _cuda_in_use, _sync
from .errors import CourseError
from .models import encode_chat

BASE = "__base__"  # peft's name for "no adapter" inside a mixed batch (``adapter_names``)


# --------------------------------------------------------------------------- what is loaded
def loaded_adapters(model) -> list[str]:
    """Names of the LoRA adapters loaded on ``model`` (empty for a plain or merged transformers model)."""
    config = getattr(model, "peft_config", None)
    return list(config) if isinstance(config, dict) else []


def check_request_adapters(model, adapter_names, mixed: bool = False) -> list[str]:
    """Validate the adapter name of every request against what ``model`` has loaded; return the names.

    ``"__base__"`` (:data:`BASE`) always means the plain base model. With ``mixed=True`` (one batch
    mixing adapters) the model must still carry its adapters: a merged model cannot mix. Raises a
    Vietnamese :class:`CourseError` naming the fix; nothing is changed.
    """
    if isinstance(adapter_names, str) or not isinstance(adapter_names, (list, tuple)):
        raise CourseError(f"`adapter_names` phải là một danh sách tên (mỗi yêu cầu một tên), bạn đưa "
                          f"{type(adapter_names).__name__}.",
                          'Ví dụ: adapter_names=["don_hang", "__base__", "ngay_thang"].')
    names = list(adapter_names)
    if not names:
        raise CourseError("Danh sách yêu cầu rỗng.", "Truyền ít nhất một yêu cầu.")
    loaded = loaded_adapters(model)
    if not loaded:
        what = "một mô hình đã hợp nhất (merge_and_unload) hoặc mô hình cơ sở thường"
        fix = ("Mô hình này không còn bộ điều hợp nào để chọn theo từng yêu cầu. Dùng mô hình PeftModel chưa hợp nhất "
               "(PeftModel.from_pretrained + load_adapter) cho lô nhiều bộ điều hợp; mô hình đã hợp nhất chỉ phục vụ đúng một "
               "bộ điều hợp.")
        if mixed:
            raise CourseError(f"Không thể sinh một lô nhiều bộ điều hợp trên {what}.", fix)
        raise CourseError(f"Mô hình là {what}: không có bộ điều hợp nào được nạp.", fix)
    for i, name in enumerate(names):
        if not isinstance(name, str):
            raise CourseError(f"Tên bộ điều hợp của yêu cầu {i} là {type(name).__name__} ({name!r}), không phải chuỗi.",
                              f"Dùng một trong các tên: {', '.join([*loaded, BASE])}.")
        if name != BASE and name not in loaded:
            hint = " (mô hình cơ sở viết là \"__base__\", có hai dấu gạch dưới mỗi bên)" if "base" in name.lower() else ""
            raise CourseError(f"Yêu cầu {i} xin bộ điều hợp `{name}`, nhưng bộ điều hợp này chưa được nạp{hint}.",
                              f"Nạp nó trước bằng model.load_adapter(thư_mục, adapter_name=\"{name}\"), hoặc dùng một "
                              f"trong các tên đã nạp: {', '.join([*loaded, BASE])}.")
    return names


# --------------------------------------------------------------------------- serving
@dataclass
class Served:
    """Answers of one serving method, in request order, with what it cost.

    ``latencies[i]``: seconds from the start (every request arrived at time 0) until request ``i``'s
    answer was ready (the end of the ``generate`` call that produced it). ``new_tokens[i]``: tokens
    generated for request ``i`` before its end-of-sequence token. ``seconds``: the whole run.
    """

    method: str
    answers: list[str]
    new_tokens: list[int]
    latencies: list[float]
    seconds: float
    calls: int
    extra: dict = field(default_factory=dict)

    @property
    def tokens_per_second(self) -> float:
        return sum(self.new_tokens) / self.seconds if self.seconds > 0 else 0.0

    @property
    def mean_latency(self) -> float:
        return sum(self.latencies) / len(self.latencies)

    def row(self) -> str:
        """One line of the comparison table (Vietnamese labels)."""
        return (f"{self.method:<34}{self.calls:>6}{self.seconds:>9.1f}{self.tokens_per_second:>9.1f}"
                f"{self.mean_latency:>11.1f}{max(self.latencies):>10.1f}")


TABLE_HEADER = f"{'cách phục vụ':<34}{'lần gọi':>6}{'tổng s':>9}{'token/s':>9}{'trễ TB s':>11}{'trễ max s':>10}"


def _count_new(tokenizer, new) -> list[int]:
    """Tokens generated per row before the first end-of-sequence token."""
    counts = []
    for row in new.tolist():
        n = 0
        for token in row:
            if token in (tokenizer.eos_token_id, tokenizer.pad_token_id):
                break
            n += 1
        counts.append(n)
    return counts


def generate_batch(model, tokenizer, prompts, max_new_tokens: int, adapter_names=None):
    """One greedy ``model.generate`` call on ``prompts`` (left-padded); returns ``(answers, new_token_counts)``.

    With ``adapter_names`` (one per prompt) the call is a mixed batch: peft routes each row through its
    own adapter (``"__base__"``: none).
    """
    import torch

    batch = encode_chat(tokenizer, prompts, next(model.parameters()).device)
    kwargs = {} if adapter_names is None else {"adapter_names": list(adapter_names)}
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, **kwargs)
    new = out[:, batch["input_ids"].shape[1]:]
    answers = [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return answers, _count_new(tokenizer, new)


def _groups(names) -> dict[str, list[int]]:
    """Request indexes per adapter name, in order of first appearance."""
    groups: dict[str, list[int]] = {}
    for i, name in enumerate(names):
        groups.setdefault(name, []).append(i)
    return groups


def _check_prompts(prompts, names) -> None:
    if len(prompts) != len(names):
        raise CourseError(f"Có {len(prompts)} câu hỏi nhưng {len(names)} tên bộ điều hợp.",
                          "Mỗi yêu cầu cần đúng một tên bộ điều hợp, cùng thứ tự với câu hỏi.")


def _serve_groups(method, prompts, names, run_group) -> Served:
    """Run ``run_group(name, prompts_of_group)`` for each adapter group in turn, timing from a common start."""
    answers, counts, latencies = [None] * len(prompts), [0] * len(prompts), [0.0] * len(prompts)
    sync = _cuda_in_use()
    _sync(sync)
    start = time.perf_counter()
    groups = _groups(names)
    for name, idx in groups.items():
        got, n_new = run_group(name, [prompts[i] for i in idx])
        _sync(sync)
        done = time.perf_counter() - start
        for i, a, n in zip(idx, got, n_new):
            answers[i], counts[i], latencies[i] = a, n, done
    return Served(method, answers, counts, latencies, time.perf_counter() - start, calls=len(groups))


def serve_by_switching(model, tokenizer, prompts, adapter_names, max_new_tokens: int) -> Served:
    """One ``generate`` call per adapter group: ``set_adapter(name)``, or ``disable_adapter()`` for ``"__base__"``.

    The adapter that was active before is active again afterwards.
    """
    names = check_request_adapters(model, adapter_names)
    _check_prompts(prompts, names)
    before = model.active_adapter

    def run_group(name, group):
        if name == BASE:
            with model.disable_adapter():
                return generate_batch(model, tokenizer, group, max_new_tokens)
        model.set_adapter(name)
        return generate_batch(model, tokenizer, group, max_new_tokens)

    try:
        return _serve_groups("(1) set_adapter theo nhóm", prompts, names, run_group)
    finally:
        model.set_adapter(before)


def serve_merged(models: dict, tokenizer, prompts, adapter_names, max_new_tokens: int) -> Served:
    """One call per group, each on its own model: ``models[name]`` (merged models, and the base for ``"__base__"``)."""
    if not isinstance(models, dict) or not models:
        raise CourseError("`models` phải là một dict {tên bộ điều hợp: mô hình đã hợp nhất}.",
                          'Ví dụ: {"don_hang": merged_don_hang, "__base__": base}.')
    if isinstance(adapter_names, str) or not isinstance(adapter_names, (list, tuple)):
        raise CourseError("`adapter_names` phải là một danh sách tên (mỗi yêu cầu một tên).",
                          'Ví dụ: ["don_hang", "__base__"].')
    names = list(adapter_names)
    _check_prompts(prompts, names)
    missing = sorted({n for n in names if n not in models})
    if missing:
        raise CourseError(f"Không có mô hình đã hợp nhất cho: {', '.join(missing)}.",
                          f"Thêm vào `models` (đang có: {', '.join(models)}); yêu cầu \"__base__\" cần mô hình cơ sở.")
    return _serve_groups("(2) mô hình hợp nhất cho mỗi bộ", prompts, names,
                         lambda name, group: generate_batch(models[name], tokenizer, group, max_new_tokens))


def serve_mixed(model, tokenizer, prompts, adapter_names, max_new_tokens: int) -> Served:
    """One ``generate(..., adapter_names=[...])`` call for every request (validated first: see
    :func:`check_request_adapters`; a merged model is refused)."""
    names = check_request_adapters(model, adapter_names, mixed=True)
    _check_prompts(prompts, names)
    served = _serve_groups("(3) một lô nhiều bộ điều hợp, adapter_names", prompts, ["*"] * len(names),
                           lambda _, group: generate_batch(model, tokenizer, group, max_new_tokens, names))
    return served


def compare_answers(reference: Served, other: Served) -> list[int]:
    """Indexes of the requests whose answers differ between two serving methods (empty: all identical)."""
    if len(reference.answers) != len(other.answers):
        raise CourseError(f"Hai cách phục vụ có số câu trả lời khác nhau ({len(reference.answers)} và "
                          f"{len(other.answers)}).", "So hai lần phục vụ trên cùng danh sách yêu cầu.")
    return [i for i, (a, b) in enumerate(zip(reference.answers, other.answers)) if a != b]


# --------------------------------------------------------------------------- sizes
def parameter_bytes(*models) -> int:
    """Bytes of the parameters of ``models`` (each tensor counted once, even when shared or tied)."""
    seen, total = set(), 0
    for model in models:
        for p in model.parameters():
            if p.data_ptr() in seen:
                continue
            seen.add(p.data_ptr())
            total += p.numel() * p.element_size()
    return total


# --------------------------------------------------------------------------- routing
def evaluate_router(router, cases) -> dict:
    """Accuracy of ``router(text) -> adapter name`` on ``cases`` (``(text, expected_name)`` pairs).

    Returns ``{"accuracy", "n", "per_name": {name: (right, total)}, "mistakes": [(text, got, expected)]}``.
    """
    cases = list(cases)
    if not cases:
        raise CourseError("Không có câu nào để đánh giá bộ định tuyến.", "Truyền danh sách (câu hỏi, tên đúng).")
    if not callable(router):
        raise CourseError(f"Bộ định tuyến phải là một hàm, bạn đưa {type(router).__name__}.",
                          "Viết `def dinh_tuyen(cau_hoi): ... return \"don_hang\"`.")
    per_name: dict[str, list[int]] = {}
    mistakes = []
    for text, expected in cases:
        got = router(text)
        right, total = per_name.setdefault(expected, [0, 0])
        per_name[expected] = [right + (got == expected), total + 1]
        if got != expected:
            mistakes.append((text, got, expected))
    n_right = sum(r for r, _ in per_name.values())
    return {"accuracy": n_right / len(cases), "n": len(cases),
            "per_name": {k: tuple(v) for k, v in per_name.items()}, "mistakes": mistakes}


# --------------------------------------------------------------------------- hotswap
def _slot_layers(model, adapter_name: str) -> dict[str, int]:
    """``{module name: rank of its lora_A weight}`` for every LoRA layer holding ``adapter_name``."""
    slots = {}
    for name, module in model.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if lora_a is not None and hasattr(lora_a, "keys") and adapter_name in lora_a:
            slots[name.removeprefix("_orig_mod.")] = lora_a[adapter_name].weight.shape[0]
    return slots


def _adapter_layers(adapter_dir: Path) -> dict[str, int]:
    """``{module name: rank}`` of the LoRA layers stored in a saved adapter (keys as peft saves them)."""
    from safetensors import safe_open

    path = adapter_dir / "adapter_model.safetensors"
    layers = {}
    with safe_open(str(path), framework="pt") as f:
        for key in f.keys():
            if ".lora_A." in key or key.endswith(".lora_A.weight"):
                module = key.split(".lora_A")[0]
                layers[module] = f.get_slice(key).get_shape()[0]
    return layers


def check_hotswap_compatible(model, adapter_dir, adapter_name: str) -> dict:
    """Raise a Vietnamese :class:`CourseError` unless ``hotswap_adapter(model, adapter_dir, adapter_name)`` is safe.

    Safe means: ``adapter_name`` is loaded; the new adapter is a LoRA adapter with the settings peft
    requires to match (``use_rslora``, ``lora_dropout``, ``alpha_pattern``, ``use_dora``); it targets
    only layers the slot already has; its rank fits in the slot's current rank (the slot's shape is
    what a compiled model was built with; ``prepare_model_for_compiled_hotswap(model, target_rank=...)``
    enlarges it before compiling). Returns ``{"layers", "slot_rank", "new_rank"}``. Reads files only.
    """
    import json

    from peft import PeftType
    from peft.utils.hotswap import CONFIG_KEYS_TO_CHECK  # the settings peft itself requires to match

    loaded = loaded_adapters(model)
    if adapter_name not in loaded:
        raise CourseError(f"Không có bộ điều hợp `{adapter_name}` trên mô hình để thay trọng số"
                          f"{' (mô hình không còn bộ điều hợp nào: đã hợp nhất?)' if not loaded else ''}.",
                          f"hotswap_adapter thay trọng số của một bộ điều hợp ĐÃ NẠP; dùng một trong: "
                          f"{', '.join(loaded) or '(không có)'}; muốn thêm bộ mới thì dùng load_adapter.")
    adapter_dir = Path(adapter_dir)
    config_path = adapter_dir / "adapter_config.json"
    if not config_path.is_file() or not (adapter_dir / "adapter_model.safetensors").is_file():
        raise CourseError(f"Thư mục `{adapter_dir.name}` không phải một bộ điều hợp đã lưu (thiếu adapter_config.json "
                          "hoặc adapter_model.safetensors).", "Lưu bộ điều hợp bằng save_pretrained rồi truyền thư mục đó.")
    new = json.loads(config_path.read_text(encoding="utf-8"))
    old = model.peft_config[adapter_name].to_dict()
    if new.get("peft_type") != "LORA":
        raise CourseError(f"`{adapter_dir.name}` là bộ điều hợp {new.get('peft_type')}, không phải LoRA.",
                          "hotswap_adapter chỉ thay được bộ điều hợp LoRA.")
    for key in CONFIG_KEYS_TO_CHECK.get(PeftType.LORA, ("use_rslora", "lora_dropout", "alpha_pattern", "use_dora")):
        if new.get(key, old.get(key)) != old.get(key):
            raise CourseError(f"Không thay nóng được: `{key}` khác nhau ({old.get(key)!r} trên mô hình, {new.get(key)!r} "
                              f"trong `{adapter_dir.name}`).",
                              f"Chỉ thay nóng giữa các bộ điều hợp có cùng `{key}`; nếu không, nạp thêm bằng "
                              "load_adapter (tốn bộ nhớ, và mô hình đã compile sẽ phải compile lại).")
    slots = _slot_layers(model, adapter_name)
    layers = _adapter_layers(adapter_dir)
    prefix = "base_model.model."
    extra = sorted(m for m in layers if (m if m.startswith(prefix) else prefix + m) not in slots)
    if extra:
        raise CourseError(f"Không thay nóng được: `{adapter_dir.name}` gắn LoRA vào {len(extra)} lớp mà `{adapter_name}` "
                          f"không có (ví dụ {extra[0]}).",
                          "Thay nóng cần cùng các lớp đích (target_modules). Huấn luyện bộ điều hợp mới với cùng "
                          "target_modules, hoặc nạp nó bằng load_adapter.")
    slot_rank = max(slots.values())
    new_rank = max(layers.values())
    if new_rank > slot_rank:
        raise CourseError(f"Không thay nóng được: `{adapter_dir.name}` có hạng {new_rank}, lớn hơn chỗ của "
                          f"`{adapter_name}` (hạng {slot_rank}).",
                          f"Ngay sau khi nạp bộ điều hợp đầu tiên (trước torch.compile), gọi "
                          f"prepare_model_for_compiled_hotswap(model, target_rank={new_rank}) để chừa chỗ cho hạng lớn nhất; "
                          "hoặc nạp bộ mới bằng load_adapter.")
    return {"layers": len(layers), "slot_rank": slot_rank, "new_rank": new_rank}


def hotswap_checked(model, adapter_dir, adapter_name: str, torch_device: str | None = None) -> dict:
    """:func:`check_hotswap_compatible` first (nothing changes on a refusal), then peft's ``hotswap_adapter``."""
    from peft.utils.hotswap import hotswap_adapter

    info = check_hotswap_compatible(model, adapter_dir, adapter_name)
    hotswap_adapter(model, str(adapter_dir), adapter_name=adapter_name, torch_device=torch_device)
    return info
