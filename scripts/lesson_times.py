"""How long each notebook took, read from the cell times its last execution recorded; the header line says so.

    python scripts/lesson_times.py           # print each notebook's recorded time and the machine it ran on
    python scripts/lesson_times.py --write   # rewrite the "**Thời gian chạy:**" line of every lesson and solution
    python scripts/lesson_times.py --check   # write nothing; exit 1 when a header line disagrees with its notebook

A notebook executed by ``scripts/execute_notebooks.py`` (``make notebooks``) keeps, for every code cell, when it started
and ended (``metadata.execution``, written by nbclient) and, in its own metadata (``lora_course.run``), the machine,
precision profile, torch threads and how many notebooks ran at the same time. The time of a run is the sum of its
cells' times. ``tests/test_repository.py`` fails when a header line is not the one this script writes, so a header
duration is always the one of the run stored below it. A solution's line sits between its ``<!-- BEGIN SOLUTION -->``
markers, so ``scripts/make_exercises.py`` leaves it out of the exercise (whose header points to the README's table):
an exercise's own header never depends on a run, and regenerating exercises never asks for a re-execution.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path

import nbformat

from lora_helpers.numbers import duration

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "**Thời gian chạy:**"
SOURCE = "<sup>nguồn: tổng thời gian các ô ghi trong notebook, cộng bằng `scripts/lesson_times.py`</sup>"


def _when(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def recorded_seconds(path: Path) -> float | None:
    """The sum of the recorded times of the notebook's code cells; None when a code cell has no recorded time."""
    notebook = nbformat.read(str(path), as_version=4)
    total = 0.0
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        timing = cell.get("metadata", {}).get("execution", {})
        if "iopub.execute_input" not in timing or "shell.execute_reply" not in timing:
            return None
        total += (_when(timing["shell.execute_reply"]) - _when(timing["iopub.execute_input"])).total_seconds()
    return total


def run_info(path: Path) -> dict | None:
    """What ``scripts/execute_notebooks.py`` recorded about the run (machine, profile, threads, jobs), if anything."""
    return nbformat.read(str(path), as_version=4).metadata.get("lora_course", {}).get("run")


def machine(info: dict) -> str:
    together = "chạy một mình" if info["jobs"] == 1 else f"{info['jobs']} notebook cùng lúc"
    return (f"{info['cpu']}, {info['cpu_kind']}; hồ sơ {info['precision']}, {info['threads']} luồng torch, "
            f"{together}, ngày {info['date'][:10]}")


def header_line(path: Path) -> str | None:
    """The header line the notebook at ``path`` must carry (None when its run recorded no times)."""
    seconds, info = recorded_seconds(path), run_info(path)
    if seconds is None or info is None:
        return None
    if path.parent.name == "solutions":
        return (f"{PREFIX} bản có lời giải {duration(seconds)} ({machine(info)}){SOURCE}; "
                f"trên máy khác, và bản chưa làm: bảng thời gian trong README.")
    return (f"{PREFIX} {duration(seconds)} cho lần chạy đang lưu trong notebook này ({machine(info)}){SOURCE}; "
            f"trên máy khác và trên GPU/Colab: bảng thời gian trong README.")


def notebooks() -> list[Path]:
    return sorted((ROOT / "notebooks").glob("*.ipynb")) + sorted((ROOT / "solutions").glob("*.ipynb"))


def current_line(path: Path) -> str | None:
    first = nbformat.read(str(path), as_version=4).cells[0].source
    return next((line for line in first.splitlines() if line.startswith(PREFIX)), None)


def write_line(path: Path, line: str) -> bool:
    """Put ``line`` in place of the header's time line; True when the notebook changed."""
    notebook = nbformat.read(str(path), as_version=4)
    lines = notebook.cells[0].source.splitlines()
    index = next(i for i, text in enumerate(lines) if text.startswith(PREFIX))
    if lines[index] == line:
        return False
    lines[index] = line
    notebook.cells[0].source = "\n".join(lines)
    nbformat.write(notebook, str(path))
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="rewrite the header lines")
    group.add_argument("--check", action="store_true", help="exit 1 when a header line is out of step")
    args = parser.parse_args(argv)
    stale = []
    for path in notebooks():
        wanted, seconds = header_line(path), recorded_seconds(path)
        name = path.relative_to(ROOT)
        print(f"{name}: {'?' if seconds is None else f'{seconds:.0f} s'}"
              + ("" if run_info(path) is None else f" ({machine(run_info(path))})"))
        if wanted is None:
            stale.append(f"{name}: no recorded run (execute it with scripts/execute_notebooks.py)")
        elif current_line(path) != wanted:
            if args.write:
                write_line(path, wanted)
                print(f"  header rewritten: {name}")
            else:
                stale.append(f"{name}: header line differs from the recorded run")
    if args.check and stale:
        print("\n".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
