"""Merging a LoRA adapter into its base model safely: memory check first, rollback on failure.

``PeftModel.merge_and_unload()`` visits the adapted layers one by one; for each it computes
``delta = scaling * B @ A`` (a full ``d_out x d_in`` matrix), adds it to the base weight ``W``
**in place**, and swaps the LoRA wrapper for the plain layer. So merging does not need a second
copy of the model, only room for the temporaries of the largest layer, unless you ask for a copy
(to keep the adapter model for comparison).

Memory model used by :func:`estimate_merge_memory` (bytes, for the largest adapted layer, with
``n = d_out * d_in`` its weight size):

* ``get_delta_weight`` holds ``B @ A`` and ``(B @ A) * scaling`` at once: ``2 * n * c``, where
  ``c`` is the element size the product is computed in (the adapter dtype; fp32 on CPU when the
  adapter is fp16/bf16, as peft does);
* ``safe_merge=True`` first clones ``W`` (``n * w`` more, ``w`` = weight element size) so it can
  check the sum for NaN/Inf before writing it back;
* with ``copy=True``, a deep copy of the whole model (every parameter and buffer) comes first;
  with ``dtype`` different from the model's, the cast adds ``n_params * (new - old)`` bytes
  when it makes the model bigger.

It is a lower bound on what the process needs: the allocator and Python add a little. Measured on
SmolLM2-135M-Instruct with the course adapter, ``copy=True`` on CPU (resident memory sampled every
10 ms, after one forward pass so that the memory-mapped weights were already read): estimate
533 MB, peak 630-660 MB in fp32; 274 MB vs 363 MB in bf16, i.e. about 100 MB on top. Hence
:func:`merge_checked` asks for ``estimate * safety_factor + headroom_bytes`` (1.1 and 256 MiB).
(Measured right after loading, the peak is about twice the estimate: reading the not-yet-read
memory-mapped weights of the original to copy them counts in resident memory too.)

State after a failed merge (:func:`merge_checked` documents and restores it): peft merges layer
after layer, so an exception in layer ``k`` (out of memory, or ``safe_merge`` finding NaN/Inf)
leaves layers ``0..k-1`` merged *and* already unwrapped (their LoRA modules detached), layer
``k`` untouched (peft writes the sum only after the check) and the rest still LoRA layers. That
half-merged model still computes the same function, but it is neither an adapter model (saving
it would save an incomplete adapter) nor a merged one. :func:`merge_checked` keeps a reference
to every LoRA wrapper before merging, and on failure un-merges the merged ones
(``W <- W - delta``, exact up to one rounding per weight) and puts the wrappers back, so the
caller gets back a working, unmerged adapter model.
"""

from __future__ import annotations

import copy as copy_module
import os
from pathlib import Path

from .adapters import display_path, ensure_fresh_dir, human_size
from .errors import CourseError
from .layers import lora_layers

_MODEL_FILE_PATTERNS = ("config.json", "*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin",
                        "adapter_config.json", "adapter_model.*")


def _element_size(dtype) -> int:
    import torch

    return torch.empty((), dtype=dtype).element_size()


def _model_device(model):
    return next(model.parameters()).device


