"""GPU rehearsal: execute every lesson and solutions notebook on a CUDA machine, offline, and report.

    python scripts/gpu_check.py                 # on a CUDA machine: run all, write docs/gpu_check.md
    python scripts/gpu_check.py --jobs 4 notebooks/lora_finetuning.ipynb
    python scripts/gpu_check.py --not-run       # write the "not run yet" report (no GPU needed)

Each notebook runs on a copy in a temporary folder (the committed CPU outputs are never touched), in a fresh
kernel, with ``HF_HUB_OFFLINE=1``; notebooks run ``--jobs`` at a time (one GPU holds several 135M-parameter
lessons). The report gives, per notebook: passed or failed (with the last error line), minutes, the peak GPU
memory seen by ``nvidia-smi`` while it ran, and the precision the course chose on that GPU
(``lora_helpers.env.precision_profile``). The whole run must fit one 10-minute command (``--budget``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "docs" / "gpu_check.md"
NOT_RUN = "chưa chạy (not run yet)"


@dataclass
class Result:
    notebook: str
    passed: bool
    seconds: float
    peak_mib: float | None
    error: str = ""


def course_notebooks() -> list[str]:
    """Every lesson and solutions notebook (exercises are the solutions with the answers removed)."""
    return [str(p.relative_to(ROOT)) for folder in ("notebooks", "solutions") for p in sorted((ROOT / folder).glob("*.ipynb"))]


def gpu_memory_used_mib() -> float | None:
    """Memory in use on GPU 0 (MiB, as nvidia-smi reports it), or None when it cannot be read."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-i", "0"],
                             capture_output=True, text=True, timeout=10, check=True).stdout
        return float(out.strip().splitlines()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def execute_copy(notebook: str, workdir: Path, timeout: int) -> tuple[bool, float, str]:
    """Run a copy of ``notebook`` (same folder depth, so relative paths hold); (passed, seconds, last error line)."""
    copy = workdir / notebook
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(ROOT / notebook, copy)
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT))
    command = [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", "--inplace",
               f"--ExecutePreprocessor.timeout={timeout}", str(copy)]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT / Path(notebook).parent, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in (done.stdout + done.stderr).splitlines() if "Error" in line]
    return done.returncode == 0, time.perf_counter() - start, (lines[-1] if lines else "")[:200]


def run_all(notebooks: list[str], jobs: int, timeout: int) -> list[Result]:
    peaks: dict[str, float] = {}
    running: set[str] = set()
    stop = threading.Event()

    def watch():  # one watcher for the GPU: every running notebook is charged the peak seen while it ran
        while not stop.is_set():
            used = gpu_memory_used_mib()
            for name in list(running):
                if used is not None:
                    peaks[name] = max(peaks.get(name, 0.0), used)
            time.sleep(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp:
        def one(notebook: str) -> Result:
            running.add(notebook)
            try:
                passed, seconds, error = execute_copy(notebook, Path(tmp), timeout)
            finally:
                running.discard(notebook)
            return Result(notebook, passed, seconds, peaks.get(notebook), error)

        with ThreadPoolExecutor(max_workers=jobs) as pool:
            results = list(pool.map(one, notebooks))
    stop.set()
    return results


def report(results: list[Result] | None, device: str, precision: str, jobs: int, total_s: float | None) -> str:
    """The Markdown report; ``results=None`` writes the "not run yet" report."""
    lines = ["# Chạy thử trên GPU (GPU rehearsal)", "",
             "Sinh bởi `python scripts/gpu_check.py` trên một máy có CUDA (xem docstring của script). "
             "Mỗi notebook chạy trên một bản sao, ngoại tuyến; kết quả CPU đã commit không bị đụng tới.", ""]
    if results is None:
        lines += [f"**Trạng thái: {NOT_RUN}.** Chưa có máy CUDA nào được cho mượn để chạy; mọi notebook mới chỉ được "
                  "chạy và kiểm tra trên CPU. Phần GPU của bài học (chọn độ chính xác, trọng số fp32 khi huấn luyện, "
                  "so sánh bằng fp32) được kiểm thử bằng GPU giả lập trong `tests/test_precision.py`.", "",
                  "| notebook | kết quả | phút | bộ nhớ GPU đỉnh (MiB) |", "|---|---|---|---|"]
        lines += [f"| `{nb}` | {NOT_RUN} | | |" for nb in course_notebooks()]
        return "\n".join(lines) + "\n"
    passed = sum(r.passed for r in results)
    lines += [f"Ngày {dt.date.today().isoformat()}, GPU: {device}; độ chính xác khoá học chọn: {precision}; "
              f"{jobs} notebook một lúc; tổng {total_s / 60:.1f} phút; {passed}/{len(results)} notebook chạy hết.", "",
              "| notebook | kết quả | phút | bộ nhớ GPU đỉnh (MiB) |", "|---|---|---|---|"]
    for r in results:
        verdict = "chạy hết" if r.passed else f"lỗi: {r.error.replace('|', '/')}"
        peak = f"{r.peak_mib:.0f}" if r.peak_mib is not None else "?"
        lines.append(f"| `{r.notebook}` | {verdict} | {r.seconds / 60:.1f} | {peak} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", help="default: every lesson and solutions notebook")
    parser.add_argument("--jobs", type=int, default=4, help="notebooks at the same time on the one GPU")
    parser.add_argument("--timeout", type=int, default=540, help="seconds per cell")
    parser.add_argument("--not-run", action="store_true", help="write the 'not run yet' report and stop")
    parser.add_argument("--report", type=Path, default=REPORT)
    args = parser.parse_args(argv)
    if args.not_run:
        args.report.write_text(report(None, "", "", 0, None), encoding="utf-8")
        return 0
    import torch

    if not torch.cuda.is_available():
        print("Không thấy GPU CUDA: chạy thử GPU cần một máy có CUDA. Trên máy này, dùng `make test` (CPU); "
              "`--not-run` ghi báo cáo 'chưa chạy'.", file=sys.stderr)
        return 2
    from lora_helpers.env import precision_profile

    notebooks = args.notebooks or course_notebooks()
    start = time.perf_counter()
    results = run_all(notebooks, args.jobs, args.timeout)
    total = time.perf_counter() - start
    text = report(results, torch.cuda.get_device_name(0), precision_profile("cuda").describe(), args.jobs, total)
    args.report.write_text(text, encoding="utf-8")
    print(text)
    return 0 if all(r.passed for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
