"""Shared parts of the solution-notebook builders in this folder.

Each builder ``NN_topic.py`` defines ``NAME`` (``NN_topic_solutions.ipynb``) and ``build()``
(the unexecuted solution notebook); run as a script it writes ``solutions/NAME``.
``scripts/make_exercises.py`` then derives ``exercises/NN_topic_exercises.ipynb`` from it.
To add the exercises of a new lesson: copy a builder, change NAME/LESSON and the cells,
add the checks to ``lora_helpers/checks.py`` with their tests, then ``make exercises``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat as nbf

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts"))
from setup_cell import SETUP_CELL  # noqa: E402

COLAB = "https://colab.research.google.com/github/lora-course-vi/lora-course-vi/blob/main/{path}"
BADGE = ('<a href="{url}" target="_parent"><img src="https://colab.research.google.com/assets/colab-badge.svg" '
         'alt="Mở trong Colab"/></a>')

HOW_TO = """
**Cách làm.** Mỗi bài có một ô chứa `# VIẾT CODE CỦA BẠN Ở ĐÂY`: thay các dòng `... = None` bằng đáp án của bạn, chạy ô đó, rồi chạy ô kiểm tra ngay bên dưới. Ô kiểm tra (từ `lora_helpers.checks`) nói đáp án đúng hay sai, sai ở đâu, kèm gợi ý; bài chưa làm thì nó báo *chưa làm*. Chạy các ô theo thứ tự từ trên xuống.

Ba mức: 🐢 dễ · 🐕 vừa · 🦁 khó.
"""


class NotebookBuilder:
    """Collects the cells of one solution notebook and writes the shared header."""

    def __init__(self, name: str):
        if not name.endswith("_solutions.ipynb"):
            raise ValueError(f"{name}: solution notebooks are named NN_topic_solutions.ipynb")
        self.name = name
        self.cells = []

    @property
    def exercise_name(self) -> str:
        return self.name.replace("_solutions.ipynb", "_exercises.ipynb")

    def md(self, text: str) -> None:
        self.cells.append(nbf.v4.new_markdown_cell(text.strip()))

    def code(self, text: str) -> None:
        self.cells.append(nbf.v4.new_code_cell(text.strip()))

    def header(self, title: str, lesson: str, lesson_title: str, what: str, runtime: str) -> None:
        """Title, Colab badge, link back to the lesson, solution/exercise cross-links, how to work; then SETUP_CELL."""
        self.md(f"""
# {title}

{BADGE.format(url=COLAB.format(path=f"solutions/{self.name}"))}

Bài tập của bài học [{lesson_title}](../notebooks/{lesson}). {what}

<!-- BEGIN SOLUTION -->
> **Bản có lời giải.** Đây là nguồn duy nhất của bài tập: bản để tự làm [exercises/{self.exercise_name}](../exercises/{self.exercise_name}) được sinh tự động từ bản này (`python scripts/make_exercises.py`), đừng sửa tay bản đó.
<!-- END SOLUTION -->
<!-- EXERCISE: > Tự làm trước khi xem [bản có lời giải](../solutions/{self.name}). -->

{HOW_TO.strip()}

**Thời gian chạy:** {runtime}
""")
        self.code(SETUP_CELL)

    def notebook(self):
        notebook = nbf.v4.new_notebook(cells=self.cells)
        notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        notebook.metadata["language_info"] = {"name": "python"}
        return notebook


def write(notebook, name: str) -> Path:
    """Write an unexecuted solution notebook to ``solutions/name``."""
    path = ROOT / "solutions" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    nbf.write(notebook, str(path))
    print(f"written {path.relative_to(ROOT)} (execute it, then run scripts/make_exercises.py)")
    return path