def merge_memory_breakdown(peft_model, dtype=None, safe_merge: bool = True, copy: bool = False) -> dict:
    """The parts of :func:`estimate_merge_memory`, in bytes: ``copy``, ``cast``, ``largest_layer``,
    ``largest_layer_name`` and ``total`` (see the module docstring for the model)."""
    import torch

    device = _model_device(peft_model)
    largest, largest_name = 0, None
    for name, layer in lora_layers(peft_model):
        base = layer.get_base_layer()
        weight = getattr(base, "weight", None)
        lora_B = getattr(layer, "lora_B", None)
        if weight is None or not lora_B:
            continue
        w_dtype = dtype or weight.dtype
        a_dtype = dtype or next(iter(lora_B.values())).weight.dtype
        compute = torch.float32 if device.type == "cpu" and a_dtype in (torch.float16, torch.bfloat16) else a_dtype
        n = weight.numel()
        w, a, c = _element_size(w_dtype), _element_size(a_dtype), _element_size(compute)
        clone = n * w if safe_merge else 0
        cast = n * w if safe_merge and a_dtype != w_dtype else 0
        peak = clone + max(2 * n * c, n * a + cast)
        if peak > largest:
            largest, largest_name = peak, name
    tensors = list(peft_model.parameters()) + list(peft_model.buffers())
    size_now = sum(t.numel() * t.element_size() for t in tensors)
    size_cast = sum(t.numel() * (_element_size(dtype) if dtype is not None and t.is_floating_point()
                                 else t.element_size()) for t in tensors)
    parts = {
        "copy": size_cast if copy else 0,
        "cast": 0 if copy else max(0, size_cast - size_now),
        "largest_layer": largest,
        "largest_layer_name": largest_name,
    }
    parts["total"] = parts["copy"] + parts["cast"] + parts["largest_layer"]
    return parts


def estimate_merge_memory(peft_model, dtype=None, safe_merge: bool = True, copy: bool = False) -> int:
    """Extra bytes ``merge_and_unload`` needs on the model's device (see the module docstring).

    ``dtype``: the precision the merge will run in (default: the model's own); ``copy``: whether
    the adapter model is deep-copied first (to keep it for a comparison).
    """
    return merge_memory_breakdown(peft_model, dtype=dtype, safe_merge=safe_merge, copy=copy)["total"]


def available_memory(device="cpu") -> int | None:
    """Bytes that can still be allocated on ``device``; ``None`` when it cannot be told.

    CUDA: free memory from ``torch.cuda.mem_get_info`` plus what PyTorch has cached but not
    allocated (it reuses that first). CPU: ``psutil.virtual_memory().available`` when psutil is
    installed, else ``MemAvailable`` from ``/proc/meminfo`` (Linux).
    """
    device = str(device)
    if device.startswith("cuda"):
        import torch

        index = torch.device(device).index
        index = torch.cuda.current_device() if index is None else index
        free, _total = torch.cuda.mem_get_info(index)
        return int(free + torch.cuda.memory_reserved(index) - torch.cuda.memory_allocated(index))
    if device.startswith("mps"):
        return None
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _adapter_weights_finite(model, adapter_names) -> str | None:
    """Name of the first LoRA layer whose A/B weights hold NaN/Inf, else None."""
    import torch

    for name, layer in lora_layers(model):
        for attr in ("lora_A", "lora_B"):
            for adapter, module in (getattr(layer, attr, None) or {}).items():
                if adapter_names and adapter not in adapter_names:
                    continue
                if not torch.isfinite(module.weight).all():
                    return f"{name}.{attr}.{adapter}"
    return None


def _snapshot(model) -> list:
    """(parent, attribute name, wrapper) for every LoRA wrapper, taken before merging."""
    found = []
    for name, layer in lora_layers(model):
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if getattr(parent, child, None) is layer:
            found.append((parent, child, layer))
    return found


def _rollback(snapshot) -> int:
    """Un-merge and re-install every wrapper of ``snapshot``; return how many had been merged."""
    n_merged = 0
    for parent, child, wrapper in snapshot:
        if getattr(wrapper, "merged", False) and hasattr(wrapper, "unmerge"):
            wrapper.unmerge()
            n_merged += 1
        if getattr(parent, child) is not wrapper:
            setattr(parent, child, wrapper)
    return n_merged


_FIXES = ("giữ bộ điều hợp tách riêng (không hợp nhất: suy luận vẫn chạy, chỉ chậm hơn một chút); "
          "hoặc hợp nhất trên máy có nhiều bộ nhớ hơn rồi lưu lại bằng `save_merged`; "
          "hoặc hợp nhất ở độ chính xác số (dtype) lúc huấn luyện thay vì fp32, và không tạo bản sao (copy=False).")


