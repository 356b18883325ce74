"""Generate the exercise notebooks (exercises/) from the solution notebooks (solutions/).

    python scripts/make_exercises.py           # write exercises/ from solutions/ (only what changed)
    python scripts/make_exercises.py --check   # write nothing; exit 1 if anything is stale

Then execute the notebooks that were written (``make exercises`` does it all): committed
notebooks carry their outputs, and nbval compares the checked cells.

The single source of an exercise is its solution notebook in ``solutions/`` (edit it in
JupyterLab like any lesson), marked nbgrader-style:

* code cells: the lines from ``### BEGIN SOLUTION`` to ``### END SOLUTION`` (markers at the
  start of a line, at top level) are replaced by ``# VIẾT CODE CỦA BẠN Ở ĐÂY`` and one
  ``name = None`` for every name the region binds at top level (assignments, ``def``,
  ``class``, also inside a top-level ``with`` block), so the unanswered notebook still runs and its checks report "chưa làm".
  Bind only the answer variables at the top level of a region;
* markdown cells: lines from ``<!-- BEGIN SOLUTION -->`` to ``<!-- END SOLUTION -->`` are
  dropped (explanations, the "bản có lời giải" note), and a cell left empty is dropped; a line
  ``<!-- EXERCISE: text -->`` is shown as ``text`` in the exercise only;
* the Colab badge link ``.../solutions/X_solutions.ipynb`` becomes ``.../exercises/X_exercises.ipynb``;
* a working folder ``"outputs" / "bai_tap_NN"`` becomes ``"outputs" / "bai_tap_NN_tu_lam"``, so a solution and its
  exercise never share (or wipe) a folder when ``make test`` runs two notebooks at the same time.

``solutions/<lesson>_solutions.ipynb`` gives ``exercises/<lesson>_exercises.ipynb``, where ``<lesson>``
is the name of the lesson notebook in ``notebooks/``. Outputs and
execution counts are cleared. ``tests/test_exercises.py`` regenerates and compares cell sources,
so the two folders never drift.
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS, EXERCISES = ROOT / "solutions", ROOT / "exercises"

BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
MD_BEGIN, MD_END = "<!-- BEGIN SOLUTION -->", "<!-- END SOLUTION -->"
MD_EXERCISE = re.compile(r"^\s*<!-- EXERCISE: (.*) -->\s*$")
STUB = "# VIẾT CODE CỦA BẠN Ở ĐÂY"
OWN_FOLDER = re.compile(r'("outputs"\s*/\s*"bai_tap_\d+)"')  # the exercise's own working folder: see the docstring
SOLUTION_SUFFIX, EXERCISE_SUFFIX = "_solutions.ipynb", "_exercises.ipynb"


class MarkerError(ValueError):
    """A solution notebook whose markers cannot be turned into an exercise."""


def exercise_name(solution_name: str) -> str:
    """``lesson_solutions.ipynb`` -> ``lesson_exercises.ipynb``."""
    if not solution_name.endswith(SOLUTION_SUFFIX):
        raise MarkerError(f"{solution_name}: a solution notebook's name must end with {SOLUTION_SUFFIX}")
    return solution_name[: -len(SOLUTION_SUFFIX)] + EXERCISE_SUFFIX


def bound_names(code: str) -> list[str]:
    """Names a code region binds at its top level, in order (assignment targets, def, class)."""
    names: list[str] = []

    def add_target(target):
        if isinstance(target, ast.Name):
            names.append(target.id)
        elif isinstance(target, (ast.Tuple, ast.List)):
            for element in target.elts:
                add_target(element)
        elif isinstance(target, ast.Starred):
            add_target(target.value)

    def visit(body):
        for node in body:
            if isinstance(node, ast.Assign):
                for target in node.targets:
                    add_target(target)
            elif isinstance(node, ast.AnnAssign):
                add_target(node.target)
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.append(node.name)
            elif isinstance(node, (ast.With, ast.AsyncWith)):  # a with-body runs once, at top level
                for item in node.items:
                    if item.optional_vars is not None:
                        add_target(item.optional_vars)
                visit(node.body)

    visit(ast.parse(code).body)
    return list(dict.fromkeys(names))


def strip_code(source: str, where: str = "") -> str:
    """A code cell's source with every solution region replaced by the stub and ``None`` placeholders."""
    out, region, inside = [], [], False
    for line in source.split("\n"):
        stripped = line.strip()
        if stripped == BEGIN:
            if inside:
                raise MarkerError(f"{where}: nested {BEGIN}")
            if line != stripped:
                raise MarkerError(f"{where}: {BEGIN} must be at top level (no indentation)")
            inside, region = True, []
        elif stripped == END:
            if not inside:
                raise MarkerError(f"{where}: {END} without {BEGIN}")
            try:
                names = bound_names("\n".join(region))
            except SyntaxError as exc:
                raise MarkerError(f"{where}: the solution region is not valid Python: {exc}") from exc
            out += [STUB, *(f"{name} = None" for name in names)]
            inside = False
        elif inside:
            region.append(line)
        else:
            out.append(line)
    if inside:
        raise MarkerError(f"{where}: {BEGIN} without {END}")
    return "\n".join(out)


