"""Give every link to another notebook a Colab twin, built from the one repository constant.

    python scripts/colab_links.py          # add the missing Colab links in notebooks/ and solutions/
    python scripts/colab_links.py --check  # list what is missing (a test runs this), change nothing

On Colab a relative link such as ``[bài 1](load_lora_adapter_example.ipynb)`` opens nothing: the
notebook runs alone, without the repository beside it. So each Markdown link to a ``.ipynb`` file of
the course is followed by `` ([Colab](https://colab.research.google.com/github/OWNER/NAME/blob/main/PATH))``.
``OWNER/NAME`` comes from the default of ``COURSE_REPO`` in the shared set-up cell (the first code cell
of lesson 1, see ``scripts/setup_cell.py``): move the course there and rerun this script.
``exercises/`` is generated from ``solutions/`` (``make exercises``) and inherits the links.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("notebooks", "solutions")
_REPO_DEFAULT = re.compile(r'COURSE_REPO\s*=\s*os\.environ\.get\("LORA_COURSE_REPO",\s*"https://github\.com/([^"]+?)"\)')
_LINK = re.compile(r"\[([^\]]+)\]\((?!https?:|#)([^)\s]+?\.ipynb)(#[^)\s]*)?\)")


def repository(root: Path = ROOT) -> str:
    """``OWNER/NAME`` of the course repository, read from the shared set-up cell."""
    lesson = nbformat.read(root / "notebooks" / "load_lora_adapter_example.ipynb", as_version=4)
    setup = next(c for c in lesson.cells if c.cell_type == "code")
    match = _REPO_DEFAULT.search(setup.source)
    if not match:
        raise SystemExit("The set-up cell of lesson 1 has no COURSE_REPO default: see scripts/setup_cell.py")
    return match.group(1).removesuffix(".git")


def colab_url(repo: str, repo_path: str) -> str:
    return f"https://colab.research.google.com/github/{repo}/blob/main/{repo_path}"


def with_colab_links(text: str, notebook: Path, repo: str, root: Path = ROOT) -> str:
    """``text`` (Markdown of ``notebook``) with a Colab twin after every relative link to a notebook."""
    out, last = [], 0
    for match in _LINK.finditer(text):
        target = (notebook.parent / match.group(2)).resolve()
        try:
            repo_path = target.relative_to(root.resolve()).as_posix()
        except ValueError:
            continue
        twin = f" ([Colab]({colab_url(repo, repo_path)}))"
        out.append(text[last:match.end()])
        last = match.end()
        if not text.startswith(twin, match.end()):
            out.append(twin)
    out.append(text[last:])
    return "".join(out)


def missing(root: Path = ROOT) -> list[str]:
    """Notebook cells whose Markdown lacks a Colab twin for a relative notebook link."""
    repo, problems = repository(root), []
    for folder in SOURCES:
        for path in sorted((root / folder).glob("*.ipynb")):
            nb = nbformat.read(path, as_version=4)
            for i, cell in enumerate(nb.cells):
                if cell.cell_type == "markdown" and with_colab_links(cell.source, path, repo, root) != cell.source:
                    problems.append(f"{path.relative_to(root)}, cell {i}")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="only list the cells that miss a Colab link")
    args = parser.parse_args(argv)
    if args.check:
        problems = missing()
        for p in problems:
            print(f"missing Colab link: {p}")
        return 1 if problems else 0
    repo = repository()
    for folder in SOURCES:
        for path in sorted((ROOT / folder).glob("*.ipynb")):
            nb = nbformat.read(path, as_version=4)
            changed = False
            for cell in nb.cells:
                if cell.cell_type == "markdown":
                    new = with_colab_links(cell.source, path, repo)
                    changed |= new != cell.source
                    cell.source = new
            if changed:
                nbformat.write(nb, path)
                print(f"Colab links added: {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
