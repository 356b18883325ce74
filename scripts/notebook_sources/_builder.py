"""Shared plumbing of the lesson builders in this folder (one per notebook in notebooks/).

A builder does ``from _builder import SETUP_CELL, md, code, write_notebook``, adds its cells with
``md(...)``/``code(...)`` in order, and ends with ``write_notebook("<name>.ipynb")``. ``--out PATH``
writes elsewhere (tests/test_repository.py uses it to check each lesson still matches its builder). Builders that
support a quick check accept ``--smoke OUT`` (see ``SMOKE``): the notebook is then written to OUT.
"""
import sys
from pathlib import Path

import nbformat as nbf

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from setup_cell import SETUP_CELL  # noqa: E402,F401  (re-exported for the builders)

SMOKE = "--smoke" in sys.argv
cells = []


def md(text):
    """Append a markdown cell."""
    cells.append(nbf.v4.new_markdown_cell(text.strip()))


def code(text):
    """Append a code cell (unexecuted)."""
    cells.append(nbf.v4.new_code_cell(text.strip()))


def write_notebook(name):
    """Write the cells to notebooks/<name>, or to the path after ``--smoke`` or ``--out``."""
    nb = nbf.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    flag = "--smoke" if SMOKE else "--out" if "--out" in sys.argv else None
    out = sys.argv[sys.argv.index(flag) + 1] if flag else str(ROOT / "notebooks" / name)
    nbf.write(nb, out)
    print("written", out)