def merge_checked(peft_model, safe_merge: bool = True, adapter_names=None, copy: bool = False, dtype=None,
                  safety_factor: float = 1.1, headroom_bytes: int = 256 * 2**20, progressbar: bool = False):
    """``merge_and_unload`` after checking memory, with a clean rollback if the merge fails.

    1. Estimates the memory the merge needs (:func:`estimate_merge_memory`) and compares
       ``estimate * safety_factor + headroom_bytes`` with :func:`available_memory` on the model's
       device (see the module docstring for the measured overhead) *before*
       touching anything; raises a Vietnamese :class:`CourseError` naming the fixes if short.
    2. With ``safe_merge=True``, checks the adapter weights for NaN/Inf first (nothing touched
       yet), and lets peft check every merged weight (``merge_and_unload(safe_merge=True)``).
    3. ``copy=True`` merges a deep copy and leaves ``peft_model`` as it was (to compare them);
       ``copy=False`` merges in place: the returned model *is* ``peft_model``'s base model, and
       ``peft_model`` must not be used afterwards. ``dtype`` casts (the copy, or the model in place)
       before merging, e.g. ``torch.float32``.
    4. If the merge fails part-way (``MemoryError``/CUDA out of memory, peft's ``ValueError`` for
       NaN, ...), the layers already merged are un-merged and their LoRA wrappers put back (see the
       module docstring), then a :class:`CourseError` is raised: ``peft_model`` is again a usable,
       unmerged adapter model (weights restored up to one rounding step). With ``copy=True`` the
       half-merged copy is simply dropped and ``peft_model`` was never touched.

    Returns the merged ``transformers`` model (no LoRA layers left).
    """
    if not hasattr(peft_model, "merge_and_unload") or not lora_layers(peft_model):
        raise CourseError(
            "Mô hình này không có bộ điều hợp LoRA nào để hợp nhất.",
            "Nạp bộ điều hợp trước: `model = PeftModel.from_pretrained(mô_hình_cơ_sở, thư_mục)`.",
        )
    if isinstance(adapter_names, str):
        adapter_names = [adapter_names]
    known = list(getattr(peft_model, "peft_config", {}) or {})
    unknown = [a for a in adapter_names or [] if a not in known]
    if unknown:
        raise CourseError(f"Không có bộ điều hợp tên {unknown}. Các tên đã nạp: {known}.",
                          "Dùng đúng tên trong `model.peft_config.keys()`.")

    device = _model_device(peft_model)
    parts = merge_memory_breakdown(peft_model, dtype=dtype, safe_merge=safe_merge, copy=copy)
    needed = int(parts["total"] * safety_factor + headroom_bytes)
    available = available_memory(device)
    if available is not None and needed > available:
        raise CourseError(
            f"Không đủ bộ nhớ để hợp nhất (merge) trên {device}: cần khoảng {human_size(needed)} "
            f"(lớp lớn nhất {human_size(parts['largest_layer'])}"
            + (f", bản sao mô hình {human_size(parts['copy'])}" if parts["copy"] else "")
            + (f", đổi dtype {human_size(parts['cast'])}" if parts["cast"] else "")
            + f", cộng phần dự phòng), còn trống {human_size(available)}. Chưa có gì bị thay đổi.",
            _FIXES,
        )

    model = copy_module.deepcopy(peft_model) if copy else peft_model
    if dtype is not None:
        model = model.to(dtype)
    if safe_merge:
        bad = _adapter_weights_finite(model, adapter_names)
        if bad is not None:
            raise CourseError(
                f"Trọng số bộ điều hợp có NaN/Inf (ở `{bad}`): hợp nhất sẽ làm hỏng mô hình. Chưa có gì bị thay đổi.",
                "Bộ điều hợp bị hỏng, thường do huấn luyện phân kỳ (tốc độ học quá cao, fp16 tràn số): "
                "huấn luyện lại với tốc độ học nhỏ hơn, hoặc nạp một checkpoint trước đó.",
            )

    snapshot = _snapshot(model)
    try:
        merged = model.merge_and_unload(progressbar=progressbar, safe_merge=safe_merge, adapter_names=adapter_names)
    except BaseException as exc:
        try:
            n_merged = _rollback(snapshot)
            restored = True
        except Exception:  # noqa: BLE001  # pragma: no cover - rollback itself failed (e.g. out of memory again)
            n_merged, restored = None, False
        if not isinstance(exc, (MemoryError, RuntimeError, ValueError)):
            raise
        if copy:
            state = "Mô hình có bộ điều hợp ban đầu không bị động tới (chỉ bản sao bị bỏ)."
        elif restored:
            state = (f"{n_merged}/{len(snapshot)} lớp đã kịp hợp nhất và đã được hoàn tác: mô hình vẫn là mô hình "
                     "có bộ điều hợp, chưa hợp nhất, dùng tiếp được.")
        else:
            state = ("Không hoàn tác được: mô hình đang nửa hợp nhất. Đừng lưu nó; nạp lại mô hình cơ sở và "
                     "bộ điều hợp từ đĩa.")
        kind = "hết bộ nhớ" if isinstance(exc, MemoryError) or "out of memory" in str(exc).lower() else "lỗi"
        if "NaN" in str(exc):
            kind = "trọng số sau hợp nhất có NaN/Inf"
        detail = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        fix = _FIXES if kind == "hết bộ nhớ" else (
            "Kiểm tra bộ điều hợp (huấn luyện có phân kỳ không?) và hợp nhất ở fp32: "
            "`merge_checked(model, dtype=torch.float32)`."
        )
        raise CourseError(f"Hợp nhất thất bại ({kind}: {detail}). {state}", fix) from exc
    left = lora_layers(merged)
    if left:  # pragma: no cover - peft contract
        raise CourseError(f"Sau khi hợp nhất vẫn còn {len(left)} lớp LoRA.", "Báo lỗi này cho người soạn khoá học.")
    merged.eval()
    return merged


