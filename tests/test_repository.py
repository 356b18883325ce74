"""Repository hygiene: notebooks committed executed, one shared set-up cell, links that resolve."""

import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
from setup_cell import SETUP_CELL  # noqa: E402

LESSONS = sorted((ROOT / "notebooks").glob("*.ipynb"))
PRACTICE = sorted((ROOT / "solutions").glob("*.ipynb")) + sorted((ROOT / "exercises").glob("*.ipynb"))
ALL_NOTEBOOKS = LESSONS + PRACTICE


def _cells(path, kind="code"):
    return [c for c in json.loads(path.read_text(encoding="utf-8"))["cells"] if c["cell_type"] == kind]


def test_main_lessons_exist():
    for name in ("load_lora_adapter_example", "lora_finetuning", "merge_lora_adapters"):
        assert (ROOT / "notebooks" / f"{name}.ipynb").is_file(), name


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_lesson_is_on_the_readme_course_map(path):
    assert f"](notebooks/{path.name})" in (ROOT / "README.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_lesson_links_to_its_exercises_and_solutions(path):
    """Every lesson has exactly one solutions notebook (the one whose header links back to it); the lesson and
    the README's course map link to it and to its exercise twin."""
    solutions = [s for s in sorted((ROOT / "solutions").glob("*_solutions.ipynb"))
                 if f"](../notebooks/{path.name})" in "".join(_cells(s, "markdown")[0]["source"])]
    assert len(solutions) == 1, f"{path.name}: expected one solutions notebook linking back to it, found {solutions}"
    solution = solutions[0]
    exercise = ROOT / "exercises" / solution.name.replace("_solutions", "_exercises")
    assert exercise.is_file()
    text = "\n".join("".join(c["source"]) for c in _cells(path, "markdown"))
    assert f"](../solutions/{solution.name})" in text
    assert f"](../exercises/{exercise.name})" in text
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"](solutions/{solution.name})" in readme and f"](exercises/{exercise.name})" in readme


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_notebook_committed_executed_in_order(path):
    counts = [c["execution_count"] for c in _cells(path) if "".join(c["source"]).strip()]
    assert counts == list(range(1, len(counts) + 1)), "re-run top to bottom in a fresh kernel and commit"
    for cell in _cells(path):
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error"


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_notebook_setup_cell_is_the_shared_one(path):
    assert "".join(_cells(path)[0]["source"]) == SETUP_CELL
    assert "torch" not in SETUP_CELL.split("PINNED")[1].split("}")[0]


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_colab_badge_points_to_this_file(path):
    first = "".join(_cells(path, "markdown")[0]["source"])
    assert f"blob/main/{path.parent.name}/{path.name}" in first


@pytest.mark.parametrize("path", [ROOT / "README.md", *ALL_NOTEBOOKS], ids=lambda p: f"{p.parent.name}/{p.name}")
def test_relative_links_resolve(path):
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".ipynb":
        text = "\n".join("".join(c["source"]) for c in _cells(path, "markdown"))
    for target in re.findall(r"\]\((?!https?:|#)([^)\s]+)\)", text):
        assert (path.parent / target.split("#")[0]).exists(), f"{path.name} links to missing {target}"


def test_requirements_never_pull_torch():
    lines = [ln.split("#")[0].strip() for ln in (ROOT / "requirements.txt").read_text().splitlines()]
    assert not any(re.match(r"torch\b", ln) for ln in lines if ln)
    assert "torch==2.13.0" in (ROOT / "Makefile").read_text()


@pytest.mark.parametrize("path", LESSONS, ids=lambda p: p.name)
def test_lesson_matches_its_builder(path, tmp_path):
    """The committed lesson has exactly the cells its builder in scripts/notebook_sources/ writes."""
    import subprocess

    builder = ROOT / "scripts" / "notebook_sources" / f"{path.stem}.py"
    assert builder.is_file(), f"no builder for {path.name}"
    out = tmp_path / path.name
    subprocess.run([sys.executable, str(builder), "--out", str(out)], check=True, capture_output=True)
    source = lambda nb: [(c["cell_type"], "".join(c["source"])) for c in json.loads(nb.read_text(encoding="utf-8"))["cells"]]
    assert source(path) == source(out), f"{path.name} differs from {builder.name}: rebuild and re-execute it"
