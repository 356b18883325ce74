"""exercises/ is generated from solutions/ (the source, edited like any notebook): no drift.

Compares cell *sources* (outputs differ: both folders are committed executed). Also checks the
generator itself, and the structure every exercise notebook shares with the lessons.
"""

import json
import re
from pathlib import Path

import nbformat
import pytest

from scripts import make_exercises as mx
from scripts import setup_cell

ROOT = Path(__file__).resolve().parents[1]

SOLUTIONS = sorted((ROOT / "solutions").glob("*_solutions.ipynb"))
EXERCISES = sorted((ROOT / "exercises").glob("*.ipynb"))


def read(path):
    return nbformat.read(str(path), as_version=4)


def code_cells(nb):
    return [c for c in nb.cells if c.cell_type == "code"]


# --------------------------------------------------------------------------- the generator
def test_strip_code_replaces_regions_with_none_placeholders():
    source = "x = 1\n### BEGIN SOLUTION\ny = x + 1\ndef f(a):\n    return a\nfor i in range(2):\n    z = i\n### END SOLUTION\nprint(y)"
    out = mx.strip_code(source)
    assert out == "x = 1\n# VIẾT CODE CỦA BẠN Ở ĐÂY\ny = None\nf = None\nprint(y)"
    assert "return a" not in out


def test_strip_code_region_without_bindings_leaves_only_the_stub():
    assert mx.strip_code("### BEGIN SOLUTION\nm.set_adapter('a')\n### END SOLUTION") == "# VIẾT CODE CỦA BẠN Ở ĐÂY"
    assert mx.bound_names("a, (b, *c) = 1, (2, 3)\nd: int = 4\nclass E: pass\ne += 1") == ["a", "b", "c", "d", "E"]
    assert mx.bound_names("with m.disable_adapter() as x:\n    y = 1\n    with n:\n        z = 2\nfor i in r:\n    w = i") == [
        "x", "y", "z"]


@pytest.mark.parametrize("source, message", [
    ("### BEGIN SOLUTION\nx = 1", "without"),
    ("x = 1\n### END SOLUTION", "without"),
    ("if True:\n    ### BEGIN SOLUTION\n    x = 1\n    ### END SOLUTION", "top level"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", "nested"),
    ("### BEGIN SOLUTION\nx = = 1\n### END SOLUTION", "not valid Python"),
])
def test_strip_code_rejects_broken_markers(source, message):
    with pytest.raises(mx.MarkerError, match=message):
        mx.strip_code(source)


def test_exercise_works_in_its_own_folder():
    """make test runs two notebooks at once: a solution and its exercise must not share (and wipe) a folder."""
    solution = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        'OUT = course_root() / "outputs" / "bai_tap_04"\nshutil.rmtree(OUT)')])
    exercise = mx.make_exercise(solution, "olora_finetuning_solutions.ipynb")
    assert exercise.cells[0].source == 'OUT = course_root() / "outputs" / "bai_tap_04_tu_lam"\nshutil.rmtree(OUT)'


def test_strip_markdown_drops_solution_text_and_shows_exercise_text():
    source = ('badge blob/main/solutions/01_a_solutions.ipynb" target="_parent"\n<!-- BEGIN SOLUTION -->\nlời giải\n'
              "<!-- END SOLUTION -->\n<!-- EXERCISE: chỉ ở bài tập, [lời giải](https://x/blob/main/solutions/01_a_solutions.ipynb) -->"
              "\nchung")
    out = mx.strip_markdown(source, "01_a_solutions.ipynb")
    # the badge follows the notebook; a link *to* the solutions (its Colab twin) keeps pointing there
    assert out == ('badge blob/main/exercises/01_a_exercises.ipynb" target="_parent"\n'
                   "chỉ ở bài tập, [lời giải](https://x/blob/main/solutions/01_a_solutions.ipynb)\nchung")
    with pytest.raises(mx.MarkerError):
        mx.strip_markdown("<!-- BEGIN SOLUTION -->\nx", "01_a_solutions.ipynb")
    with pytest.raises(mx.MarkerError):
        mx.exercise_name("01_a.ipynb")