def _model_files(path: Path) -> list[str]:
    found = set()
    for pattern in _MODEL_FILE_PATTERNS:
        found.update(p.name for p in path.glob(pattern) if p.is_file())
    return sorted(found)


def save_merged(model, tokenizer, out_dir, overwrite: bool = False) -> Path:
    """Save a merged model and its tokenizer with ``save_pretrained``; return the directory.

    Refuses (Vietnamese :class:`CourseError`) to save a model that still has LoRA layers, or to
    write into a directory that already holds a model or anything else, unless ``overwrite=True``.
    With ``overwrite=True`` the old weight files (``*.safetensors``, shards and their index,
    ``pytorch_model*.bin``) and adapter files are deleted first, so no stale shard or
    ``adapter_config.json`` is left to be mixed with the new model when it is loaded.
    """
    if tokenizer is None:
        raise CourseError(
            "Thiếu tokenizer: mô hình lưu mà không có tokenizer thì không nạp lại để dùng được.",
            "Truyền tokenizer của mô hình cơ sở: `save_merged(merged, tokenizer, thư_mục)`.",
        )
    from peft import PeftModel

    if isinstance(model, PeftModel) or lora_layers(model):
        raise CourseError(
            "Mô hình này vẫn còn bộ điều hợp (chưa hợp nhất): `save_pretrained` sẽ chỉ lưu bộ điều hợp.",
            "Hợp nhất trước: `merged = merge_checked(model)`, rồi `save_merged(merged, tokenizer, thư_mục)`.",
        )
    path = Path(out_dir)
    existing = _model_files(path) if path.is_dir() else []
    if existing and not overwrite:
        raise CourseError(
            f"`{display_path(path)}` đã chứa một mô hình ({', '.join(existing[:4])}). Khoá học không ghi đè lên thứ bạn đã lưu.",
            "Chọn thư mục khác, hoặc gọi lại với overwrite=True nếu bạn chắc chắn muốn ghi đè.",
        )
    path = ensure_fresh_dir(path, overwrite=overwrite)
    if overwrite:
        for name in existing:
            if name not in ("config.json",):
                os.remove(path / name)
    model.save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path