def strip_markdown(source: str, solution_name: str, where: str = "") -> str:
    """A markdown cell's source without solution-only lines, with exercise-only lines shown."""
    out, inside = [], False
    for line in source.split("\n"):
        stripped = line.strip()
        if stripped == MD_BEGIN:
            if inside:
                raise MarkerError(f"{where}: nested {MD_BEGIN}")
            inside = True
        elif stripped == MD_END:
            if not inside:
                raise MarkerError(f"{where}: {MD_END} without {MD_BEGIN}")
            inside = False
        elif not inside:
            match = MD_EXERCISE.match(line)
            out.append(match.group(1) if match else line)
    if inside:
        raise MarkerError(f"{where}: {MD_BEGIN} without {MD_END}")
    text = "\n".join(out)
    # only the badge (an <a href=... target="_parent">): Colab twins of links *to* the solutions keep pointing there
    return text.replace(f'blob/main/solutions/{solution_name}" target="_parent"',
                        f'blob/main/exercises/{exercise_name(solution_name)}" target="_parent"')


def make_exercise(solution, solution_name: str):
    """The exercise notebook (a new ``NotebookNode``, unexecuted) for a solution notebook."""
    cells = []
    for i, cell in enumerate(solution.cells):
        where = f"{solution_name} cell {i}"
        source = cell.source
        if cell.cell_type == "code":
            cells.append(nbformat.v4.new_code_cell(OWN_FOLDER.sub(r'\1_tu_lam"', strip_code(source, where))))
        elif cell.cell_type == "markdown":
            text = strip_markdown(source, solution_name, where)
            if text.strip():  # a cell that only held an explanation disappears
                cells.append(nbformat.v4.new_markdown_cell(text))
        else:
            cells.append(nbformat.v4.new_raw_cell(source))
    notebook = nbformat.v4.new_notebook(cells=cells)
    notebook.metadata = {k: v for k, v in solution.metadata.items() if k in ("kernelspec", "language_info")}
    return notebook


def cell_sources(notebook) -> list[tuple[str, str]]:
    """(cell type, source) of every cell: what the drift checks compare (never outputs)."""
    return [(c.cell_type, c.source) for c in notebook.cells]


def _write_if_changed(notebook, path: Path, check: bool) -> bool:
    """Write ``notebook`` unless ``path`` already has the same cell sources. True when stale."""
    if path.exists() and cell_sources(nbformat.read(str(path), as_version=4)) == cell_sources(notebook):
        return False
    if not check:
        path.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(notebook, str(path))
    return True


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 when something is stale")
    args = parser.parse_args(argv)
    stale = []
    for path in sorted(SOLUTIONS.glob(f"*{SOLUTION_SUFFIX}")):
        solution = nbformat.read(str(path), as_version=4)
        target = EXERCISES / exercise_name(path.name)
        if _write_if_changed(make_exercise(solution, path.name), target, args.check):
            stale.append(target)
    known = {exercise_name(p.name) for p in SOLUTIONS.glob(f"*{SOLUTION_SUFFIX}")}
    orphans = [p for p in EXERCISES.glob("*.ipynb") if p.name not in known]
    for path in stale:
        print(f"{'stale' if args.check else 'written (execute it next)'}: {path.relative_to(ROOT)}")
    for path in orphans:
        print(f"orphan exercise without a solution: {path.relative_to(ROOT)}")
    if not stale and not orphans:
        print("exercises/ and solutions/ are up to date")
    return 1 if args.check and (stale or orphans) else 0


if __name__ == "__main__":
    sys.exit(main())