# --------------------------------------------------------------------------- the committed notebooks
def test_there_are_exercises_for_the_lessons():
    names = {p.name for p in SOLUTIONS}
    assert {"load_lora_adapter_example_solutions.ipynb", "lora_finetuning_solutions.ipynb"} <= names


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda p: p.name)
def test_exercises_are_generated_from_solutions(solution):
    committed = ROOT / "exercises" / mx.exercise_name(solution.name)
    assert committed.is_file(), "run: python scripts/make_exercises.py (make exercises)"
    expected = mx.make_exercise(read(solution), solution.name)
    assert mx.cell_sources(read(committed)) == mx.cell_sources(expected), (
        f"{committed.name} is stale: never edit exercises/ by hand; run `make exercises`")


def test_no_orphan_exercises():
    assert {p.name for p in EXERCISES} == {mx.exercise_name(p.name) for p in SOLUTIONS}


@pytest.mark.parametrize("path", SOLUTIONS + EXERCISES, ids=lambda p: p.name)
def test_notebook_structure(path):
    nb = read(path)
    codes = code_cells(nb)
    assert codes[0].source == setup_cell.canonical_source(), "the first code cell must be the shared set-up cell"
    first_md = next(c for c in nb.cells if c.cell_type == "markdown").source
    assert f"blob/main/{path.parent.name}/{path.name}" in first_md, "Colab badge must point to this file"
    assert re.search(r"\]\(\.\./notebooks/[^)]+\.ipynb\)", first_md), "link back to the lesson"
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for target in re.findall(r"\]\((?!https?:|#)([^)\s]+)\)", text):
        assert (path.parent / target.split("#")[0]).exists(), f"{path.name} links to missing {target}"
    for level in ("🐢", "🐕", "🦁"):
        assert level in text, f"no {level} exercise"


@pytest.mark.parametrize("path", SOLUTIONS + EXERCISES, ids=lambda p: p.name)
def test_committed_executed_without_errors(path):
    counts = [c.execution_count for c in code_cells(read(path)) if c.source.strip()]
    assert counts == list(range(1, len(counts) + 1)), "execute top to bottom in a fresh kernel (make exercises)"
    for cell in code_cells(read(path)):
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error"


def check_outputs(path):
    """The messages printed by the check cells (cells that call a check_* function on their last line)."""
    found = []
    for cell in code_cells(read(path)):
        last = cell.source.strip().splitlines()[-1] if cell.source.strip() else ""
        if re.match(r"check_\w+\(", last):
            found.append("".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("name") == "stdout"))
    return found


@pytest.mark.parametrize("path", SOLUTIONS, ids=lambda p: p.name)
def test_every_exercise_is_followed_by_a_check_that_the_solution_passes(path):
    nb = read(path)
    cells = nb.cells
    regions = [i for i, c in enumerate(cells) if c.cell_type == "code" and mx.BEGIN in c.source]
    assert regions, "no exercise"
    for i in regions:
        following = [c for c in cells[i + 1:] if c.cell_type == "code"][:2]
        assert any(re.search(r"^check_\w+\(", c.source, re.M) for c in following), (
            f"cell {i}: an exercise must be followed by a check from lora_helpers.checks")
    messages = check_outputs(path)
    assert messages and all(m.startswith("✅") for m in messages), messages


def unmarked_check_cells(notebook) -> list[int]:
    """Indexes of the code cells that call a check but whose output nbval would not compare."""
    return [i for i, c in enumerate(notebook.cells) if c.cell_type == "code"
            and re.search(r"^check_\w+\(", c.source, re.MULTILINE) and "# NBVAL_CHECK_OUTPUT" not in c.source]


@pytest.mark.parametrize("path", SOLUTIONS + EXERCISES, ids=lambda p: p.name)
def test_every_check_cell_is_compared_by_nbval(path):
    """A solution whose check prints ❌ (a wrong answer, a library change) must fail the suite."""
    assert not unmarked_check_cells(read(path)), "start every check cell with `# NBVAL_CHECK_OUTPUT`"


def test_marker_enforcement_catches_an_unmarked_check_cell():
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("# NBVAL_CHECK_OUTPUT\ncheck_router(f)"),
                                               nbformat.v4.new_code_cell("x = 1\ncheck_router(f)")])
    assert unmarked_check_cells(notebook) == [1]


@pytest.mark.parametrize("path", EXERCISES, ids=lambda p: p.name)
def test_unanswered_exercises_report_not_done(path):
    messages = check_outputs(path)
    assert messages and all(m.startswith("⏳") and "chưa làm" in m for m in messages), messages
    assert "### BEGIN SOLUTION" not in json.dumps(read(path))
