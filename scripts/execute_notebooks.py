"""Execute notebooks in place, each in a fresh kernel, offline, a few at a time (used by `make notebooks`).

    python scripts/execute_notebooks.py notebooks/*.ipynb solutions/*.ipynb            # 2 at a time, 1 torch thread each
    python scripts/execute_notebooks.py --jobs 1 --threads 2 notebooks/lora_finetuning.ipynb

On a 2-core machine two single-threaded notebooks finish sooner than one notebook after the other on two threads:
the course's matrix products are small (a batch of a few sequences of a 576-wide model), so a second thread speeds
one notebook up far less than twice, and two processes that each start 2 OpenMP threads on 2 cores stall each other.
Each notebook prints how many torch threads it used (``lora_helpers.env.print_environment``), so the times it
measures say under which conditions they were taken. After a notebook ran, its metadata (``lora_course.run``) records
the machine, the precision profile, the torch threads and how many notebooks ran at the same time: the header line
``scripts/lesson_times.py`` writes from the recorded cell times names them. Measure alone (``--jobs 1``) when the
times are what you want. Prints ``== path: N s`` per notebook; exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def execute(path: str, threads: int, timeout: int) -> tuple[str, int, float, str]:
    """Run one notebook in place with ``jupyter nbconvert --execute``; (path, return code, seconds, log tail)."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), HF_HUB_OFFLINE="1")
    command = [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", "--inplace",
               f"--ExecutePreprocessor.timeout={timeout}", path]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    return path, done.returncode, time.perf_counter() - start, (done.stdout + done.stderr)[-3000:]


def cpu_kind(flags: set[str] | None) -> str:
    """What decides the course's CPU precision: native bf16 (AMX or AVX-512 BF16) or not."""
    if not flags:
        return "lệnh CPU không rõ"
    if "amx_bf16" in flags:
        return "có AMX và avx512_bf16"
    if "avx512_bf16" in flags or "bf16" in flags:
        return "có avx512_bf16" if "avx512_bf16" in flags else "có bf16"
    return "chỉ AVX2" if "avx2" in flags else "không có AVX2"


def record_run(path: str, threads: int, jobs: int) -> None:
    """Write into the notebook's metadata the conditions it just ran under (read by scripts/lesson_times.py)."""
    import nbformat

    from lora_helpers.env import cpu_flags, device_name, precision_profile

    notebook = nbformat.read(str(ROOT / path), as_version=4)
    notebook.metadata.setdefault("lora_course", {})["run"] = {
        "cpu": device_name("cpu"), "cpu_kind": cpu_kind(cpu_flags()), "cores": os.cpu_count(),
        "precision": precision_profile("cpu").compute, "threads": threads, "jobs": jobs,
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    nbformat.write(notebook, str(ROOT / path))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*")
    parser.add_argument("--jobs", type=int, default=2, help="notebooks executed at the same time")
    parser.add_argument("--threads", type=int, default=1, help="torch (OpenMP) threads per notebook")
    parser.add_argument("--timeout", type=int, default=2400, help="seconds per cell")
    args = parser.parse_args(argv)
    failed = []
    with ThreadPoolExecutor(max_workers=max(args.jobs, 1)) as pool:
        for path, code, seconds, log in pool.map(lambda p: execute(p, args.threads, args.timeout), args.notebooks):
            print(f"== {path}: {seconds:.0f} s ({args.threads} luồng torch, {args.jobs} notebook cùng lúc)"
                  + ("" if code == 0 else f" THẤT BẠI (mã {code})"), flush=True)
            if code:
                print(log, file=sys.stderr)
                failed.append(path)
            else:
                record_run(path, args.threads, args.jobs)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
